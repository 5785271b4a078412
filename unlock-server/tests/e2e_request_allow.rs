//! An update without lockout, end to end on swtpm: the machine runs `initrd-agent
//! request-allow` with the new kernel and initrd (a quote of its AK over the change), the
//! roles hold it pending, the updated boot is refused until `unlockctl policy approve`, then
//! unlocks; the previous boot configuration still unlocks. A forged submission is refused.
//!
//! The "boot" is simulated on swtpm by extending PCR 9 the way the Linux EFI stub does
//! (load options, then initrd), with the digests computed independently here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{code, kernel, ok, post, text, Machine, Server};
use verifier_core::predict::load_options_digest;
use verifier_core::proto::v1::PENDING_PATH;
use verifier_core::wire::{BankSelection, HashAlg, PcrSelection};

const TOFU: &[&str] = &["--allow-ek-without-cert"];
const CMDLINE: &str = "root=/dev/mapper/root ro quiet";

/// A boot of (cmdline, initrd) through the EFI stub: PCR 9 from reset, extended twice.
fn boot(m: &mut Machine, initrd: &[u8]) {
    m.reboot();
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    tpm.extend(9, &[load_options_digest(CMDLINE, HashAlg::Sha256)])
        .unwrap();
    tpm.extend(9, &[HashAlg::Sha256.hash(initrd)]).unwrap();
}

fn pcr9(m: &Machine) -> String {
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    let sel = PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[9]).unwrap()]).unwrap();
    tpm.read_pcrs(&sel)
        .unwrap()
        .get(HashAlg::Sha256, 9)
        .unwrap()
        .to_hex()
}

#[test]
fn update_is_pending_until_approved_then_unlocks_and_the_old_boot_still_does() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    let old_rd = dir.path().join("initrd-old");
    let new_rd = dir.path().join("initrd-new");
    std::fs::write(&old_rd, b"the old initramfs").unwrap();
    std::fs::write(&new_rd, b"the new initramfs, rebuilt by dracut").unwrap();

    // Enrolled on a named policy pinning PCRs 0-7 and PCR 9 of the old boot.
    boot(&mut m, &std::fs::read(&old_rd).unwrap());
    let policy = m.policy_now(true);
    let policy = policy.replacen(
        r#""pcrs":["#,
        &format!(
            r#""pcrs":[{{"bank":"sha256","index":9,"allowed":["{}"]}},"#,
            pcr9(&m)
        ),
        1,
    );
    let pf = dir.path().join("policy.json");
    std::fs::write(&pf, &policy).unwrap();
    ok(&server.unlockctl(&["policy", "create", "fleet", "--file", pf.to_str().unwrap()]));
    let agent_id = m.enroll_named(&server, "fleet");
    let out = m.agent(&server, None, &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));

    // On the installed system: the new initramfs is installed; ask for it.
    let k = kernel();
    let out = m.agent(
        &server,
        None,
        &[
            "request-allow",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            new_rd.to_str().unwrap(),
            "--cmdline",
            CMDLINE,
            "--note",
            "dracut: new initramfs",
        ],
    );
    let t = ok(&out);
    assert!(
        t.contains("verifier: change") && t.contains("tenant: change") && t.contains("is pending"),
        "{t}"
    );
    let id = t
        .split("verifier: change ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // The updated boot is refused while the change is pending, naming the rule.
    boot(&mut m, &std::fs::read(&new_rd).unwrap());
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("policy_denied") && text(&out).contains("pcr sha256:9"),
        "{}",
        text(&out)
    );

    // The operator sees it with its diff and approves it.
    let t = ok(&server.unlockctl(&["policy", "pending"]));
    assert!(
        t.contains(&id) && t.contains("PENDING") && t.contains(&agent_id),
        "{t}"
    );
    assert!(
        t.contains("WIDENS") && t.contains("pcrs[sha256:9].allowed"),
        "{t}"
    );
    let t = ok(&server.unlockctl(&["policy", "approve", &id[..12]]));
    assert!(t.contains("approved: fleet v2"), "{t}");
    assert_eq!(
        server.status(&agent_id)["verifier"]["policy_ref"]["version"],
        2
    );

    let out = m.agent(&server, None, &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));
    // The previous boot configuration still unlocks.
    boot(&mut m, &std::fs::read(&old_rd).unwrap());
    let out = m.agent(&server, None, &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));

    // A submission not quoted by the machine's AK is refused (and nothing is added).
    let http = server.http();
    let forged = format!(
        r#"{{"change":{{"agent_id":"{agent_id}","note":"","allow":[{{"bank":"sha256","pcr9":"{}"}}]}},"ak_name":"AAsA","quote":"AAAA","signature":"AAAA","pcrs":[{{"hash":"sha256","values":[{{"index":0,"digest":"{}"}}]}}]}}"#,
        "ab".repeat(32),
        "A".repeat(43) + "="
    );
    let (status, body) = post(
        &http,
        &format!("{}/verifier{PENDING_PATH}", server.url),
        forged.as_bytes(),
    );
    assert!(status >= 400, "{status}");
    assert_eq!(
        code(&body),
        "unknown_agent",
        "{}",
        String::from_utf8_lossy(&body)
    );
    let t = ok(&server.unlockctl(&["policy", "pending"]));
    assert_eq!(t.matches("agent ").count(), 1, "{t}");
}

/// The machine-side hook (`dracut-module/hooks/unlock-request-allow.sh`), called as
/// initramfs-tools' post-update hook (`KERNEL_VERSION INITRD`): it finds the kernel of that
/// version, runs `initrd-agent request-allow`, and the change is pending with the new
/// initrd's PCR 9. A failing agent never fails the hook.
#[test]
fn the_update_hook_submits_the_new_initramfs() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    boot(&mut m, b"old");
    let policy = m.policy_now(true).replacen(
        r#""pcrs":["#,
        &format!(
            r#""pcrs":[{{"bank":"sha256","index":9,"allowed":["{}"]}},"#,
            pcr9(&m)
        ),
        1,
    );
    let pf = dir.path().join("policy.json");
    std::fs::write(&pf, &policy).unwrap();
    ok(&server.unlockctl(&["policy", "create", "fleet", "--file", pf.to_str().unwrap()]));
    m.enroll_named(&server, "fleet");
    assert!(text(&m.agent(&server, None, &[])).contains("unlocked"));

    let new_rd = dir.path().join("initrd.img-new");
    std::fs::write(&new_rd, b"rebuilt").unwrap();
    let k = kernel();
    let kver = k
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("vmlinuz-");
    let cfg = m.config(&server, None);
    let conf = dir.path().join("request-allow.conf");
    let hook = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dracut-module/hooks/unlock-request-allow.sh");
    let run = |agent: &str| {
        std::fs::write(
            &conf,
            format!(
                "AGENT={agent}\nBOOT_PATH=efi-stub\nCMDLINE=\"{CMDLINE}\"\nEXTRA_ARGS=\"--config {} --cmdline-file {}\"\n",
                cfg.display(),
                m.dir.path().join("cmdline").display()
            ),
        )
        .unwrap();
        std::process::Command::new("sh")
            .arg(&hook)
            .arg(kver)
            .arg(&new_rd)
            .env("UNLOCK_REQUEST_ALLOW_CONF", &conf)
            .env("TSS2_LOG", "all+NONE")
            .output()
            .unwrap()
    };
    // An agent that fails: the hook says so and still succeeds.
    let out = run("/bin/false");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("request-allow failed"),
        "{}",
        text(&out)
    );

    let out = run(support::agent_bin().to_str().unwrap());
    assert!(text(&out).contains("submitted"), "{}", text(&out));
    // What it asked for is exactly the boot of that kernel with the new initrd.
    let mut expected = verifier_core::wire::Digest::zero(HashAlg::Sha256);
    expected.extend(load_options_digest(CMDLINE, HashAlg::Sha256).as_bytes());
    expected.extend(HashAlg::Sha256.hash(b"rebuilt").as_bytes());
    let t = ok(&server.unlockctl(&["policy", "pending"]));
    assert!(
        t.contains("PENDING") && t.contains(&expected.to_hex()),
        "{t}"
    );
    assert!(t.contains(&format!("{kver} initrd.img-new")), "{t}");
}
