//! A `generate --prompt-file FILE`, as JSON lines and as plain lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steerdiff::cli::prompt_file::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.jsonl");
        let _ = parse(text, true, "class", path);
        let _ = parse(text, false, "prompt", path);
    }
});
