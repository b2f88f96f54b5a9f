#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profusion_api::auth::fuzz_authorization(data));
