//! Protocol v1 wire types: every fixture decodes, validates and re-encodes to the same JSON;
//! malformed messages are refused with an error naming the field.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use verifier_core::merkle::quote_extra_data;
use verifier_core::proto::v1::{
    self, activation_proof, verify_activation_proof, ActivateRequest, ActivateResponse, AgentId,
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorCode, ErrorResponse,
    Id, ImaLogFormat, NkKem, RegisterRequest, RegisterResponse, Role, Validate,
};
use verifier_core::proto::{agent_id, ProtoError};
use verifier_core::wire::HashAlg;

fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/proto/v1"
    ))
}

fn fixture(name: &str) -> Vec<u8> {
    let p = fixture_dir().join(format!("{name}.json"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn fixture_value(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn round_trip<T: DeserializeOwned + Serialize + Validate>(name: &str) -> T {
    let msg: T = v1::decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again: Value = serde_json::from_slice(&v1::encode(&msg).unwrap()).unwrap();
    assert_eq!(
        again,
        fixture_value(name),
        "{name} does not re-encode identically"
    );
    msg
}

#[test]
fn every_fixture_round_trips() {
    let names = [
        "activate_request",
        "activate_response",
        "attest_request",
        "attest_response",
        "captured_evidence",
        "challenge_request",
        "challenge_response",
        "deposit_nonce_request",
        "deposit_nonce_response",
        "deposit_request",
        "deposit_response",
        "enroll_request",
        "enrollment_info",
        "enrollment_list",
        "error_response",
        "host_ak_response",
        "host_hello_request",
        "host_hello_response",
        "host_job",
        "host_next_request",
        "host_quote_post",
        "host_quote_request",
        "host_quote_response",
        "iak_bind_request",
        "iak_bind_response",
        "policy_apply_request",
        "policy_apply_response",
        "policy_create_request",
        "policy_diff_info",
        "policy_list",
        "policy_update_request",
        "policy_version_info",
        "register_iak_request",
        "register_request",
        "register_response",
        "snp_vtpm_register_request",
    ];
    let mut found: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    let want: Vec<String> = names.iter().map(|n| format!("{n}.json")).collect();
    assert_eq!(found, want, "one fixture per message, each tested below");

    let reg: RegisterRequest = round_trip("register_request");
    assert_eq!(reg.ek_pub.len(), 314);
    assert!(reg.ek_cert.is_some());
    let _: RegisterResponse = round_trip("register_response");
    // The IAK path: the OEM's certificate (and intermediates) instead of MakeCredential.
    let iak: v1::RegisterIakRequest = round_trip("register_iak_request");
    assert_eq!(iak.ek_pub, reg.ek_pub);
    assert_eq!(iak.iak_chain.len(), 1);
    let bind: v1::IakBindRequest = round_trip("iak_bind_request");
    assert_eq!(bind.agent_id, AgentId::of_ek(iak.ek_pub.as_bytes()));
    let bound: v1::IakBindResponse = round_trip("iak_bind_response");
    assert_eq!(bound.identity, bind.identity);
    let _: v1::DepositNonceRequest = round_trip("deposit_nonce_request");
    let _: v1::DepositNonceResponse = round_trip("deposit_nonce_response");
    let dep: v1::DepositRequest = round_trip("deposit_request");
    assert_eq!(dep.deposit.share.len(), 32);
    assert_eq!(
        format!("{:?}", dep.deposit).matches("[redacted]").count(),
        1
    );
    let _: v1::DepositResponse = round_trip("deposit_response");
    // An Azure SEV-SNP CVM's registration (the real captured HCL report and VCEK; the EK
    // and AK public areas around the runtime data's HCLEkPub and HCLAkPub).
    let snp: v1::SnpVtpmRegisterRequest = round_trip("snp_vtpm_register_request");
    assert_eq!(snp.hcl_report.len(), 2600);
    assert_eq!(&snp.hcl_report.as_bytes()[..4], b"HCLA");

    let act: ActivateRequest = round_trip("activate_request");
    assert_eq!(act.registration_id.as_str(), "reg_5f2b9c0e1a7d4e3b");
    let done: ActivateResponse = round_trip("activate_response");
    assert_eq!(done.agent_id, AgentId::of_ek(reg.ek_pub.as_bytes()));
    let _: ChallengeRequest = round_trip("challenge_request");
    let ch: ChallengeResponse = round_trip("challenge_response");
    assert_eq!(ch.nonce().unwrap().len(), 32);
    assert_eq!(ch.role, Role::Verifier);
    assert_eq!(ch.pcr_selection[0].hash, HashAlg::Sha256);
    let at: AttestRequest = round_trip("attest_request");
    let pcrs = at.pcr_values().unwrap();
    assert_eq!(pcrs.iter().count(), 5);
    assert!(pcrs.get(HashAlg::Sha1, 10).is_some());
    let ima = at.ima_log.as_ref().unwrap();
    assert_eq!(ima.format, ImaLogFormat::Ascii);
    assert_eq!(ima.parse().unwrap().findings(), vec![]);
    assert_eq!(at.nk_pub.kem, NkKem::X25519HkdfSha256);
    let resp: AttestResponse = round_trip("attest_response");
    assert!(resp.payload.is_some());
    let err: ErrorResponse = round_trip("error_response");
    assert_eq!(err.code, ErrorCode::SessionTerminated);
    // Provider mode (host quotes for many requesters).
    let hq: v1::HostQuoteRequest = round_trip("host_quote_request");
    assert_eq!(hq.nonce().unwrap().len(), 32);
    let ha: v1::HostQuoteResponse = round_trip("host_quote_response");
    assert!(ha.pcr_values().unwrap().iter().count() > 0);
    let hak: v1::HostAkResponse = round_trip("host_ak_response");
    let hello: v1::HostHelloRequest = round_trip("host_hello_request");
    assert_eq!(hello.ak_pub, hak.ak_pub);
    let _: v1::HostHelloResponse = round_trip("host_hello_response");
    let _: v1::HostNextRequest = round_trip("host_next_request");
    let job: v1::HostJob = round_trip("host_job");
    assert_eq!(job.root().unwrap().len(), 32);
    let post: v1::HostQuotePost = round_trip("host_quote_post");
    assert_eq!(post.pcr_values().unwrap(), ha.pcr_values().unwrap());
    // Admin API (unlockctl <-> a role), captured from a running server.
    let enroll: v1::EnrollRequest = round_trip("enroll_request");
    assert_eq!(enroll.agent_id, AgentId::of_ek(enroll.ek_pub.as_bytes()));
    assert_eq!(enroll.evidence, v1::EvidenceKind::Tpm, "absent means tpm");
    let info: v1::EnrollmentInfo = round_trip("enrollment_info");
    assert_eq!(info.agent_id, enroll.agent_id);
    let list: v1::EnrollmentList = round_trip("enrollment_list");
    assert_eq!(list.enrollments.len(), 1);
    let _: v1::PolicyCreateRequest = round_trip("policy_create_request");
    let _: v1::PolicyUpdateRequest = round_trip("policy_update_request");
    let v2: v1::PolicyVersionInfo = round_trip("policy_version_info");
    assert_eq!(v2.policy.version, 2);
    assert!(v2.diff_from_previous.is_some());
    let _: v1::PolicyList = round_trip("policy_list");
    let _: v1::PolicyDiffInfo = round_trip("policy_diff_info");
    let _: v1::PolicyApplyRequest = round_trip("policy_apply_request");
    let applied: v1::PolicyApplyResponse = round_trip("policy_apply_response");
    assert!(applied.dry_run);
    // Evidence captured by `initrd-agent evidence --out` from a swtpm.
    let ev: v1::CapturedEvidence = round_trip("captured_evidence");
    assert_eq!(ev.agent_id, enroll.agent_id);
}

fn decode_value<T: DeserializeOwned + Validate>(v: &Value) -> Result<T, ProtoError> {
    v1::decode(&serde_json::to_vec(v).unwrap())
}

fn decode_path(err: ProtoError) -> (String, String) {
    match err {
        ProtoError::Decode { path, message } => (path, message),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn unknown_fields_are_refused() {
    let mut v = fixture_value("register_request");
    v["ek_pubkey"] = json!("AAAA");
    let (path, message) = decode_path(decode_value::<RegisterRequest>(&v).unwrap_err());
    assert!(message.contains("unknown field `ek_pubkey`"), "{message}");
    assert_eq!(path, "ek_pubkey");
    // Nested too.
    let mut v = fixture_value("attest_request");
    v["nk_pub"]["extra"] = json!(1);
    let (path, message) = decode_path(decode_value::<AttestRequest>(&v).unwrap_err());
    assert_eq!(path, "nk_pub.extra");
    assert!(message.contains("unknown field `extra`"), "{message}");
    // A "version" field is not part of v1 bodies (the path carries the version).
    let mut v = fixture_value("challenge_request");
    v["version"] = json!(1);
    assert!(decode_value::<ChallengeRequest>(&v).is_err());
}

#[test]
fn nonce_must_be_exactly_32_bytes() {
    for len in [0usize, 16, 31, 33, 64] {
        let mut v = fixture_value("challenge_response");
        v["nonce"] = json!(base64_of(&vec![7u8; len]));
        assert_eq!(
            decode_value::<ChallengeResponse>(&v).unwrap_err(),
            ProtoError::Length {
                field: "nonce",
                len,
                expected: 32
            },
            "nonce of {len} bytes"
        );
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn bad_base64_is_refused_naming_the_field() {
    let cases = [
        ("!!!!", "bad alphabet"),
        ("AAA", "missing padding"),
        ("AAB=", "non-canonical trailing bits"),
        ("AA AA", "whitespace"),
        ("____", "url-safe alphabet"),
    ];
    for (text, why) in cases {
        let mut v = fixture_value("attest_request");
        v["signature"] = json!(text);
        let (path, message) = decode_path(decode_value::<AttestRequest>(&v).unwrap_err());
        assert_eq!(path, "signature", "{why}");
        assert!(message.contains("invalid base64"), "{why}: {message}");
    }
    let mut v = fixture_value("attest_request");
    v["inclusion"]["siblings"][0] = json!("*");
    let (path, _) = decode_path(decode_value::<AttestRequest>(&v).unwrap_err());
    assert_eq!(path, "inclusion.siblings[0]");
}

#[test]
fn oversize_fields_are_refused() {
    let cases: [(&str, &str, usize, &str, usize); 5] = [
        ("register_request", "ek_pub", 1025, "ek_pub", 1024),
        ("register_request", "ek_cert", 8193, "ek_cert", 8192),
        ("attest_request", "quote", 1025, "quote", 1024),
        (
            "attest_request",
            "event_log",
            v1::MAX_EVENT_LOG + 1,
            "event_log",
            v1::MAX_EVENT_LOG,
        ),
        (
            "register_response",
            "encrypted_secret",
            513,
            "encrypted_secret",
            512,
        ),
    ];
    for (msg, key, len, field, max) in cases {
        let mut v = fixture_value(msg);
        v[key] = json!(base64_of(&vec![1u8; len]));
        let body = serde_json::to_vec(&v).unwrap();
        let err = match msg {
            "register_request" => v1::decode::<RegisterRequest>(&body).unwrap_err(),
            "register_response" => v1::decode::<RegisterResponse>(&body).unwrap_err(),
            _ => v1::decode::<AttestRequest>(&body).unwrap_err(),
        };
        assert_eq!(err, ProtoError::TooLarge { field, len, max }, "{msg}.{key}");
    }
    for (key, max) in [("hcl_report", v1::MAX_HCL_REPORT), ("vcek", v1::MAX_VCEK)] {
        let mut v = fixture_value("snp_vtpm_register_request");
        v[key] = json!(base64_of(&vec![1u8; max + 1]));
        let err =
            v1::decode::<v1::SnpVtpmRegisterRequest>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, ProtoError::TooLarge { len, .. } if len == max + 1),
            "{key}: {err}"
        );
    }
    let mut v = fixture_value("attest_request");
    v["ima_log"]["data"] = json!(base64_of(&vec![b'x'; v1::MAX_IMA_LOG + 1]));
    assert!(matches!(
        decode_value::<AttestRequest>(&v).unwrap_err(),
        ProtoError::TooLarge {
            field: "ima_log.data",
            ..
        }
    ));
    let mut v = fixture_value("error_response");
    v["message"] = json!("x".repeat(513));
    assert!(matches!(
        decode_value::<ErrorResponse>(&v).unwrap_err(),
        ProtoError::TooLarge {
            field: "message",
            ..
        }
    ));
    // The challenge round's fields: bounded, and present-but-empty is refused.
    for (len, ok) in [
        (v1::MAX_CHALLENGE_PARAMS, true),
        (v1::MAX_CHALLENGE_PARAMS + 1, false),
        (0, false),
    ] {
        let mut v = fixture_value("challenge_response");
        v["params"] = json!(base64_of(&vec![1u8; len]));
        assert_eq!(
            decode_value::<ChallengeResponse>(&v).is_ok(),
            ok,
            "params {len}"
        );
    }
    for (len, ok) in [
        (v1::MAX_CHALLENGE_ANSWER, true),
        (v1::MAX_CHALLENGE_ANSWER + 1, false),
        (0, false),
    ] {
        let mut v = fixture_value("attest_request");
        v["answer"] = json!(base64_of(&vec![1u8; len]));
        assert_eq!(
            decode_value::<AttestRequest>(&v).is_ok(),
            ok,
            "answer {len}"
        );
    }
    let big = vec![b' '; v1::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        v1::decode::<ChallengeRequest>(&big).unwrap_err(),
        ProtoError::MessageTooLarge { .. }
    ));
}

#[test]
fn structural_rules_are_enforced() {
    let check = |edit: &dyn Fn(&mut Value), field: &str| {
        let mut v = fixture_value("attest_request");
        edit(&mut v);
        let err = decode_value::<AttestRequest>(&v).unwrap_err();
        let named = match &err {
            ProtoError::Invalid { field, .. }
            | ProtoError::Length { field, .. }
            | ProtoError::TooLarge { field, .. } => field.to_string(),
            ProtoError::Decode { path, .. } => path.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(named, field, "{err}");
    };
    check(
        &|v| v["pcrs"][0]["values"][1]["index"] = json!(0),
        "pcrs[].values",
    );
    check(
        &|v| v["pcrs"][0]["values"][3]["index"] = json!(24),
        "pcrs[].values",
    );
    check(&|v| v["pcrs"][1]["hash"] = json!("sha256"), "pcrs");
    check(&|v| v["pcrs"][1]["hash"] = json!("sm3_256"), "pcrs[1].hash");
    check(&|v| v["pcrs"] = json!([]), "pcrs");
    check(
        &|v| v["pcrs"][1]["values"][0]["digest"] = json!(base64_of(&[0; 32])),
        "pcrs[].values[].digest",
    );
    check(
        &|v| v["nk_pub"]["key"] = json!(base64_of(&[4; 33])),
        "nk_pub.key",
    );
    check(&|v| v["nk_pub"]["kem"] = json!("x448"), "nk_pub.kem");
    check(
        &|v| v["inclusion"]["leaf_index"] = json!(2),
        "inclusion.leaf_index",
    );
    check(
        &|v| v["inclusion"]["tree_size"] = json!(0),
        "inclusion.tree_size",
    );
    check(
        &|v| v["inclusion"]["tree_size"] = json!(65_537),
        "inclusion.tree_size",
    );
    check(
        &|v| v["inclusion"]["siblings"] = json!(vec![base64_of(&[0; 32]); 17]),
        "inclusion.siblings",
    );
    check(
        &|v| v["nk_pub"]["key"] = json!(base64_of(&[4; 65])),
        "nk_pub.key",
    );
    check(
        &|v| v["inclusion"]["siblings"][0] = json!(base64_of(&[0; 31])),
        "inclusion.siblings[]",
    );
    check(&|v| v["challenge_id"] = json!("has space"), "challenge_id");
    check(&|v| v["challenge_id"] = json!(""), "challenge_id");
    check(&|v| v["quote"] = json!(""), "quote");

    let mut v = fixture_value("challenge_request");
    v["agent_id"] = json!("ABCDEF".repeat(10) + "ABCD");
    assert_eq!(
        decode_path(decode_value::<ChallengeRequest>(&v).unwrap_err()).0,
        "agent_id"
    );

    let mut v = fixture_value("challenge_response");
    v["pcr_selection"][0]["pcrs"] = json!([7, 7]);
    assert!(matches!(
        decode_value::<ChallengeResponse>(&v).unwrap_err(),
        ProtoError::Invalid {
            field: "pcr_selection[].pcrs",
            ..
        }
    ));

    let mut v = fixture_value("attest_response");
    v["sealed_half"]["ciphertext"] = json!(base64_of(&[0; 15]));
    assert!(matches!(
        decode_value::<AttestResponse>(&v).unwrap_err(),
        ProtoError::Invalid {
            field: "sealed_half.ciphertext",
            ..
        }
    ));
    v["sealed_half"]["enc"] = json!(base64_of(&[0; 33]));
    assert!(matches!(
        decode_value::<AttestResponse>(&v).unwrap_err(),
        ProtoError::Length {
            field: "sealed_half.enc",
            ..
        }
    ));

    // Only the verifier role sends the payload, and it must.
    let mut v = fixture_value("attest_response");
    v["role"] = json!("tenant");
    assert!(matches!(
        decode_value::<AttestResponse>(&v).unwrap_err(),
        ProtoError::Invalid {
            field: "payload",
            ..
        }
    ));
    v.as_object_mut().unwrap().remove("payload");
    decode_value::<AttestResponse>(&v).unwrap();
    v["role"] = json!("verifier");
    assert!(decode_value::<AttestResponse>(&v).is_err());

    let mut v = fixture_value("activate_request");
    v["proof"] = json!(base64_of(&[0; 31]));
    assert_eq!(
        decode_value::<ActivateRequest>(&v).unwrap_err(),
        ProtoError::Length {
            field: "proof",
            len: 31,
            expected: 32
        }
    );

    // Trailing data after the JSON value.
    let mut body = fixture("challenge_request");
    body.extend_from_slice(b" {}");
    assert!(v1::decode::<ChallengeRequest>(&body).is_err());
    // Duplicate fields.
    let body = br#"{"agent_id":"00","agent_id":"01"}"#;
    assert!(v1::decode::<ChallengeRequest>(body).is_err());
}

#[test]
fn encode_refuses_invalid_messages() {
    let mut ch: ChallengeResponse = v1::decode(&fixture("challenge_response")).unwrap();
    ch.nonce = vec![0u8; 31].into();
    assert!(matches!(
        v1::encode(&ch),
        Err(ProtoError::Length { field: "nonce", .. })
    ));
}

#[test]
fn agent_id_is_sha256_of_the_ek_tpmt_public() {
    let p = std::env::var("UNLOCK_TESTDATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata").into());
    let p = PathBuf::from(p).join("quote/keylime/ek.pub");
    let tpm2b = std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "test data missing at {} (set UNLOCK_TESTDATA): {e}",
            p.display()
        )
    });
    // ek.pub is a TPM2B_PUBLIC: drop the 2-byte size to get the TPMT_PUBLIC.
    let id = agent_id(&tpm2b[2..]);
    // Python: hashlib.sha256(open("ek.pub","rb").read()[2:]).hexdigest()
    assert_eq!(
        id,
        "524fe073981b4ac6fb4b571723bf939f67fa0a154dc85eee0dd1e5b21df47ca5"
    );
    assert_eq!(AgentId::of_ek(&tpm2b[2..]).as_str(), id);
    // Hashing the TPM2B form instead gives another id: the form matters.
    assert_ne!(agent_id(&tpm2b), id);
}

#[test]
fn quote_binding_vector() {
    // The binding the protocol defines, over NK's key bytes exactly as sent.
    let root: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
    let nk = v1::NkPublic {
        kem: NkKem::X25519HkdfSha256,
        key: vec![7u8; 32].into(),
    };
    nk.validate().unwrap();
    let binding = quote_extra_data(&root, nk.key.as_bytes());
    // Python: sha256(b"unlock/v1" + root + sha256(b"\x07"*32)).
    assert_eq!(
        hex::encode(binding),
        "ab1fe9773e48097ef2db686eda01c936f84010c47d2552248a92133e66c16f65"
    );
    assert_eq!(
        nk.to_keysplit().unwrap().as_bytes().as_slice(),
        nk.key.as_bytes()
    );
    // Swapping NK or the root changes the binding.
    let mut other = nk.key.as_bytes().to_vec();
    other[0] ^= 1;
    assert_ne!(quote_extra_data(&root, &other), binding);
    let mut root2 = root;
    root2[0] ^= 1;
    assert_ne!(quote_extra_data(&root2, nk.key.as_bytes()), binding);
}

#[test]
fn conversions_to_merkle_and_keysplit_types() {
    let at: AttestRequest = v1::decode(&fixture("attest_request")).unwrap();
    let proof = at.inclusion.to_merkle().unwrap();
    assert_eq!((proof.leaf_index, proof.tree_size), (0, 2));
    assert_eq!(proof.siblings.len(), 1);
    let resp: AttestResponse = v1::decode(&fixture("attest_response")).unwrap();
    let sealed = resp.sealed_half.to_keysplit().unwrap();
    assert_eq!(v1::Sealed::from_keysplit(&sealed), resp.sealed_half);
    verifier_core::keysplit::PayloadCiphertext::from_bytes(
        resp.payload.as_ref().unwrap().as_bytes(),
    )
    .unwrap();
}

#[test]
fn activation_proof_vector_and_forgery() {
    let id = Id::try_from("reg_5f2b9c0e1a7d4e3b".to_owned()).unwrap();
    let secret = [1u8; 32];
    let proof = activation_proof(&secret, &id);
    // Python: hmac.new(b"\x01"*32, b"unlock/v1 activate" + id, sha256).
    assert_eq!(
        hex::encode(proof),
        "ae2577c03962e1ec35bef65b8acb1a60839ceaae6e1c07dc39238666e0755997"
    );
    verify_activation_proof(&secret, &id, &proof).unwrap();
    let mut forged = proof;
    forged[31] ^= 1;
    assert!(verify_activation_proof(&secret, &id, &forged).is_err());
    assert!(verify_activation_proof(&[2u8; 32], &id, &proof).is_err());
    let other = Id::try_from("reg_other".to_owned()).unwrap();
    assert!(verify_activation_proof(&secret, &other, &proof).is_err());
    assert!(verify_activation_proof(&secret, &id, &proof[..31]).is_err());
}

#[test]
fn iak_messages_refuse_long_chains_and_malformed_identities() {
    let mut v = fixture_value("register_iak_request");
    let one = v["iak_chain"][0].clone();
    v["iak_chain"] = json!([one.clone(), one.clone(), one.clone(), one]);
    let err = decode_value::<v1::RegisterIakRequest>(&v).unwrap_err();
    assert!(err.to_string().contains("iak_chain"), "{err}");
    let mut v = fixture_value("register_iak_request");
    v["iak_cert"] = json!("");
    assert!(decode_value::<v1::RegisterIakRequest>(&v).is_err());
    for bad in [
        "",
        "2.23.133.1.2",
        "2.23.133.1.2:",
        ":4f45",
        "2.23..1:4f45",
        "2.23.133.1.2:4F45",
        "2.23.133.1.2:4f4",
        "2.23.133.1.2:zz",
    ] {
        let mut v = fixture_value("iak_bind_request");
        v["identity"] = json!(bad);
        let err = decode_value::<v1::IakBindRequest>(&v).unwrap_err();
        assert!(err.to_string().contains("identity"), "{bad:?}: {err}");
    }
    let mut v = fixture_value("iak_bind_request");
    v["identity"] = json!(format!("2.23.133.1.2:{}", "ab".repeat(300)));
    assert!(decode_value::<v1::IakBindRequest>(&v).is_err());
}

/// A deposit's shape is checked before anything reads it: the share is exactly one key, the
/// payload ciphertext goes to the verifier only, and the quoted digest binds the nonce, the
/// role and every byte.
#[test]
fn deposit_shapes_and_digest_binding() {
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut v = fixture_value("deposit_request");
        edit(&mut v);
        v1::decode::<v1::DepositRequest>(&serde_json::to_vec(&v).unwrap()).unwrap_err()
    };
    refused(&|v| v["deposit"]["share"] = json!("AAAA"));
    refused(&|v| v["deposit"]["role"] = json!("tenant"));
    refused(&|v| {
        v["deposit"].as_object_mut().unwrap().remove("payload_ct");
    });
    refused(&|v| v["deposit"]["extra"] = json!(1));
    refused(&|v| v["quote"] = json!(""));
    let ok = |edit: &dyn Fn(&mut Value)| {
        let mut v = fixture_value("deposit_request");
        edit(&mut v);
        v1::decode::<v1::DepositRequest>(&serde_json::to_vec(&v).unwrap()).unwrap()
    };
    let base = ok(&|_| {});
    let tenant = ok(&|v| {
        v["deposit"]["role"] = json!("tenant");
        v["deposit"].as_object_mut().unwrap().remove("payload_ct");
    });
    let n1 = [1u8; 32];
    let d = base.deposit.digest(&n1).unwrap();
    assert_eq!(d, base.deposit.digest(&n1).unwrap());
    assert_ne!(d, base.deposit.digest(&[2u8; 32]).unwrap());
    assert_ne!(d, tenant.deposit.digest(&n1).unwrap());
    let mut other = base.deposit.clone();
    other.share = verifier_core::proto::Base64Bytes::new(vec![9; 32]);
    assert_ne!(d, other.digest(&n1).unwrap());
}

#[test]
fn ek_chain_is_optional_and_bounded() {
    // v1 agents that send no chain still decode, and a request without one serializes
    // without the field (so older servers, which refuse unknown fields, accept it).
    let reg: RegisterRequest = round_trip("register_request");
    assert!(reg.ek_chain.is_empty());
    assert!(!String::from_utf8(v1::encode(&reg).unwrap())
        .unwrap()
        .contains("ek_chain"));
    let cert = base64_of(&[0x30, 0x00]);
    let mut v = fixture_value("register_request");
    v["ek_chain"] = json!([cert, cert]);
    assert_eq!(
        decode_value::<RegisterRequest>(&v).unwrap().ek_chain.len(),
        2
    );
    // Nine certificates, an empty one, an oversized one: refused, naming the field.
    v["ek_chain"] = json!(vec![cert.clone(); v1::MAX_EK_CHAIN + 1]);
    assert!(matches!(
        decode_value::<RegisterRequest>(&v).unwrap_err(),
        ProtoError::Invalid {
            field: "ek_chain",
            ..
        }
    ));
    v["ek_chain"] = json!([""]);
    assert!(matches!(
        decode_value::<RegisterRequest>(&v).unwrap_err(),
        ProtoError::Invalid {
            field: "ek_chain",
            ..
        }
    ));
    v["ek_chain"] = json!([base64_of(&vec![1u8; v1::MAX_EK_CERT + 1])]);
    assert!(matches!(
        decode_value::<RegisterRequest>(&v).unwrap_err(),
        ProtoError::TooLarge {
            field: "ek_chain",
            ..
        }
    ));
}
