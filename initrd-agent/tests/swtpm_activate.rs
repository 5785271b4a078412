//! Interoperability of verifier-core's pure-Rust MakeCredential with a real TPM (swtpm):
//! the TPM must return exactly our secret from ActivateCredential, for RSA and ECC EKs, and
//! refuse a credential made for another AK name. Also reads swtpm's EK certificate from NV
//! and checks it against swtpm's local CA with verifier-core's ekcert.

// Test code: a failed unwrap or index is a failed test, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{quiet_tss, skip, Swtpm};
use initrd_agent::tpm::{EkKind, Tpm};
use verifier_core::makecred::make_credential;
use verifier_core::wire::Public;

fn activate_round_trip(kind: EkKind) {
    if skip() {
        return;
    }
    quiet_tss();
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ek = tpm.create_ek(kind).unwrap();
    let ak = tpm.create_ak(&ek).unwrap();

    // The server's view: parse the marshalled publics, compute the AK name itself.
    let ek_pub = Public::parse(ek.public()).unwrap();
    let ak_pub = Public::parse(ak.public()).unwrap();
    assert_eq!(
        ak_pub.name(),
        ak.name(),
        "verifier-core and the TPM disagree on the AK name"
    );

    let secret: Vec<u8> = (1..=32).collect();
    let made = make_credential(&ek_pub, &ak_pub.name(), &secret).unwrap();
    let got = tpm
        .activate_credential(&ak, &ek, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(&got[..], &secret[..]);

    // A shorter secret works too (TPM2B_DIGEST is variable length).
    let made = make_credential(&ek_pub, &ak_pub.name(), b"hi").unwrap();
    let got = tpm
        .activate_credential(&ak, &ek, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(&got[..], b"hi");

    // Made for another AK name: the TPM's integrity check fails.
    let mut other = ak_pub.name();
    if let Some(b) = other.last_mut() {
        *b ^= 1;
    }
    let made = make_credential(&ek_pub, &other, &secret).unwrap();
    let err = tpm
        .activate_credential(&ak, &ek, &made.credential_blob, &made.encrypted_secret)
        .unwrap_err();
    assert!(err.to_string().contains("ActivateCredential"), "{err}");

    // A tampered blob is refused as well.
    let mut made = make_credential(&ek_pub, &ak_pub.name(), &secret).unwrap();
    if let Some(b) = made.credential_blob.last_mut() {
        *b ^= 0x80;
    }
    assert!(tpm
        .activate_credential(&ak, &ek, &made.credential_blob, &made.encrypted_secret)
        .is_err());
}

/// The high-range P-384 EK: a SHA-384 policy session with PolicySecret and PolicyOR for
/// Create, Load and ActivateCredential.
#[test]
fn ecc_p384_ek_activates_our_credential() {
    activate_round_trip(EkKind::EccP384);
}

/// The high-range RSA-3072 EK (template H-6): SHA-384 name, OAEP with SHA-384, AES-256,
/// and the same SHA-384 policy session as P-384.
#[test]
fn rsa3072_ek_activates_our_credential() {
    activate_round_trip(EkKind::Rsa3072);
}

#[test]
fn rsa_ek_activates_our_credential() {
    activate_round_trip(EkKind::Rsa2048);
}

#[test]
fn ecc_ek_activates_our_credential() {
    activate_round_trip(EkKind::EccP256);
}

#[test]
fn ek_of_another_tpm_cannot_activate() {
    if skip() {
        return;
    }
    quiet_tss();
    let (a, b) = (Swtpm::start(), Swtpm::start());
    let mut tpm_a = Tpm::open(&a.tcti()).unwrap();
    let mut tpm_b = Tpm::open(&b.tcti()).unwrap();
    let ek_a = tpm_a.create_ek(EkKind::EccP256).unwrap();
    let ek_b = tpm_b.create_ek(EkKind::EccP256).unwrap();
    let ak_b = tpm_b.create_ak(&ek_b).unwrap();
    // Credential for TPM A's EK, presented to TPM B with B's AK.
    let ek_a_pub = Public::parse(ek_a.public()).unwrap();
    let made = make_credential(&ek_a_pub, ak_b.name(), b"secret").unwrap();
    assert!(tpm_b
        .activate_credential(&ak_b, &ek_b, &made.credential_blob, &made.encrypted_secret)
        .is_err());
}

#[test]
fn no_ek_cert_on_unprovisioned_tpm() {
    if skip() {
        return;
    }
    quiet_tss();
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    assert_eq!(tpm.read_ek_cert(EkKind::Rsa2048).unwrap(), None);
}

fn provisioned_ek_cert_verifies(ecc: bool, kind: EkKind) {
    provisioned_ek_cert_verifies_with(ecc, None, kind);
}

fn provisioned_ek_cert_verifies_with(ecc: bool, rsa_keysize: Option<u32>, kind: EkKind) {
    use verifier_core::ekcert::{pem_certificates, verify_ek_certificate, EkCertError, TrustStore};
    if skip() {
        return;
    }
    quiet_tss();
    let (sw, root_pem, issuer_pem) = Swtpm::start_provisioned_with(ecc, rsa_keysize);
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let cert = tpm
        .read_ek_cert(kind)
        .unwrap()
        .expect("swtpm_setup --create-ek-cert wrote no EK certificate");
    let ek = tpm.create_ek(kind).unwrap();
    let ek_pub = Public::parse(ek.public()).unwrap();
    let now = std::time::SystemTime::now();

    let mut trust = TrustStore::new();
    trust.add_pem(&root_pem).unwrap();
    let issuer = pem_certificates(&issuer_pem).unwrap().remove(0);
    let verified = verify_ek_certificate(&cert, &[&issuer], &trust, &ek_pub, now).unwrap();
    assert_eq!(verified.chain().length(), 3);
    assert!(
        verified.tpm_info().is_some(),
        "swtpm puts TPM info in the SAN"
    );

    // Without the intermediate there is no path; with another TPM's EK the key mismatches.
    assert!(matches!(
        verify_ek_certificate(&cert, &[], &trust, &ek_pub, now),
        Err(EkCertError::UntrustedIssuer)
    ));
    let other = Swtpm::start();
    let mut other_tpm = Tpm::open(&other.tcti()).unwrap();
    let other_ek = other_tpm.create_ek(kind).unwrap();
    let other_pub = Public::parse(other_ek.public()).unwrap();
    assert!(matches!(
        verify_ek_certificate(&cert, &[&issuer], &trust, &other_pub, now),
        Err(EkCertError::KeyMismatch)
    ));
}

#[test]
fn swtpm_rsa_ek_cert_chains_to_local_ca() {
    provisioned_ek_cert_verifies(false, EkKind::Rsa2048);
}

/// swtpm_setup (0.7) certifies an ECC P-384 EK (high range, NV 0x01c00016).
#[test]
fn swtpm_ecc_ek_cert_chains_to_local_ca() {
    provisioned_ek_cert_verifies(true, EkKind::EccP384);
}

/// swtpm_setup `--rsa-keysize 3072` certifies the RSA-3072 EK (high range, NV 0x01c0001c);
/// the key the agent derives from template H-6 is the certified one.
#[test]
fn swtpm_rsa3072_ek_cert_chains_to_local_ca() {
    provisioned_ek_cert_verifies_with(false, Some(3072), EkKind::Rsa3072);
}
