//! The A1111-format `parameters` text of another tool's PNG.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(a) = steerdiff::output::a1111::parse(text) {
            // What we write, we read back the same.
            let again = steerdiff::output::a1111::parse(&steerdiff::output::a1111::format(&a));
            assert!(again.is_some());
        }
    }
});
