#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| propwatch_fuzz::config(data));
