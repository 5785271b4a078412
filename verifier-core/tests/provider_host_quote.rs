//! Provider mode, requester side: a host quote shared by a batch verifies for every member
//! and for nobody else. Each attack test forges exactly one thing and checks which check
//! refuses it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use verifier_core::eventlog::EventLog;
use verifier_core::evidence::ValidationError;
use verifier_core::merkle::{quote_extra_data, InclusionProof, MerkleError, MerkleTree};
use verifier_core::proto::v1::{self, inclusion_to_wire, HostQuoteRequest, HostQuoteResponse};
use verifier_core::provider::{
    host_extra_data, validate_host_quote, HostAnswer, HostQuoteError, HostTrust,
};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::VerifyError;
use verifier_core::wire::{
    BankSelection, ClockInfo, Digest, HashAlg, PcrSelection, PcrValues, Signature,
};

fn selection() -> PcrSelection {
    PcrSelection::new(vec![BankSelection::new(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7],
    )
    .unwrap()])
    .unwrap()
}

fn clock() -> ClockInfo {
    ClockInfo {
        clock: 5000,
        reset_count: 2,
        restart_count: 0,
        safe: true,
    }
}

fn host_log() -> Vec<u8> {
    std::fs::read(common::testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin"))
        .expect("testdata eventlog/go-tpm-tools/rhel8-uefi.bin")
}

fn pcrs_of(log: &[u8]) -> PcrValues {
    let parsed = EventLog::parse(log).unwrap();
    let replay = parsed.replay();
    let mut pcrs = PcrValues::new();
    for (alg, i) in selection().iter() {
        pcrs.insert(
            i,
            replay
                .get(alg, i)
                .copied()
                .unwrap_or_else(|| Digest::zero(alg)),
        );
    }
    pcrs
}

/// One provider batch: many requesters' nonces, one quote over the root.
struct Batch {
    nonces: Vec<[u8; 32]>,
    proofs: Vec<InclusionProof>,
    attest: Vec<u8>,
    signature: Signature,
    pcrs: PcrValues,
    log: Vec<u8>,
}

fn batch(ak: &SoftwareAk, first_nonce: u8, n: usize) -> Batch {
    let nonces: Vec<[u8; 32]> = (0..n)
        .map(|i| {
            let mut x = [first_nonce; 32];
            x[..8].copy_from_slice(&(i as u64).to_be_bytes());
            x
        })
        .collect();
    let tree = MerkleTree::new(&nonces).unwrap();
    let proofs = (0..n).map(|i| tree.proof(i).unwrap()).collect();
    let log = host_log();
    let pcrs = pcrs_of(&log);
    let (attest, signature) = ak
        .quote(
            &host_extra_data(&tree.root()),
            &selection(),
            &pcrs,
            clock(),
            1,
        )
        .unwrap();
    Batch {
        nonces,
        proofs,
        attest,
        signature,
        pcrs,
        log,
    }
}

impl Batch {
    fn answer(&self, i: usize) -> HostAnswer<'_> {
        HostAnswer {
            attest: &self.attest,
            signature: &self.signature,
            pcrs: &self.pcrs,
            proof: &self.proofs[i],
            event_log: Some(&self.log),
        }
    }
}

fn check<'a>(
    ak: &SoftwareAk,
    nonce: &[u8; 32],
    answer: HostAnswer<'a>,
) -> Result<verifier_core::provider::VerifiedHostQuote<'a>, HostQuoteError> {
    validate_host_quote(HostTrust { ak: ak.ak(), nonce }, answer)
}

#[test]
fn every_member_of_a_batch_verifies_with_the_shared_quote() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 0xa0, 200);
    for i in 0..b.nonces.len() {
        let v = check(&ak, &b.nonces[i], b.answer(i)).unwrap();
        assert_eq!(v.batch_size(), 200);
        assert_eq!(v.quote().pcrs(), &b.pcrs);
        assert!(v.event_log().is_some());
        assert_eq!(v.quote().reset_count(), 2);
    }
}

#[test]
fn a_batch_of_one_verifies() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 1, 1);
    assert!(b.proofs[0].siblings.is_empty());
    check(&ak, &b.nonces[0], b.answer(0)).unwrap();
}

#[test]
fn wrong_nonce_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 2, 7);
    let mine = [0x55u8; 32];
    let err = check(&ak, &mine, b.answer(3)).unwrap_err();
    assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
}

#[test]
fn proof_for_another_leaf_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 3, 7);
    // Requester 2's nonce with requester 5's proof (a provider mixing up answers).
    let err = check(&ak, &b.nonces[2], b.answer(5)).unwrap_err();
    assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
}

#[test]
fn altered_sibling_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 4, 9);
    for s in 0..b.proofs[4].siblings.len() {
        let mut proof = b.proofs[4].clone();
        proof.siblings[s][0] ^= 1;
        let answer = HostAnswer {
            proof: &proof,
            ..b.answer(4)
        };
        let err = check(&ak, &b.nonces[4], answer).unwrap_err();
        assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
    }
}

#[test]
fn extra_or_missing_sibling_is_refused_as_a_bad_proof() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 5, 9);
    let mut longer = b.proofs[0].clone();
    longer.siblings.push([0u8; 32]);
    let answer = HostAnswer {
        proof: &longer,
        ..b.answer(0)
    };
    assert!(matches!(
        check(&ak, &b.nonces[0], answer).unwrap_err(),
        HostQuoteError::Inclusion(MerkleError::WrongSiblingCount { .. })
    ));
    let mut shorter = b.proofs[0].clone();
    shorter.siblings.pop();
    let answer = HostAnswer {
        proof: &shorter,
        ..b.answer(0)
    };
    assert!(matches!(
        check(&ak, &b.nonces[0], answer).unwrap_err(),
        HostQuoteError::Inclusion(MerkleError::WrongSiblingCount { .. })
    ));
}

#[test]
fn quote_of_another_batch_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let mine = batch(&ak, 6, 8);
    let other = batch(&ak, 7, 8);
    // My (valid) proof, but the quote over the other batch's root.
    let answer = HostAnswer {
        proof: &mine.proofs[1],
        ..other.answer(1)
    };
    let err = check(&ak, &mine.nonces[1], answer).unwrap_err();
    assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
}

#[test]
fn stale_quote_replayed_for_a_new_nonce_is_refused() {
    // A provider (or a man in the middle) answers a fresh request with an earlier, genuine
    // answer: the earlier batch cannot contain a nonce made after it.
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let earlier = batch(&ak, 8, 4);
    let fresh = [0x99u8; 32];
    for i in 0..4 {
        let err = check(&ak, &fresh, earlier.answer(i)).unwrap_err();
        assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
    }
}

#[test]
fn quote_by_another_ak_is_refused() {
    let host = SoftwareAk::generate_ecc_p256().unwrap();
    let impostor = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&impostor, 9, 3);
    let err = check(&host, &b.nonces[0], b.answer(0)).unwrap_err();
    assert_eq!(err, HostQuoteError::Quote(VerifyError::SignatureInvalid));
}

#[test]
fn agent_binding_quote_is_not_a_host_quote() {
    // A quote the host AK made for an unlock (agent binding over the same root, any NK)
    // must not pass as a provider answer.
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 10, 2);
    let root = MerkleTree::new(&b.nonces).unwrap().root();
    for nk in [&[][..], &[0u8; 32][..]] {
        let (attest, signature) = ak
            .quote(
                &quote_extra_data(&root, nk),
                &selection(),
                &b.pcrs,
                clock(),
                1,
            )
            .unwrap();
        let answer = HostAnswer {
            attest: &attest,
            signature: &signature,
            ..b.answer(0)
        };
        let err = check(&ak, &b.nonces[0], answer).unwrap_err();
        assert_eq!(err, HostQuoteError::Quote(VerifyError::ExtraDataMismatch));
    }
}

#[test]
fn altered_pcr_value_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 11, 3);
    let mut pcrs = b.pcrs.clone();
    pcrs.insert(7, Digest::filled(HashAlg::Sha256, 0x42));
    let answer = HostAnswer {
        pcrs: &pcrs,
        ..b.answer(0)
    };
    let err = check(&ak, &b.nonces[0], answer).unwrap_err();
    assert_eq!(err, HostQuoteError::Quote(VerifyError::PcrDigestMismatch));
}

#[test]
fn event_log_of_another_host_is_refused() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let b = batch(&ak, 12, 3);
    let other =
        std::fs::read(common::testdata().join("eventlog/go-tpm-tools/arch-linux-workstation.bin"))
            .unwrap();
    let answer = HostAnswer {
        event_log: Some(&other),
        ..b.answer(0)
    };
    let err = check(&ak, &b.nonces[0], answer).unwrap_err();
    assert!(
        matches!(
            err,
            HostQuoteError::EventLog(ValidationError::EventLogMismatch { .. })
        ),
        "{err:?}"
    );
    let answer = HostAnswer {
        event_log: Some(&b.log[..b.log.len() / 2]),
        ..b.answer(0)
    };
    assert!(matches!(
        check(&ak, &b.nonces[0], answer).unwrap_err(),
        HostQuoteError::EventLog(_)
    ));
}

// --- wire types --------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/proto/v1")
        .join(format!("{name}.json"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

#[test]
fn fixtures_round_trip() {
    for name in [
        "host_quote_request",
        "host_quote_response",
        "host_ak_response",
    ] {
        let text = fixture(name);
        let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let again: serde_json::Value = match name {
            "host_quote_request" => serde_json::to_value(
                v1::decode::<HostQuoteRequest>(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
            ),
            "host_quote_response" => serde_json::to_value(
                v1::decode::<HostQuoteResponse>(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
            ),
            _ => serde_json::to_value(
                v1::decode::<v1::HostAkResponse>(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
            ),
        }
        .unwrap();
        assert_eq!(again, value, "{name} does not re-encode identically");
    }
}

#[test]
fn response_fixture_verifies_for_its_nonce_and_only_with_its_ak() {
    let req: HostQuoteRequest = v1::decode(&fixture("host_quote_request")).unwrap();
    let resp: HostQuoteResponse = v1::decode(&fixture("host_quote_response")).unwrap();
    let ak = verifier_core::quote::AkPublic::try_from(
        verifier_core::wire::Public::parse(resp.ak_pub.as_bytes()).unwrap(),
    )
    .unwrap();
    let nonce = req.nonce().unwrap();
    let sig = Signature::parse(resp.signature.as_bytes()).unwrap();
    let pcrs = resp.pcr_values().unwrap();
    let proof = resp.inclusion.to_merkle().unwrap();
    let answer = HostAnswer {
        attest: resp.quote.as_bytes(),
        signature: &sig,
        pcrs: &pcrs,
        proof: &proof,
        event_log: resp.event_log.as_ref().map(|l| l.as_bytes()),
    };
    let v = validate_host_quote(
        HostTrust {
            ak: &ak,
            nonce: &nonce,
        },
        answer,
    )
    .unwrap();
    assert_eq!(v.batch_size(), 3);
    let other = SoftwareAk::generate_ecc_p256().unwrap();
    assert_eq!(
        validate_host_quote(
            HostTrust {
                ak: other.ak(),
                nonce: &nonce
            },
            answer
        )
        .unwrap_err(),
        HostQuoteError::Quote(VerifyError::SignatureInvalid)
    );
}

#[test]
fn malformed_messages_are_refused_with_the_field_named() {
    let short = br#"{"nonce":"AAAA"}"#;
    let e = v1::decode::<HostQuoteRequest>(short)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nonce"), "{e}");
    let unknown = br#"{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","x":1}"#;
    assert!(v1::decode::<HostQuoteRequest>(unknown).is_err());

    let mut resp: serde_json::Value =
        serde_json::from_slice(&fixture("host_quote_response")).unwrap();
    resp["inclusion"]["leaf_index"] = serde_json::json!(3);
    let e = v1::decode::<HostQuoteResponse>(&serde_json::to_vec(&resp).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("inclusion.leaf_index"), "{e}");
    let mut resp: serde_json::Value =
        serde_json::from_slice(&fixture("host_quote_response")).unwrap();
    resp["ak_pub"] = serde_json::json!("");
    let e = v1::decode::<HostQuoteResponse>(&serde_json::to_vec(&resp).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ak_pub"), "{e}");
}

/// Writes the fixtures (run with `UNLOCK_WRITE_PROVIDER_FIXTURES=1` to regenerate them; the
/// regular run checks they exist and verify, above).
#[test]
fn generate_fixtures_on_request() {
    if std::env::var("UNLOCK_WRITE_PROVIDER_FIXTURES").as_deref() != Ok("1") {
        assert!(!fixture("host_quote_response").is_empty());
        return;
    }
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let nonces: Vec<[u8; 32]> = (1..=3u8).map(|i| [i; 32]).collect();
    let tree = MerkleTree::new(&nonces).unwrap();
    let sel = selection();
    let pcrs = pcrs_of(&host_log());
    let (attest, signature) = ak
        .quote(&host_extra_data(&tree.root()), &sel, &pcrs, clock(), 1)
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto/v1");
    let req = HostQuoteRequest {
        nonce: nonces[1].as_slice().into(),
    };
    let resp = HostQuoteResponse {
        quote: attest.into(),
        signature: signature.marshal().into(),
        pcrs: HostQuoteResponse::banks_of(&pcrs),
        event_log: None,
        ak_pub: ak.public().marshal().into(),
        inclusion: inclusion_to_wire(&tree.proof(1).unwrap()),
    };
    let ak_resp = v1::HostAkResponse {
        ak_pub: ak.public().marshal().into(),
        ak_name: ak.ak().name().into(),
    };
    let write = |name: &str, v: serde_json::Value| {
        let mut text = serde_json::to_string_pretty(&v).unwrap();
        text.push('\n');
        std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
    };
    write("host_quote_request", serde_json::to_value(&req).unwrap());
    write("host_quote_response", serde_json::to_value(&resp).unwrap());
    write("host_ak_response", serde_json::to_value(&ak_resp).unwrap());
}
