//! A `generate --init-latents FILE.json` file: flat or nested lists, or `initial_latents`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = steerdiff::run::init::parse_latents(text, &[1, 2, 2], 2);
    }
});
