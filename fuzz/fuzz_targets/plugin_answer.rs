//! A reward plugin's answer (header line + payload) as steerdiff reads it off a pipe.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steerdiff_pipelines::reward::plugin::protocol::read_message;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while read_message(&mut input).is_ok() {}
});
