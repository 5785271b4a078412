//! Every EK a real TPM carries, end to end (real `unlock-server`, `unlockctl`, `initrd-agent`
//! on swtpm): the high-range P-384 and RSA-3072 EKs, EK certificates that chain through a
//! vendor intermediate (from the server's `--ek-intermediates`, or from the TPM's chain NV
//! indices), and the EK certificate fetcher hook for vTPMs that keep no certificate in NV.
//! Each refusal forges exactly one thing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use initrd_agent::tpm::{EkKind, Tpm, EK_CHAIN_FIRST_NV_INDEX};
use support::swtpm::write_nv;
use support::{Machine, Server, Swtpm};
use verifier_core::ekcert::pem_certificates;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Enrolls `m` and runs the agent once; asserts success and the payload.
fn unlocks(m: &Machine, server: &Server) {
    let (_, payload) = m.enroll(server, &m.policy_now(true), &[]);
    let out = m.agent(server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

/// Enrolls `m` and runs the agent once; asserts the EK certificate refusal naming `why`
/// and that no key was written.
fn refused(m: &Machine, server: &Server, why: &str) {
    m.enroll(server, &m.policy_now(true), &[]);
    let out = m.agent(server, None, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ek_cert_untrusted"), "{err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
    assert!(!m.key_file().exists());
}

// ---- high-range EKs -------------------------------------------------------------------

/// swtpm_setup's ECC EK (P-384, template H-3, certificate at 0x01c00016): the agent
/// configured with `ek = "ecc-p384"` registers it, activates through the SHA-384 policy
/// session, and unlocks; its certificate chains to swtpm's local CA.
#[test]
fn p384_ek_with_certificate_unlocks() {
    let (tpm, root, issuer) = Swtpm::start_provisioned(true);
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &[root, issuer].concat());
    let server = Server::start(&["--ek-ca", s(&ca)]);
    unlocks(&Machine::with_tpm(tpm, "ecc-p384"), &server);
}

/// swtpm_setup `--rsa-keysize 3072` certifies an RSA-3072 EK (template H-6, NV 0x01c0001c):
/// MakeCredential with a SHA-384 name, OAEP-SHA-384 and AES-256, activated through the
/// SHA-384 policy session.
#[test]
fn rsa3072_ek_with_certificate_unlocks() {
    let (tpm, root, issuer) = Swtpm::start_provisioned_with(false, Some(3072));
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &[root, issuer].concat());
    let server = Server::start(&["--ek-ca", s(&ca)]);
    let m = Machine::with_tpm(tpm, "rsa-3072");
    {
        let mut t = Tpm::open(&m.tcti()).unwrap();
        let ek = t.create_ek(EkKind::Rsa3072).unwrap();
        let p = verifier_core::wire::Public::parse(ek.public()).unwrap();
        assert_eq!(p.name_alg(), verifier_core::wire::HashAlg::Sha384);
        assert!(
            matches!(
                p.key(),
                verifier_core::wire::PublicKey::Rsa { key_bits: 3072, .. }
            ),
            "{p:?}"
        );
        assert!(t.read_ek_cert(EkKind::Rsa3072).unwrap().is_some());
    }
    unlocks(&m, &server);
}

// ---- intermediates --------------------------------------------------------------------

/// swtpm's local CA is a root and an intermediate ("issuer") above the EK certificate: with
/// only the root trusted, the server finds the path through `--ek-intermediates`.
#[test]
fn intermediate_from_server_store_unlocks() {
    let (tpm, root, issuer) = Swtpm::start_provisioned(false);
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &root);
    let inter = tempfile::tempdir().unwrap();
    write(inter.path(), "issuer.pem", &issuer);
    let server = Server::start(&["--ek-ca", s(&root), "--ek-intermediates", s(inter.path())]);
    unlocks(&Machine::with_tpm(tpm, "rsa"), &server);
}

/// The same chain without the intermediate: no path to the root.
#[test]
fn certificate_without_its_intermediate_refused() {
    let (tpm, root, _issuer) = Swtpm::start_provisioned(false);
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &root);
    let server = Server::start(&["--ek-ca", s(&root)]);
    refused(&Machine::with_tpm(tpm, "rsa"), &server, "issuer unknown");
}

/// A wrong intermediate: another local CA's issuer, with the same name and another key.
#[test]
fn certificate_with_wrong_intermediate_refused() {
    let (tpm, root, _issuer) = Swtpm::start_provisioned(false);
    let (_other, _, other_issuer) = Swtpm::start_provisioned(false);
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &root);
    let wrong = write(dir.path(), "wrong-issuer.pem", &other_issuer);
    let server = Server::start(&["--ek-ca", s(&root), "--ek-intermediates", s(&wrong)]);
    refused(
        &Machine::with_tpm(tpm, "rsa"),
        &server,
        "signature does not verify",
    );
}

/// A TPM that keeps its chain in the EK certificate chain NV indices (0x01c00100..): the
/// agent sends it and the server, trusting only the root, accepts the path through it.
#[test]
fn chain_from_tpm_nv_unlocks() {
    let (tpm, root, issuer) = Swtpm::start_provisioned(false);
    let issuer_der = pem_certificates(&issuer).unwrap().remove(0);
    write_nv(&tpm.tcti(), EK_CHAIN_FIRST_NV_INDEX, &issuer_der);
    {
        let mut t = Tpm::open(&tpm.tcti()).unwrap();
        assert_eq!(t.read_ek_chain().unwrap(), vec![issuer_der]);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &root);
    let server = Server::start(&["--ek-ca", s(&root)]);
    unlocks(&Machine::with_tpm(tpm, "rsa"), &server);
}

/// A forged chain in NV (another CA's intermediate with the same name) does not help.
#[test]
fn forged_chain_in_nv_refused() {
    let (tpm, root, _issuer) = Swtpm::start_provisioned(false);
    let (_other, _, other_issuer) = Swtpm::start_provisioned(false);
    let der = pem_certificates(&other_issuer).unwrap().remove(0);
    write_nv(&tpm.tcti(), EK_CHAIN_FIRST_NV_INDEX, &der);
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &root);
    let server = Server::start(&["--ek-ca", s(&root)]);
    refused(
        &Machine::with_tpm(tpm, "rsa"),
        &server,
        "signature does not verify",
    );
}

// ---- the EK certificate fetcher hook ----------------------------------------------------

/// A TPM with a certified RSA EK whose certificate index was then removed (a cloud vTPM
/// that keeps none in NV); returns it, the certificate (DER) and the CA bundle.
fn vtpm_without_cert_in_nv() -> (Swtpm, Vec<u8>, Vec<u8>) {
    let (tpm, root, issuer) = Swtpm::start_provisioned(false);
    let cert = {
        let mut t = Tpm::open(&tpm.tcti()).unwrap();
        t.read_ek_cert(EkKind::Rsa2048).unwrap().unwrap()
    };
    support::swtpm::undefine_platform_nv(&tpm.tcti(), EkKind::Rsa2048.cert_nv_index());
    {
        let mut t = Tpm::open(&tpm.tcti()).unwrap();
        assert_eq!(t.read_ek_cert(EkKind::Rsa2048).unwrap(), None);
    }
    (tpm, cert, [root, issuer].concat())
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("ek-cert-hook");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The hook prints the EK certificate (found by the agent id it is given); the server
/// verifies it like one from NV and the machine unlocks.
#[test]
fn hook_fetches_the_certificate_and_unlocks() {
    let (tpm, cert, ca) = vtpm_without_cert_in_nv();
    let m = Machine::with_tpm(tpm, "rsa");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &ca);
    // A per-agent store, as a cloud API would be looked up by instance.
    let agent_id = {
        let mut t = Tpm::open(&m.tcti()).unwrap();
        let ek = t.create_ek(EkKind::Rsa2048).unwrap();
        verifier_core::proto::v1::AgentId::of_ek(ek.public())
            .as_str()
            .to_owned()
    };
    write(dir.path(), &format!("{agent_id}.der"), &cert);
    let hook = script(
        dir.path(),
        &format!(
            "[ \"$UNLOCK_AGENT_ID\" = \"$1\" ] && [ -n \"$UNLOCK_EK_PUB\" ] || exit 2\nexec cat \"{}/$1.der\"",
            dir.path().display()
        ),
    );
    let server = Server::start(&["--ek-ca", s(&ca), "--ek-cert-command", s(&hook)]);
    unlocks(&m, &server);
}

/// Without the hook the same machine is refused: the certificate really came from it.
#[test]
fn vtpm_without_cert_and_without_hook_refused() {
    let (tpm, _cert, ca) = vtpm_without_cert_in_nv();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &ca);
    let server = Server::start(&["--ek-ca", s(&ca)]);
    refused(
        &Machine::with_tpm(tpm, "rsa"),
        &server,
        "an EK certificate is required",
    );
}

/// A hook that answers with a genuine certificate of another TPM (same CA trusted): the
/// key does not match the agent's EK.
#[test]
fn hook_printing_another_eks_certificate_refused() {
    let (tpm, _cert, ca) = vtpm_without_cert_in_nv();
    let (other, other_root, other_issuer) = Swtpm::start_provisioned(false);
    let other_cert = {
        let mut t = Tpm::open(&other.tcti()).unwrap();
        t.read_ek_cert(EkKind::Rsa2048).unwrap().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write(
        dir.path(),
        "ca.pem",
        &[ca, other_root, other_issuer].concat(),
    );
    let other_der = write(dir.path(), "other.der", &other_cert);
    let hook = script(dir.path(), &format!("exec cat {}", other_der.display()));
    let server = Server::start(&["--ek-ca", s(&ca), "--ek-cert-command", s(&hook)]);
    refused(
        &Machine::with_tpm(tpm, "rsa"),
        &server,
        "does not match the EK public area",
    );
}

/// A hook that never finishes is killed after its timeout; one that fails (non-zero exit,
/// even after printing the right certificate) is not believed.
#[test]
fn hanging_or_failing_hook_refused() {
    let (tpm, cert, ca) = vtpm_without_cert_in_nv();
    let m = Machine::with_tpm(tpm, "rsa");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &ca);
    let hang = script(dir.path(), "exec sleep 30");
    let server = Server::start(&[
        "--ek-ca",
        s(&ca),
        "--ek-cert-command",
        s(&hang),
        "--ek-cert-command-timeout-secs",
        "1",
    ]);
    let t = std::time::Instant::now();
    refused(&m, &server, "did not finish within 1s");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    drop(server);

    let cert_file = write(dir.path(), "ek.der", &cert);
    let fails = dir.path().join("fails");
    std::fs::write(
        &fails,
        format!("#!/bin/sh\ncat {}\nexit 3\n", cert_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fails, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&["--ek-ca", s(&ca), "--ek-cert-command", s(&fails)]);
    refused(&m, &server, "command failed");
}
