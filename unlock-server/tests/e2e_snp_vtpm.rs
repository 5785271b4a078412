//! End-to-end: confidential VMs (evidence kind `azure-snp-vtpm`, `unlockctl enroll
//! --evidence snp-vtpm`) through the real server, its real database and the real agent.
//!
//! What is real and what is simulated:
//!
//! - **Real, captured:** an Azure SEV-SNP CVM's HCL report, its VCEK and a quote by its vTPM
//!   AK (the shared test data's `quote/trustee-az-snp-vtpm/`, from
//!   confidential-containers/trustee; provenance in that folder's README). The server's
//!   registration verifies them with the shipped AMD roots: VCEK → ASK → Milan ARK, report
//!   signature, runtime data bound to REPORT_DATA, `HCLAkPub` equal to the AK presented and
//!   `HCLEkPub` equal to the enrolled EK. The AK and EK public areas sent are built here
//!   from the runtime data's JWKs (the keys are the CVM's; the TPMT_PUBLIC around them is
//!   the standard template, since the capture has only the JWKs). Each forgery of that
//!   evidence is refused through the server. The captured quote is for trustee's nonce, so
//!   at attest it passes the report checks and is refused at the nonce binding.
//! - **Simulated (clearly a test):** the full release flow needs a quote made now over our
//!   nonces, which only a live CVM's vTPM could make with the captured AK. So a swtpm plays
//!   the vTPM: an RSA AK at the Azure handle `0x81000003` and an HCL report at NV index
//!   `0x01400001`, and that report's SNP report is signed by a **TEST-ONLY "AMD" chain**
//!   made here (ARK → ASK → VCEK, P-384, with AMD's TCB and hwID extensions), which the
//!   server is told to trust with `--amd-ark/--amd-ask`. Everything else is the product:
//!   the agent reads the NV index and the handle, the server verifies chain, report,
//!   binding and keys and pins the AK, the per-boot flow releases U and V, the policy's
//!   `snp` section decides on the report's claims at attest time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use support::{code, post, Machine, Server};
use verifier_core::keysplit::NkPrivate;
use verifier_core::merkle::MerkleTree;
use verifier_core::proto::v1::{
    self, ActivateResponse, AgentId, AttestRequest, ChallengeRequest, ChallengeResponse,
    InclusionProof, NkPublic, PcrBank, PcrValue, RegisterRequest, SnpVtpmRegisterRequest,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{
    HashAlg, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef, SymMode,
};

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

fn b64url_enc(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The RSA EK template (TCG EK Credential Profile, template L-1) around `modulus`.
fn rsa_ek_public(modulus: &[u8]) -> Vec<u8> {
    const POLICY_A: [u8; 32] = [
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7,
        0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14,
        0x69, 0xaa,
    ];
    let attrs = ObjectAttributes::FIXED_TPM
        .with(ObjectAttributes::FIXED_PARENT)
        .with(ObjectAttributes::SENSITIVE_DATA_ORIGIN)
        .with(ObjectAttributes::ADMIN_WITH_POLICY)
        .with(ObjectAttributes::RESTRICTED)
        .with(ObjectAttributes::DECRYPT);
    Public::new(
        HashAlg::Sha256,
        attrs,
        &POLICY_A,
        PublicKey::Rsa {
            symmetric: SymDef::Aes {
                key_bits: 128,
                mode: SymMode::Cfb,
            },
            scheme: KeyScheme::Null,
            key_bits: 2048,
            exponent: 0,
            modulus: modulus.to_vec(),
        },
    )
    .unwrap()
    .marshal()
}

/// An RSA AK public area (restricted signing, RSASSA-SHA256) around `modulus`.
fn rsa_ak_public(modulus: &[u8]) -> Vec<u8> {
    Public::new(HashAlg::Sha256, ak_attributes(), &[], rsa_ak_key(modulus))
        .unwrap()
        .marshal()
}

fn ak_attributes() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        .with(ObjectAttributes::FIXED_PARENT)
        .with(ObjectAttributes::SENSITIVE_DATA_ORIGIN)
        .with(ObjectAttributes::USER_WITH_AUTH)
        .with(ObjectAttributes::RESTRICTED)
        .with(ObjectAttributes::SIGN)
}

fn rsa_ak_key(modulus: &[u8]) -> PublicKey {
    PublicKey::Rsa {
        symmetric: SymDef::Null,
        scheme: KeyScheme::RsaSsa(HashAlg::Sha256),
        key_bits: 2048,
        exponent: 0,
        modulus: modulus.to_vec(),
    }
}

fn rsa_modulus(tpmt: &[u8]) -> Vec<u8> {
    match Public::parse(tpmt).unwrap().key() {
        PublicKey::Rsa { modulus, .. } => modulus.clone(),
        k => panic!("not RSA: {k:?}"),
    }
}

fn unlockctl_ok(server: &Server, args: &[&str]) {
    let out = server.unlockctl(args);
    assert!(out.status.success(), "unlockctl {args:?}: {}", stderr(&out));
}

/// Enrolls `ek` (TPMT_PUBLIC) with `policy`; extra arguments (`--evidence snp-vtpm`).
fn enroll(server: &Server, dir: &Path, ek: &[u8], policy: &str, extra: &[&str]) -> Vec<u8> {
    let ek_file = dir.join("ek.pub");
    std::fs::write(&ek_file, ek).unwrap();
    let payload: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
    let pf = dir.join("payload");
    std::fs::write(&pf, &payload).unwrap();
    let pol = dir.join("policy.json");
    std::fs::write(&pol, policy).unwrap();
    let mut args = vec![
        "enroll",
        "--ek-pub",
        ek_file.to_str().unwrap(),
        "--payload",
        pf.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    unlockctl_ok(server, &args);
    payload
}

// ---------------------------------------------------------------------------------------
// Part 1: the real captured Azure evidence, through the server's registration.
// ---------------------------------------------------------------------------------------

/// The captured Azure SEV-SNP CVM evidence.
struct Real {
    hcl: Vec<u8>,
    vcek: Vec<u8>,
    quote: Vec<u8>,
    signature: Vec<u8>,
    pcrs: Vec<String>,
    ak_modulus: Vec<u8>,
    ek_modulus: Vec<u8>,
}

fn real() -> Real {
    let dir = support::testdata().join("quote/trustee-az-snp-vtpm");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("evidence-v1.json")).unwrap()).unwrap();
    let hcl = b64url(j["hcl_report"].as_str().unwrap());
    let vcek = b64url(j["vcek"].as_str().unwrap());
    let quote = hex::decode(j["tpm_quote"]["message"].as_str().unwrap()).unwrap();
    let signature = hex::decode(j["tpm_quote"]["signature"].as_str().unwrap()).unwrap();
    let pcrs = j["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let (rt, _) = runtime_data(&hcl);
    let rt: serde_json::Value = serde_json::from_slice(rt).unwrap();
    let key = |kid: &str| {
        let k = rt["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        let n = b64url(k["n"].as_str().unwrap());
        n[n.iter().position(|b| *b != 0).unwrap()..].to_vec()
    };
    Real {
        ak_modulus: key("HCLAkPub"),
        ek_modulus: key("HCLEkPub"),
        hcl,
        vcek,
        quote,
        signature,
        pcrs,
    }
}

/// The HCL report's runtime data and its offset.
fn runtime_data(hcl: &[u8]) -> (&[u8], usize) {
    let at = 32 + 1184;
    let size = u32::from_le_bytes(hcl[at + 16..at + 20].try_into().unwrap()) as usize;
    (&hcl[at + 20..at + 20 + size], at + 20)
}

fn register_snp(
    server: &Server,
    role: &str,
    ek: &[u8],
    ak: &[u8],
    hcl: &[u8],
    vcek: &[u8],
) -> (u16, Vec<u8>) {
    let req = SnpVtpmRegisterRequest {
        ek_pub: Base64Bytes::new(ek.to_vec()),
        ak_pub: Base64Bytes::new(ak.to_vec()),
        hcl_report: Base64Bytes::new(hcl.to_vec()),
        vcek: Base64Bytes::new(vcek.to_vec()),
    };
    post(
        &server.http(),
        &format!("{}/{role}{}", server.url, v1::path::REGISTER_SNP_VTPM),
        &v1::encode(&req).unwrap(),
    )
}

fn challenge(server: &Server, role: &str, agent_id: &AgentId, ak: &[u8]) -> (u16, Vec<u8>) {
    let req = ChallengeRequest {
        agent_id: agent_id.clone(),
        ak_name: Base64Bytes::new(Public::parse(ak).unwrap().name()),
    };
    post(
        &server.http(),
        &format!("{}/{role}{}", server.url, v1::path::CHALLENGE),
        &v1::encode(&req).unwrap(),
    )
}

/// The real evidence registers: the report, chain and key checks pass through the server,
/// the AK is pinned (a challenge is issued for it) and the real quote then reaches the
/// attest path's SEV-SNP verifier, which refuses it only at the nonce binding (it was made
/// for trustee's nonce, not ours).
#[test]
fn real_azure_evidence_registers_and_its_old_quote_is_refused_at_the_binding() {
    let r = real();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    let ek = rsa_ek_public(&r.ek_modulus);
    let ak = rsa_ak_public(&r.ak_modulus);
    let agent_id = AgentId::of_ek(&ek);
    enroll(
        &server,
        dir.path(),
        &ek,
        r#"{"version":1}"#,
        &["--evidence", "snp-vtpm"],
    );
    // Before registration the AK is not known.
    assert_eq!(challenge(&server, "verifier", &agent_id, &ak).0, 404);
    for role in ["verifier", "tenant"] {
        let (st, body) = register_snp(&server, role, &ek, &ak, &r.hcl, &r.vcek);
        assert_eq!(st, 200, "{role}: {}", String::from_utf8_lossy(&body));
        let a: ActivateResponse = v1::decode(&body).unwrap();
        assert_eq!(a.agent_id, agent_id);
    }
    let (st, body) = challenge(&server, "verifier", &agent_id, &ak);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let ch: ChallengeResponse = v1::decode(&body).unwrap();

    // The captured quote, sent for our challenge.
    let nk = NkPrivate::generate().unwrap();
    let tree = MerkleTree::new(&[ch.nonce().unwrap()]).unwrap();
    let req = AttestRequest {
        challenge_id: ch.challenge_id.clone(),
        quote: Base64Bytes::new(r.quote.clone()),
        signature: Base64Bytes::new(rsassa_signature(&r.signature)),
        pcrs: vec![PcrBank {
            hash: HashAlg::Sha256,
            values: r
                .pcrs
                .iter()
                .enumerate()
                .map(|(i, h)| PcrValue {
                    index: u8::try_from(i).unwrap(),
                    digest: Base64Bytes::new(hex::decode(h).unwrap()),
                })
                .collect(),
        }],
        event_log: None,
        ima_log: None,
        nk_pub: NkPublic::from_keysplit(&nk.public()),
        inclusion: InclusionProof::from_merkle(&tree.proof(0).unwrap()),
        answer: None,
    };
    let (st, body) = post(
        &server.http(),
        &format!("{}/verifier{}", server.url, v1::path::ATTEST),
        &v1::encode(&req).unwrap(),
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(code(&body), "binding_mismatch");
}

/// TPMT_SIGNATURE of a raw RSASSA-SHA256 signature.
fn rsassa_signature(raw: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x14, 0x00, 0x0b];
    v.extend_from_slice(&u16::try_from(raw.len()).unwrap().to_be_bytes());
    v.extend_from_slice(raw);
    v
}

/// Each forgery of the real evidence is refused by the server's registration, with the
/// code of the check it fails, and pins nothing.
#[test]
fn forged_real_evidence_is_refused_at_registration() {
    let r = real();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    let ek = rsa_ek_public(&r.ek_modulus);
    let ak = rsa_ak_public(&r.ak_modulus);
    let agent_id = AgentId::of_ek(&ek);
    enroll(
        &server,
        dir.path(),
        &ek,
        r#"{"version":1}"#,
        &["--evidence", "snp-vtpm"],
    );
    // `what` is also the text the refusal must contain: the check that failed.
    let refused = |what: &str, ek: &[u8], ak: &[u8], hcl: &[u8], vcek: &[u8], want: &str| {
        let (st, body) = register_snp(&server, "verifier", ek, ak, hcl, vcek);
        let text = String::from_utf8_lossy(&body);
        assert_eq!((st, code(&body).as_str()), (403, want), "{what}: {text}");
        assert!(
            text.contains(what),
            "refused for another reason than {what:?}: {text}"
        );
    };
    // The SNP report's signature: one byte of the measurement changed.
    let mut hcl = r.hcl.clone();
    hcl[32 + 0x90] ^= 1;
    refused(
        "signature does not verify with the VCEK",
        &ek,
        &ak,
        &hcl,
        &r.vcek,
        "tee_evidence_invalid",
    );
    // The VCEK chain: a VCEK whose signature by the ASK no longer verifies.
    let mut vcek = r.vcek.clone();
    let n = vcek.len();
    vcek[n - 10] ^= 1;
    refused(
        "depth 0: signature does not verify with the issuer's key",
        &ek,
        &ak,
        &r.hcl,
        &vcek,
        "tee_evidence_invalid",
    );
    // A genuine VCEK of another chip (the chip id does not match the report).
    let other = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../verifier-core/src/attester/testdata/vcek-milan-other-chip.der"
    ))
    .unwrap();
    refused(
        "CHIP_ID does not match",
        &ek,
        &ak,
        &r.hcl,
        &other,
        "tee_evidence_invalid",
    );
    // The HCL runtime data edited after the report (one character of the AK's modulus).
    let (_, at) = runtime_data(&r.hcl);
    let mut hcl = r.hcl.clone();
    let pos = at + r.hcl[at..].windows(4).position(|w| w == b"\"n\":").unwrap() + 10;
    hcl[pos] = if hcl[pos] == b'A' { b'B' } else { b'A' };
    refused(
        "runtime data does not hash",
        &ek,
        &ak,
        &hcl,
        &r.vcek,
        "tee_evidence_invalid",
    );
    // The AK swapped: another RSA key presented with the genuine report.
    let mut other_ak = r.ak_modulus.clone();
    other_ak[100] ^= 0x40;
    refused(
        "not the HCL runtime data's HCLAkPub",
        &ek,
        &rsa_ak_public(&other_ak),
        &r.hcl,
        &r.vcek,
        "tee_evidence_invalid",
    );
    // Nothing was pinned by any of them.
    assert_eq!(challenge(&server, "verifier", &agent_id, &ak).0, 404);

    // The genuine report under another machine's enrollment: its HCLEkPub is not that EK.
    let mut other_ek_mod = r.ek_modulus.clone();
    other_ek_mod[7] ^= 1;
    let other_ek = rsa_ek_public(&other_ek_mod);
    let d2 = tempfile::tempdir().unwrap();
    enroll(
        &server,
        d2.path(),
        &other_ek,
        r#"{"version":1}"#,
        &["--evidence", "snp-vtpm"],
    );
    refused(
        "not the HCL runtime data's HCLEkPub",
        &other_ek,
        &ak,
        &r.hcl,
        &r.vcek,
        "tee_evidence_invalid",
    );

    // The evidence kind the enrollment declares is enforced both ways: no MakeCredential
    // registration for a CVM enrollment, no report registration for a TPM enrollment.
    let req = RegisterRequest {
        ek_pub: Base64Bytes::new(ek.clone()),
        ek_cert: None,
        ak_pub: Base64Bytes::new(ak.clone()),
        ek_chain: Vec::new(),
    };
    let (st, body) = post(
        &server.http(),
        &format!("{}/verifier{}", server.url, v1::path::REGISTER),
        &v1::encode(&req).unwrap(),
    );
    assert_eq!((st, code(&body).as_str()), (409, "evidence_kind_mismatch"));
    let mut tpm_ek_mod = r.ek_modulus.clone();
    tpm_ek_mod[9] ^= 1;
    let tpm_ek = rsa_ek_public(&tpm_ek_mod);
    let d3 = tempfile::tempdir().unwrap();
    enroll(&server, d3.path(), &tpm_ek, r#"{"version":1}"#, &[]);
    let (st, body) = register_snp(&server, "verifier", &tpm_ek, &ak, &r.hcl, &r.vcek);
    assert_eq!((st, code(&body).as_str()), (409, "evidence_kind_mismatch"));

    // And the genuine evidence still registers (the refusals above changed nothing).
    let (st, body) = register_snp(&server, "verifier", &ek, &ak, &r.hcl, &r.vcek);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
}

/// The shipped roots only: the same captured evidence is refused by a server told to trust
/// another AMD root (the TEST-ONLY one below) instead.
#[test]
fn real_evidence_is_refused_under_another_root() {
    let r = real();
    let amd = TestAmd::new(TCB_OK);
    let dir = tempfile::tempdir().unwrap();
    let (ark, ask) = amd.write_roots(dir.path());
    let server = Server::start(&[
        TOFU[0],
        "--amd-ark",
        ark.to_str().unwrap(),
        "--amd-ask",
        ask.to_str().unwrap(),
    ]);
    let ek = rsa_ek_public(&r.ek_modulus);
    let ak = rsa_ak_public(&r.ak_modulus);
    enroll(
        &server,
        dir.path(),
        &ek,
        r#"{"version":1}"#,
        &["--evidence", "snp-vtpm"],
    );
    let (st, body) = register_snp(&server, "verifier", &ek, &ak, &r.hcl, &r.vcek);
    assert_eq!((st, code(&body).as_str()), (403, "tee_evidence_invalid"));
}

// ---------------------------------------------------------------------------------------
// Part 2: the release flow on a swtpm standing in for the vTPM, with a TEST-ONLY "AMD"
// chain (see the module docs).
// ---------------------------------------------------------------------------------------

/// TCB the test chain's VCEK certifies (and the report states).
const TCB_OK: [u8; 4] = [4, 0, 22, 213];

/// A TEST-ONLY stand-in for AMD: an ARK, an ASK and a VCEK (P-384) with AMD's extension
/// OIDs, and the VCEK's key to sign SNP reports with. Never trusted outside these tests.
struct TestAmd {
    ark_pem: String,
    ask_pem: String,
    vcek_der: Vec<u8>,
    vcek_pkcs8: Vec<u8>,
    chip_id: [u8; 64],
    tcb: [u8; 4],
}

impl TestAmd {
    fn new(tcb: [u8; 4]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa,
            KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
        };
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let ark_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let ark = ca("TEST-ONLY ARK (not AMD)").self_signed(&ark_key).unwrap();
        let ask_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let ask = ca("TEST-ONLY ASK (not AMD)")
            .signed_by(&ask_key, &ark, &ark_key)
            .unwrap();
        let vcek_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut chip_id = [0u8; 64];
        for (i, b) in chip_id.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap() ^ 0x3c;
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "TEST-ONLY VCEK (not AMD)");
        p.distinguished_name = dn;
        let int = |v: u8| {
            if v >= 0x80 {
                vec![0x02, 0x02, 0x00, v]
            } else {
                vec![0x02, 0x01, v]
            }
        };
        let amd = |last: &[u64]| {
            let mut oid = vec![1, 3, 6, 1, 4, 1, 3704, 1];
            oid.extend_from_slice(last);
            oid
        };
        p.custom_extensions = vec![
            CustomExtension::from_oid_content(&amd(&[3, 1]), int(tcb[0])),
            CustomExtension::from_oid_content(&amd(&[3, 2]), int(tcb[1])),
            CustomExtension::from_oid_content(&amd(&[3, 3]), int(tcb[2])),
            CustomExtension::from_oid_content(&amd(&[3, 8]), int(tcb[3])),
            CustomExtension::from_oid_content(&amd(&[4]), chip_id.to_vec()),
        ];
        let vcek = p.signed_by(&vcek_key, &ask, &ask_key).unwrap();
        TestAmd {
            ark_pem: ark.pem(),
            ask_pem: ask.pem(),
            vcek_der: vcek.der().to_vec(),
            vcek_pkcs8: vcek_key.serialize_der(),
            chip_id,
            tcb,
        }
    }

    fn write_roots(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (ark, ask) = (dir.join("test-ark.pem"), dir.join("test-ask.pem"));
        std::fs::write(&ark, &self.ark_pem).unwrap();
        std::fs::write(&ask, &self.ask_pem).unwrap();
        (ark, ask)
    }

    /// An HCL report whose runtime data names `ak` and `ek` (RSA moduli), its SNP report
    /// signed with the test VCEK. `edit` may change the SNP report before it is signed.
    fn hcl_report(&self, ak: &[u8], ek: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let runtime = format!(
            r#"{{"keys":[{{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"{}"}},{{"kid":"HCLEkPub","kty":"RSA","e":"AQAB","n":"{}"}}]}}"#,
            b64url_enc(ak),
            b64url_enc(ek)
        );
        let mut report = vec![0u8; 1184];
        report[0] = 2; // VERSION
        report[8..16].copy_from_slice(&POLICY_BASE.to_le_bytes()); // POLICY
        report[0x34] = 1; // SIGNATURE_ALGO: ECDSA P-384 SHA-384
        let tcb = u64::from_le_bytes([
            self.tcb[0],
            self.tcb[1],
            0,
            0,
            0,
            0,
            self.tcb[2],
            self.tcb[3],
        ]);
        for at in [0x38, 0x180, 0x1e0, 0x1f0] {
            // CURRENT, REPORTED, COMMITTED, LAUNCH TCB
            report[at..at + 8].copy_from_slice(&tcb.to_le_bytes());
        }
        let digest = HashAlg::Sha256.hash(runtime.as_bytes());
        report[0x50..0x70].copy_from_slice(digest.as_bytes()); // REPORT_DATA
        report[0x90..0xc0].copy_from_slice(&MEASUREMENT); // MEASUREMENT
        report[0x1a0..0x1e0].copy_from_slice(&self.chip_id); // CHIP_ID
        edit(&mut report);
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &self.vcek_pkcs8,
        )
        .unwrap();
        let sig = key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &report[..0x2a0])
            .unwrap();
        let (r, s) = sig.as_ref().split_at(48);
        let mut r = r.to_vec();
        let mut s = s.to_vec();
        r.reverse();
        s.reverse();
        report[0x2a0..0x2a0 + 48].copy_from_slice(&r);
        report[0x2a0 + 72..0x2a0 + 72 + 48].copy_from_slice(&s);

        let mut hcl = b"HCLA".to_vec();
        hcl.resize(32, 0);
        hcl.extend_from_slice(&report);
        for w in [
            u32::try_from(runtime.len() + 20).unwrap(),
            1,
            2, // SNP
            1, // SHA-256
            u32::try_from(runtime.len()).unwrap(),
        ] {
            hcl.extend_from_slice(&w.to_le_bytes());
        }
        hcl.extend_from_slice(runtime.as_bytes());
        hcl
    }
}

/// Guest policy bit 17 (reserved, must be one) and SMT allowed.
const POLICY_BASE: u64 = (1 << 17) | (1 << 16);
const MEASUREMENT: [u8; 48] = [0x6d; 48];

/// Raw TPM commands to make the swtpm look like an Azure CVM's vTPM (test provisioning
/// only; the agent's own TPM code is what reads it back).
mod vtpm {
    use initrd_agent::tpm::transport::Transport;
    use verifier_core::tpm2::{create_primary_response, CommandCode, Response};

    const TPM_RH_OWNER: u32 = 0x4000_0001;
    const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;
    pub const AK_HANDLE: u32 = 0x8100_0003;
    pub const HCL_INDEX: u32 = 0x0140_0001;

    fn command(t: &mut Transport, cc: u32, handles: &[u32], params: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x8002u16.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&cc.to_be_bytes());
        for h in handles {
            b.extend_from_slice(&h.to_be_bytes());
        }
        // One password session, empty password.
        b.extend_from_slice(&9u32.to_be_bytes());
        b.extend_from_slice(&0x4000_0009u32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0]);
        b.extend_from_slice(params);
        let len = u32::try_from(b.len()).unwrap();
        b[2..6].copy_from_slice(&len.to_be_bytes());
        let r = t.transact(&b).unwrap();
        let rc = u32::from_be_bytes(r[6..10].try_into().unwrap());
        assert_eq!(rc, 0, "TPM command {cc:#x} failed with {rc:#x}");
        r
    }

    fn tpm2b(v: &mut Vec<u8>, data: &[u8]) {
        v.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        v.extend_from_slice(data);
    }

    /// Creates the AK (`template`, a TPMT_PUBLIC) as a primary key in the endorsement
    /// hierarchy, makes it persistent at the Azure AK handle; returns its TPMT_PUBLIC.
    pub fn make_ak(tcti: &str, template: &[u8]) -> Vec<u8> {
        let mut t = Transport::open(tcti).unwrap();
        let mut p = vec![0, 4, 0, 0, 0, 0];
        tpm2b(&mut p, template);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let r = command(&mut t, 0x131, &[TPM_RH_ENDORSEMENT], &p);
        let resp = Response::parse(&r, CommandCode::CreatePrimary, true).unwrap();
        let handle = resp.required_handle().unwrap();
        let key = create_primary_response(resp.params).unwrap();
        command(
            &mut t,
            0x120,
            &[TPM_RH_OWNER, handle],
            &AK_HANDLE.to_be_bytes(),
        );
        // FlushContext (no session): the transient copy.
        let mut b = vec![0x80, 0x01, 0, 0, 0, 14];
        b.extend_from_slice(&0x165u32.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        t.transact(&b).unwrap();
        key.public
    }

    /// Defines the HCL report NV index (owner read/write) and writes `data` to it.
    pub fn write_hcl(tcti: &str, data: &[u8]) {
        let mut t = Transport::open(tcti).unwrap();
        let mut public = Vec::new();
        public.extend_from_slice(&HCL_INDEX.to_be_bytes());
        public.extend_from_slice(&0x000bu16.to_be_bytes());
        // OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD | NO_DA
        let attrs: u32 = (1 << 1) | (1 << 2) | (1 << 17) | (1 << 18) | (1 << 25);
        public.extend_from_slice(&attrs.to_be_bytes());
        public.extend_from_slice(&[0, 0]);
        public.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        let mut p = vec![0, 0];
        tpm2b(&mut p, &public);
        command(&mut t, 0x12a, &[TPM_RH_OWNER], &p);
        for (i, chunk) in data.chunks(512).enumerate() {
            let mut p = Vec::new();
            tpm2b(&mut p, chunk);
            p.extend_from_slice(&u16::try_from(i * 512).unwrap().to_be_bytes());
            command(&mut t, 0x137, &[TPM_RH_OWNER, HCL_INDEX], &p);
        }
    }
}

/// A swtpm made to look like an Azure CVM's vTPM, a server trusting the TEST-ONLY chain,
/// the machine enrolled with `--evidence snp-vtpm` and `policy`; the agent configured for
/// `snp-vtpm` (returns its config file and the payload).
struct Cvm {
    m: Machine,
    server: Server,
    cfg: PathBuf,
    vcek: PathBuf,
    payload: Vec<u8>,
    agent_id: String,
}

/// The agent's configuration for `snp-vtpm` (written again after a reboot: the swtpm's
/// port changes).
fn snp_config(m: &Machine, server: &Server, vcek: &Path) -> PathBuf {
    let cfg = m.config(server, None);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "evidence = \"snp-vtpm\"\nvcek_file = \"{}\"\n",
        vcek.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A forgery made on the CVM's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tweak {
    None,
    /// The report names an AK whose modulus differs from the vTPM AK's.
    AkSwapped,
    /// One byte of the runtime data changed after the report was signed.
    RuntimeEdited,
}

fn cvm(policy: &str, edit: impl FnOnce(&mut [u8])) -> Cvm {
    cvm_with(policy, edit, Tweak::None)
}

fn cvm_with(policy: &str, edit: impl FnOnce(&mut [u8]), tweak: Tweak) -> Cvm {
    let amd = TestAmd::new(TCB_OK);
    let mut m = Machine::new();
    m.ek = "rsa";
    let roots = tempfile::tempdir().unwrap();
    let (ark, ask) = amd.write_roots(roots.path());
    let server = Server::start(&[
        TOFU[0],
        "--amd-ark",
        ark.to_str().unwrap(),
        "--amd-ask",
        ask.to_str().unwrap(),
    ]);
    let (ek_file, agent_id) = m.export_ek(&server);
    let ek = std::fs::read(&ek_file).unwrap();
    let ak_template = Public::new(
        HashAlg::Sha256,
        ak_attributes(),
        &[],
        rsa_ak_key(&[0u8; 256]),
    )
    .unwrap()
    .marshal();
    let ak = vtpm::make_ak(&m.tcti(), &ak_template);
    let mut ak_mod = rsa_modulus(&ak);
    if tweak == Tweak::AkSwapped {
        ak_mod[3] ^= 0x10;
    }
    let mut hcl = amd.hcl_report(&ak_mod, &rsa_modulus(&ek), edit);
    if tweak == Tweak::RuntimeEdited {
        let (_, at) = runtime_data(&hcl);
        // The first character of the AK's modulus in the JSON.
        let pos = at + hcl[at..].windows(5).position(|w| w == b"\"n\":\"").unwrap() + 5;
        hcl[pos] = if hcl[pos] == b'A' { b'B' } else { b'A' };
    }
    assert!(hcl.len() <= 2048, "HCL report of {} bytes", hcl.len());
    vtpm::write_hcl(&m.tcti(), &hcl);
    let vcek = m.dir.path().join("vcek.der");
    std::fs::write(&vcek, &amd.vcek_der).unwrap();
    let payload = enroll(
        &server,
        m.dir.path(),
        &ek,
        policy,
        &["--evidence", "snp-vtpm"],
    );
    let cfg = snp_config(&m, &server, &vcek);
    drop(roots);
    Cvm {
        m,
        server,
        cfg,
        vcek,
        payload,
        agent_id,
    }
}

fn snp_policy(snp: &str) -> String {
    format!(r#"{{"version":1,"snp":{snp}}}"#)
}

fn measurement_hex() -> String {
    hex::encode(MEASUREMENT)
}

/// The whole release flow with `snp-vtpm`: the agent reads the HCL report from NV and uses
/// the AK at `0x81000003`, registers with the report (no MakeCredential), both roles
/// release, the key is the payload; a second run in the same boot is refused (release
/// PCR); after a reboot the agent goes straight to the challenges (AK pinned, EK kept).
#[test]
fn snp_vtpm_release_flow_on_swtpm() {
    let policy = snp_policy(&format!(
        r#"{{"measurements":["{}"],"min_tcb":{{"bootloader":4,"tee":0,"snp":22,"microcode":213}},"max_vmpl":0}}"#,
        measurement_hex()
    ));
    let mut c = cvm(&policy, |_| {});
    let out = c.m.agent_with(&c.cfg, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(c.m.key_file()).unwrap(), c.payload);
    assert!(
        !stderr(&out).contains("step activate"),
        "no MakeCredential round: {}",
        stderr(&out)
    );
    for role in ["verifier", "tenant"] {
        let s = c.server.releases(&c.agent_id, role);
        assert_eq!(s.len(), 1, "{role}");
    }
    // Same boot: the release PCR was extended, the policy refuses.
    let again = c.m.agent_with(&c.cfg, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("policy_denied"),
        "{}",
        stderr(&again)
    );
    // Next boot: unlocks again without registering.
    c.m.reboot();
    let cfg = snp_config(&c.m, &c.server, &c.vcek);
    let out = c.m.agent_with(&cfg, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("step register"),
        "registered again: {}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(c.m.key_file()).unwrap(), c.payload);
}

/// The report's TCB is below the policy's minimum: refused at attest, nothing released.
#[test]
fn snp_vtpm_tcb_below_minimum_refused() {
    let policy = snp_policy(r#"{"min_tcb":{"bootloader":4,"tee":0,"snp":23,"microcode":213}}"#);
    let c = cvm(&policy, |_| {});
    let out = c.m.agent_with(&c.cfg, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("policy_denied"), "{}", stderr(&out));
    assert!(stderr(&out).contains("snp.min_tcb"), "{}", stderr(&out));
    assert!(!c.m.key_file().exists());
    assert!(c.server.releases(&c.agent_id, "verifier").is_empty());
}

/// The guest policy lets the host debug the guest: refused (even with no `allow_debug`
/// in the policy, the default refuses it).
#[test]
fn snp_vtpm_debug_policy_refused() {
    let c = cvm(&snp_policy("{}"), |r| {
        let p = POLICY_BASE | (1 << 19);
        r[8..16].copy_from_slice(&p.to_le_bytes());
    });
    let out = c.m.agent_with(&c.cfg, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("snp.debug"), "{}", stderr(&out));
    assert!(!c.m.key_file().exists());
}

/// The measurement is not the one the policy allows.
#[test]
fn snp_vtpm_unknown_measurement_refused() {
    let c = cvm(
        &snp_policy(&format!(r#"{{"measurements":["{}"]}}"#, "ab".repeat(48))),
        |_| {},
    );
    let out = c.m.agent_with(&c.cfg, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("snp.measurement"), "{}", stderr(&out));
}

/// Through the agent, a report (genuinely signed by the trusted test chain) naming another
/// AK than the key at `0x81000003`, and a report whose runtime data was edited after it
/// was signed: registration refused, nothing released.
#[test]
fn snp_vtpm_report_for_another_ak_or_edited_runtime_data_refused() {
    for tweak in [Tweak::AkSwapped, Tweak::RuntimeEdited] {
        let c = cvm_with(&snp_policy("{}"), |_| {}, tweak);
        let out = c.m.agent_with(&c.cfg, &[]);
        assert_eq!(out.status.code(), Some(1), "{tweak:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("tee_evidence_invalid"),
            "{tweak:?}: {}",
            stderr(&out)
        );
        assert!(!c.m.key_file().exists());
        assert!(c.server.releases(&c.agent_id, "verifier").is_empty());
    }
}

/// After a genuine registration, a quote by another key of the same TPM sent for the
/// pinned AK's challenge is refused (the signature does not verify with the pinned AK).
#[test]
fn snp_vtpm_quote_by_another_key_refused() {
    let c = cvm(&snp_policy("{}"), |_| {});
    // Register (and unlock once) with the real flow, so the AK is pinned.
    let out = c.m.agent_with(&c.cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut m = c.m;
    m.reboot();
    let mut d = support::Driver::unregistered(&m, &c.server);
    let pinned = d.tpm.vtpm_ak().unwrap().unwrap();
    let req = ChallengeRequest {
        agent_id: d.agent_id.clone(),
        ak_name: Base64Bytes::new(pinned.name().to_vec()),
    };
    let (st, body) = post(
        &d.http,
        &d.url("verifier", v1::path::CHALLENGE),
        &v1::encode(&req).unwrap(),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let ch: ChallengeResponse = v1::decode(&body).unwrap();
    let nk = NkPrivate::generate().unwrap();
    // `d.ak` is another AK of the same TPM (a child of the EK), not the pinned one.
    let reqs = d.attest_requests(&[&ch], &nk, None);
    let (st, body) = d.attest("verifier", &reqs[0]);
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(code(&body), "quote_invalid");
    d.release();
}
