//! Predicting the next boot's measurements from files (`verifier_core::predict`), checked
//! against independent computations and a real UEFI event log, and the policy change that
//! allows them (`policy::widen`): it accepts the predicted boot, refuses a forged one, and
//! changes nothing else.
//!
//! The real kernel is the machine's signed Debian kernel (`linux-image-amd64`, the one the
//! VM tests boot). `tests/data/ovmf-qemu-direct/binary_bios_measurements.bin` is the event
//! log of a real boot of `/boot/vmlinuz-6.1.0-57-amd64` under OVMF 2022.11 (Debian 12) with
//! QEMU 7.2's `-kernel`, `-initrd` (a 1,031,136-byte busybox initrd, SHA-256 e0b24735...),
//! `-append "console=ttyS0 quiet foo=bar"`, `-m 768`, swtpm: see `README.md` there.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod policy_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use policy_support::*;
use verifier_core::eventlog::{EventData, EventLog, EventType};
use verifier_core::policy::{
    check_only_allows_more, widen, CmdlineRuleDocument, Effect, Evaluator, MeasuredBootDocument,
    PcrRuleDocument, Policy, PolicyDocument, UnverifiedCapture, Verdict, WidenError,
};
use verifier_core::predict::{
    authenticode, load_options_digest, predict, qemu_direct_boot_image, signed_digests, BootFiles,
    BootPath, STUB_INITRD_TAG, STUB_LOAD_OPTIONS_TAG,
};
use verifier_core::proto::v1::CapturedEvidence;
use verifier_core::wire::{Digest, HashAlg};

const OVMF_LOG: &str = "tests/data/ovmf-qemu-direct/binary_bios_measurements.bin";
/// The kernel that log booted.
const OVMF_LOG_KERNEL: &str = "/boot/vmlinuz-6.1.0-57-amd64";
const OVMF_LOG_INITRD_LEN: u64 = 1_031_136;
const OVMF_LOG_APPEND: &str = "console=ttyS0 quiet foo=bar";
const OVMF_LOG_RAM: u64 = 768 << 20;

/// The newest signed Debian kernel on this machine (what `linux-image-amd64` installed).
fn debian_kernel() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("/boot: install linux-image-amd64 (scripts/install-vm-deps.sh)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /boot/vmlinuz-*: install linux-image-amd64 (scripts/install-vm-deps.sh)")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `osslsigncode verify` prints the Authenticode digest it computes itself ("Calculated
/// message digest"), independently of this crate and of the `authenticode` crate.
fn osslsigncode_digest(p: &Path) -> String {
    let out = Command::new("osslsigncode")
        .args(["verify", "-in"])
        .arg(p)
        .output()
        .expect("osslsigncode not found: apt-get install osslsigncode (scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Calculated message digest"))
        .unwrap_or_else(|| panic!("osslsigncode printed no calculated digest:\n{text}"));
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_lowercase()
}

#[test]
fn authenticode_of_the_signed_debian_kernel_matches_osslsigncode_and_its_signature() {
    let path = debian_kernel();
    let image = read(&path);
    let ours = authenticode(&image, HashAlg::Sha256).unwrap();
    assert_eq!(
        ours.to_hex(),
        osslsigncode_digest(&path),
        "{}",
        path.display()
    );
    // Debian's signing service computed the same digest when it signed the kernel.
    let signed = signed_digests(&image).unwrap();
    assert!(!signed.is_empty(), "{} is not signed", path.display());
    assert!(
        signed.iter().any(|d| d == ours.as_bytes()),
        "{}: no signature signs {ours}",
        path.display()
    );
    // Every bank: the digest is of the same bytes (SHA-1 and SHA-384 differ from SHA-256,
    // and a change of one hashed byte changes each).
    let mut altered = image.clone();
    let at = altered.len() / 2;
    altered[at] ^= 1;
    for alg in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384] {
        let d = authenticode(&image, alg).unwrap();
        assert_eq!(d.alg(), alg);
        assert_ne!(d, authenticode(&altered, alg).unwrap(), "{alg}");
    }
    // The signature covers the file: an altered kernel no longer matches what was signed.
    let changed = authenticode(&altered, HashAlg::Sha256).unwrap();
    assert!(signed.iter().all(|d| d != changed.as_bytes()));
}

#[test]
fn hostile_pe_images_are_refused_without_panicking() {
    let image = read(&debian_kernel());
    // Truncations through the headers, section table and sections.
    for len in [
        0,
        2,
        64,
        0x80,
        0x200,
        0x1000,
        0x4000,
        image.len() / 2,
        image.len() - 1,
    ] {
        let _ = authenticode(&image[..len], HashAlg::Sha256);
        let _ = signed_digests(&image[..len]);
    }
    // A section pointing past the end of the file.
    let pe = u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize;
    let opt_size = u16::from_le_bytes(image[pe + 20..pe + 22].try_into().unwrap()) as usize;
    let first_section = pe + 24 + opt_size;
    let mut bad = image.clone();
    bad[first_section + 20..first_section + 24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(authenticode(&bad, HashAlg::Sha256).is_err());
}

/// The events of one kind in one PCR of the real OVMF log: (digest, tag or type).
fn events(log: &EventLog<'_>, pcr: u8, alg: HashAlg) -> Vec<(EventType, Option<u32>, Digest)> {
    log.events()
        .iter()
        .filter(|e| e.pcr() == pcr && e.is_extended())
        .map(|e| {
            let tag = match e.decode() {
                EventData::EventTag { id, .. } => Some(id),
                _ => None,
            };
            (e.event_type(), tag, *e.digests().get(alg).unwrap())
        })
        .collect()
}

/// SHA-256 of the kernel that booted the OVMF log (Debian's linux-image-6.1.0-57-amd64).
const OVMF_LOG_KERNEL_SHA256: &str =
    "85667e6c72245133bd7e3e80bac7d16b26fda15c0a3c68faa4b713850ea526cd";

#[test]
fn qemu_direct_boot_prediction_equals_a_real_ovmf_event_log() {
    let bytes = read(Path::new(OVMF_LOG));
    let log = EventLog::parse(&bytes).unwrap();
    // PCR 4 needs the very kernel that booted; Debian replaces kernel packages, so a
    // machine installed later may not have it. The same model is checked on every VM-test
    // run with the current kernel (vm-tests `uefi_measured_boot`), so here it is checked
    // when that kernel is present, and said loudly when it is not.
    let kernel = std::fs::read(OVMF_LOG_KERNEL)
        .ok()
        .filter(|k| HashAlg::Sha256.hash(k).to_hex() == OVMF_LOG_KERNEL_SHA256);
    if kernel.is_none() {
        eprintln!(
            "NOTE: {OVMF_LOG_KERNEL} (SHA-256 {OVMF_LOG_KERNEL_SHA256}) is not on this machine: \
             the PCR 4 half of this test is not run; vm-tests uefi_measured_boot checks it"
        );
    }
    for alg in [HashAlg::Sha1, HashAlg::Sha256] {
        if let Some(kernel) = &kernel {
            let pcr4 = events(&log, 4, alg);
            let apps: Vec<Digest> = pcr4
                .iter()
                .filter(|(t, _, _)| *t == EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
                .map(|(_, _, d)| *d)
                .collect();
            let patched =
                qemu_direct_boot_image(kernel, Some(OVMF_LOG_INITRD_LEN), OVMF_LOG_RAM).unwrap();
            assert_eq!(apps, [authenticode(&patched, alg).unwrap()], "{alg}");
            // The unpatched file's digest is NOT what OVMF measured under QEMU -kernel.
            assert_ne!(apps[0], authenticode(kernel, alg).unwrap());
        }

        let pcr9 = events(&log, 9, alg);
        assert_eq!(pcr9.len(), 2, "{pcr9:?}");
        assert_eq!(pcr9[0].1, Some(STUB_LOAD_OPTIONS_TAG));
        assert_eq!(
            pcr9[0].2,
            load_options_digest(&format!("{OVMF_LOG_APPEND} initrd=initrd"), alg)
        );
        assert_eq!(pcr9[1].1, Some(STUB_INITRD_TAG));
        // The PCR 9 value the model predicts is the log's replay of PCR 9.
        let mut pcr = Digest::zero(alg);
        pcr.extend(pcr9[0].2.as_bytes());
        pcr.extend(pcr9[1].2.as_bytes());
        assert_eq!(Some(&pcr), log.replay().get(alg, 9));
    }
}

/// A boot of `files` along the stub path: the real OVMF log with PCR 4's application and
/// PCR 9's two events rewritten to what booting `files` measures (their real structure and
/// labels kept), captured as `initrd-agent evidence` would.
fn booted(kernel: &[u8], initrd: &[u8], cmdline: &str) -> CapturedEvidence {
    let mut bytes = read(Path::new(OVMF_LOG));
    let (app, opts, rd) = {
        let log = EventLog::parse(&bytes).unwrap();
        let idx = |pcr: u8, pred: &dyn Fn(&EventData<'_>) -> bool| {
            log.events()
                .iter()
                .find(|e| e.pcr() == pcr && pred(&e.decode()))
                .unwrap()
                .index()
        };
        (
            idx(4, &|d| matches!(d, EventData::ImageLoad(_))),
            idx(
                9,
                &|d| matches!(d, EventData::EventTag { id, .. } if *id == STUB_LOAD_OPTIONS_TAG),
            ),
            idx(
                9,
                &|d| matches!(d, EventData::EventTag { id, .. } if *id == STUB_INITRD_TAG),
            ),
        )
    };
    let keep = |bytes: &[u8], i: usize| {
        let log = EventLog::parse(bytes).unwrap();
        log.events()[i].data().to_vec()
    };
    let data = keep(&bytes, app);
    bytes = rewrite(&bytes, app, &data, |alg, _| {
        authenticode(kernel, alg).unwrap()
    });
    let data = keep(&bytes, opts);
    bytes = rewrite(&bytes, opts, &data, |alg, _| {
        load_options_digest(cmdline, alg)
    });
    let data = keep(&bytes, rd);
    bytes = rewrite(&bytes, rd, &data, |alg, _| alg.hash(initrd));
    capture(&bytes)
}

fn eval(doc: &PolicyDocument, c: &CapturedEvidence) -> Verdict {
    let p = Policy::from_document(doc.clone()).unwrap();
    p.evaluate_claims(&UnverifiedCapture::check(c).unwrap().claims())
}

fn stub_policy(kernel: &[u8], initrd: &[u8], cmdline: &str, pin_pcr9: bool) -> PolicyDocument {
    let p = predict(
        &BootFiles {
            kernel,
            initrd: Some(initrd),
            cmdline: Some(cmdline),
            efi_apps: &[],
        },
        BootPath::EfiStub,
        HashAlg::Sha256,
    )
    .unwrap();
    let hexes = |v: &[verifier_core::predict::Predicted]| {
        Some(v.iter().map(|p| p.digest.to_hex()).collect::<Vec<_>>())
    };
    PolicyDocument {
        require_event_log: true,
        pcrs: if pin_pcr9 {
            vec![PcrRuleDocument {
                bank: "sha256".into(),
                index: 9,
                allowed: vec![p.pcr9.unwrap().to_hex()],
                initial: false,
            }]
        } else {
            Vec::new()
        },
        measured_boot: Some(MeasuredBootDocument {
            pcrs: Some(vec![4, 9]),
            boot_applications: hexes(&p.boot_applications),
            initrds: hexes(&p.initrds),
            kernel_cmdline: Some(vec![CmdlineRuleDocument::Exact(cmdline.into())]),
            ..MeasuredBootDocument::default()
        }),
        ..PolicyDocument::default()
    }
}

#[test]
fn allowing_an_update_accepts_the_predicted_boot_and_only_widens() {
    let kernel = read(&debian_kernel());
    let (old_rd, new_rd) = (b"old initramfs".to_vec(), b"new initramfs".to_vec());
    let (old_cmd, new_cmd) = ("root=/dev/vda ro", "root=/dev/vda ro quiet");
    for pin in [false, true] {
        let old = stub_policy(&kernel, &old_rd, old_cmd, pin);
        // The policy as written accepts the old boot: the stub's events are read.
        let before = booted(&kernel, &old_rd, old_cmd);
        assert!(eval(&old, &before).accepted(), "{}", eval(&old, &before));
        let after = booted(&kernel, &new_rd, new_cmd);
        let refused = eval(&old, &after);
        let failed: Vec<&str> = refused.failures.iter().map(|f| f.rule.as_str()).collect();
        let mut expect = vec!["measured_boot.initrds", "measured_boot.kernel_cmdline"];
        if pin {
            expect.insert(0, "pcr sha256:9");
        }
        assert_eq!(failed, expect, "{refused}");

        let files = BootFiles {
            kernel: &kernel,
            initrd: Some(&new_rd),
            cmdline: Some(new_cmd),
            efi_apps: &[],
        };
        let preds: Vec<_> = [HashAlg::Sha256, HashAlg::Sha1]
            .into_iter()
            .map(|alg| predict(&files, BootPath::EfiStub, alg).unwrap())
            .collect();
        let w = widen(&old, &preds).unwrap();
        assert!(
            eval(&w.document, &after).accepted(),
            "{}",
            eval(&w.document, &after)
        );
        assert!(
            eval(&w.document, &before).accepted(),
            "the old boot must still pass"
        );
        assert!(
            w.diff.changes.iter().all(|c| c.effect == Effect::Widens),
            "{}",
            w.diff
        );
        let paths: Vec<&str> = w.diff.changes.iter().map(|c| c.path.as_str()).collect();
        let mut want = vec!["measured_boot.initrds", "measured_boot.kernel_cmdline"];
        if pin {
            want.push("pcrs[sha256:9].allowed");
        }
        assert_eq!(paths, want, "{}", w.diff);
        // Allowing the same files again changes nothing.
        let again = widen(&w.document, &preds).unwrap();
        assert!(again.diff.is_empty(), "{}", again.diff);

        // Forged: the log claims the allowed command line, but PCR 9 was extended with
        // another one's digest (the stub's event carries no text to compare).
        let forged = booted(&kernel, &new_rd, "root=/dev/vda ro init=/bin/sh");
        let v = eval(&w.document, &forged);
        assert!(
            v.failures
                .iter()
                .any(|f| f.rule == "measured_boot.kernel_cmdline"
                    && f.reason.contains("load options")),
            "{v}"
        );
    }
}

#[test]
fn a_change_that_is_more_than_an_allowance_is_refused() {
    let kernel = read(&debian_kernel());
    let old = stub_policy(&kernel, b"rd", "ro", true);
    let mut narrower = old.clone();
    narrower.measured_boot.as_mut().unwrap().initrds = Some(Vec::new());
    let mut other = old.clone();
    other.require_event_log = false;
    let mut regex = old.clone();
    regex
        .measured_boot
        .as_mut()
        .unwrap()
        .kernel_cmdline
        .as_mut()
        .unwrap()
        .push(CmdlineRuleDocument::Regex(".*".into()));
    let mut pcr7 = old.clone();
    pcr7.pcrs.push(PcrRuleDocument {
        bank: "sha256".into(),
        index: 7,
        allowed: vec!["00".repeat(32)],
        initial: false,
    });
    for (what, new) in [
        ("removes an initrd", narrower),
        ("drops require_event_log", other),
        ("adds a regex (allows any command line)", regex),
        ("adds a PCR 7 rule", pcr7),
    ] {
        assert!(
            matches!(
                check_only_allows_more(&old, &new),
                Err(WidenError::NotOnlyWidening(_))
            ),
            "{what}: accepted"
        );
    }
    // Nothing to add to: a policy without measured-boot lists or a PCR 9 pin.
    let bare = PolicyDocument::default();
    let preds = [predict(
        &BootFiles {
            kernel: &kernel,
            initrd: None,
            cmdline: None,
            efi_apps: &[],
        },
        BootPath::EfiStub,
        HashAlg::Sha256,
    )
    .unwrap()];
    assert_eq!(
        widen(&bare, &preds).unwrap_err(),
        WidenError::NothingToWiden
    );
    // A bank the policy uses but the prediction lacks.
    assert_eq!(
        widen(&old, &[]).unwrap_err(),
        WidenError::MissingBank(HashAlg::Sha256)
    );
}
