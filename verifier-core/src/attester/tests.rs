//! The attesters against real captured evidence, and one forgery per check.
//!
//! Evidence: `quote/trustee-az-snp-vtpm/evidence-v1.json` of the shared test data (an Azure
//! SEV-SNP CVM's HCL report, vTPM quote with its PCRs, and the chip's VCEK, from the
//! confidential-containers/trustee repository, `deps/verifier/test_data/az-snp-vtpm/`, commit
//! 78962cd416dc, Apache-2.0; see the test data README). `testdata/vcek-milan-other-chip.der`
//! is a real Milan VCEK of another chip (virtee/sev, `tests/certs_data/vcek_milan.der`,
//! commit c10a378624e1, Apache-2.0).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::amd::{AmdRoots, VcekError};
use super::azure::{self, AzureError, HclReport, HclReportType};
use super::snp::{self, SnpError, SnpReport, TcbVersion};
use super::*;
use crate::ekcert::EkCertError;
use crate::merkle::MerkleTree;
use crate::policy::{Evaluator, Policy};
use crate::quote::{verify_quote, VerifyError};
use crate::wire::{Attest, Digest, HashAlg, PcrValues, Signature};

/// 2027-06-01: inside the real VCEK's validity (2025-01-28 to 2032-01-28).
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("quote").is_dir(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let p = testdata().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

const OTHER_CHIP_VCEK: &[u8] = include_bytes!("testdata/vcek-milan-other-chip.der");

/// The real evidence, decoded.
struct Real {
    hcl: Vec<u8>,
    vcek: Vec<u8>,
    attest: Vec<u8>,
    sig: Signature,
    pcrs: PcrValues,
}

fn real() -> Real {
    let d: serde_json::Value =
        serde_json::from_slice(&read("quote/trustee-az-snp-vtpm/evidence-v1.json")).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let q = &d["tpm_quote"];
    let mut pcrs = PcrValues::new();
    for (i, h) in q["pcrs"].as_array().unwrap().iter().enumerate() {
        assert!(pcrs.insert(
            u8::try_from(i).unwrap(),
            Digest::from_hex(HashAlg::Sha256, h.as_str().unwrap()).unwrap()
        ));
    }
    Real {
        hcl: b64
            .decode(d["hcl_report"].as_str().unwrap().trim_end_matches('='))
            .unwrap(),
        vcek: b64
            .decode(d["vcek"].as_str().unwrap().trim_end_matches('='))
            .unwrap(),
        attest: hex::decode(q["message"].as_str().unwrap()).unwrap(),
        sig: Signature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: hex::decode(q["signature"].as_str().unwrap()).unwrap(),
        },
        pcrs,
    }
}

fn roots() -> AmdRoots {
    AmdRoots::shipped().unwrap()
}

/// Offset of the SNP report inside the HCL report.
const HW: usize = 32;

#[test]
fn real_azure_snp_evidence_verifies_end_to_end() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    assert_eq!(vcek.product(), "Milan");
    assert_eq!(vcek.product_name(), Some("Milan-B0"));
    let tcb = TcbVersion {
        bootloader: 4,
        tee: 0,
        snp: 0x18,
        microcode: 0xdb,
    };
    assert_eq!(vcek.tcb(), tcb);

    let hcl = azure::verify_hcl_report(&r.hcl, &vcek).unwrap();
    let report = hcl.snp().report();
    assert_eq!(report.reported_tcb, tcb);
    assert_eq!(report.vmpl, 0);
    assert_eq!(report.policy, 0x3001f);
    assert!(!report.debug_allowed() && !report.migration_agent_allowed());
    assert!(report.smt_allowed());
    assert!(hcl.vm_configuration().secure_boot && hcl.vm_configuration().tpm_enabled);

    // The quote verifies with the AK the report vouches for (its extraData is trustee's
    // challenge, "challenge").
    let q = verify_quote(hcl.ak(), b"challenge", &r.attest, &r.sig, &r.pcrs).unwrap();
    assert_eq!(q.pcrs(), &r.pcrs);

    // The claims the policy sees, and a policy pinning this CVM's measurement and TCB.
    let snp = SnpClaims::new(hcl.snp(), Some(hcl.vm_configuration()));
    let claims = Claims::from_validated(q.pcrs(), q.clock_info(), None, None).with_snp(&snp);
    let policy = Policy::from_json(&format!(
        r#"{{"version":1,"release_pcr":null,"snp":{{"measurements":["{}"],
            "min_tcb":{{"bootloader":4,"tee":0,"snp":24,"microcode":219}},"max_vmpl":0,
            "require_azure_secure_boot":true}}}}"#,
        hex::encode(report.measurement)
    ))
    .unwrap();
    let report_all = policy.check(&claims);
    assert!(report_all.accepted(), "{:?}", report_all.verdict());
    assert!(report_all.outcomes.len() >= 6);
}

/// The whole verifier on the real evidence with our challenge: every check up to the nonce
/// binding passes (VCEK chain, report signature, runtime data, AK, quote signature: the
/// quote check verifies the signature before extraData), and the binding fails because
/// trustee's quote was made for trustee's nonce, not for our Merkle root and NK.
#[test]
fn real_evidence_for_another_nonce_is_refused_at_the_binding() {
    let r = real();
    let roots = roots();
    let cache = amd::VcekCache::new();
    let v = AzureSnpVtpmVerifier {
        roots: &roots,
        now: now(),
        cache: Some(&cache),
    };
    let challenge = v.challenge([7; 32]).unwrap();
    assert_eq!(challenge.params, None);
    let tree = MerkleTree::new(&[challenge.nonce]).unwrap();
    let proof = tree.proof(0).unwrap();
    let nk = [4u8; crate::keysplit::NK_PUBLIC_LEN];
    let evidence = AzureSnpVtpmEvidence {
        hcl_report: &r.hcl,
        vcek: &r.vcek,
        tpm: Submitted {
            attest: &r.attest,
            signature: &r.sig,
            pcrs: &r.pcrs,
            nk_pub: &nk,
            proof: &proof,
            event_log: None,
            ima_log: None,
        },
    };
    assert_eq!(v.kind(), EvidenceKind::AzureSnpVtpm);
    assert!(!v.kind().needs_make_credential());
    for _ in 0..2 {
        match v.verify(&challenge, evidence) {
            Err(
                e
                @ AzureSnpVtpmError::Quote(ValidationError::Quote(VerifyError::ExtraDataMismatch)),
            ) => {
                assert_eq!(e.code(), crate::proto::v1::ErrorCode::BindingMismatch);
                assert!(!e.signed_by_ak(), "a stranger could replay it");
            }
            other => panic!("expected the extraData binding to fail, got {other:?}"),
        }
    }
    // A forged report through the whole verifier: refused before the quote, not charged
    // to the machine.
    let mut hcl = r.hcl.clone();
    hcl[HW + 0x90] ^= 1;
    let forged = AzureSnpVtpmEvidence {
        hcl_report: &hcl,
        ..evidence
    };
    let e = v.verify(&challenge, forged).unwrap_err();
    assert!(matches!(
        e,
        AzureSnpVtpmError::Report(AzureError::Snp(SnpError::SignatureInvalid))
    ));
    assert_eq!(e.code(), crate::proto::v1::ErrorCode::TeeEvidenceInvalid);
    assert!(!e.signed_by_ak());
    // Another chip's VCEK beside the report.
    let other = AzureSnpVtpmEvidence {
        vcek: OTHER_CHIP_VCEK,
        ..evidence
    };
    assert!(matches!(
        v.verify(&challenge, other).unwrap_err(),
        AzureSnpVtpmError::Report(AzureError::Snp(SnpError::ChipIdMismatch))
    ));
    assert_eq!(
        cache.len(),
        2,
        "both verified VCEKs (this chip's, the other chip's) are cached"
    );
}

#[test]
fn flipped_report_byte_is_refused_by_the_signature() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    // A byte of MEASUREMENT (0x90), of HOST_DATA (0xC0), of the signature's R.
    for off in [0x90, 0xC0, snp::SIGNED_LEN] {
        let mut hcl = r.hcl.clone();
        hcl[HW + off] ^= 0x01;
        assert!(
            matches!(
                azure::verify_hcl_report(&hcl, &vcek),
                Err(AzureError::Snp(SnpError::SignatureInvalid))
            ),
            "offset {off:#x}"
        );
    }
}

/// Deterministic mutation of every signed byte and every signature byte: each single-bit
/// change is refused (parse error, VCEK mismatch or signature), never accepted, never a panic.
#[test]
fn every_single_bit_change_of_the_real_report_is_refused() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let report = &r.hcl[HW..HW + snp::REPORT_LEN];
    assert!(snp::verify_report(report, &vcek).is_ok());
    for off in 0..snp::SIGNED_LEN + 144 {
        let mut m = report.to_vec();
        m[off] ^= 1 << (off % 8);
        assert!(snp::verify_report(&m, &vcek).is_err(), "offset {off:#x}");
    }
}

#[test]
fn vcek_of_another_chip_is_refused() {
    let r = real();
    // A genuine Milan VCEK: its chain verifies, but it is another chip's key.
    let other = roots()
        .verify_vcek(
            OTHER_CHIP_VCEK,
            &[],
            UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        )
        .unwrap();
    assert_eq!(other.product(), "Milan");
    let report = &r.hcl[HW..HW + snp::REPORT_LEN];
    assert!(matches!(
        snp::verify_report(report, &other),
        Err(SnpError::ChipIdMismatch)
    ));
}

#[test]
fn cached_vcek_is_reused_only_inside_its_validity_and_for_the_same_bytes() {
    let r = real();
    let roots = roots();
    let cache = amd::VcekCache::new();
    let first = roots.verify_vcek_cached(&cache, &r.vcek, now()).unwrap();
    assert_eq!(cache.len(), 1);
    assert_eq!(
        roots.verify_vcek_cached(&cache, &r.vcek, now()).unwrap(),
        first
    );
    // After the VCEK expired, the cache does not answer: the chain check refuses.
    let later = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    assert!(matches!(
        roots.verify_vcek_cached(&cache, &r.vcek, later),
        Err(VcekError::Chain(EkCertError::Expired { .. }))
    ));
    // Other bytes are not looked up as the cached VCEK: a forged copy is verified and refused.
    let mut forged = r.vcek.clone();
    let at = forged.len() - 10;
    forged[at] ^= 1;
    assert!(roots.verify_vcek_cached(&cache, &forged, now()).is_err());
    assert_eq!(cache.len(), 1);
}

#[test]
fn vcek_not_chaining_to_the_shipped_roots_is_refused() {
    let r = real();
    // Only Genoa trusted: the Milan VCEK's issuer is unknown.
    let genoa_only = AmdRoots::from_pems(&[(
        "Genoa",
        include_bytes!("../../data/amd/genoa-ark.pem"),
        include_bytes!("../../data/amd/genoa-ask.pem"),
    )])
    .unwrap();
    assert!(matches!(
        genoa_only.verify_vcek(&r.vcek, &[], now()),
        Err(VcekError::Chain(EkCertError::UntrustedIssuer))
    ));
    // A VCEK whose key was swapped (the attacker's own P-384 key in the certificate): the
    // ASK's signature over it fails.
    let point_at = r
        .vcek
        .windows(2)
        .position(|w| w == [0x03, 0x62])
        .expect("P-384 subjectPublicKey BIT STRING");
    let mut forged = r.vcek.clone();
    forged[point_at + 10] ^= 0x01;
    assert!(matches!(
        roots().verify_vcek(&forged, &[], now()),
        Err(VcekError::Chain(EkCertError::BadSignature { depth: 0 }))
    ));
    // Out of its validity.
    assert!(matches!(
        roots().verify_vcek(
            &r.vcek,
            &[],
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        ),
        Err(VcekError::Chain(EkCertError::Expired { .. }))
    ));
    // The ASK itself is not a VCEK (a CA certificate as the leaf).
    let ask = crate::ekcert::pem_certificates(include_bytes!("../../data/amd/milan-ask.pem"))
        .unwrap()
        .remove(0);
    assert!(roots().verify_vcek(&ask, &[], now()).is_err());
}

#[test]
fn edited_runtime_data_is_refused_by_the_hash() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let json_at = r.hcl.windows(8).position(|w| w == b"{\"keys\":").unwrap();
    // Swap one character of the AK's modulus: an attacker substituting its own AK.
    let n_at = json_at
        + r.hcl[json_at..]
            .windows(5)
            .position(|w| w == b"\"n\":\"")
            .unwrap()
        + 5;
    let mut hcl = r.hcl.clone();
    hcl[n_at] = if hcl[n_at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        azure::verify_hcl_report(&hcl, &vcek),
        Err(AzureError::RuntimeDataNotBound)
    ));
    // Turn "secure-boot":true into false... by editing any byte of the JSON.
    let sb = json_at
        + r.hcl[json_at..]
            .windows(18)
            .position(|w| w == b"\"secure-boot\":true")
            .unwrap();
    let mut hcl = r.hcl.clone();
    hcl[sb + 14..sb + 18].copy_from_slice(b"fals");
    assert!(matches!(
        azure::verify_hcl_report(&hcl, &vcek),
        Err(AzureError::RuntimeDataNotBound)
    ));
}

#[test]
fn quote_by_another_key_is_refused() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let hcl = azure::verify_hcl_report(&r.hcl, &vcek).unwrap();
    // The other Azure SNP CVM's quote (signed by its own vTPM AK).
    let d: serde_json::Value =
        serde_json::from_slice(&read("quote/trustee-az-snp-vtpm/tpm-quote-v1.json")).unwrap();
    let attest = hex::decode(d["message"].as_str().unwrap()).unwrap();
    let sig = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: hex::decode(d["signature"].as_str().unwrap()).unwrap(),
    };
    let mut pcrs = PcrValues::new();
    for (i, h) in d["pcrs"].as_array().unwrap().iter().enumerate() {
        pcrs.insert(
            u8::try_from(i).unwrap(),
            Digest::from_hex(HashAlg::Sha256, h.as_str().unwrap()).unwrap(),
        );
    }
    let extra = Attest::parse(&attest).unwrap().extra_data;
    assert_eq!(
        verify_quote(hcl.ak(), &extra, &attest, &sig, &pcrs).unwrap_err(),
        VerifyError::SignatureInvalid
    );
    // And the .msg/.sig pair of the shared data.
    let msg = read("quote/trustee-az-snp-vtpm/tpm-quote.msg");
    let sig2 = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: read("quote/trustee-az-snp-vtpm/tpm-quote.sig"),
    };
    assert_eq!(
        verify_quote(hcl.ak(), b"challenge", &msg, &sig2, &pcrs).unwrap_err(),
        VerifyError::SignatureInvalid
    );
    // The real quote's own signature with one byte flipped.
    let Signature::RsaSsa { sig: mut s, .. } = r.sig.clone() else {
        unreachable!()
    };
    s[10] ^= 1;
    let forged = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: s,
    };
    assert_eq!(
        verify_quote(hcl.ak(), b"challenge", &r.attest, &forged, &r.pcrs).unwrap_err(),
        VerifyError::SignatureInvalid
    );
}

/// Policy on forged claims: the report cannot be re-signed, so the forgery is at the claim a
/// report with that bit would produce; each rule refuses exactly its claim.
#[test]
fn policy_refuses_debug_migration_low_tcb_and_unknown_measurement() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let hcl = azure::verify_hcl_report(&r.hcl, &vcek).unwrap();
    let q = verify_quote(hcl.ak(), b"challenge", &r.attest, &r.sig, &r.pcrs).unwrap();
    let genuine = SnpClaims::new(hcl.snp(), Some(hcl.vm_configuration()));
    let eval = |p: &Policy, snp: &SnpClaims| {
        let claims = Claims::from_validated(q.pcrs(), q.clock_info(), None, None).with_snp(snp);
        p.evaluate_claims(&claims)
    };
    let failed = |v: &crate::policy::Verdict| -> Vec<String> {
        v.failures.iter().map(|f| f.rule.clone()).collect()
    };
    // No snp section at all: the defaults still refuse debug and a migration agent.
    let plain = Policy::from_json(r#"{"version":1,"release_pcr":null}"#).unwrap();
    assert!(eval(&plain, &genuine).accepted());
    let mut debug = genuine.clone();
    debug.debug_allowed = true;
    assert_eq!(failed(&eval(&plain, &debug)), ["snp.debug"]);
    let mut ma = genuine.clone();
    ma.migration_agent_allowed = true;
    assert_eq!(failed(&eval(&plain, &ma)), ["snp.migration_agent"]);
    let lenient = Policy::from_json(
        r#"{"version":1,"release_pcr":null,"snp":{"allow_debug":true,"allow_migration_agent":true}}"#,
    )
    .unwrap();
    assert!(eval(&lenient, &debug).accepted());

    let strict = Policy::from_json(&format!(
        r#"{{"version":1,"release_pcr":null,"snp":{{"measurements":["{}"],
            "min_tcb":{{"snp":24,"microcode":219}},"require_no_smt":true}}}}"#,
        hex::encode(&genuine.measurement)
    ))
    .unwrap();
    assert_eq!(failed(&eval(&strict, &genuine)), ["snp.smt"]);
    let mut other = genuine.clone();
    other.measurement[0] ^= 1;
    other.smt_allowed = false;
    assert_eq!(failed(&eval(&strict, &other)), ["snp.measurement"]);
    let mut old = genuine.clone();
    old.smt_allowed = false;
    old.reported_tcb.microcode = 0xd0;
    assert_eq!(failed(&eval(&strict, &old)), ["snp.min_tcb"]);

    // A policy with an snp section refuses evidence without an SNP report.
    let tpm_only = Claims::from_validated(q.pcrs(), q.clock_info(), None, None);
    assert_eq!(failed(&strict.evaluate_claims(&tpm_only)), ["snp"]);
    // An empty allowlist is refused when the policy is loaded.
    assert!(
        Policy::from_json(r#"{"version":1,"snp":{"measurements":[]}}"#).is_err(),
        "empty measurement list"
    );
    assert!(Policy::from_json(r#"{"version":1,"snp":{"measurements":["00"]}}"#).is_err());
}

#[test]
fn truncated_and_oversized_inputs_are_parse_errors() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let parsed = HclReport::parse(&r.hcl).unwrap();
    let end = HW + snp::REPORT_LEN + 20 + parsed.runtime_data.len();
    for len in (0..end).step_by(7) {
        assert!(
            azure::verify_hcl_report(&r.hcl[..len], &vcek).is_err(),
            "{len}"
        );
    }
    let mut big = r.hcl.clone();
    big.resize(azure::MAX_HCL_REPORT + 1, 0);
    assert!(matches!(
        azure::verify_hcl_report(&big, &vcek),
        Err(AzureError::Parse(_))
    ));
    let report = &r.hcl[HW..HW + snp::REPORT_LEN];
    let mut long = report.to_vec();
    long.push(0);
    assert!(matches!(
        snp::verify_report(&long, &vcek),
        Err(SnpError::Parse(_))
    ));
    assert!(SnpReport::parse(&report[..snp::REPORT_LEN - 1]).is_err());
    for len in [0, 1, 100, r.vcek.len() - 1] {
        assert!(roots().verify_vcek(&r.vcek[..len], &[], now()).is_err());
    }
}

#[test]
fn tdx_hcl_report_binds_its_runtime_data_but_is_not_verified_as_snp() {
    let hcl = read("quote/trustee-az-tdx-vtpm/hcl-report.bin");
    let parsed = HclReport::parse(&hcl).unwrap();
    assert_eq!(parsed.report_type, HclReportType::Tdx);
    assert!(parsed.runtime_data_bound());
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    assert!(matches!(
        azure::verify_hcl_report(&hcl, &vcek),
        Err(AzureError::NotSnp)
    ));
    // And the SNP one binds too (checked independently of the signature).
    assert!(HclReport::parse(&r.hcl).unwrap().runtime_data_bound());
}

#[test]
fn evidence_kind_names_round_trip() {
    for k in [EvidenceKind::Tpm, EvidenceKind::AzureSnpVtpm] {
        assert_eq!(k.as_str().parse::<EvidenceKind>().unwrap(), k);
    }
    assert!("sgx".parse::<EvidenceKind>().is_err());
    assert_eq!(
        serde_json::to_string(&EvidenceKind::AzureSnpVtpm).unwrap(),
        "\"azure-snp-vtpm\""
    );
    assert_eq!(
        serde_json::from_str::<EvidenceKind>("\"tpm\"").unwrap(),
        EvidenceKind::Tpm
    );
    assert!(EvidenceKind::Tpm.needs_make_credential());
}

/// A test attester that needs a challenge round (as IBM Secure Execution does): the verifier
/// makes a per-challenge secret, seals it to the attester's key in the challenge parameters,
/// and accepts only evidence authenticated under that secret over the nonce and the claimed
/// PCRs. It proves the interface carries verifier-made parameters and that evidence made for
/// one challenge is refused for another.
mod challenge_round {
    use aws_lc_rs::hmac;
    use subtle::ConstantTimeEq;

    use super::super::{Challenge, EvidenceKind, EvidenceVerifier, VerifiedClaims};
    use crate::keysplit::{self, NkPrivate, NkPublic, Sealed};
    use crate::policy::Claims;
    use crate::wire::{ClockInfo, Digest, HashAlg, PcrValues};

    const INFO: &[u8] = b"unlock/v1 test challenge round";

    struct SealedSecretVerifier {
        master: hmac::Key,
        attester: NkPublic,
    }

    struct Evidence<'a> {
        tag: [u8; 32],
        pcrs: &'a PcrValues,
    }

    struct Verified {
        pcrs: PcrValues,
    }

    impl VerifiedClaims for Verified {
        fn claims(&self) -> Claims<'_> {
            Claims::from_validated(
                &self.pcrs,
                ClockInfo {
                    clock: 0,
                    reset_count: 0,
                    restart_count: 0,
                    safe: true,
                },
                None,
                None,
            )
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("evidence is not authenticated under this challenge's secret")]
    struct Refused;

    impl SealedSecretVerifier {
        fn secret(&self, nonce: &[u8; 32]) -> [u8; 32] {
            let tag = hmac::sign(&self.master, nonce);
            let mut s = [0u8; 32];
            s.copy_from_slice(tag.as_ref());
            s
        }
    }

    fn mac(secret: &[u8; 32], nonce: &[u8; 32], pcrs: &PcrValues) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(nonce);
        for (i, d) in pcrs.iter() {
            ctx.update(&[i]);
            ctx.update(d.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    impl EvidenceVerifier for SealedSecretVerifier {
        type Evidence<'a> = Evidence<'a>;
        type Verified<'a> = Verified;
        type Error = Refused;

        fn kind(&self) -> EvidenceKind {
            EvidenceKind::Tpm
        }

        fn challenge(&self, nonce: [u8; 32]) -> Result<Challenge, Refused> {
            let sealed =
                keysplit::seal(&self.attester, INFO, &nonce, &self.secret(&nonce)).expect("seal");
            Ok(Challenge {
                nonce,
                params: Some(sealed.to_bytes()),
            })
        }

        fn verify<'a>(
            &self,
            challenge: &Challenge,
            evidence: Self::Evidence<'a>,
        ) -> Result<Self::Verified<'a>, Self::Error> {
            let want = mac(
                &self.secret(&challenge.nonce),
                &challenge.nonce,
                evidence.pcrs,
            );
            if bool::from(want.ct_eq(&evidence.tag)) {
                Ok(Verified {
                    pcrs: evidence.pcrs.clone(),
                })
            } else {
                Err(Refused)
            }
        }
    }

    /// The attester: opens the parameters with its key and authenticates its claims.
    fn attest(key: &NkPrivate, challenge: &Challenge, pcrs: &PcrValues) -> Option<[u8; 32]> {
        let sealed = Sealed::from_bytes(challenge.params.as_deref()?).ok()?;
        let opened = key.open(&sealed, INFO, &challenge.nonce).ok()?;
        let secret: [u8; 32] = opened.as_slice().try_into().ok()?;
        Some(mac(&secret, &challenge.nonce, pcrs))
    }

    #[test]
    fn evidence_depends_on_the_verifier_made_parameters() {
        let key = NkPrivate::generate().unwrap();
        let v = SealedSecretVerifier {
            master: hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]),
            attester: key.public(),
        };
        let mut pcrs = PcrValues::new();
        pcrs.insert(7, Digest::filled(HashAlg::Sha256, 0x11));
        let a = v.challenge([1; 32]).unwrap();
        let b = v.challenge([2; 32]).unwrap();
        assert!(a.params.is_some());

        let tag_a = attest(&key, &a, &pcrs).unwrap();
        let ok = v
            .verify(
                &a,
                Evidence {
                    tag: tag_a,
                    pcrs: &pcrs,
                },
            )
            .unwrap();
        assert_eq!(ok.claims().pcrs(), &pcrs);

        // Evidence made for challenge A, presented for challenge B.
        assert!(v
            .verify(
                &b,
                Evidence {
                    tag: tag_a,
                    pcrs: &pcrs
                }
            )
            .is_err());
        // Evidence for A with other PCRs than it authenticated.
        let mut other = pcrs.clone();
        other.insert(8, Digest::filled(HashAlg::Sha256, 0x22));
        assert!(v
            .verify(
                &a,
                Evidence {
                    tag: tag_a,
                    pcrs: &other
                }
            )
            .is_err());
        // Another attester cannot open A's parameters, so cannot answer them.
        let stranger = NkPrivate::generate().unwrap();
        assert!(attest(&stranger, &a, &pcrs).is_none());
        // Parameters from A with B's nonce do not open (the nonce is the AAD).
        let spliced = Challenge {
            nonce: b.nonce,
            params: a.params.clone(),
        };
        assert!(attest(&key, &spliced, &pcrs).is_none());
    }
}

#[test]
fn captured_evidence_gives_offline_claims_and_forgeries_are_refused() {
    use super::capture::{CaptureError, CheckedAzureCapture};
    let json = read("quote/trustee-az-snp-vtpm/evidence-v1.json");
    let c = CheckedAzureCapture::check(&json, &roots(), now()).unwrap();
    let claims = Claims::unverified_from_capture_azure(&c);
    assert_eq!(claims.source(), crate::policy::ClaimsSource::CapturedTee);
    assert_eq!(claims.snp().unwrap().reported_tcb.microcode, 0xdb);
    assert_eq!(claims.pcrs().bank(HashAlg::Sha256).count(), 24);
    let policy = Policy::from_json(&format!(
        r#"{{"version":1,"release_pcr":null,"snp":{{"measurements":["{}"]}}}}"#,
        hex::encode(&c.snp().measurement)
    ))
    .unwrap();
    assert!(policy.check(&claims).accepted());

    // The capture with one PCR value changed: the quote's digest refuses it.
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["tpm_quote"]["pcrs"][0] = serde_json::Value::String("00".repeat(32));
    let edited = serde_json::to_vec(&v).unwrap();
    assert!(matches!(
        CheckedAzureCapture::check(&edited, &roots(), now()),
        Err(CaptureError::Invalid(AzureSnpVtpmError::Quote(
            ValidationError::Quote(VerifyError::PcrDigestMismatch)
        )))
    ));
    // Another chip's VCEK in the capture.
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["vcek"] = serde_json::Value::String(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(OTHER_CHIP_VCEK),
    );
    assert!(matches!(
        CheckedAzureCapture::check(&serde_json::to_vec(&v).unwrap(), &roots(), now()),
        Err(CaptureError::Invalid(AzureSnpVtpmError::Report(
            AzureError::Snp(SnpError::ChipIdMismatch)
        )))
    ));
    // Not the format.
    assert!(matches!(
        CheckedAzureCapture::check(b"{}", &roots(), now()),
        Err(CaptureError::Format(_))
    ));
    assert!(matches!(
        CheckedAzureCapture::check(&vec![b' '; 70_000], &roots(), now()),
        Err(CaptureError::Format(_))
    ));
}

/// A bare-SNP binding: the real report was requested by the HCL (its REPORT_DATA is the
/// runtime-data hash), so it binds no challenge of ours; a report whose REPORT_DATA were ours
/// would, and the comparison is over all 64 bytes.
#[test]
fn report_data_binding_refuses_a_report_made_for_something_else() {
    let r = real();
    let vcek = roots().verify_vcek(&r.vcek, &[], now()).unwrap();
    let v = snp::verify_report(&r.hcl[HW..HW + snp::REPORT_LEN], &vcek).unwrap();
    let nk = [4u8; crate::keysplit::NK_PUBLIC_LEN];
    let ours = snp::unlock_report_data(&[7; 32], &nk);
    assert!(!v.binds(&ours));
    assert_eq!(&ours[32..], &[0u8; 32]);
    // What it does bind: its own REPORT_DATA, and not with one bit changed.
    let own = v.report().report_data;
    assert!(v.binds(&own));
    let mut near = own;
    near[63] ^= 1;
    assert!(!v.binds(&near));
    // Another NK gives another binding.
    assert_ne!(ours, snp::unlock_report_data(&[7; 32], &[5u8; 32]));
}

/// The runtime data's JWK `kid` as an RSA modulus (leading zeros stripped).
fn jwk_modulus(hcl: &[u8], kid: &str) -> Vec<u8> {
    let parsed = HclReport::parse(hcl).unwrap();
    let rt: serde_json::Value = serde_json::from_slice(parsed.runtime_data).unwrap();
    let k = rt["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k["n"].as_str().unwrap())
        .unwrap();
    n[n.iter().position(|b| *b != 0).unwrap()..].to_vec()
}

/// A TPMT_PUBLIC around an RSA modulus: restricted signing (AK) or restricted decryption
/// (EK-like); only the key is compared by the registration check.
fn rsa_public(modulus: &[u8], sign: bool) -> crate::wire::Public {
    use crate::wire::{KeyScheme, ObjectAttributes, PublicKey, SymDef, SymMode};
    let base = ObjectAttributes::FIXED_TPM
        .with(ObjectAttributes::FIXED_PARENT)
        .with(ObjectAttributes::SENSITIVE_DATA_ORIGIN)
        .with(ObjectAttributes::RESTRICTED);
    let (attrs, symmetric, scheme) = if sign {
        (
            base.with(ObjectAttributes::USER_WITH_AUTH)
                .with(ObjectAttributes::SIGN),
            SymDef::Null,
            KeyScheme::RsaSsa(HashAlg::Sha256),
        )
    } else {
        (
            base.with(ObjectAttributes::ADMIN_WITH_POLICY)
                .with(ObjectAttributes::DECRYPT),
            SymDef::Aes {
                key_bits: 128,
                mode: SymMode::Cfb,
            },
            KeyScheme::Null,
        )
    };
    crate::wire::Public::new(
        HashAlg::Sha256,
        attrs,
        &[],
        PublicKey::Rsa {
            symmetric,
            scheme,
            key_bits: 2048,
            exponent: 0,
            modulus: modulus.to_vec(),
        },
    )
    .unwrap()
}

/// The registration check on the real evidence: the keys the runtime data names pass;
/// another AK or another EK with the genuine report is refused by name (the report of one
/// CVM cannot register another CVM's key or enrollment).
#[test]
fn registration_binds_the_presented_ak_and_ek_to_the_real_report() {
    let r = real();
    let roots = roots();
    let v = AzureSnpVtpmVerifier {
        roots: &roots,
        now: now(),
        cache: None,
    };
    let ak = rsa_public(&jwk_modulus(&r.hcl, "HCLAkPub"), true);
    let ek = rsa_public(&jwk_modulus(&r.hcl, "HCLEkPub"), false);
    let hcl = v.verify_registration(&r.hcl, &r.vcek, &ak, &ek).unwrap();
    assert!(hcl.ak_matches(&ak) && hcl.ek_matches(&ek));
    assert!(!hcl.ek_matches(&ak), "the AK is not the EK");

    let mut other = jwk_modulus(&r.hcl, "HCLAkPub");
    other[17] ^= 1;
    let swapped = rsa_public(&other, true);
    assert!(matches!(
        v.verify_registration(&r.hcl, &r.vcek, &swapped, &ek),
        Err(AzureSnpVtpmError::Report(AzureError::KeyNotVouched(
            "AK",
            _
        )))
    ));
    let mut other = jwk_modulus(&r.hcl, "HCLEkPub");
    other[17] ^= 1;
    let other_ek = rsa_public(&other, false);
    let err = v
        .verify_registration(&r.hcl, &r.vcek, &ak, &other_ek)
        .unwrap_err();
    assert!(matches!(
        err,
        AzureSnpVtpmError::Report(AzureError::KeyNotVouched("EK", _))
    ));
    assert_eq!(err.code(), ErrorCode::TeeEvidenceInvalid);
    assert!(!err.signed_by_ak());
    // The EK as AK (both are RSA keys of the runtime data): refused.
    assert!(v.verify_registration(&r.hcl, &r.vcek, &ek, &ek).is_err());
    // The chain and report are checked first: another chip's VCEK.
    assert!(matches!(
        v.verify_registration(&r.hcl, OTHER_CHIP_VCEK, &ak, &ek),
        Err(AzureSnpVtpmError::Report(AzureError::Snp(
            SnpError::ChipIdMismatch
        )))
    ));
}

/// The attest-time check on the real evidence with the pinned AK: everything but the
/// binding passes, and the binding refuses the old quote; a pinned AK that is not the
/// report's is refused before the quote is looked at.
#[test]
fn verify_pinned_on_real_evidence() {
    let r = real();
    let roots = roots();
    let v = AzureSnpVtpmVerifier {
        roots: &roots,
        now: now(),
        cache: None,
    };
    let ak = crate::quote::AkPublic::try_from(rsa_public(&jwk_modulus(&r.hcl, "HCLAkPub"), true))
        .unwrap();
    let ek = rsa_public(&jwk_modulus(&r.hcl, "HCLEkPub"), false);
    let tree = MerkleTree::new(&[[9u8; 32]]).unwrap();
    let proof = tree.proof(0).unwrap();
    let nk = [4u8; crate::keysplit::NK_PUBLIC_LEN];
    let evidence = || AzureSnpVtpmEvidence {
        hcl_report: &r.hcl,
        vcek: &r.vcek,
        tpm: Submitted {
            attest: &r.attest,
            signature: &r.sig,
            pcrs: &r.pcrs,
            nk_pub: &nk,
            proof: &proof,
            event_log: None,
            ima_log: None,
        },
    };
    let err = v
        .verify_pinned(&Challenge::nonce_only([9; 32]), evidence(), &ak, &ek)
        .unwrap_err();
    assert!(
        matches!(err, AzureSnpVtpmError::Quote(_)),
        "refused at the quote: {err}"
    );
    assert_eq!(err.code(), ErrorCode::BindingMismatch);
    let mut other = jwk_modulus(&r.hcl, "HCLAkPub");
    other[5] ^= 1;
    let other = crate::quote::AkPublic::try_from(rsa_public(&other, true)).unwrap();
    assert!(matches!(
        v.verify_pinned(&Challenge::nonce_only([9; 32]), evidence(), &other, &ek),
        Err(AzureSnpVtpmError::Report(AzureError::KeyNotVouched(
            "AK",
            _
        )))
    ));
}

/// `snp-vtpm` is the short name of `azure-snp-vtpm` (CLI and agent configuration).
#[test]
fn snp_vtpm_is_another_name_of_azure_snp_vtpm() {
    assert_eq!(
        "snp-vtpm".parse::<EvidenceKind>().unwrap(),
        EvidenceKind::AzureSnpVtpm
    );
    assert_eq!(
        serde_json::from_str::<EvidenceKind>("\"snp-vtpm\"").unwrap(),
        EvidenceKind::AzureSnpVtpm
    );
    assert_eq!(EvidenceKind::default(), EvidenceKind::Tpm);
}
