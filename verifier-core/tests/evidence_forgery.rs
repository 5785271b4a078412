//! Validation of whole attestations and policy evaluation, from the attacker's side: each
//! test forges exactly one thing a man in the middle or a compromised machine could change,
//! and checks that it is refused with the check that catches it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use verifier_core::eventlog::EventLog;
use verifier_core::evidence::{validate, Expected, Submitted, ValidationError};
use verifier_core::keysplit::NkPrivate;
use verifier_core::merkle::{InclusionProof, MerkleTree};
use verifier_core::policy::{Evaluator, Policy};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::VerifyError;
use verifier_core::wire::{BankSelection, ClockInfo, Digest, HashAlg, PcrSelection, PcrValues};

/// A machine's side of one attestation: two roles' nonces, one quote over the Merkle root.
struct Scenario {
    ak: SoftwareAk,
    nonces: [[u8; 32]; 2],
    proofs: Vec<InclusionProof>,
    nk_pub: Vec<u8>,
    attest: Vec<u8>,
    signature: verifier_core::wire::Signature,
    pcrs: PcrValues,
    log: Vec<u8>,
}

fn pcrs_from_log(log: &[u8], selection: &PcrSelection) -> PcrValues {
    let parsed = EventLog::parse(log).unwrap();
    let mut pcrs = PcrValues::new();
    for (alg, i) in selection.iter() {
        let v = parsed
            .replay()
            .get(alg, i)
            .copied()
            .unwrap_or_else(|| Digest::zero(alg));
        pcrs.insert(i, v);
    }
    pcrs
}

fn selection() -> PcrSelection {
    PcrSelection::new(vec![BankSelection::new(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7, 15],
    )
    .unwrap()])
    .unwrap()
}

fn scenario() -> Scenario {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let log = std::fs::read(common::testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin"))
        .expect("rhel8-uefi.bin");
    let sel = selection();
    let pcrs = pcrs_from_log(&log, &sel);
    let nonces = [[1u8; 32], [2u8; 32]];
    let tree = MerkleTree::new(&nonces).unwrap();
    let proofs = vec![tree.proof(0).unwrap(), tree.proof(1).unwrap()];
    let nk = NkPrivate::generate().unwrap();
    let nk_pub = nk.public().as_bytes().to_vec();
    let extra = verifier_core::merkle::quote_extra_data(&tree.root(), &nk_pub);
    let clock = ClockInfo {
        clock: 1000,
        reset_count: 3,
        restart_count: 0,
        safe: true,
    };
    let (attest, signature) = ak.quote(&extra, &sel, &pcrs, clock, 1).unwrap();
    Scenario {
        ak,
        nonces,
        proofs,
        nk_pub,
        attest,
        signature,
        pcrs,
        log,
    }
}

impl Scenario {
    fn submitted(&self, role: usize) -> Submitted<'_> {
        Submitted {
            attest: &self.attest,
            signature: &self.signature,
            pcrs: &self.pcrs,
            nk_pub: &self.nk_pub,
            proof: &self.proofs[role],
            event_log: Some(&self.log),
            ima_log: None,
        }
    }
    fn expected(&self, role: usize) -> Expected<'_> {
        Expected {
            ak: self.ak.ak(),
            nonce: &self.nonces[role],
        }
    }
}

#[test]
fn genuine_evidence_validates_for_both_roles() {
    let s = scenario();
    for role in 0..2 {
        let v = validate(s.expected(role), s.submitted(role)).unwrap();
        assert_eq!(v.quote().reset_count(), 3);
        assert!(v.event_log().is_some());
    }
}

#[test]
fn nonce_of_another_challenge_refused() {
    let s = scenario();
    let other = [9u8; 32];
    let e = Expected {
        ak: s.ak.ak(),
        nonce: &other,
    };
    assert_eq!(
        validate(e, s.submitted(0)).unwrap_err(),
        ValidationError::Quote(VerifyError::ExtraDataMismatch)
    );
}

#[test]
fn proof_for_the_other_role_slot_refused() {
    let s = scenario();
    // The tenant's proof presented to the verifier: the root computed from the verifier's
    // nonce and the tenant's path is not the signed root.
    let mut sub = s.submitted(0);
    sub.proof = &s.proofs[1];
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::Quote(VerifyError::ExtraDataMismatch)
    );
}

#[test]
fn altered_proof_sibling_refused() {
    let s = scenario();
    let mut proof = s.proofs[0].clone();
    proof.siblings[0][0] ^= 1;
    let mut sub = s.submitted(0);
    sub.proof = &proof;
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::Quote(VerifyError::ExtraDataMismatch)
    );
}

#[test]
fn swapped_nk_refused() {
    let s = scenario();
    let attacker = NkPrivate::generate().unwrap();
    let mut sub = s.submitted(0);
    let swapped = attacker.public().as_bytes().to_vec();
    sub.nk_pub = &swapped;
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::Quote(VerifyError::ExtraDataMismatch)
    );
}

#[test]
fn malformed_nk_refused() {
    let s = scenario();
    let mut sub = s.submitted(0);
    sub.nk_pub = &[4u8; 65];
    assert!(matches!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::NkLength { got: 65, .. }
    ));
}

#[test]
fn quote_from_another_ak_refused() {
    let s = scenario();
    let other = SoftwareAk::generate_ecc_p256().unwrap();
    let e = Expected {
        ak: other.ak(),
        nonce: &s.nonces[0],
    };
    assert_eq!(
        validate(e, s.submitted(0)).unwrap_err(),
        ValidationError::Quote(VerifyError::SignatureInvalid)
    );
}

#[test]
fn reported_pcr_changed_refused() {
    let s = scenario();
    let mut pcrs = s.pcrs.clone();
    pcrs.insert(7, HashAlg::Sha256.hash(b"other"));
    let mut sub = s.submitted(0);
    sub.pcrs = &pcrs;
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::Quote(VerifyError::PcrDigestMismatch)
    );
}

#[test]
fn edited_event_log_refused() {
    let s = scenario();
    // Flip one byte of the SHA-256 digest of the last event extended into PCR 4 (boot
    // applications): the replay no longer gives the quoted PCR 4.
    let parsed = EventLog::parse(&s.log).unwrap();
    let ev = parsed
        .events()
        .iter()
        .rev()
        .find(|e| e.pcr() == 4 && e.is_extended())
        .unwrap();
    let digest = ev
        .digests()
        .get(HashAlg::Sha256)
        .unwrap()
        .as_bytes()
        .to_vec();
    let start = ev.offset();
    let pos = s.log[start..]
        .windows(32)
        .position(|w| w == digest.as_slice())
        .unwrap()
        + start;
    let mut log = s.log.clone();
    log[pos] ^= 0x80;
    let mut sub = s.submitted(0);
    sub.event_log = Some(&log);
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::EventLogMismatch {
            alg: HashAlg::Sha256,
            index: 4
        }
    );
}

#[test]
fn event_log_of_another_machine_refused() {
    let s = scenario();
    let other = std::fs::read(
        common::testdata().join("eventlog/go-tpm-tools/ubuntu-2104-no-secure-boot.bin"),
    )
    .unwrap();
    let mut sub = s.submitted(0);
    sub.event_log = Some(&other);
    assert!(matches!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::EventLogMismatch {
            alg: HashAlg::Sha256,
            ..
        }
    ));
}

#[test]
fn garbage_event_log_refused_with_parse_error() {
    let s = scenario();
    let mut sub = s.submitted(0);
    sub.event_log = Some(&s.log[..100]);
    assert!(matches!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::EventLog(_)
    ));
}

/// The tpm2-tss ima-ng list without its trailing partial entry (see tests/ima_lists.rs).
fn ima_list() -> Vec<u8> {
    let mut ima =
        std::fs::read(common::testdata().join("ima/tpm2-tss/sml-ima-ng-sha1.bin")).unwrap();
    ima.truncate(558);
    ima
}

#[test]
fn ima_log_without_quoted_pcr10_refused() {
    let s = scenario();
    let ima = ima_list();
    let list = verifier_core::ima::MeasurementList::parse_binary(&ima, HashAlg::Sha1).unwrap();
    let mut sub = s.submitted(0);
    sub.ima_log = Some(&list);
    assert_eq!(
        validate(s.expected(0), sub).unwrap_err(),
        ValidationError::ImaNotQuoted
    );
}

#[test]
fn ima_log_replay_checked_against_pcr10() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let ima = ima_list();
    let list = verifier_core::ima::MeasurementList::parse_binary(&ima, HashAlg::Sha1).unwrap();
    let sel = PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[10]).unwrap()]).unwrap();
    let mut pcrs = PcrValues::new();
    pcrs.insert(
        10,
        *list
            .replay(HashAlg::Sha256)
            .pcr(HashAlg::Sha256, 10)
            .unwrap(),
    );
    let nonce = [7u8; 32];
    let tree = MerkleTree::new(&[nonce]).unwrap();
    let nk = [5u8; 32];
    let extra = verifier_core::merkle::quote_extra_data(&tree.root(), &nk);
    let clock = ClockInfo {
        clock: 1,
        reset_count: 1,
        restart_count: 0,
        safe: true,
    };
    let (attest, signature) = ak.quote(&extra, &sel, &pcrs, clock, 1).unwrap();
    let proof = tree.proof(0).unwrap();
    let sub = Submitted {
        attest: &attest,
        signature: &signature,
        pcrs: &pcrs,
        nk_pub: &nk,
        proof: &proof,
        event_log: None,
        ima_log: Some(&list),
    };
    let e = Expected {
        ak: ak.ak(),
        nonce: &nonce,
    };
    assert!(validate(e, sub).unwrap().ima().is_some());

    // Drop the last entry: the shorter list no longer explains the quoted PCR 10.
    let last = list.entries().last().unwrap().location();
    let verifier_core::ima::Location::Offset(cut) = last else {
        panic!("binary list entries have offsets")
    };
    let shorter =
        verifier_core::ima::MeasurementList::parse_binary(&ima[..cut], HashAlg::Sha1).unwrap();
    let mut sub = sub;
    sub.ima_log = Some(&shorter);
    assert_eq!(
        validate(e, sub).unwrap_err(),
        ValidationError::ImaMismatch {
            alg: HashAlg::Sha256
        }
    );
}

#[test]
fn policy_reports_every_failed_rule() {
    let s = scenario();
    let v = validate(s.expected(0), s.submitted(0)).unwrap();
    let good = format!(
        r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":7,"allowed":["{}"]}}],"require_event_log":true}}"#,
        s.pcrs.get(HashAlg::Sha256, 7).unwrap()
    );
    let policy = Policy::from_json(&good).unwrap();
    assert!(policy.evaluate(&v).accepted(), "{}", policy.evaluate(&v));

    let bad = format!(
        r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":7,"allowed":["{}"]}},{{"bank":"sha256","index":4,"allowed":["{}"]}}]}}"#,
        "00".repeat(32),
        "11".repeat(32)
    );
    let verdict = Policy::from_json(&bad).unwrap().evaluate(&v);
    let rules: Vec<_> = verdict.failures.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["pcr sha256:7", "pcr sha256:4"]);
}

#[test]
fn release_pcr_already_extended_refused_by_policy() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let sel = selection();
    let mut pcrs = PcrValues::new();
    for i in [0, 1, 2, 3, 4, 5, 6, 7] {
        pcrs.insert(i, Digest::zero(HashAlg::Sha256));
    }
    let mut released = Digest::zero(HashAlg::Sha256);
    released.extend(b"released");
    pcrs.insert(15, released);
    let nonce = [3u8; 32];
    let tree = MerkleTree::new(&[nonce]).unwrap();
    let nk = [8u8; 32];
    let extra = verifier_core::merkle::quote_extra_data(&tree.root(), &nk);
    let clock = ClockInfo {
        clock: 1,
        reset_count: 1,
        restart_count: 0,
        safe: true,
    };
    let (attest, signature) = ak.quote(&extra, &sel, &pcrs, clock, 1).unwrap();
    let proof = tree.proof(0).unwrap();
    let v = validate(
        Expected {
            ak: ak.ak(),
            nonce: &nonce,
        },
        Submitted {
            attest: &attest,
            signature: &signature,
            pcrs: &pcrs,
            nk_pub: &nk,
            proof: &proof,
            event_log: None,
            ima_log: None,
        },
    )
    .unwrap();
    let verdict = Policy::from_json(r#"{"version":1}"#).unwrap().evaluate(&v);
    assert_eq!(verdict.failures.len(), 1);
    assert_eq!(verdict.failures[0].rule, "release_pcr sha256:15");
    let verdict = Policy::from_json(r#"{"version":1,"require_event_log":true}"#)
        .unwrap()
        .evaluate(&v);
    assert_eq!(verdict.failures.len(), 2);
}

#[test]
fn broken_policy_documents_name_the_field() {
    let e = Policy::from_json(
        "{\"version\":1,\n\"pcrs\":[{\"bank\":\"md5\",\"index\":1,\"allowed\":[\"00\"]}]}",
    )
    .unwrap_err();
    assert!(e.to_string().contains("pcrs[0].bank"), "{e}");
    let e = Policy::from_json("{\"version\":1,\n\"pcr\":[]}").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = Policy::from_json(r#"{"version":2}"#).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
    let e = Policy::from_json(
        r#"{"version":1,"pcrs":[{"bank":"sha256","index":24,"allowed":["00"]}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("pcrs[0].index"), "{e}");
}

/// The TPM path through the evidence-verifier interface: the same checks as `validate`, the
/// challenge is the nonce alone, and the claims come from the verified result.
#[test]
fn tpm_path_through_the_attester_interface() {
    use verifier_core::attester::{EvidenceKind, EvidenceVerifier, TpmQuoteVerifier};
    let s = scenario();
    let v = TpmQuoteVerifier { ak: s.ak.ak() };
    assert_eq!(v.kind(), EvidenceKind::Tpm);
    for role in 0..2 {
        let challenge = v.challenge(s.nonces[role]).unwrap();
        assert_eq!(challenge.params, None);
        let ok = v.verify(&challenge, s.submitted(role)).unwrap();
        assert_eq!(ok.claims().pcrs(), &s.pcrs);
        assert!(ok.claims().snp().is_none());
    }
    // Evidence for role 0's challenge presented under another challenge.
    assert_eq!(
        v.verify(&v.challenge([9; 32]).unwrap(), s.submitted(0))
            .unwrap_err(),
        ValidationError::Quote(VerifyError::ExtraDataMismatch)
    );
}
