//! VM scenarios: the real initramfs boots under QEMU with swtpm and unlocks (or, when it
//! must not, steps aside quickly) against the real unlock-server.
//!
//! Each test is one behaviour; each boot prints its figures (QEMU start to root, the
//! agent's own start-to-key time and steps). `UNLOCK_SKIP_VM=1` skips them on a host
//! without the VM packages (local development only); otherwise a missing tool fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use verifier_core::predict::{
    load_options_digest, Prediction, STUB_INITRD_TAG, STUB_LOAD_OPTIONS_TAG,
};
use verifier_core::wire::HashAlg;
use vm_tests::artifacts::KEYSCRIPT_KEY_FILE;
use vm_tests::policy::{capture, capture_of};
use vm_tests::server::{refusals, sessions};
use vm_tests::update;
use vm_tests::vm::boot;
use vm_tests::{Artifacts, Boot, Firmware, Generator, Server, Tpm, VmConfig, LATER_READY};

/// PCRs 0-7: the firmware's measurements (under SeaBIOS several are bare separators, under
/// OVMF all are meaningful).
const FIRMWARE_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Slack on top of `rd.unlock.timeout` for the agent's own exit and the console.
const AGENT_SLACK: Duration = Duration::from_secs(3);

/// The initramfs-tools test hook prints this when askpass asks (its passfifo appeared) and it
/// "types" the passphrase (`vm-tests/initramfs-tools/scripts/init-premount/unlock-test`).
const ASKPASS_TYPED: &str = "UNLOCK-TEST-ASKPASS";

/// From the agent's status line to the passphrase prompt of the initramfs-tools fallback
/// (the keyscript's latch, then askpass): seconds, not the agent's budget again.
const FALLBACK_PROMPT_WITHIN: Duration = Duration::from_secs(5);

fn artifacts() -> Option<&'static Artifacts> {
    let art = Artifacts::get();
    if art.is_none() {
        eprintln!("vm-tests skipped (UNLOCK_SKIP_VM=1)");
    }
    art
}

/// A TPM with its own CA, a server trusting that CA, and the TPM enrolled with `policy`.
struct Enrolled {
    _ca: tempfile::TempDir,
    tpm: Tpm,
    server: Server,
}

fn enrolled(art: &'static Artifacts, policy: &str) -> Enrolled {
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let server = Server::start(art, &tpm.ek_ca);
    server.enroll(&tpm.ek_pub, policy, &["--max-attestations", "1"]);
    Enrolled {
        _ca: ca,
        tpm,
        server,
    }
}

fn key_file(art: &Artifacts) -> String {
    format!("/run/cryptsetup-keys.d/luks-{}.key", art.root.uuid)
}

/// The latch (`initrd-agent latch`, the release-PCR extend on the way out of the initramfs)
/// ran once and succeeded before `before` (a console time in the real root). Returns when.
fn assert_latched_before(b: &Boot, before: Duration) -> Duration {
    let latches = b.latches();
    assert_eq!(
        latches.len(),
        1,
        "{}: expected one latch line: {latches:?}\n{}",
        b.name,
        b.tail(60)
    );
    let (at, line) = latches[0];
    assert_eq!(line, "release PCR 15 extended", "{}", b.name);
    assert!(
        at < before,
        "{}: latched at {at:?}, after the root was running ({before:?})",
        b.name
    );
    at
}

/// The boot reached the real root through the agent, and the key did not follow it there.
fn assert_unlocked(art: &Artifacts, b: &Boot) {
    assert!(!b.timed_out, "{}: boot hung\n{}", b.name, b.tail(60));
    let run = b.agent();
    assert!(
        run.unlocked(),
        "{}: agent: {}\n{}",
        b.name,
        run.status,
        b.tail(60)
    );
    assert!(
        run.status.contains(&key_file(art)),
        "{}: key not written where systemd-cryptsetup reads it: {}",
        b.name,
        run.status
    );
    let (root_at, root) = b
        .root_line()
        .unwrap_or_else(|| panic!("{}: root not reached\n{}", b.name, b.tail(60)));
    assert!(
        root.contains("keys=[]"),
        "{}: the key file survived into the root: {root}",
        b.name
    );
    assert_latched_before(b, root_at);
}

/// The boot did not reach the root, the agent said why within its budget, and the normal
/// path (here: headless cryptsetup fails, emergency, power off) took over without hanging.
fn assert_fell_back(b: &Boot, budget: Duration) {
    assert!(
        !b.timed_out,
        "{}: the boot hung until the harness killed it\n{}",
        b.name,
        b.tail(60)
    );
    assert!(
        b.root_reached().is_none(),
        "{}: reached the root without a key\n{}",
        b.name,
        b.tail(60)
    );
    let run = b.agent();
    assert!(!run.unlocked(), "{}: {}", b.name, run.status);
    if let Some(took) = run.took {
        assert!(
            took <= budget + AGENT_SLACK,
            "{}: agent took {took:?}",
            b.name
        );
    }
}

#[test]
fn unlocks_root() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let b = boot(
        art,
        &e.tpm,
        &VmConfig::new("unlocks_root", Some(e.server.port)),
    );
    assert_unlocked(art, &b);

    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert_eq!(s.len(), 1, "{role}: {s:?}");
        assert_eq!(s[0].releases, 1, "{role}: {s:?}");
    }
}

/// Auto-enrollment (issue 16): no operator enrolls this TPM. The server has an `ek_ca` rule
/// trusting the TPM's EK CA; on the installed system (the host, against the machine's TPM
/// between boots) `initrd-agent deposit` registers, is admitted, makes K_b and deposits each
/// role's part with the root disk's passphrase as the payload; then the machine boots and
/// its initramfs unlocks the root.
#[test]
fn auto_enrolled_unlocks_root() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let rule = format!(
        "[[auto_enroll]]\nname = \"vm-fleet\"\nmode = \"ek_ca\"\nca = [\"{}\"]\npolicy = \"fleet\"\n",
        tpm.ek_ca.display()
    );
    let server = Server::start_with_config(art, &tpm.ek_ca, &rule);
    server.create_policy("fleet", &cap.policy(&FIRMWARE_PCRS));
    let out = tpm.host_agent(
        art,
        &server.agent_config(),
        &[
            "deposit",
            "--payload",
            art.root.passphrase.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "initrd-agent deposit: {err}");
    assert!(err.contains("admitted by rule vm-fleet (ek_ca"), "{err}");
    let list = server.unlockctl(&["list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("rule vm-fleet (ek_ca"), "{list}");

    let b = boot(
        art,
        &tpm,
        &VmConfig::new("auto_enrolled_unlocks_root", Some(server.port)),
    );
    assert_unlocked(art, &b);
    let st = server.status(&tpm.agent_id);
    for role in ["verifier", "tenant"] {
        assert_eq!(sessions(&st, role).len(), 1, "{role}: {st}");
    }
}

/// The machine's identity is swtpm_setup's ECC EK: NIST P-384 from the high-range template
/// H-3 (SHA-384 name, its certificate at NV 0x01c00016 from the same local CA). The initramfs
/// selects it with `rd.unlock.ek=ecc-p384`; the server checks its certificate, makes the
/// credential for a P-384 EK, and the agent activates it through the SHA-384 policy session
/// (PolicySecret + PolicyOR) at boot, then unlocks.
#[test]
fn p384_ek_unlocks_root() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision_with_ek(art, ca.path(), "ecc-p384");
    let server = Server::start(art, &tpm.ek_ca);
    server.enroll(
        &tpm.ek_pub,
        &cap.policy(&FIRMWARE_PCRS),
        &["--max-attestations", "1"],
    );
    let mut cfg = VmConfig::new("p384_ek_unlocks_root", Some(server.port));
    cfg.extra_cmdline.push("rd.unlock.ek=ecc-p384".into());
    let b = boot(art, &tpm, &cfg);
    assert_unlocked(art, &b);
    // Only the P-384 EK is enrolled (another EK would be refused as not enrolled): its
    // agent id registered, activated and was released to, once per role.
    let st = server.status(&tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert_eq!(s.len(), 1, "{role}: {s:?}");
        assert_eq!(s[0].releases, 1, "{role}: {s:?}");
    }
}

/// The Linux EFI stub's PCR 9 events in the log (load options, then initrd) and PCR 9's
/// value equal the prediction from the same files.
fn assert_pcr9_as_predicted(log: &update::Logged, p: &Prediction) {
    assert_eq!(
        log.pcr9_events,
        [
            (
                Some(STUB_LOAD_OPTIONS_TAG),
                load_options_digest(p.cmdline.as_deref().unwrap(), HashAlg::Sha256)
            ),
            (Some(STUB_INITRD_TAG), p.initrds[0].digest),
        ],
        "PCR 9 events"
    );
    assert_eq!(log.pcr9, p.pcr9, "PCR 9");
}

#[test]
fn uefi_measured_boot() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Uefi, &[]);
    // Under OVMF every firmware PCR carries real measurements.
    assert!(
        FIRMWARE_PCRS.iter().all(|i| cap.replayed.contains_key(i)),
        "the OVMF event log does not cover PCRs 0-7: {:?}",
        cap.replayed.keys()
    );
    // What the files predict is what OVMF and the kernel's EFI stub measured in this very
    // boot: the kernel's Authenticode digest (of the image as QEMU patched it) in PCR 4, the
    // load options and the initrd in PCR 9, and PCR 9's value.
    let cmdline = VmConfig::new("uefi_measured_boot", None).cmdline(art);
    let p = update::predicted(art, &art.initrd, &cmdline);
    let log = update::logged(&cap.event_log);
    let apps: Vec<_> = p.boot_applications.iter().map(|x| x.digest).collect();
    assert_eq!(log.boot_applications, apps, "PCR 4 boot applications");
    assert_pcr9_as_predicted(&log, &p);

    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let mut cfg = VmConfig::new("uefi_measured_boot", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    let b = boot(art, &e.tpm, &cfg);
    assert_unlocked(art, &b);
}

/// The update scenarios' policy: the firmware PCRs and PCR 9 pinned to the capture's values,
/// and PCR 4's boot applications (the kernel) as measured-boot reference state.
fn update_policy(cap: &vm_tests::policy::Captured) -> String {
    let apps: Vec<String> = update::logged(&cap.event_log)
        .boot_applications
        .iter()
        .map(|d| format!("\"{}\"", d.to_hex()))
        .collect();
    let pinned = cap.policy(&[0, 1, 2, 3, 5, 6, 7, 9]);
    let body = pinned.strip_suffix('}').unwrap();
    format!(
        r#"{body},"measured_boot":{{"pcrs":[4],"boot_applications":[{}]}}}}"#,
        apps.join(",")
    )
}

/// `initrd-agent request-allow` run on the host against the machine's TPM (its state between
/// boots: what the installed system would run), for the changed initramfs.
fn request_allow(art: &Artifacts, e: &Enrolled, initrd: &std::path::Path) -> std::process::Output {
    let cmdline = VmConfig::new("request-allow", None).cmdline(art);
    e.tpm.host_agent(
        art,
        &e.server.agent_config(),
        &[
            "request-allow",
            "--kernel",
            art.env.kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--boot-path",
            "qemu-direct",
            "--qemu-memory-mib",
            &vm_tests::vm::GUEST_RAM_MIB.to_string(),
            "--note",
            "vm-tests: initramfs update",
        ],
    )
}

#[test]
fn kernel_update_preauthorized_unlocks() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Uefi, &[]);
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let server = Server::start(art, &tpm.ek_ca);
    server.enroll_named(
        &tpm.ek_pub,
        "fleet",
        &update_policy(&cap),
        &["--max-attestations", "1"],
    );
    let e = Enrolled {
        _ca: ca,
        tpm,
        server,
    };
    // The boot as enrolled (registers the AK the machine will sign its request with).
    let mut cfg = VmConfig::new("kernel_update_preauthorized_unlocks-1", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    assert_unlocked(art, &boot(art, &e.tpm, &cfg));

    // The update: a changed initramfs. The machine asks; an operator approves.
    let work = tempfile::tempdir_in(&art.env.cache).unwrap();
    let updated = update::changed_initrd(art, work.path());
    let out = request_allow(art, &e, &updated);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "request-allow: {said}");
    let id = said
        .split("verifier: change ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no change id in {said}"))
        .to_owned();
    assert!(said.contains("is pending"), "{said}");
    let out = e.server.unlockctl(&["policy", "pending"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.contains(&id) && listed.contains("PENDING"),
        "{listed}"
    );
    // Only allowances: PCR 4's new kernel image digest and PCR 9's new value.
    assert!(
        listed.contains("WIDENS   measured_boot.boot_applications: added")
            && listed.contains("WIDENS   pcrs[sha256:9].allowed: added")
            && !listed.contains("narrows")
            && !listed.contains("CHANGES"),
        "{listed}"
    );
    let out = e.server.unlockctl(&["policy", "approve", &id]);
    assert!(
        out.status.success(),
        "approve: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The previous configuration stays allowed: v2 only added to v1.
    let out = e
        .server
        .unlockctl(&["policy", "diff", "fleet", "--from", "1"]);
    let diff = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        diff.contains("fleet v1 -> fleet v2") && !diff.contains("removed"),
        "{diff}"
    );

    // Reboot into the update: unlocks.
    let mut cfg = VmConfig::new("kernel_update_preauthorized_unlocks-2", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    cfg.initrd = Some(updated);
    assert_unlocked(art, &boot(art, &e.tpm, &cfg));

    // Until retired, the previous configuration still unlocks (a machine that falls back to
    // its old initramfs, or has not rebooted yet, keeps working).
    let mut cfg = VmConfig::new("kernel_update_preauthorized_unlocks-3", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    assert_unlocked(art, &boot(art, &e.tpm, &cfg));
}

#[test]
fn unapproved_update_refused() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Uefi, &[]);
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let server = Server::start(art, &tpm.ek_ca);
    server.enroll_named(
        &tpm.ek_pub,
        "fleet",
        &update_policy(&cap),
        &["--max-attestations", "1"],
    );
    let e = Enrolled {
        _ca: ca,
        tpm,
        server,
    };
    let work = tempfile::tempdir_in(&art.env.cache).unwrap();
    let updated = update::changed_initrd(art, work.path());
    // Before the machine ever registered its AK, nothing it sends is the machine's: refused.
    let out = request_allow(art, &e, &updated);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && said.contains("unknown_agent"),
        "request-allow without an activated AK: {said}"
    );
    let out = e.server.unlockctl(&["policy", "pending"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no policy changes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The update boots without approval: refused, naming the rules, and falls back.
    let mut cfg = VmConfig::new("unapproved_update_refused", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    cfg.initrd = Some(updated);
    let b = boot(art, &e.tpm, &cfg);
    assert_fell_back(&b, Duration::from_secs(u64::from(cfg.unlock_timeout)));
    let run = b.agent();
    assert!(
        run.status.starts_with("refused by verifier: policy_denied")
            && run.status.contains("pcr sha256:9")
            && run.status.contains("measured_boot.boot_applications"),
        "expected a refusal naming PCR 9 and the boot applications, got: {}",
        run.status
    );
    let st = e.server.status(&e.tpm.agent_id);
    assert!(sessions(&st, "verifier").iter().all(|s| s.releases == 0));
}

#[test]
fn second_boot_unlocks_again() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    for n in 1..=2 {
        let name = format!("second_boot_unlocks_again-{n}");
        let b = boot(art, &e.tpm, &VmConfig::new(&name, Some(e.server.port)));
        assert_unlocked(art, &b);
    }
    // Two boot sessions (two TPM resets), each released once and then closed.
    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert_eq!(s.len(), 2, "{role}: {s:?}");
        assert!(s.iter().all(|x| x.releases == 1), "{role}: {s:?}");
        assert_ne!(s[0].reset_count, s[1].reset_count, "{role}: {s:?}");
    }
}

#[test]
fn kernel_cmdline_changed_refused() {
    let Some(art) = artifacts() else { return };
    // Under SeaBIOS no PCR covers a -kernel boot's command line; OVMF measures it (see
    // vm-tests/README.md). Pin every PCR 0-9 its log extends.
    let cap = capture(art, Firmware::Uefi, &[]);
    let pinned: Vec<u8> = (0u8..10).filter(|i| cap.replayed.contains_key(i)).collect();
    let e = enrolled(art, &cap.policy(&pinned));
    let mut cfg = VmConfig::new("kernel_cmdline_changed_refused", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    cfg.extra_cmdline.push("init=/sbin/init".into());
    let b = boot(art, &e.tpm, &cfg);
    assert_fell_back(&b, Duration::from_secs(u64::from(cfg.unlock_timeout)));
    let run = b.agent();
    // Observed: OVMF + the Debian 6.1 EFI stub put the command line into PCR 9; PCRs 0-8
    // do not change.
    assert!(
        run.status.starts_with("refused by verifier: policy_denied")
            && run.status.contains("pcr sha256:9:"),
        "expected a policy refusal naming PCR 9, got: {}",
        run.status
    );
    let st = e.server.status(&e.tpm.agent_id);
    assert!(sessions(&st, "verifier").iter().all(|s| s.releases == 0));
    assert!(
        !refusals(&st, "verifier").is_empty(),
        "the verifier recorded no refusal: {st}"
    );
}

#[test]
fn terminated_after_release() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let mut cfg = VmConfig::new("terminated_after_release", Some(e.server.port));
    // A second agent run after cryptsetup, in the same boot (same resetCount, release PCR
    // already extended): the replayed attestation must get nothing.
    cfg.test_mode = Some("again");
    let b = boot(art, &e.tpm, &cfg);
    assert_unlocked(art, &b);
    let runs = b.agent_runs();
    assert_eq!(runs.len(), 2, "expected two agent runs\n{}", b.tail(60));
    assert!(
        runs[1].status.starts_with("refused by"),
        "second run in the same boot: {}",
        runs[1].status
    );
    assert!(
        runs[1].status.contains("session_terminated") || runs[1].status.contains("release_pcr"),
        "refused, but not for the TERMINATED session or the release PCR: {}",
        runs[1].status
    );
    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert_eq!(s.len(), 1, "{role}: {s:?}");
        assert_eq!(s[0].releases, 1, "{role}: {s:?}");
        assert_eq!(s[0].state.to_lowercase(), "terminated", "{role}: {s:?}");
    }
    assert!(
        !refusals(&st, "verifier").is_empty(),
        "the verifier recorded no refusal: {st}"
    );
}

#[test]
fn server_down_falls_back() {
    let Some(art) = artifacts() else { return };
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let mut cfg = VmConfig::new("server_down_falls_back", None);
    cfg.unlock_timeout = 10;
    let b = boot(art, &tpm, &cfg);
    assert_fell_back(&b, Duration::from_secs(10));
    let run = b.agent();
    assert!(
        run.status.starts_with("server unreachable"),
        "expected 'server unreachable', got: {}",
        run.status
    );
}

#[test]
fn fallback_boot_cannot_release_later() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let mut cfg = VmConfig::new("fallback_boot_cannot_release_later", Some(e.server.port));
    // The relay is down while the initramfs runs: the agent finds no server, the boot falls
    // back to the passphrase (the test module "types" it) and reaches the real root. There
    // the relay comes up and the agent runs again, as any code later in that boot could.
    cfg.relay_opens_on = Some(LATER_READY);
    cfg.unlock_timeout = 10;
    cfg.test_mode = Some("later");
    let b = boot(art, &e.tpm, &cfg);
    assert!(!b.timed_out, "{}: boot hung\n{}", b.name, b.tail(60));

    let runs = b.agent_runs();
    assert_eq!(runs.len(), 2, "expected two agent runs\n{}", b.tail(60));
    assert!(
        runs[0].status.starts_with("server unreachable"),
        "initramfs run: {}\n{}",
        runs[0].status,
        b.tail(60)
    );
    let (root_at, root) = b
        .root_line()
        .unwrap_or_else(|| panic!("passphrase fallback did not reach the root\n{}", b.tail(60)));
    let (ready_at, _) = b
        .line_with(LATER_READY)
        .unwrap_or_else(|| panic!("the root did not run the staged agent\n{}", b.tail(60)));
    // The door was closed before switch-root, though nothing was released.
    assert_latched_before(&b, ready_at);
    assert!(
        runs[0].at < ready_at && ready_at < runs[1].at && runs[1].at < root_at,
        "order: initramfs run {:?}, root ready {ready_at:?}, root run {:?}, marker {root_at:?}",
        runs[0].at,
        runs[1].at
    );
    assert!(
        runs[1].status.starts_with("refused by") && runs[1].status.contains("release_pcr"),
        "run in the booted root: expected a refusal for the release PCR, got: {}\n{}",
        runs[1].status,
        b.tail(60)
    );
    assert!(
        root.contains("keys=[]"),
        "a key file is in the root's /run: {root}"
    );

    // Nothing released: the boot session's budget is untouched, and the refusal is on record.
    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert!(s.iter().all(|x| x.releases == 0), "{role}: {s:?}");
    }
    assert!(
        !refusals(&st, "verifier").is_empty(),
        "the verifier recorded no refusal: {st}"
    );
}

#[test]
fn not_enrolled_refused() {
    let Some(art) = artifacts() else { return };
    let cap = capture(art, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    // Another machine: its own TPM, an EK certificate from the same CA, never enrolled.
    let other = Tpm::provision(art, e._ca.path());
    assert_ne!(other.agent_id, e.tpm.agent_id);
    let b = boot(
        art,
        &other,
        &VmConfig::new("not_enrolled_refused", Some(e.server.port)),
    );
    assert_fell_back(&b, Duration::from_secs(30));
    let run = b.agent();
    assert!(
        run.status.starts_with("refused by"),
        "expected a refusal, got: {}",
        run.status
    );
    let st = e.server.status(&e.tpm.agent_id);
    assert!(sessions(&st, "verifier").is_empty(), "{st}");
}

/// initramfs-tools (Debian's mkinitramfs, cryptsetup-initramfs): `/etc/crypttab` names the
/// root with `keyscript=/usr/lib/initrd-agent/keyscript`; the keyscript runs the agent, which
/// writes the key to tmpfs, and hands it to cryptsetup on stdout. The policy is learned from
/// a capture boot of the same initramfs-tools image.
#[test]
fn initramfs_tools_unlocks_root() {
    let Some(art) = artifacts() else { return };
    let cap = capture_of(art, Generator::InitramfsTools, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let mut cfg = VmConfig::new("initramfs_tools_unlocks_root", Some(e.server.port));
    cfg.generator = Generator::InitramfsTools;
    let b = boot(art, &e.tpm, &cfg);
    assert!(!b.timed_out, "{}: boot hung\n{}", b.name, b.tail(60));
    let run = b.agent();
    assert!(
        run.unlocked() && run.status.contains(KEYSCRIPT_KEY_FILE),
        "{}: agent: {}\n{}",
        b.name,
        run.status,
        b.tail(60)
    );
    let (root_at, root) = b
        .root_line()
        .unwrap_or_else(|| panic!("{}: root not reached\n{}", b.name, b.tail(60)));
    assert!(run.at < root_at, "{}: the agent ran after the root", b.name);
    // The keyscript removed the key after handing it over; init-bottom removed its directory.
    assert!(
        root.contains("keys=[]"),
        "{}: a key file survived into the root: {root}",
        b.name
    );
    // The agent extended the release PCR before it wrote the key; init-bottom's latch
    // extended it once more before the real root.
    let latch_at = assert_latched_before(&b, root_at);
    assert!(
        run.at < latch_at,
        "{}: init-bottom latch at {latch_at:?} before the agent's status at {:?}",
        b.name,
        run.at
    );

    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert_eq!(s.len(), 1, "{role}: {s:?}");
        assert_eq!(s[0].releases, 1, "{role}: {s:?}");
    }
}

/// The initramfs-tools fallback: one agent run whose status starts with `status` within
/// `budget` (+ slack), then the keyscript's latch, askpass asking within seconds (the test
/// hook types the passphrase into its fifo), the disk opened with the passphrase, the root
/// reached with no key file in `/run`, and init-bottom's latch between the prompt and the
/// root.
fn assert_itools_fell_back(b: &Boot, status: &str, budget: Duration) {
    assert!(!b.timed_out, "{}: boot hung\n{}", b.name, b.tail(60));
    let runs = b.agent_runs();
    assert_eq!(
        runs.len(),
        1,
        "{}: expected one agent run\n{}",
        b.name,
        b.tail(60)
    );
    let run = &runs[0];
    assert!(
        run.status.starts_with(status),
        "{}: expected '{status}…', got: {}\n{}",
        b.name,
        run.status,
        b.tail(60)
    );
    let started = run
        .started
        .unwrap_or_else(|| panic!("{}: the agent printed no step\n{}", b.name, b.tail(60)));
    let took = run.at.saturating_sub(started);
    assert!(
        took <= budget + AGENT_SLACK,
        "{}: the agent took {took:?} with a budget of {budget:?}",
        b.name
    );

    let (typed_at, _) = b.line_with(ASKPASS_TYPED).unwrap_or_else(|| {
        panic!(
            "{}: askpass never asked for the passphrase\n{}",
            b.name,
            b.tail(60)
        )
    });
    let (root_at, root) = b.root_line().unwrap_or_else(|| {
        panic!(
            "{}: the passphrase did not open the root\n{}",
            b.name,
            b.tail(60)
        )
    });
    assert!(
        root.contains("keys=[]"),
        "{}: a key file is in the root's /run: {root}",
        b.name
    );
    // The keyscript's latch (before the prompt), then init-bottom's (before the root).
    let latches = b.latches();
    assert_eq!(
        latches.len(),
        2,
        "{}: expected the keyscript's and init-bottom's latch: {latches:?}\n{}",
        b.name,
        b.tail(60)
    );
    assert!(
        latches.iter().all(|(_, l)| *l == "release PCR 15 extended"),
        "{}: {latches:?}",
        b.name
    );
    assert!(
        run.at <= latches[0].0 && latches[0].0 <= typed_at,
        "{}: order: agent {:?}, keyscript latch {:?}, prompt {typed_at:?}",
        b.name,
        run.at,
        latches[0].0
    );
    assert!(
        typed_at < latches[1].0 && latches[1].0 < root_at,
        "{}: order: prompt {typed_at:?}, init-bottom latch {:?}, root {root_at:?}",
        b.name,
        latches[1].0
    );
    let to_prompt = typed_at.saturating_sub(run.at);
    assert!(
        to_prompt <= FALLBACK_PROMPT_WITHIN,
        "{}: {to_prompt:?} from the agent's status to the passphrase prompt",
        b.name
    );
    eprintln!(
        "vm-tests: {}: agent gave up after {:.2} s, passphrase prompt {:.2} s later, root at {:.1} s",
        b.name,
        took.as_secs_f64(),
        to_prompt.as_secs_f64(),
        root_at.as_secs_f64()
    );
}

/// initramfs-tools, nothing answers at the server's address: the agent gives up within
/// `rd.unlock.timeout`, the keyscript extends the release PCR and asks for the passphrase
/// (askpass) within seconds; the test hook "types" it into askpass's fifo, cryptsetup opens
/// the disk with it, and init-bottom latches again before the real root.
#[test]
fn initramfs_tools_server_down_falls_back() {
    let Some(art) = artifacts() else { return };
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let mut cfg = VmConfig::new("initramfs_tools_server_down_falls_back", None);
    cfg.generator = Generator::InitramfsTools;
    cfg.unlock_timeout = 10;
    cfg.test_mode = Some("askpass");
    let b = boot(art, &tpm, &cfg);
    assert_itools_fell_back(&b, "server unreachable", Duration::from_secs(10));
}

/// initramfs-tools, the server up but this machine not enrolled: refused, then the same
/// fallback (latch, passphrase prompt, root); nothing recorded for the enrolled machine.
#[test]
fn initramfs_tools_refused_falls_back() {
    let Some(art) = artifacts() else { return };
    let cap = capture_of(art, Generator::InitramfsTools, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let other = Tpm::provision(art, e._ca.path());
    assert_ne!(other.agent_id, e.tpm.agent_id);
    let mut cfg = VmConfig::new("initramfs_tools_refused_falls_back", Some(e.server.port));
    cfg.generator = Generator::InitramfsTools;
    cfg.test_mode = Some("askpass");
    let b = boot(art, &other, &cfg);
    assert_itools_fell_back(&b, "refused by", Duration::from_secs(30));
    let st = e.server.status(&e.tpm.agent_id);
    assert!(sessions(&st, "verifier").is_empty(), "{st}");
}

/// initramfs-tools, the attacker's side of the latch: the relay is down while the initramfs
/// runs, so the keyscript falls back to the passphrase (typed by the test hook) and the boot
/// reaches the real root with nothing released. There the relay comes up and the agent runs
/// again, as any code later in that boot could: the release PCR, extended by the keyscript
/// and by init-bottom, gets it refused; nothing is released.
#[test]
fn initramfs_tools_fallback_boot_cannot_release_later() {
    let Some(art) = artifacts() else { return };
    let cap = capture_of(art, Generator::InitramfsTools, Firmware::Bios, &[]);
    let e = enrolled(art, &cap.policy(&FIRMWARE_PCRS));
    let mut cfg = VmConfig::new(
        "initramfs_tools_fallback_boot_cannot_release_later",
        Some(e.server.port),
    );
    cfg.generator = Generator::InitramfsTools;
    cfg.relay_opens_on = Some(LATER_READY);
    cfg.unlock_timeout = 10;
    cfg.test_mode = Some("later");
    let b = boot(art, &e.tpm, &cfg);
    assert!(!b.timed_out, "{}: boot hung\n{}", b.name, b.tail(60));

    let runs = b.agent_runs();
    assert_eq!(runs.len(), 2, "expected two agent runs\n{}", b.tail(60));
    assert!(
        runs[0].status.starts_with("server unreachable"),
        "initramfs run: {}\n{}",
        runs[0].status,
        b.tail(60)
    );
    let (typed_at, _) = b
        .line_with(ASKPASS_TYPED)
        .unwrap_or_else(|| panic!("askpass never asked\n{}", b.tail(60)));
    let (root_at, root) = b
        .root_line()
        .unwrap_or_else(|| panic!("passphrase fallback did not reach the root\n{}", b.tail(60)));
    let (ready_at, _) = b
        .line_with(LATER_READY)
        .unwrap_or_else(|| panic!("the root did not run the staged agent\n{}", b.tail(60)));
    // Both latches (keyscript, init-bottom) before the root's code ran.
    let latches = b.latches();
    assert_eq!(latches.len(), 2, "{latches:?}\n{}", b.tail(60));
    assert!(
        runs[0].at <= latches[0].0
            && latches[0].0 <= typed_at
            && latches[1].0 < ready_at
            && ready_at < runs[1].at
            && runs[1].at < root_at,
        "order: initramfs run {:?}, latches {latches:?}, prompt {typed_at:?}, root ready \
         {ready_at:?}, root run {:?}, marker {root_at:?}",
        runs[0].at,
        runs[1].at
    );
    assert!(
        runs[1].status.starts_with("refused by") && runs[1].status.contains("release_pcr"),
        "run in the booted root: expected a refusal for the release PCR, got: {}\n{}",
        runs[1].status,
        b.tail(60)
    );
    assert!(
        root.contains("keys=[]"),
        "a key file is in the root's /run: {root}"
    );
    let st = e.server.status(&e.tpm.agent_id);
    for role in ["verifier", "tenant"] {
        let s = sessions(&st, role);
        assert!(s.iter().all(|x| x.releases == 0), "{role}: {s:?}");
    }
    assert!(
        !refusals(&st, "verifier").is_empty(),
        "the verifier recorded no refusal: {st}"
    );
}

/// The UKI scenarios' policy: the firmware PCRs, PCR 9 and PCR 11 pinned to the capture's
/// values, and as measured-boot reference state PCR 4's boot application (the UKI) and
/// PCR 11's `.linux` and `.initrd` sections.
fn uki_policy(cap: &vm_tests::policy::Captured, p: &verifier_core::predict::Prediction) -> String {
    let hexes = |items: &[verifier_core::predict::Predicted]| {
        let v: Vec<String> = items
            .iter()
            .map(|x| format!("\"{}\"", x.digest.to_hex()))
            .collect();
        v.join(",")
    };
    let pinned = cap.policy(&[0, 1, 2, 3, 5, 6, 7, 9, 11]);
    let body = pinned.strip_suffix('}').unwrap();
    format!(
        r#"{body},"measured_boot":{{"pcrs":[4,11],"boot_applications":[{}],"kernels":[{}],"initrds":[{}]}}}}"#,
        hexes(&p.boot_applications),
        hexes(&p.kernels),
        hexes(&p.initrds)
    )
}

/// Asserts that what `verifier_core::predict` computes from the UKI file is what OVMF,
/// systemd-stub and the kernel's EFI stub logged when booting it: PCR 4's boot application,
/// PCR 11's events (name, then bytes, per section) and value, PCR 9's events and value, and
/// nothing in PCR 12 (the embedded command line is not measured there).
fn assert_uki_predicted(cap: &vm_tests::policy::Captured, p: &verifier_core::predict::Prediction) {
    use verifier_core::eventlog::EventType;
    let log = update::logged(&cap.event_log);
    let apps: Vec<_> = p.boot_applications.iter().map(|x| x.digest).collect();
    assert_eq!(log.boot_applications, apps, "PCR 4 boot applications");
    let predicted: Vec<_> = p.pcr11_events.iter().map(|x| x.digest).collect();
    let logged: Vec<_> = log.pcr11_events.iter().map(|x| x.2).collect();
    assert_eq!(logged, predicted, "PCR 11 events\n{:#?}", log.pcr11_events);
    for (i, (ty, label, _)) in log.pcr11_events.iter().enumerate() {
        let section = p.pcr11_events[i].what.split(' ').next().unwrap();
        assert_eq!(*ty, EventType::EV_IPL, "PCR 11 event {i}");
        assert_eq!(
            label.trim_end_matches('\0'),
            section,
            "PCR 11 event {i} label"
        );
    }
    assert_eq!(log.pcr11, p.pcr11, "PCR 11");
    assert_eq!(
        cap.pcrs.get(&11).map(String::as_str),
        p.pcr11.map(|d| d.to_hex()).as_deref(),
        "live PCR 11"
    );
    assert_pcr9_as_predicted(&log, p);
    assert_eq!(log.pcr12_events, 0, "PCR 12 events");
}

#[test]
fn uki_update_preauthorized_unlocks() {
    let Some(art) = artifacts() else { return };
    let work = tempfile::tempdir_in(&art.env.cache).unwrap();
    let cmdline = VmConfig::new("uki", None).cmdline(art);
    let v1 = update::build_uki(art, &art.initrd, &cmdline, work.path(), "uki-v1");
    let mut cfg = VmConfig::new("uki_update_preauthorized_unlocks-capture", None);
    cfg.firmware = Firmware::Uefi;
    cfg.uki = Some(v1.clone());
    let cap = vm_tests::policy::capture_boot(art, cfg);
    // Kept beside the console logs: a real systemd-stub event log, for reading.
    let kept = vm_tests::vm::log_dir(art).join("uki_update_preauthorized_unlocks.eventlog.bin");
    std::fs::write(&kept, &cap.event_log).unwrap();
    // The verification against reality: the files' prediction is this boot's log.
    let p1 = update::predicted_uki(&v1);
    assert_uki_predicted(&cap, &p1);

    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let server = Server::start(art, &tpm.ek_ca);
    server.enroll_named(
        &tpm.ek_pub,
        "fleet",
        &uki_policy(&cap, &p1),
        &["--max-attestations", "1"],
    );
    let e = Enrolled {
        _ca: ca,
        tpm,
        server,
    };
    let mut cfg = VmConfig::new("uki_update_preauthorized_unlocks-1", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    cfg.uki = Some(v1);
    assert_unlocked(art, &boot(art, &e.tpm, &cfg));

    // The update: a UKI with a changed initramfs. The operator allows it from the file.
    let updated = update::changed_initrd(art, work.path());
    let v2 = update::build_uki(art, &updated, &cmdline, work.path(), "uki-v2");
    let v2_arg = v2.to_str().unwrap();
    let out = e.server.unlockctl(&[
        "policy", "allow", "--policy", "fleet", "--uki", v2_arg, "--yes",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "policy allow: {said}");
    // Only allowances: the new UKI (PCR 4), its initrd (PCR 11 section), PCR 9 and PCR 11.
    for added in [
        "WIDENS   measured_boot.boot_applications: added",
        "WIDENS   measured_boot.initrds: added",
        "WIDENS   pcrs[sha256:9].allowed: added",
        "WIDENS   pcrs[sha256:11].allowed: added",
    ] {
        assert!(said.contains(added), "{added:?} missing:\n{said}");
    }
    assert!(
        !said.contains("narrows")
            && !said.contains("CHANGES")
            && !said.contains("measured_boot.kernels"),
        "{said}"
    );
    let out = e.server.unlockctl(&[
        "policy",
        "apply",
        "fleet",
        "--version",
        "2",
        "--all",
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Reboot into the new UKI: unlocks.
    let mut cfg = VmConfig::new("uki_update_preauthorized_unlocks-2", Some(e.server.port));
    cfg.firmware = Firmware::Uefi;
    cfg.uki = Some(v2);
    assert_unlocked(art, &boot(art, &e.tpm, &cfg));
}
