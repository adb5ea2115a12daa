//! A diffusers `scheduler_config.json`, read and turned into a sampler.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steerdiff_guidance::schedule::diffusers::{SchedulerConfig, SetTimesteps};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = SchedulerConfig::from_json_str(text) {
            let _ = cfg.sampler(10, &SetTimesteps::default(), None);
        }
    }
});
