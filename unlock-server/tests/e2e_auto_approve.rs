//! Auto-approval of a signed boot application, end to end on swtpm: the machine runs
//! `initrd-agent request-allow` with the installed Debian kernel (signed by Debian's Secure
//! Boot key); a policy whose `auto_approve` trusts Debian's Secure Boot CA approves it at
//! submission on both roles, and the boot of the new kernel then unlocks. From the attacker's
//! side: a change that also adds a PCR 9 value (a new initrd) stays pending, a kernel whose
//! signer the policy does not trust stays pending, and the approved version adds exactly the
//! signed digest.
//!
//! The "boot" is simulated on swtpm: PCR 4 extended with the boot application's Authenticode
//! digest, and an event log with that one `EV_EFI_BOOT_SERVICES_APPLICATION` event.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use support::{kernel, ok, text, Machine, Server};
use verifier_core::predict::authenticode;
use verifier_core::wire::{Digest, HashAlg};

const TOFU: &[&str] = &["--allow-ek-without-cert"];
const CMDLINE: &str = "root=/dev/mapper/root ro quiet";
const TESTDATA: &str = "../verifier-core/src/image_signature/testdata";

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(TESTDATA)
            .join(name),
    )
    .unwrap()
}

/// A crypto-agile event log (SHA-256 only) with one boot application in PCR 4.
fn event_log(app: &Digest) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&0x000bu16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0);
    let mut log = 0u32.to_le_bytes().to_vec();
    log.extend_from_slice(&3u32.to_le_bytes()); // EV_NO_ACTION
    log.extend_from_slice(&[0; 20]);
    log.extend_from_slice(&u32::try_from(spec.len()).unwrap().to_le_bytes());
    log.extend_from_slice(&spec);
    // UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path length 0.
    let data = [0u8; 32];
    log.extend_from_slice(&4u32.to_le_bytes());
    log.extend_from_slice(&0x8000_0003u32.to_le_bytes());
    log.extend_from_slice(&1u32.to_le_bytes());
    log.extend_from_slice(&0x000bu16.to_le_bytes());
    log.extend_from_slice(app.as_bytes());
    log.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    log.extend_from_slice(&data);
    log
}

/// A boot that started `app` (and, with `pcr9`, extended PCR 9 with it); returns the log.
fn boot(m: &mut Machine, dir: &Path, app: &Digest, pcr9: Option<&[u8]>) -> PathBuf {
    m.reboot();
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    tpm.extend(4, &[*app]).unwrap();
    if let Some(d) = pcr9 {
        tpm.extend(9, &[HashAlg::Sha256.hash(d)]).unwrap();
    }
    drop(tpm);
    let path = dir.join(format!("log-{}", &app.to_hex()[..8]));
    std::fs::write(&path, event_log(app)).unwrap();
    path
}

fn pcr9_after(data: &[u8]) -> String {
    let mut d = Digest::zero(HashAlg::Sha256);
    d.extend(HashAlg::Sha256.hash(data).as_bytes());
    d.to_hex()
}

struct Setup {
    m: Machine,
    server: Server,
    dir: tempfile::TempDir,
    agent_id: String,
    old: Digest,
    new: Digest,
}

/// A machine enrolled on policy `fleet` v1: boot applications [the old one], `extra` JSON
/// members, `auto_approve` trusting `trusted`; it unlocked once (its AK is activated).
fn setup(trusted: &[u8], extra: &str, pcr9: Option<&[u8]>) -> Setup {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    let old = authenticode(&testdata("fbx64.efi.signed"), HashAlg::Sha256).unwrap();
    let new = authenticode(&std::fs::read(kernel()).unwrap(), HashAlg::Sha256).unwrap();
    let log = boot(&mut m, dir.path(), &old, pcr9);
    let policy = format!(
        r#"{{"version":1,"require_event_log":true{extra},"measured_boot":{{"pcrs":[4],"boot_applications":["{}"]}},"auto_approve":{{"boot_applications_signed_by":["{}"]}}}}"#,
        old.to_hex(),
        base64::engine::general_purpose::STANDARD.encode(trusted)
    );
    let pf = dir.path().join("policy.json");
    std::fs::write(&pf, &policy).unwrap();
    ok(&server.unlockctl(&["policy", "create", "fleet", "--file", pf.to_str().unwrap()]));
    let agent_id = m.enroll_named(&server, "fleet");
    let out = m.agent(&server, Some(&log), &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));
    Setup {
        m,
        server,
        dir,
        agent_id,
        old,
        new,
    }
}

fn request_allow(s: &Setup, initrd: Option<&Path>) -> String {
    let k = kernel();
    let mut args = vec![
        "request-allow",
        "--kernel",
        k.to_str().unwrap(),
        "--cmdline",
        CMDLINE,
        "--note",
        "kernel-install add",
    ];
    if let Some(i) = initrd {
        args.extend(["--initrd", i.to_str().unwrap()]);
    }
    ok(&s.m.agent(&s.server, None, &args))
}

fn document(s: &Setup, version: u32) -> serde_json::Value {
    let v = version.to_string();
    let out = ok(&s
        .server
        .unlockctl(&["policy", "show", "fleet", "--version", &v, "--json"]));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["document"].clone()
}

#[test]
fn a_debian_signed_kernel_is_auto_approved_and_then_unlocks() {
    let mut s = setup(&testdata("debian-secure-boot-ca.der"), "", None);
    // The new kernel's boot is refused before the change.
    let log = boot(&mut s.m, s.dir.path(), &s.new, None);
    let out = s.m.agent(&s.server, Some(&log), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let t = request_allow(&s, None);
    assert!(
        t.contains("verifier: change")
            && t.contains("tenant: change")
            && t.contains("is approved")
            && !t.contains("is pending"),
        "{t}"
    );
    for role in ["verifier", "tenant"] {
        assert_eq!(
            s.server.status(&s.agent_id)[role]["policy_ref"]["version"],
            2,
            "{role}"
        );
    }
    let t = ok(&s.server.unlockctl(&["policy", "pending"]));
    assert!(
        t.contains("APPROVED")
            && t.contains("decided by auto: signed by CN=Debian Secure Boot Signer 2022 - linux"),
        "{t}"
    );

    // v2 is v1 plus exactly the signed kernel's digest.
    let (mut v1, mut v2) = (document(&s, 1), document(&s, 2));
    let apps = |d: &mut serde_json::Value| d["measured_boot"]["boot_applications"].take();
    assert_eq!(apps(&mut v1), serde_json::json!([s.old.to_hex()]));
    assert_eq!(
        apps(&mut v2),
        serde_json::json!([s.old.to_hex(), s.new.to_hex()])
    );
    assert_eq!(v1, v2);

    // The new kernel's boot unlocks, and the old one still does.
    let log = boot(&mut s.m, s.dir.path(), &s.new, None);
    let out = s.m.agent(&s.server, Some(&log), &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));
    let old = s.old;
    let log = boot(&mut s.m, s.dir.path(), &old, None);
    let out = s.m.agent(&s.server, Some(&log), &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));
}

#[test]
fn a_signed_kernel_with_a_new_initrd_stays_pending() {
    let extra = format!(
        r#","pcrs":[{{"bank":"sha256","index":9,"allowed":["{}"]}}]"#,
        pcr9_after(b"the old initramfs")
    );
    let mut s = setup(
        &testdata("debian-secure-boot-ca.der"),
        &extra,
        Some(b"the old initramfs"),
    );
    let rd = s.dir.path().join("initrd-new");
    std::fs::write(&rd, b"the new initramfs").unwrap();
    let t = request_allow(&s, Some(&rd));
    assert!(
        t.contains("is pending") && !t.contains("is approved"),
        "{t}"
    );
    assert_eq!(
        s.server.status(&s.agent_id)["verifier"]["policy_ref"]["version"],
        1
    );
    let t = ok(&s.server.unlockctl(&["policy", "pending"]));
    assert!(
        t.contains("PENDING")
            && t.contains("not auto-approved: pcrs[sha256:9].allowed")
            && !t.contains("decided by"),
        "{t}"
    );
    // The signed kernel alone was not let through either.
    let new = s.new;
    let log = boot(&mut s.m, s.dir.path(), &new, Some(b"the old initramfs"));
    let out = s.m.agent(&s.server, Some(&log), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_kernel_signed_by_an_untrusted_key_stays_pending() {
    // The policy trusts a CA named exactly like Debian's, with another key: the real
    // kernel's signature does not chain to it.
    let mut s = setup(&testdata("forged-ca.der"), "", None);
    let t = request_allow(&s, None);
    assert!(
        t.contains("is pending") && !t.contains("is approved"),
        "{t}"
    );
    let t = ok(&s.server.unlockctl(&["policy", "pending"]));
    assert!(
        t.contains("not auto-approved: boot application")
            && t.contains("does not chain to a certificate the policy trusts"),
        "{t}"
    );
    let new = s.new;
    let log = boot(&mut s.m, s.dir.path(), &new, None);
    let out = s.m.agent(&s.server, Some(&log), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        s.server.status(&s.agent_id)["tenant"]["policy_ref"]["version"],
        1
    );
}
