//! A real Windows boot manager log (go-attestation's GCE Shielded VM capture, provenance in
//! `tests/data/windows/README.md`): it parses, its WBCL events decode, and it replays to the
//! SHA-1 PCRs captured in the same boot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use verifier_core::eventlog::{EventLog, EventType, LogFormat};
use verifier_core::wire::HashAlg;

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/windows")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn windows_boot_manager_log_replays_to_its_pcrs() {
    let bytes = data("windows_gcp_shielded_vm.bin");
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.format(), LogFormat::LegacySha1);
    assert_eq!(log.events().len(), 21);
    assert_eq!(log.padding(), 0);
    // The boot manager's part: WBCL event tags in PCRs 12-14, closed by "WBCL" separators.
    let wbcl = log
        .events()
        .iter()
        .filter(|e| e.event_type() == EventType::EV_EVENT_TAG)
        .count();
    assert_eq!(wbcl, 6);
    let separators: Vec<u8> = log
        .events()
        .iter()
        .filter(|e| e.event_type() == EventType::EV_SEPARATOR && e.data() == b"WBCL")
        .map(|e| e.pcr())
        .collect();
    assert_eq!(separators, [12, 13, 14]);
    serde_json::to_string(log.events()).unwrap();

    let expected: serde_json::Value =
        serde_json::from_slice(&data("windows_gcp_shielded_vm.pcrs.json")).unwrap();
    let mut compared = 0;
    for (index, hex) in expected["sha1"].as_object().unwrap() {
        let index: u8 = index.parse().unwrap();
        if let Some(replayed) = log.replay().get(HashAlg::Sha1, index) {
            assert_eq!(replayed.to_hex(), hex.as_str().unwrap(), "PCR {index}");
            compared += 1;
        }
    }
    assert_eq!(compared, 8, "PCRs 0, 4, 5, 7, 11, 12, 13, 14");
    verifier_core::fuzzing::eventlog(&bytes);
}
