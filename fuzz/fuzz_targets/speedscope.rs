#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profusion_ingest::fuzzing::speedscope(data));
