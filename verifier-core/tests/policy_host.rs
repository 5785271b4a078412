//! The policy's `host` section: the document (optional, strict, errors name the field), its
//! diff, and the requester's decision on a provider's answer. Each forgery test changes
//! exactly one thing in an otherwise valid answer and checks which check refuses it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use verifier_core::eventlog::EventLog;
use verifier_core::merkle::{quote_extra_data, MerkleTree};
use verifier_core::policy::{diff, Effect, Policy, PolicyError};
use verifier_core::proto::v1::{inclusion_to_wire, HostQuoteResponse};
use verifier_core::proto::Base64Bytes;
use verifier_core::provider::{check_host_answer, host_extra_data, HostCheckError, HostQuoteError};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::VerifyError;
use verifier_core::wire::{BankSelection, ClockInfo, Digest, HashAlg, PcrSelection, PcrValues};

fn selection() -> PcrSelection {
    PcrSelection::new(vec![BankSelection::new(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7],
    )
    .unwrap()])
    .unwrap()
}

fn host_log() -> Vec<u8> {
    std::fs::read(common::testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin"))
        .expect("testdata eventlog/go-tpm-tools/rhel8-uefi.bin")
}

fn pcrs_of(log: &[u8]) -> PcrValues {
    let parsed = EventLog::parse(log).unwrap();
    let mut pcrs = PcrValues::new();
    for (alg, i) in selection().iter() {
        pcrs.insert(
            i,
            parsed
                .replay()
                .get(alg, i)
                .copied()
                .unwrap_or_else(|| Digest::zero(alg)),
        );
    }
    pcrs
}

fn b64_ak(ak: &SoftwareAk) -> String {
    STANDARD.encode(ak.public().marshal())
}

/// A valid provider answer to `nonces[index]` in a batch of `nonces`, quoted by `ak`.
fn answer(ak: &SoftwareAk, nonces: &[[u8; 32]], index: usize, log: bool) -> HostQuoteResponse {
    let tree = MerkleTree::new(nonces).unwrap();
    let log_bytes = host_log();
    let pcrs = pcrs_of(&log_bytes);
    let clock = ClockInfo {
        clock: 1000,
        reset_count: 3,
        restart_count: 0,
        safe: true,
    };
    let (attest, signature) = ak
        .quote(
            &host_extra_data(&tree.root()),
            &selection(),
            &pcrs,
            clock,
            1,
        )
        .unwrap();
    HostQuoteResponse {
        quote: Base64Bytes::new(attest),
        signature: Base64Bytes::new(signature.marshal()),
        pcrs: HostQuoteResponse::banks_of(&pcrs),
        event_log: log.then(|| Base64Bytes::new(log_bytes)),
        ak_pub: Base64Bytes::new(ak.public().marshal()),
        inclusion: inclusion_to_wire(&tree.proof(index).unwrap()),
    }
}

/// A policy whose host section pins `ak` and allows the host log's PCR 0 and 7.
fn policy(ak: &SoftwareAk, extra: &str) -> Policy {
    let pcrs = pcrs_of(&host_log());
    let rule = |i: u8| {
        format!(
            r#"{{"bank":"sha256","index":{i},"allowed":["{}"]}}"#,
            pcrs.get(HashAlg::Sha256, i).unwrap()
        )
    };
    Policy::from_json(&format!(
        r#"{{"version":1,"host":{{"provider":"http://127.0.0.1:8450","ak_pub":"{}","pcrs":[{},{}]{extra}}}}}"#,
        b64_ak(ak),
        rule(0),
        rule(7)
    ))
    .unwrap()
}

fn err(json: &str) -> String {
    match Policy::from_json(json) {
        Ok(_) => String::from("(accepted)"),
        Err(e) => e.to_string(),
    }
}

fn nonces(n: u8) -> Vec<[u8; 32]> {
    (0..n).map(|i| [i + 1; 32]).collect()
}

#[test]
fn documents_without_host_are_unchanged() {
    let p = Policy::from_json(r#"{"version":1}"#).unwrap();
    assert!(p.host().is_none());
    let json = serde_json::to_string(p.document()).unwrap();
    assert!(!json.contains("host"), "{json}");
}

#[test]
fn host_section_compiles_and_round_trips() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let name = hex::encode(ak.ak().name());
    let p = policy(
        &ak,
        &format!(r#","ak_name":"{name}","require_event_log":true,"timeout_ms":1500"#),
    );
    let host = p.host().unwrap();
    assert_eq!(host.provider(), "http://127.0.0.1:8450");
    assert_eq!(host.quote_url(), "http://127.0.0.1:8450/v1/provider/quote");
    assert_eq!(host.timeout().as_millis(), 1500);
    assert_eq!(host.ak().name(), ak.ak().name());
    // The host's PCRs are the host's: they do not enter the machine's challenge selection.
    let sel: Vec<u8> = p.selection().banks()[0].indexes().collect();
    assert_eq!(sel, [15]);
    let again = Policy::from_json(&serde_json::to_string(p.document()).unwrap()).unwrap();
    assert_eq!(p, again);
    let defaulted = policy(&ak, "");
    assert_eq!(defaulted.host().unwrap().timeout().as_millis(), 5000);
}

#[test]
fn broken_host_sections_name_the_field() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let good = b64_ak(&ak);
    let doc = |body: &str| format!(r#"{{"version":1,"host":{{{body}}}}}"#);
    let base = format!(r#""provider":"http://h:1","ak_pub":"{good}""#);

    let e = err(&doc(&format!(r#"{base},"pcr":[]"#)));
    assert!(
        e.contains("host") && e.contains("unknown field `pcr`"),
        "{e}"
    );
    let e = err(&doc(&format!(r#""ak_pub":"{good}""#)));
    assert!(e.contains("missing field `provider`"), "{e}");
    for bad in [
        "ftp://h",
        "h:8450",
        "http://",
        "http://:80/",
        "http://u@h",
        "http://h/?x=1",
        "http://h x",
    ] {
        let e = err(&doc(&format!(r#""provider":"{bad}","ak_pub":"{good}""#)));
        assert!(e.contains("policy field host.provider"), "{bad}: {e}");
    }
    let e = err(&doc(r#""provider":"http://h","ak_pub":"not base64!""#));
    assert!(e.contains("host.ak_pub") && e.contains("base64"), "{e}");
    let e = err(&doc(r#""provider":"http://h","ak_pub":"AAEC""#));
    assert!(
        e.contains("host.ak_pub") && e.contains("TPMT_PUBLIC"),
        "{e}"
    );
    let other = SoftwareAk::generate_ecc_p256().unwrap();
    let e = err(&doc(&format!(
        r#"{base},"ak_name":"{}""#,
        hex::encode(other.ak().name())
    )));
    assert!(e.contains("host.ak_name") && e.contains("wrong key"), "{e}");
    let e = err(&doc(&format!(r#"{base},"ak_name":"zz""#)));
    assert!(e.contains("host.ak_name") && e.contains("hex"), "{e}");
    for t in [0, 60_001] {
        let e = err(&doc(&format!(r#"{base},"timeout_ms":{t}"#)));
        assert!(e.contains("host.timeout_ms"), "{e}");
    }
    let e = err(&doc(&format!(
        r#"{base},"pcrs":[{{"bank":"sha256","index":0,"allowed":["abc"]}}]"#
    )));
    assert!(
        e.contains("host.pcrs[0].allowed[0]") && e.contains("sha256"),
        "{e}"
    );
    let e = err(&doc(&format!(
        r#"{base},"measured_boot":{{"pcrs":[4],"require_secure_boot":true}}"#
    )));
    assert!(e.contains("host.measured_boot.pcrs"), "{e}");
    let e = err(&doc(&format!(r#"{base},"release_pcr":null"#)));
    assert!(e.contains("unknown field `release_pcr`"), "{e}");
    let e = err(&doc(&format!(r#"{base},"host":{{}}"#)));
    assert!(e.contains("unknown field `host`"), "{e}");
    assert!(matches!(
        Policy::from_json(&doc(&base)),
        Ok(p) if p.host().is_some()
    ));
    assert!(matches!(
        Policy::from_json(&doc(r#""provider":"http://h","ak_pub":"""#)),
        Err(PolicyError::Invalid { .. })
    ));
}

#[test]
fn a_fresh_answer_by_the_pinned_ak_meeting_the_rules_is_accepted() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let p = policy(
        &ak,
        r#","require_event_log":true,"require_clock_safe":true,"measured_boot":{"pcrs":[0,1,2,3,4,5,6,7]}"#,
    );
    let n = nonces(5);
    let a = answer(&ak, &n, 3, true);
    let ok = check_host_answer(p.host().unwrap(), &n[3], &a).unwrap();
    assert_eq!(ok.batch_size, 5);
    assert_eq!(ok.reset_count, 3);
}

#[test]
fn host_pcr_not_allowed_is_refused_by_the_host_rules() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let p = Policy::from_json(&format!(
        r#"{{"version":1,"host":{{"provider":"http://h","ak_pub":"{}","pcrs":[{{"bank":"sha256","index":0,"allowed":["{}"]}}]}}}}"#,
        b64_ak(&ak),
        "11".repeat(32)
    ))
    .unwrap();
    let n = nonces(1);
    let e = check_host_answer(p.host().unwrap(), &n[0], &answer(&ak, &n, 0, true)).unwrap_err();
    let HostCheckError::Policy(v) = &e else {
        panic!("{e}")
    };
    assert_eq!(v.failures.len(), 1, "{v}");
    assert_eq!(v.failures[0].rule, "host.pcr sha256:0");
}

#[test]
fn missing_host_event_log_is_refused_when_required() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let p = policy(&ak, r#","require_event_log":true"#);
    let n = nonces(2);
    let e = check_host_answer(p.host().unwrap(), &n[1], &answer(&ak, &n, 1, false)).unwrap_err();
    assert!(
        matches!(&e, HostCheckError::Policy(v) if v.failures[0].rule == "host.require_event_log"),
        "{e}"
    );
    // Without the requirement, the same answer passes.
    let p = policy(&ak, "");
    check_host_answer(p.host().unwrap(), &n[1], &answer(&ak, &n, 1, false)).unwrap();
}

#[test]
fn forged_answers_are_refused_as_invalid_quotes() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let p = policy(&ak, "");
    let host = p.host().unwrap();
    let n = nonces(4);
    let good = answer(&ak, &n, 2, true);
    check_host_answer(host, &n[2], &good).unwrap();

    // Another AK (the provider restarted with a new one, or another host): the signature.
    let other = SoftwareAk::generate_ecc_p256().unwrap();
    let e = check_host_answer(host, &n[2], &answer(&other, &n, 2, true)).unwrap_err();
    assert!(
        matches!(
            e,
            HostCheckError::Quote(HostQuoteError::Quote(VerifyError::SignatureInvalid))
        ),
        "{e}"
    );

    // A replayed answer: valid, but for another requester's nonce.
    let mine = [0xeeu8; 32];
    let e = check_host_answer(host, &mine, &good).unwrap_err();
    assert_eq!(
        e,
        HostCheckError::Quote(HostQuoteError::Quote(VerifyError::ExtraDataMismatch))
    );

    // An agent quote (the agent binding) over the same nonce never passes as a host quote.
    let tree = MerkleTree::new(&n).unwrap();
    let pcrs = pcrs_of(&host_log());
    let (attest, sig) = ak
        .quote(
            &quote_extra_data(&tree.root(), &[]),
            &selection(),
            &pcrs,
            ClockInfo {
                clock: 1,
                reset_count: 3,
                restart_count: 0,
                safe: true,
            },
            1,
        )
        .unwrap();
    let mut agent_quote = good.clone();
    agent_quote.quote = Base64Bytes::new(attest);
    agent_quote.signature = Base64Bytes::new(sig.marshal());
    let e = check_host_answer(host, &n[2], &agent_quote).unwrap_err();
    assert_eq!(
        e,
        HostCheckError::Quote(HostQuoteError::Quote(VerifyError::ExtraDataMismatch))
    );

    // A reported PCR value changed after quoting: the quoted digest.
    let mut pcr_forged = good.clone();
    pcr_forged.pcrs[0].values[0].digest = Base64Bytes::new(vec![0x42; 32]);
    let e = check_host_answer(host, &n[2], &pcr_forged).unwrap_err();
    assert_eq!(
        e,
        HostCheckError::Quote(HostQuoteError::Quote(VerifyError::PcrDigestMismatch))
    );

    // An event log that does not replay to the quoted PCRs (the sha256 digest of an event
    // extended into PCR 0 changed).
    let log = host_log();
    let digest = {
        let parsed = EventLog::parse(&log).unwrap();
        let e = parsed
            .events()
            .iter()
            .find(|e| e.is_extended() && e.pcr() == 0)
            .unwrap();
        e.digests()
            .as_slice()
            .iter()
            .find(|d| d.alg() == HashAlg::Sha256)
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let at = log.windows(32).position(|w| w == digest).unwrap();
    let mut forged = log.clone();
    forged[at] ^= 1;
    let mut log_forged = good.clone();
    log_forged.event_log = Some(Base64Bytes::new(forged));
    let e = check_host_answer(host, &n[2], &log_forged).unwrap_err();
    assert!(
        matches!(e, HostCheckError::Quote(HostQuoteError::EventLog(_))),
        "{e}"
    );

    // An event's data changed but not its digest: the log still replays, and the host rules
    // refuse it as they would the machine's (its data is not what was measured).
    let mut data_forged = log.clone();
    let at = data_forged.len() - 40;
    data_forged[at] ^= 1;
    let mut d = good.clone();
    d.event_log = Some(Base64Bytes::new(data_forged));
    let e = check_host_answer(host, &n[2], &d).unwrap_err();
    assert!(
        matches!(&e, HostCheckError::Policy(v) if v.failures[0].rule == "host.event_digest_mismatch"),
        "{e}"
    );

    // Undecodable parts: a signature that is not a TPMT_SIGNATURE, an empty quote.
    let mut bad_sig = good.clone();
    bad_sig.signature = Base64Bytes::new(vec![0, 1, 2]);
    assert!(matches!(
        check_host_answer(host, &n[2], &bad_sig),
        Err(HostCheckError::Signature(_))
    ));
    let mut empty = good.clone();
    empty.quote = Base64Bytes::new(Vec::new());
    assert!(matches!(
        check_host_answer(host, &n[2], &empty),
        Err(HostCheckError::Malformed(_))
    ));

    // The answer's own `ak_pub` is never used: naming the other AK there changes nothing.
    let mut claims_other = answer(&other, &n, 2, true);
    claims_other.ak_pub = good.ak_pub.clone();
    assert!(check_host_answer(host, &n[2], &claims_other).is_err());
}

#[test]
fn host_changes_show_in_the_diff() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let a = policy(&ak, "").document().clone();
    let mut b = a.clone();
    b.host.as_mut().unwrap().pcrs[0]
        .allowed
        .push("ff".repeat(32));
    b.host.as_mut().unwrap().require_event_log = true;
    let d = diff(&a, &b);
    assert_eq!(d.changes.len(), 2, "{d}");
    assert_eq!(d.changes[0].path, "host.pcrs[sha256:0].allowed");
    assert_eq!(d.changes[0].effect, Effect::Widens);
    assert_eq!(d.changes[1].path, "host.require_event_log");
    assert_eq!(d.changes[1].effect, Effect::Narrows);

    let mut moved = a.clone();
    moved.host.as_mut().unwrap().provider = "http://elsewhere:8450".into();
    let d = diff(&a, &moved);
    assert_eq!(d.changes[0].path, "host.provider");
    assert_eq!(d.changes[0].effect, Effect::Changes);

    let mut none = a.clone();
    none.host = None;
    let d = diff(&a, &none);
    assert_eq!(d.changes.len(), 1, "{d}");
    assert_eq!(
        (d.changes[0].path.as_str(), d.changes[0].effect),
        ("host", Effect::Widens)
    );
    assert!(!diff(&none, &a).may_widen());
}
