//! The IAK registration path end to end: an IAK that swtpm made (persisted at a handle, as
//! an OEM's provisioning would), certified by a test OEM CA made here with rcgen; the real
//! server with `--iak-ca`, `unlockctl iak bind`, and the real agent configured with the
//! IAK's handle and certificate. The honest machine unlocks with no MakeCredential and no
//! activation round; each forged certificate (or AK) is refused with its own code and
//! pins nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;

use initrd_agent::tpm::Tpm;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use support::{code, post, Machine, Server};
use verifier_core::proto::v1::{self, AgentId, ChallengeRequest, RegisterIakRequest};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::Public;

/// Where the test's "OEM" persists the IAK (the agent's `iak_handle`).
const IAK_HANDLE: u32 = 0x8102_0001;
/// The device serial number the OEM writes into hardwareModuleName.
const SERIAL: &[u8] = b"OEM-TPM-0001";
/// tcg-kp-AIKCertificate (2.23.133.8.3).
const AIK_EKU: &[u64] = &[2, 23, 133, 8, 3];
/// hwType TPM 2.0 (2.23.133.1.2), DER content bytes.
const HW_TPM2: &[u8] = &[0x67, 0x81, 0x05, 0x01, 0x02];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TPM key (the IAK's public area) as the subject key of a certificate: rcgen signs a
/// certificate for a key whose private half it never sees.
struct TpmKey(Vec<u8>);

impl TpmKey {
    fn of(public: &[u8]) -> Self {
        Self(
            Public::parse(public)
                .unwrap()
                .ecc_point_uncompressed()
                .unwrap(),
        )
    }
}

impl PublicKeyData for TpmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// What one issued certificate says (each forgery changes one field).
#[derive(Clone)]
struct Spec {
    serial: Vec<u8>,
    hw_type: Vec<u8>,
    aik_eku: bool,
    expired: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            serial: SERIAL.to_vec(),
            hw_type: HW_TPM2.to_vec(),
            aik_eku: true,
            expired: false,
        }
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    let len = u16::try_from(n).unwrap().to_be_bytes();
    match n {
        0..=0x7f => out.push(len[1]),
        0x80..=0xff => out.extend_from_slice(&[0x81, len[1]]),
        _ => out.extend_from_slice(&[0x82, len[0], len[1]]),
    }
    out.extend_from_slice(content);
    out
}

/// subjectAltName with one otherName hardwareModuleName (RFC 4108).
fn hardware_module_name_san(hw_type: &[u8], serial: &[u8]) -> Vec<u8> {
    const ON_HMN: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x04];
    let hmn = tlv(0x30, &[tlv(0x06, hw_type), tlv(0x04, serial)].concat());
    let other = tlv(0xa0, &[tlv(0x06, ON_HMN), tlv(0xa0, &hmn)].concat());
    tlv(0x30, &other)
}

/// A test OEM CA.
struct Oem {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Oem {
    /// A root named "Test OEM Device Identity CA" (an impostor gets the same name and its
    /// own key).
    fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test OEM Device Identity CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// An IAK certificate (DER) for `public` (a TPMT_PUBLIC) as `spec` says.
    fn issue(&self, public: &[u8], spec: &Spec) -> Vec<u8> {
        self.issue_for(&TpmKey::of(public), spec)
    }

    /// An IAK certificate (DER) for the P-256 point of `key`.
    fn issue_for(&self, key: &TpmKey, spec: &Spec) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test device IAK");
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            String::from_utf8_lossy(&spec.serial).into_owned(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.aik_eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(AIK_EKU.to_vec())];
        }
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            hardware_module_name_san(&spec.hw_type, &spec.serial),
        )];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = if spec.expired {
            rcgen::date_time_ymd(2025, 1, 1)
        } else {
            // The TCG profile's "no expiry" (99991231235959Z) is GeneralizedTime; any far
            // date does here.
            rcgen::date_time_ymd(2099, 1, 1)
        };
        params
            .signed_by(key, &self.cert, &self.key)
            .unwrap()
            .der()
            .to_vec()
    }
}

/// A machine whose swtpm holds an IAK at [`IAK_HANDLE`]; the IAK's TPMT_PUBLIC.
fn iak_machine() -> (Machine, Vec<u8>) {
    let m = Machine::new();
    let public = {
        let mut tpm = Tpm::open(&m.tcti()).unwrap();
        tpm.provision_iak(IAK_HANDLE).unwrap()
    };
    (m, public)
}

/// The OEM CA file for `--iak-ca`.
fn ca_file(m: &Machine, oem: &Oem) -> PathBuf {
    let p = m.dir.path().join("oem-ca.pem");
    std::fs::write(&p, oem.pem()).unwrap();
    p
}

fn write_pem(m: &Machine, name: &str, der: &[u8]) -> PathBuf {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let p = m.dir.path().join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// The agent's config with the IAK path on.
fn iak_config(m: &Machine, server: &Server, cert: &std::path::Path) -> PathBuf {
    let cfg = m.config(server, None);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "iak_handle = {IAK_HANDLE:#010x}\niak_cert = \"{}\"\n",
        cert.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn bind(server: &Server, agent_id: &str, cert: &std::path::Path) {
    let out = server.unlockctl(&[
        "iak",
        "bind",
        agent_id,
        "--iak-cert",
        cert.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "iak bind: {}", stderr(&out));
}

#[test]
fn iak_machine_unlocks_with_no_activation_round() {
    let (m, iak_pub) = iak_machine();
    let oem = Oem::new();
    // No --ek-ca and no --allow-ek-without-cert: this path does not lean on the EK.
    let server = Server::start(&["--iak-ca", ca_file(&m, &oem).to_str().unwrap()]);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let cert = write_pem(&m, "iak.pem", &oem.issue(&iak_pub, &Spec::default()));

    let shown = server.unlockctl(&["iak", "show", "--iak-cert", cert.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.starts_with(&format!("2.23.133.1.2:{}", hex::encode(SERIAL))),
        "{shown}"
    );
    assert!(shown.contains("OEM-TPM-0001"), "{shown}");
    bind(&server, &agent_id, &cert);

    let cfg = iak_config(&m, &server, &cert);
    let out = m.agent_with(&cfg, &["--verbose"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    assert!(err.contains("step register-iak"), "{err}");
    assert!(!err.contains("step activate"), "{err}");
    // Not one MakeCredential on either role; one IAK registration on each.
    assert_eq!(server.registrations(), 0);
    assert_eq!(iak_registrations(&server), 2);

    // The pinned AK is the IAK (its name), on both roles.
    let iak_name = Public::parse(&iak_pub).unwrap().name();
    for role in ["verifier", "tenant"] {
        let (status, _) = challenge(&server, role, &agent_id, &iak_name);
        assert_eq!(status, 200, "{role}: the IAK is not pinned");
    }

    // Next boot: the EK's id and the pinned IAK are known, so no registration at all.
    let mut m = m;
    m.reboot();
    // The restarted swtpm listens on another port: the config is written again.
    let cfg = iak_config(&m, &server, &cert);
    let out = m.agent_with(&cfg, &["--verbose"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("register"), "{err}");
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    assert_eq!(server.registrations(), 0);
    assert_eq!(iak_registrations(&server), 2);
}

/// IAK registrations of both roles (from `/metrics`).
fn iak_registrations(server: &Server) -> u64 {
    let text = server.metrics();
    ["verifier", "tenant"]
        .iter()
        .map(|r| {
            support::raw::metric(
                &text,
                &format!("unlock_iak_registrations_total{{role=\"{r}\"}}"),
            )
        })
        .sum()
}

/// POST a challenge request for (agent, AK name); status and body.
fn challenge(server: &Server, role: &str, agent_id: &str, ak_name: &[u8]) -> (u16, Vec<u8>) {
    let req = ChallengeRequest {
        agent_id: AgentId::try_from(agent_id.to_owned()).unwrap(),
        ak_name: Base64Bytes::new(ak_name.to_vec()),
    };
    post(
        &server.http(),
        &format!("{}/{role}{}", server.url, v1::path::CHALLENGE),
        &v1::encode(&req).unwrap(),
    )
}

fn register_iak(server: &Server, role: &str, req: &RegisterIakRequest) -> (u16, String) {
    let (status, body) = post(
        &server.http(),
        &format!("{}/{role}{}", server.url, v1::path::REGISTER_IAK),
        &v1::encode(req).unwrap(),
    );
    let c = if status == 200 {
        String::new()
    } else {
        code(&body)
    };
    (status, c)
}

#[test]
fn forged_iak_certificates_and_aks_are_refused_and_pin_nothing() {
    let (m, iak_pub) = iak_machine();
    let oem = Oem::new();
    let server = Server::start(&["--iak-ca", ca_file(&m, &oem).to_str().unwrap()]);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let ek_pub = std::fs::read(m.dir.path().join("ek.pub")).unwrap();
    let honest = oem.issue(&iak_pub, &Spec::default());
    let req = |ak_pub: &[u8], cert: Vec<u8>| RegisterIakRequest {
        ek_pub: Base64Bytes::new(ek_pub.clone()),
        ak_pub: Base64Bytes::new(ak_pub.to_vec()),
        iak_cert: Base64Bytes::new(cert),
        iak_chain: Vec::new(),
    };

    // Not bound yet: the enrollment accepts no IAK certificate, however genuine.
    assert_eq!(
        register_iak(&server, "verifier", &req(&iak_pub, honest.clone())),
        (403, "iak_not_bound".to_owned())
    );
    bind(&server, &agent_id, &write_pem(&m, "iak.pem", &honest));

    // Another P-256 key (made in software): a genuine certificate of the OEM for it is
    // not a certificate for this AK.
    let other = TpmKey(
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .public_key_raw()
            .to_vec(),
    );
    let impostor = Oem::new();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "signed by another CA of the same name",
            iak_pub.clone(),
            impostor.issue(&iak_pub, &Spec::default()),
            "iak_cert_untrusted",
        ),
        (
            "certifies another key than the presented AK",
            iak_pub.clone(),
            oem.issue_for(&other, &Spec::default()),
            "iak_cert_untrusted",
        ),
        (
            "expired",
            iak_pub.clone(),
            oem.issue(
                &iak_pub,
                &Spec {
                    expired: true,
                    ..Spec::default()
                },
            ),
            "iak_cert_untrusted",
        ),
        (
            "an IDevID-style certificate (no tcg-kp-AIKCertificate)",
            iak_pub.clone(),
            oem.issue(
                &iak_pub,
                &Spec {
                    aik_eku: false,
                    ..Spec::default()
                },
            ),
            "iak_cert_untrusted",
        ),
        (
            "hardwareModuleName of another hwType than TPM 2.0",
            iak_pub.clone(),
            oem.issue(
                &iak_pub,
                &Spec {
                    hw_type: vec![0x67, 0x81, 0x05, 0x01, 0x01],
                    ..Spec::default()
                },
            ),
            "iak_cert_untrusted",
        ),
        (
            "genuine, but names another device (serial)",
            iak_pub.clone(),
            oem.issue(
                &iak_pub,
                &Spec {
                    serial: b"OEM-TPM-0002".to_vec(),
                    ..Spec::default()
                },
            ),
            "iak_identity_mismatch",
        ),
        (
            "the AK presented as not restricted (its certificate is genuine)",
            with_attribute_cleared(&iak_pub, 1 << 16),
            honest.clone(),
            "ak_not_acceptable",
        ),
        (
            "the AK presented as not fixedTPM (its certificate is genuine)",
            with_attribute_cleared(&iak_pub, 1 << 1),
            honest.clone(),
            "ak_not_acceptable",
        ),
    ];
    let iak_name = Public::parse(&iak_pub).unwrap().name();
    for (what, ak, cert, want) in cases {
        let (status, got) = register_iak(&server, "verifier", &req(&ak, cert));
        assert_eq!((status, got.as_str()), (403, want), "{what}");
        let pinned = challenge(&server, "verifier", &agent_id, &iak_name).0;
        assert_eq!(pinned, 404, "{what}: something was pinned");
    }
    assert_eq!(server.registrations(), 0);
    assert_eq!(iak_registrations(&server), 0);

    // The real agent with the impostor's certificate: refused, no key.
    let forged = write_pem(
        &m,
        "forged.pem",
        &impostor.issue(&iak_pub, &Spec::default()),
    );
    let out = m.agent_with(&iak_config(&m, &server, &forged), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("iak_cert_untrusted"), "{err}");
    assert!(!m.key_file().exists());

    // The honest certificate still registers: the refusals above were each about the one
    // thing forged.
    let (status, _) = register_iak(&server, "verifier", &req(&iak_pub, honest));
    assert_eq!(status, 200);
    assert_eq!(challenge(&server, "verifier", &agent_id, &iak_name).0, 200);
}

/// The TPMT_PUBLIC with one objectAttributes bit cleared (type u16, nameAlg u16, then the
/// attributes u32).
fn with_attribute_cleared(public: &[u8], bit: u32) -> Vec<u8> {
    let mut p = public.to_vec();
    let attrs = u32::from_be_bytes(p[4..8].try_into().unwrap()) & !bit;
    p[4..8].copy_from_slice(&attrs.to_be_bytes());
    p
}

#[test]
fn without_an_oem_ca_no_iak_certificate_is_accepted() {
    let (m, iak_pub) = iak_machine();
    let oem = Oem::new();
    let server = Server::start(&[]);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let cert = oem.issue(&iak_pub, &Spec::default());
    bind(&server, &agent_id, &write_pem(&m, "iak.pem", &cert));
    let req = RegisterIakRequest {
        ek_pub: Base64Bytes::new(std::fs::read(m.dir.path().join("ek.pub")).unwrap()),
        ak_pub: Base64Bytes::new(iak_pub.clone()),
        iak_cert: Base64Bytes::new(cert),
        iak_chain: Vec::new(),
    };
    for role in ["verifier", "tenant"] {
        assert_eq!(
            register_iak(&server, role, &req),
            (403, "iak_cert_untrusted".to_owned()),
            "{role}"
        );
    }
    let name = Public::parse(&iak_pub).unwrap().name();
    assert_eq!(challenge(&server, "tenant", &agent_id, &name).0, 404);
}

#[test]
fn register_subcommand_pins_the_iak_before_the_first_boot() {
    let (m, iak_pub) = iak_machine();
    let oem = Oem::new();
    let server = Server::start(&["--iak-ca", ca_file(&m, &oem).to_str().unwrap()]);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let cert = write_pem(&m, "iak.pem", &oem.issue(&iak_pub, &Spec::default()));
    bind(&server, &agent_id, &cert);
    let cfg = iak_config(&m, &server, &cert);
    let out = m.agent_with(&cfg, &["register"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("registered: IAK certificate accepted and pinned"),
        "{err}"
    );
    assert_eq!(iak_registrations(&server), 2);
    assert_eq!(server.registrations(), 0);
    // The boot goes straight to the challenges.
    let out = m.agent_with(&cfg, &["--verbose"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("register"), "{err}");
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    assert_eq!(iak_registrations(&server), 2);
}
