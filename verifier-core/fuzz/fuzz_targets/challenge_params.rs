#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    verifier_core::fuzzing::challenge_params(data);
});
