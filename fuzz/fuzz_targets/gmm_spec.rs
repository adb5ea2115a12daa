//! A `--model gmm:SPEC.json` file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = steerdiff_pipelines::GmmSpec::from_json(text);
    }
});
