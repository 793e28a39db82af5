#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upd_fuzz::checks::report(data));
