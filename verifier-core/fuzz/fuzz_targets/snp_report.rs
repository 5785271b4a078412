#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    verifier_core::fuzzing::snp_report(data);
});
