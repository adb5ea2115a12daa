//! A PNG handed to `steerdiff info`: its chunks, size and text records.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = steerdiff::output::png_record::read_bytes(data);
});
