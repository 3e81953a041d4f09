#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| diffy_fuzz::script_output(data));
