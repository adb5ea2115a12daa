//! A safetensors weight file: its header, tensor extents and dtypes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = steerdiff_pipelines::sd::weights::check_safetensors_bytes(data);
});
