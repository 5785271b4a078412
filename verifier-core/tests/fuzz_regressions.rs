//! The fuzz entry points (`verifier_core::fuzzing`, run by `scripts/fuzz-smoke.sh`) on the
//! real inputs that seed the fuzzers, and on every input a fuzzer ever crashed on.
//!
//! An entry point panics when a parser panics or when a successful parse breaks its
//! round-trip invariant, so each case here fails exactly when that comes back. To add a
//! crash: minimise it (`cargo fuzz tmin TARGET artifacts/TARGET/crash-...`), then add a
//! `(target, hex)` line to [`REGRESSIONS`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use verifier_core::eventlog::EventLog;
use verifier_core::fuzzing;
use verifier_core::ima::MeasurementList;
use verifier_core::wire::{Attest, Attested, HashAlg, PcrSelection, Public, Reader, Signature};

type Target = fn(&[u8]);

/// Every fuzz target by its `cargo fuzz` name.
const TARGETS: &[(&str, Target)] = &[
    ("attest", fuzzing::attest),
    ("public", fuzzing::public),
    ("signature", fuzzing::signature),
    ("pcr_selection", fuzzing::pcr_selection),
    ("quote", fuzzing::quote),
    ("eventlog", fuzzing::eventlog),
    ("eventlog_decode", fuzzing::eventlog_decode),
    ("ima", fuzzing::ima),
    ("proto", fuzzing::proto),
    ("inclusion_proof", fuzzing::inclusion_proof),
    ("payload_ciphertext", fuzzing::payload_ciphertext),
    ("sealed", fuzzing::sealed),
    ("challenge_params", fuzzing::challenge_params),
    ("ekcert", fuzzing::ekcert),
    ("policy", fuzzing::policy),
    ("snp_report", fuzzing::snp_report),
    ("hcl_report", fuzzing::hcl_report),
];

/// Minimised inputs that once crashed a target: (target, input as hex).
const REGRESSIONS: &[(&str, &str)] = &[
    // Issue 12 item 8: a legacy StartupLocality event (locality 3), 32 zero bytes (also an
    // EV_PREBOOT_CERT event in PCR 0), 4 bytes of 0xff. PCR 0 replayed differently with and
    // without the 0xff tail ("padding holds no events").
    (
        "eventlog",
        "0000000003000000000000000000000000000000000000000000000011000000\
         537461727475704c6f63616c6974790003000000000000000000000000000000\
         0000000000000000000000000000000000ffffffff",
    ),
];

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"))
}

fn read(rel: &str) -> Vec<u8> {
    let path = common::testdata().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn recorded_crashes_stay_fixed() {
    for (name, hex_input) in REGRESSIONS {
        target(name)(&hex::decode(hex_input).unwrap());
    }
}

#[test]
fn degenerate_inputs_pass_every_target() {
    let long_ff = vec![0xffu8; 4096];
    let long_zero = vec![0u8; 4096];
    for (_, t) in TARGETS {
        for input in [&[][..], &[0], &[0xff], &long_zero, &long_ff, b"{}", b"[]"] {
            t(input);
        }
    }
}

/// The real quote structures parse (so the round-trip checks above them run) and hold.
#[test]
fn tpm_structures_from_testdata_pass() {
    let attest = read("quote/keylime/quote.out");
    assert!(Attest::parse(&attest).is_ok());
    fuzzing::attest(&attest);
    let sig = read("quote/keylime/quotesig.out");
    assert!(Signature::parse(&sig).is_ok());
    fuzzing::signature(&sig);
    for f in ["quote/keylime/ak.pub", "quote/keylime/ek.pub"] {
        let bytes = read(f);
        assert!(Public::parse_tpm2b(&bytes).is_ok(), "{f}");
        fuzzing::public(&bytes);
        // The TPMT_PUBLIC inside, which is what the protocol carries.
        let inner = &bytes[2..];
        assert!(Public::parse(inner).is_ok(), "{f}");
        fuzzing::public(inner);
    }
    // The quote's own TPML_PCR_SELECTION (tpm2-tools' quotepcr.out is a native-endian dump).
    let Attested::Quote(info) = Attest::parse(&attest).unwrap().attested else {
        panic!("quote.out is not a quote");
    };
    let selection = info.pcr_select.marshal();
    assert!(PcrSelection::parse(&selection).is_ok());
    fuzzing::pcr_selection(&selection);
    let mut with_values = selection.clone();
    with_values.extend_from_slice(&[0u8; 64]);
    assert!(PcrSelection::read(&mut Reader::new("t", &with_values)).is_ok());
    fuzzing::pcr_selection(&with_values);
    // The quote target's framing, with a real quote and signature.
    let mut framed = u16::try_from(attest.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&attest);
    framed.extend_from_slice(&sig);
    fuzzing::quote(&framed);
}

#[test]
fn every_testdata_event_log_passes() {
    let mut parsed = 0;
    for path in files(&common::testdata().join("eventlog")) {
        let bytes = std::fs::read(&path).unwrap();
        parsed += usize::from(EventLog::parse(&bytes).is_ok());
        fuzzing::eventlog(&bytes);
    }
    assert!(parsed >= 20, "only {parsed} event logs parsed");
}

#[test]
fn every_testdata_ima_list_passes() {
    let mut parsed = 0;
    for path in files(&common::testdata().join("ima")) {
        let bytes = std::fs::read(&path).unwrap();
        parsed += usize::from(MeasurementList::parse_ascii(&bytes, HashAlg::Sha1).is_ok());
        parsed += usize::from(MeasurementList::parse_binary(&bytes, HashAlg::Sha1).is_ok());
        fuzzing::ima(&bytes);
    }
    assert!(parsed >= 5, "only {parsed} IMA lists parsed");
}

#[test]
fn every_testdata_certificate_passes() {
    let mut certs = 0;
    for path in files(&common::testdata().join("ekcert")) {
        let pem = std::fs::read(&path).unwrap();
        fuzzing::ekcert(&pem);
        for der in verifier_core::ekcert::pem_certificates(&pem).unwrap() {
            assert!(
                verifier_core::ekcert::Certificate::from_der(&der).is_ok(),
                "{}",
                path.display()
            );
            fuzzing::ekcert(&der);
            certs += 1;
        }
    }
    assert!(certs >= 10, "only {certs} certificates");
}

#[test]
fn every_proto_fixture_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto/v1");
    let mut n = 0;
    for path in files(&dir) {
        fuzzing::proto(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 9, "only {n} fixtures");
}

#[test]
fn keysplit_and_merkle_encodings_pass() {
    let proof = verifier_core::merkle::MerkleTree::new(&[[1u8; 32], [2u8; 32], [3u8; 32]])
        .unwrap()
        .proof(2)
        .unwrap()
        .to_bytes();
    fuzzing::inclusion_proof(&proof);
    let mut payload = vec![1u8];
    payload.extend_from_slice(&[0u8; 12 + 16 + 32]);
    assert!(verifier_core::keysplit::PayloadCiphertext::from_bytes(&payload).is_ok());
    fuzzing::payload_ciphertext(&payload);
    let sealed = [7u8; 32 + 48];
    assert!(verifier_core::keysplit::Sealed::from_bytes(&sealed).is_ok());
    fuzzing::sealed(&sealed);
    let policy = format!(
        r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":7,"allowed":["{}"]}}]}}"#,
        "ab".repeat(32)
    );
    assert!(verifier_core::policy::Policy::from_json(&policy).is_ok());
    fuzzing::policy(policy.as_bytes());
}

#[test]
fn azure_hcl_reports_from_testdata_pass() {
    for rel in [
        "quote/trustee-az-snp-vtpm/hcl-report.bin",
        "quote/trustee-az-tdx-vtpm/hcl-report.bin",
    ] {
        let hcl = read(rel);
        assert!(verifier_core::attester::azure::HclReport::parse(&hcl).is_ok());
        fuzzing::hcl_report(&hcl);
        fuzzing::snp_report(&hcl[32..32 + 1184]);
    }
    fuzzing::hcl_report(&read("quote/trustee-az-snp-vtpm/evidence-v1.json"));
}

/// The bare SNP reports seeded into the `snp_report` corpus: the one the fuzz VCEK signed
/// verifies (allowed: its signed part is the genuine one, also with its unsigned tail
/// changed), the other chip's does not; a changed signed byte of the genuine one must not
/// verify, and would break the invariant if it did.
#[test]
fn bare_snp_reports_from_testdata_pass() {
    let genuine: &[u8] = include_bytes!("../src/attester/testdata/snp-report-milan-virtee.bin");
    fuzzing::snp_report(genuine);
    fuzzing::snp_report(include_bytes!(
        "../src/attester/testdata/snp-report-milan-go-sev-guest.bin"
    ));
    let mut tail = genuine.to_vec();
    tail[1183] ^= 0xff;
    fuzzing::snp_report(&tail);
    let mut signed = genuine.to_vec();
    signed[0x90] ^= 1;
    fuzzing::snp_report(&signed);
}
