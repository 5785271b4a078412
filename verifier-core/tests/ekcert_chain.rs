//! EK certificate checks against generated fixtures (src/ekcert/testdata/gen.sh) and the
//! real vendor certificates of the shared test data.

// Test code: a failed unwrap or index is a failed test, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use verifier_core::ekcert::{pem_certificates, verify_ek_certificate, EkCertError, TrustStore};
use verifier_core::wire::{
    EccCurve, HashAlg, KdfScheme, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef, SymMode,
};

const MODULUS: &[u8] = include_bytes!("../src/makecred/testdata/rsa2048-test-ek.modulus");

fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ekcert/testdata/");
    let pem = std::fs::read(format!("{path}{name}")).unwrap();
    pem_certificates(&pem).unwrap().remove(0)
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
        dir.join("ekcert").is_dir(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

/// 2027-06-01, inside every fixture's validity.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

fn ek_attrs() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::ADMIN_WITH_POLICY
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::DECRYPT
}

fn rsa_ek(modulus: &[u8]) -> Public {
    Public::new(
        HashAlg::Sha256,
        ek_attrs(),
        &[],
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
}

fn store() -> TrustStore {
    let mut s = TrustStore::new();
    s.add_der(&fixture("root.pem")).unwrap();
    s
}

fn verify(leaf: &str, inter: &[&str], ek: &Public, at: SystemTime) -> Result<(), EkCertError> {
    let inter: Vec<Vec<u8>> = inter.iter().map(|n| fixture(n)).collect();
    let refs: Vec<&[u8]> = inter.iter().map(Vec::as_slice).collect();
    verify_ek_certificate(&fixture(leaf), &refs, &store(), ek, at).map(|_| ())
}

#[test]
fn good_chain_verifies_and_reports_tpm_info() {
    let inter = fixture("inter.pem");
    let v = verify_ek_certificate(
        &fixture("ek.pem"),
        &[&inter],
        &store(),
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap();
    let info = v.tpm_info().unwrap();
    assert_eq!(info.manufacturer.as_deref(), Some("id:54455354"));
    assert_eq!(info.model.as_deref(), Some("TESTTPM"));
    assert_eq!(info.version.as_deref(), Some("id:00010002"));
    assert_eq!(v.chain().length(), 3);
}

#[test]
fn intermediate_in_trust_store_is_an_anchor() {
    let mut s = TrustStore::new();
    s.add_der(&fixture("inter.pem")).unwrap();
    let v = verify_ek_certificate(&fixture("ek.pem"), &[], &s, &rsa_ek(MODULUS), now()).unwrap();
    assert_eq!(v.chain().length(), 2);
}

#[test]
fn missing_intermediate_is_untrusted() {
    let err = verify("ek.pem", &[], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
}

#[test]
fn empty_trust_store_is_refused() {
    let err = verify_ek_certificate(
        &fixture("ek.pem"),
        &[],
        &TrustStore::new(),
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, EkCertError::EmptyTrustStore), "{err}");
}

#[test]
fn impostor_ca_with_same_name_is_refused() {
    // Signed by a self-made CA whose name equals the real intermediate's: the impostor
    // verifies the leaf but leads nowhere.
    let err = verify("ek-by-evil.pem", &["evil-ca.pem"], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
    // The impostor in the trust store would be trusted, which is the operator's choice;
    // the real root does not vouch for it.
    // Even presenting the real intermediate does not help: its key did not sign it.
    let err = verify("ek-by-evil.pem", &["inter.pem"], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(
        matches!(err, EkCertError::BadSignature { depth: 0 }),
        "{err}"
    );
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let late = UNIX_EPOCH + Duration::from_secs(2_208_988_800); // 2040: EK cert expired (2036)
    let err = verify("ek.pem", &["inter.pem"], &rsa_ek(MODULUS), late).unwrap_err();
    assert!(
        matches!(err, EkCertError::Expired { depth: 0, .. }),
        "{err}"
    );
    let early = UNIX_EPOCH + Duration::from_secs(1_735_689_600); // 2025
    let err = verify("ek.pem", &["inter.pem"], &rsa_ek(MODULUS), early).unwrap_err();
    assert!(
        matches!(err, EkCertError::NotYetValid { depth: 0, .. }),
        "{err}"
    );
}

#[test]
fn tampered_signature_is_refused() {
    let mut der = fixture("ek.pem");
    let last = der.len() - 1;
    der[last] ^= 1;
    let inter = fixture("inter.pem");
    let err =
        verify_ek_certificate(&der, &[&inter], &store(), &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(
        matches!(err, EkCertError::BadSignature { depth: 0 }),
        "{err}"
    );
}

#[test]
fn tampered_tbs_is_refused() {
    // Flip a byte of the modulus inside tbsCertificate: the signature no longer covers it.
    let mut der = fixture("ek.pem");
    let pos = der
        .windows(8)
        .position(|w| w == &MODULUS[100..108])
        .unwrap();
    der[pos] ^= 1;
    let mut modulus = MODULUS.to_vec();
    modulus[100] ^= 1;
    let inter = fixture("inter.pem");
    let err =
        verify_ek_certificate(&der, &[&inter], &store(), &rsa_ek(&modulus), now()).unwrap_err();
    assert!(
        matches!(err, EkCertError::BadSignature { depth: 0 }),
        "{err}"
    );
}

#[test]
fn key_mismatch_is_refused() {
    let mut other = MODULUS.to_vec();
    other[200] ^= 0x10;
    let err = verify("ek.pem", &["inter.pem"], &rsa_ek(&other), now()).unwrap_err();
    assert!(matches!(err, EkCertError::KeyMismatch), "{err}");
    // An ECC EK against an RSA certificate.
    let ecc = Public::new(
        HashAlg::Sha256,
        ek_attrs(),
        &[],
        PublicKey::Ecc {
            symmetric: SymDef::Aes {
                key_bits: 128,
                mode: SymMode::Cfb,
            },
            scheme: KeyScheme::Null,
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: vec![1; 32],
            y: vec![2; 32],
        },
    )
    .unwrap();
    let err = verify("ek.pem", &["inter.pem"], &ecc, now()).unwrap_err();
    assert!(matches!(err, EkCertError::KeyMismatch), "{err}");
}

#[test]
fn unknown_critical_extension_is_refused() {
    let err = verify(
        "ek-unknown-critical.pem",
        &["inter.pem"],
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap_err();
    match err {
        EkCertError::UnknownCriticalExtension { depth: 0, oid } => {
            assert_eq!(oid, "1.3.6.1.4.1.99999.1")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn non_ca_issuer_is_refused() {
    let err = verify("ek-by-notca.pem", &["notca.pem"], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(
        matches!(err, EkCertError::IssuerNotCa { depth: 1 }),
        "{err}"
    );
}

#[test]
fn issuer_without_key_cert_sign_is_refused() {
    let err = verify(
        "ek-by-nocertsign.pem",
        &["nocertsign.pem"],
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, EkCertError::IssuerMayNotSignCertificates { depth: 1 }),
        "{err}"
    );
}

#[test]
fn path_length_constraint_is_enforced() {
    let mut s = TrustStore::new();
    s.add_der(&fixture("root-pathlen0.pem")).unwrap();
    let inter = [fixture("inter-pathlen0.pem"), fixture("sub-pathlen0.pem")];
    let refs: Vec<&[u8]> = inter.iter().map(Vec::as_slice).collect();
    let err = verify_ek_certificate(
        &fixture("ek-pathlen.pem"),
        &refs,
        &s,
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap_err();
    // inter-pathlen0 (pathlen 0) has sub-pathlen0 below it; both limits are 0.
    assert!(matches!(err, EkCertError::PathLenExceeded { .. }), "{err}");
}

#[test]
fn sha1_signature_is_refused() {
    let err = verify("ek-sha1.pem", &["inter.pem"], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(
        matches!(err, EkCertError::Sha1Signature { depth: 0 }),
        "{err}"
    );
}

#[test]
fn leaf_that_is_a_ca_is_refused() {
    // The intermediate verified as if it were an EK certificate.
    let err = verify("inter.pem", &[], &rsa_ek(MODULUS), now()).unwrap_err();
    assert!(matches!(err, EkCertError::LeafIsCa), "{err}");
}

#[test]
fn garbage_is_a_parse_error_not_a_panic() {
    let der = fixture("ek.pem");
    for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
        assert!(
            verify_ek_certificate(&der[..cut], &[], &store(), &rsa_ek(MODULUS), now()).is_err()
        );
    }
    let mut long = der.clone();
    long.push(0);
    assert!(matches!(
        verify_ek_certificate(&long, &[], &store(), &rsa_ek(MODULUS), now()),
        Err(EkCertError::Parse(_))
    ));
    assert!(matches!(
        pem_certificates(b"no pem here"),
        Err(EkCertError::Pem(_))
    ));
}

fn vendor(name: &str) -> Vec<u8> {
    let pem = std::fs::read(testdata().join("ekcert/keylime-tpm_cert_store").join(name)).unwrap();
    pem_certificates(&pem).unwrap().remove(0)
}

#[test]
fn all_real_certificates_parse() {
    let mut n = 0;
    for sub in ["go-tpm-tools", "keylime-tpm_cert_store"] {
        for entry in std::fs::read_dir(testdata().join("ekcert").join(sub)).unwrap() {
            let pem = std::fs::read(entry.unwrap().path()).unwrap();
            let mut s = TrustStore::new();
            n += s.add_pem(&pem).unwrap();
        }
    }
    assert_eq!(n, 19);
}

#[test]
fn real_vendor_intermediates_chain_to_their_roots() {
    // STMicro RSA root CA issued by GlobalSign's TPM root (RSA, SHA-256).
    let mut gs = TrustStore::new();
    gs.add_der(&vendor("GS_TPM_RT.pem")).unwrap();
    let v = gs
        .verify_chain(&vendor("STM_RSA_RT.pem"), &[], now())
        .unwrap();
    assert_eq!(v.length(), 2);
    // Infineon ECC CA 042 issued by the Infineon ECC root (ECDSA P-384, SHA-384).
    let mut ifx = TrustStore::new();
    ifx.add_der(&vendor("INF_ECC_010RT.pem")).unwrap();
    ifx.verify_chain(&vendor("IFX_ECC_042.pem"), &[], now())
        .unwrap();
    // Crossed: STMicro is not issued by Infineon.
    let err = ifx
        .verify_chain(&vendor("STM_RSA_RT.pem"), &[], now())
        .unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
    // IFX RSA root is signed by VeriSign with SHA-1; VeriSign's root is not in the data,
    // and a SHA-1 link is refused anyway when the issuer is present.
    let err = gs
        .verify_chain(&vendor("IFX_RSA_RT.pem"), &[], now())
        .unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
}

#[test]
fn real_gce_ek_certificates_need_their_issuer() {
    // The go-tpm-tools certificates' issuers are not in the test data: refused, not crashed.
    let mut all = TrustStore::new();
    for entry in std::fs::read_dir(testdata().join("ekcert/keylime-tpm_cert_store")).unwrap() {
        all.add_pem(&std::fs::read(entry.unwrap().path()).unwrap())
            .unwrap();
    }
    let pem =
        std::fs::read(testdata().join("ekcert/go-tpm-tools/uca_tpm_rsa_enc_cert.pem")).unwrap();
    let der = pem_certificates(&pem).unwrap().remove(0);
    let err = all.verify_chain(&der, &[], now()).unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
}

#[test]
fn intermediates_pool_builds_the_path_and_trusts_nothing() {
    // Root anchor, vendor intermediate in the pool: the three-certificate path is found.
    let mut s = store();
    s.add_intermediate_der(&fixture("inter.pem")).unwrap();
    assert_eq!((s.len(), s.intermediates_len()), (1, 1));
    let v = verify_ek_certificate(&fixture("ek.pem"), &[], &s, &rsa_ek(MODULUS), now()).unwrap();
    assert_eq!(v.chain().length(), 3);
    // The pool alone, without the root as anchor, makes nothing trusted (the intermediate
    // and the root itself in the pool are not anchors).
    let mut pool_only = TrustStore::new();
    pool_only.add_der(&fixture("notca.pem")).unwrap();
    pool_only
        .add_intermediate_der(&fixture("inter.pem"))
        .unwrap();
    pool_only
        .add_intermediate_der(&fixture("root.pem"))
        .unwrap();
    let err = verify_ek_certificate(&fixture("ek.pem"), &[], &pool_only, &rsa_ek(MODULUS), now())
        .unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
    // A wrong intermediate in the pool (same name, another key) gives no path either.
    let mut wrong = store();
    wrong.add_intermediate_der(&fixture("evil-ca.pem")).unwrap();
    let err = verify_ek_certificate(&fixture("ek.pem"), &[], &wrong, &rsa_ek(MODULUS), now())
        .unwrap_err();
    assert!(
        matches!(err, EkCertError::BadSignature { depth: 0 }),
        "{err}"
    );
    // The pool and presented certificates combine: the agent's chain fills the gap.
    let inter = fixture("inter.pem");
    verify_ek_certificate(
        &fixture("ek.pem"),
        &[&inter],
        &wrong,
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap();
}

#[test]
fn too_many_presented_intermediates_are_refused() {
    let inter = fixture("inter.pem");
    let many: Vec<&[u8]> = vec![&inter; 9];
    let err = verify_ek_certificate(&fixture("ek.pem"), &many, &store(), &rsa_ek(MODULUS), now())
        .unwrap_err();
    assert!(
        matches!(err, EkCertError::TooManyIntermediates { max: 8 }),
        "{err}"
    );
}

#[test]
fn same_named_ca_copies_cannot_make_the_search_exponential() {
    // Eight copies of a self-signed CA named like the EK's issuer: each verifies the leaf
    // and each other, so an unbounded search would try 8*7*6*5*4 links, each a signature
    // check. The budget stops it, quickly.
    let evil = fixture("evil-ca.pem");
    let copies: Vec<&[u8]> = vec![&evil; 8];
    let t = std::time::Instant::now();
    let err = verify_ek_certificate(
        &fixture("ek-by-evil.pem"),
        &copies,
        &store(),
        &rsa_ek(MODULUS),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, EkCertError::PathSearchExhausted { max: 64 }),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn real_vendor_store_as_intermediates_pool() {
    // The keylime store loaded whole as the (untrusted) pool, only GlobalSign's TPM root as
    // anchor: STMicro's RSA CA chains to it; Infineon's ECC CA does not, although its root
    // sits in the pool, because a root in the pool is not trusted.
    let mut s = TrustStore::new();
    s.add_der(&vendor("GS_TPM_RT.pem")).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(testdata().join("ekcert/keylime-tpm_cert_store")).unwrap() {
        n += s
            .add_intermediate_pem(&std::fs::read(entry.unwrap().path()).unwrap())
            .unwrap();
    }
    assert_eq!(n, 11);
    let v = s
        .verify_chain(&vendor("STM_RSA_RT.pem"), &[], now())
        .unwrap();
    assert_eq!(v.length(), 2);
    let err = s
        .verify_chain(&vendor("IFX_ECC_042.pem"), &[], now())
        .unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
    // The GCE EK certificates' issuer (Google's EK/AK CA Intermediate) is in no store of
    // the shared data: refused with the whole pool present too.
    let pem =
        std::fs::read(testdata().join("ekcert/go-tpm-tools/pca_tpm_rsa_enc_cert.pem")).unwrap();
    let der = pem_certificates(&pem).unwrap().remove(0);
    let err = s.verify_chain(&der, &[], now()).unwrap_err();
    assert!(matches!(err, EkCertError::UntrustedIssuer), "{err}");
}
