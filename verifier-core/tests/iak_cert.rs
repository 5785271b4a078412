//! IAK certificate checks against certificates openssl made (src/ekcert/testdata/
//! gen-iak.sh): the device identity our DER reader takes is the one openssl wrote, and each
//! check of `verify_iak_certificate` refuses the certificate that breaks exactly it. The
//! same checks behind the real server, with an IAK swtpm made: unlock-server/tests/e2e_iak.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use verifier_core::ekcert::{
    iak_identity, pem_certificates, verify_iak_certificate, Certificate, EkCertError, IakCertError,
    TrustStore,
};
use verifier_core::quote::AkPublic;
use verifier_core::wire::{EccCurve, HashAlg, KdfScheme, KeyScheme, ObjectAttributes, Public};
use verifier_core::wire::{PublicKey, SymDef};

fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ekcert/testdata/");
    let pem = std::fs::read(format!("{path}{name}")).unwrap();
    pem_certificates(&pem).unwrap().remove(0)
}

/// 2030-01-01, inside every fixture's validity.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add_der(&fixture("iak-root.pem")).unwrap();
    t
}

/// An AK (the TPMT_PUBLIC a TPM would report) whose key is `point` (04 || x || y).
fn ak_with(point: &[u8], attributes: ObjectAttributes) -> Public {
    Public::new(
        HashAlg::Sha256,
        attributes,
        &[],
        PublicKey::Ecc {
            symmetric: SymDef::Null,
            scheme: KeyScheme::Ecdsa(HashAlg::Sha256),
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: point[1..33].to_vec(),
            y: point[33..65].to_vec(),
        },
    )
    .unwrap()
}

fn ak_attrs() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::USER_WITH_AUTH
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN
}

fn iak_point() -> Vec<u8> {
    let text = include_str!("../src/ekcert/testdata/iak-key.hex");
    hex::decode(text.trim()).unwrap()
}

fn ak() -> AkPublic {
    AkPublic::try_from(ak_with(&iak_point(), ak_attrs())).unwrap()
}

fn verify(name: &str, ak: &AkPublic) -> Result<String, IakCertError> {
    verify_iak_certificate(&fixture(name), &[], &trust(), ak, now()).map(|v| v.identity().key())
}

#[test]
fn the_iak_certificate_verifies_and_names_its_device() {
    let key = verify("iak.pem", &ak()).unwrap();
    assert_eq!(key, format!("2.23.133.1.2:{}", hex::encode("OEM-TPM-0001")));
    let id = iak_identity(&fixture("iak.pem")).unwrap();
    assert_eq!(id.hw_serial(), b"OEM-TPM-0001");
    assert_eq!(id.subject_serial(), Some("OEM-TPM-0001"));
    assert_eq!(id.key(), key);
    let cert = Certificate::from_der(&fixture("iak.pem")).unwrap();
    assert_eq!(
        cert.subject_serial_number().as_deref(),
        Some("OEM-TPM-0001")
    );
    // The IDevID certificate names the same device (what an operator may bind with).
    assert_eq!(iak_identity(&fixture("iak-idevid.pem")).unwrap().key(), key);
}

#[test]
fn each_check_refuses_the_certificate_that_breaks_it() {
    let ak = ak();
    assert!(matches!(
        verify("iak-idevid.pem", &ak),
        Err(IakCertError::NotIakCertificate)
    ));
    assert!(matches!(
        verify("iak-tpm12.pem", &ak),
        Err(IakCertError::NotTpm2 { found }) if found == "2.23.133.1.1"
    ));
    assert!(matches!(
        verify("iak-no-hmn.pem", &ak),
        Err(IakCertError::NoHardwareModuleName)
    ));
    assert!(matches!(
        verify("iak-as-ca.pem", &ak),
        Err(IakCertError::LeafIsCa)
    ));
    // Another key: a valid AK, but not the one certified.
    let other = include_str!("../src/ekcert/testdata/iak-other-key.hex");
    let other =
        AkPublic::try_from(ak_with(&hex::decode(other.trim()).unwrap(), ak_attrs())).unwrap();
    assert!(matches!(
        verify("iak.pem", &other),
        Err(IakCertError::KeyMismatch)
    ));
    // Not chaining to the store: an empty store, another anchor, an expired time.
    assert!(matches!(
        verify_iak_certificate(&fixture("iak.pem"), &[], &TrustStore::new(), &ak, now()),
        Err(IakCertError::Chain(EkCertError::EmptyTrustStore))
    ));
    let mut elsewhere = TrustStore::new();
    elsewhere.add_der(&fixture("root.pem")).unwrap();
    assert!(matches!(
        verify_iak_certificate(&fixture("iak.pem"), &[], &elsewhere, &ak, now()),
        Err(IakCertError::Chain(EkCertError::UntrustedIssuer))
    ));
    let long_after = UNIX_EPOCH + Duration::from_secs(6_000_000_000);
    assert!(matches!(
        verify_iak_certificate(&fixture("iak.pem"), &[], &trust(), &ak, long_after),
        Err(IakCertError::Chain(EkCertError::Expired { .. }))
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let der = fixture("iak.pem");
    for n in 0..der.len() {
        assert!(iak_identity(&der[..n]).is_err(), "prefix of {n} bytes");
        verifier_core::fuzzing::ekcert(&der[..n]);
    }
}

#[test]
fn a_certificate_without_hardware_module_name_names_no_device() {
    // The EK fixtures carry a subjectAltName directoryName (TPM model), no otherName.
    let e = iak_identity(&fixture("ek.pem")).unwrap_err().to_string();
    assert!(e.contains("hardwareModuleName"), "{e}");
}
