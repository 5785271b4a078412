//! IAK certificate decoding against a certificate openssl made (src/ekcert/testdata/
//! gen-iak.sh): the device identity fields our DER reader takes from it are the ones
//! openssl wrote. Chain checks and every refusal are tested end to end against the real
//! server (unlock-server/tests/e2e_iak.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use verifier_core::ekcert::{iak_identity, pem_certificates, Certificate};

fn fixture() -> Vec<u8> {
    let pem = include_bytes!("../src/ekcert/testdata/iak-openssl.pem");
    pem_certificates(pem).unwrap().remove(0)
}

#[test]
fn hardware_module_name_and_subject_serial_as_openssl_wrote_them() {
    let der = fixture();
    let id = iak_identity(&der).unwrap();
    assert_eq!(id.hw_serial(), b"OEM-TPM-0001");
    assert_eq!(id.subject_serial(), Some("OEM-TPM-0001"));
    assert_eq!(
        id.key(),
        format!("2.23.133.1.2:{}", hex::encode("OEM-TPM-0001"))
    );
    let cert = Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.subject_serial_number().as_deref(),
        Some("OEM-TPM-0001")
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let der = fixture();
    for n in 0..der.len() {
        assert!(iak_identity(&der[..n]).is_err(), "prefix of {n} bytes");
    }
}

#[test]
fn a_certificate_without_hardware_module_name_names_no_device() {
    // The EK fixtures carry a subjectAltName directoryName (TPM model), no otherName.
    let pem = include_bytes!("../src/ekcert/testdata/ek.pem");
    let der = pem_certificates(pem).unwrap().remove(0);
    let e = iak_identity(&der).unwrap_err().to_string();
    assert!(e.contains("hardwareModuleName"), "{e}");
}

#[test]
fn the_fuzz_entry_points_accept_the_fixture_and_its_truncations() {
    let der = fixture();
    verifier_core::fuzzing::ekcert(&der);
    for n in (0..der.len()).step_by(7) {
        verifier_core::fuzzing::ekcert(&der[..n]);
    }
}
