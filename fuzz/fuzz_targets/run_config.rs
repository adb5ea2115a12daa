//! A `generate --config run.toml` file, turned into flags.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.toml");
        let _ = steerdiff::cli::invocation::config_text_flags(text, path, &["num".into()]);
    }
});
