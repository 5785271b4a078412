//! Policies learned from every event log of the shared test data accept that log, and refuse
//! the same log with one event changed as another boot would have logged it: another kernel,
//! another command line, Secure Boot off, another db.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod policy_support;

use policy_support::*;
use verifier_core::eventlog::{EventData, EventLog, EventType, IplForm, VariableValue};
use verifier_core::policy::{
    learn, Claims, Evaluator, LearnMode, LearnOptions, Policy, UnverifiedCapture, Verdict,
};
use verifier_core::proto::v1::CapturedEvidence;
use verifier_core::wire::{Digest, HashAlg};

fn learned(c: &CapturedEvidence, mode: LearnMode) -> Policy {
    let capture = UnverifiedCapture::check(c).unwrap();
    let l = learn(
        &capture.claims(),
        &LearnOptions {
            mode,
            ..LearnOptions::default()
        },
    )
    .unwrap();
    // What learn writes must read back as the same policy.
    let json = serde_json::to_string_pretty(&l.document).unwrap();
    let p = Policy::from_json(&json).unwrap();
    assert_eq!(p.document(), &l.document);
    p
}

fn verdict(p: &Policy, c: &CapturedEvidence) -> Verdict {
    let capture = UnverifiedCapture::check(c).unwrap();
    let claims = Claims::unverified_from_capture(&capture);
    let v = p.evaluate_claims(&claims);
    // check() and evaluate() agree on the failures.
    assert_eq!(p.check(&claims).verdict(), v);
    v
}

fn failed_rules(v: &Verdict) -> Vec<&str> {
    v.failures.iter().map(|f| f.rule.as_str()).collect()
}

#[test]
fn learned_policies_accept_their_own_log() {
    let mut with_boot_state = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let c = capture(&bytes);
        for mode in [LearnMode::Exact, LearnMode::Reference, LearnMode::Both] {
            let p = learned(&c, mode);
            let v = verdict(&p, &c);
            assert!(v.accepted(), "{} {mode:?}: {v}", name(&path));
        }
        let mb = learned(&c, LearnMode::Reference)
            .document()
            .measured_boot
            .clone()
            .unwrap();
        if mb.boot_applications.is_some() {
            with_boot_state += 1;
        }
    }
    assert!(
        with_boot_state >= 15,
        "only {with_boot_state} logs had boot applications"
    );
}

/// Index of the first event matching `f`.
fn find(bytes: &[u8], f: impl Fn(&verifier_core::eventlog::Event<'_>) -> bool) -> Option<usize> {
    let log = EventLog::parse(bytes).unwrap();
    log.events().iter().find(|e| f(e)).map(|e| e.index())
}

fn mutate_and_expect(
    path: &std::path::Path,
    bytes: &[u8],
    policy: &Policy,
    mutated: Vec<u8>,
    rule: &str,
) {
    let c = capture(&mutated);
    let v = verdict(policy, &c);
    assert!(
        failed_rules(&v).contains(&rule),
        "{}: expected {rule} to fail, got: {v}",
        name(path)
    );
    assert_ne!(bytes, mutated.as_slice());
}

#[test]
fn another_kernel_is_refused() {
    let mut n = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let p = learned(&capture(&bytes), LearnMode::Reference);
        let mb = p.document().measured_boot.clone().unwrap();
        let bank = HashAlg::from_name(mb.bank.as_deref().unwrap()).unwrap();
        let (target, rule) = if let Some(kernels) = &mb.kernels {
            let i = find(&bytes, |e| {
                e.pcr() == 9
                    && e.digests()
                        .get(bank)
                        .is_some_and(|d| kernels.contains(&d.to_hex()))
            })
            .unwrap();
            (i, "measured_boot.kernels")
        } else if mb.boot_applications.is_some() {
            // systemd-boot and shim+grub load the kernel as an EFI application (PCR 4).
            let log = EventLog::parse(&bytes).unwrap();
            let last = log
                .events()
                .iter()
                .rfind(|e| {
                    e.pcr() == 4 && e.event_type() == EventType::EV_EFI_BOOT_SERVICES_APPLICATION
                })
                .unwrap()
                .index();
            (last, "measured_boot.boot_applications")
        } else {
            continue;
        };
        let log = EventLog::parse(&bytes).unwrap();
        let data = log.events()[target].data().to_vec();
        let mutated = rewrite(&bytes, target, &data, |alg, _| alg.hash(b"another kernel"));
        mutate_and_expect(&path, &bytes, &p, mutated, rule);
        n += 1;
    }
    assert!(n >= 15, "kernel mutation exercised on {n} logs only");
}

#[test]
fn another_command_line_is_refused() {
    let mut n = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let p = learned(&capture(&bytes), LearnMode::Reference);
        let mb = p.document().measured_boot.clone().unwrap();
        if mb.kernel_cmdline.is_none() {
            continue;
        }
        let log = EventLog::parse(&bytes).unwrap();
        let mut done = false;
        for e in log.events().iter().filter(|e| matches!(e.pcr(), 8 | 12)) {
            let EventData::Ipl(ipl) = e.decode() else {
                continue;
            };
            let (data, hashed): (Vec<u8>, Vec<u8>) = match ipl.form {
                IplForm::KernelCmdline => {
                    let text = format!("{} init=/bin/sh", ipl.text);
                    (
                        format!("kernel_cmdline: {text}\0").into_bytes(),
                        text.into_bytes(),
                    )
                }
                IplForm::Utf16 => {
                    let text = format!("{} init=/bin/sh", ipl.text);
                    let mut d: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
                    d.extend_from_slice(&[0, 0]);
                    (d.clone(), d)
                }
                IplForm::Text if ipl.text.starts_with("grub_kernel_cmdline ") => {
                    let text =
                        format!("{} init=/bin/sh", &ipl.text["grub_kernel_cmdline ".len()..]);
                    (
                        format!("grub_kernel_cmdline {text}\0").into_bytes(),
                        text.into_bytes(),
                    )
                }
                _ => continue,
            };
            let mutated = rewrite(&bytes, e.index(), &data, |alg, _| alg.hash(&hashed));
            mutate_and_expect(&path, &bytes, &p, mutated, "measured_boot.kernel_cmdline");
            done = true;
            break;
        }
        assert!(
            done,
            "{}: learned a command line but none was found",
            name(&path)
        );
        n += 1;
    }
    assert!(n >= 12, "command-line mutation exercised on {n} logs only");
}

fn variable_event(bytes: &[u8], var: &str) -> Option<usize> {
    find(bytes, |e| {
        e.pcr() == 7
            && e.event_type() == EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
            && matches!(e.decode(), EventData::Variable(v) if v.name == var)
    })
}

#[test]
fn secure_boot_disabled_is_refused() {
    let mut n = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let p = learned(&capture(&bytes), LearnMode::Reference);
        if !p
            .document()
            .measured_boot
            .as_ref()
            .unwrap()
            .require_secure_boot
        {
            continue;
        }
        let i = variable_event(&bytes, "SecureBoot").unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let mut data = log.events()[i].data().to_vec();
        let EventData::Variable(v) = log.events()[i].decode() else {
            unreachable!()
        };
        assert!(matches!(
            v.value,
            VariableValue::SecureBoot { value: Some(1) }
        ));
        assert!(v.trailing.is_empty());
        *data.last_mut().unwrap() = 0;
        let mutated = rewrite(&bytes, i, &data, hash_of);
        mutate_and_expect(&path, &bytes, &p, mutated, "measured_boot.secure_boot");
        n += 1;
    }
    assert!(n >= 8, "Secure Boot mutation exercised on {n} logs only");
}

#[test]
fn another_db_is_refused() {
    let mut n = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let p = learned(&capture(&bytes), LearnMode::Reference);
        let db = p.document().measured_boot.as_ref().unwrap().db.clone();
        if db.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let i = variable_event(&bytes, "db").unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let mut data = log.events()[i].data().to_vec();
        let at = data.len() - 10;
        data[at] ^= 0x55;
        let mutated = rewrite(&bytes, i, &data, hash_of);
        mutate_and_expect(&path, &bytes, &p, mutated, "measured_boot.db");
        n += 1;
    }
    assert!(n >= 10, "db mutation exercised on {n} logs only");
}

#[test]
fn exact_policies_refuse_any_changed_event() {
    // Exact mode pins PCR values: the kernel mutation changes PCR 4 or 9.
    let bytes = std::fs::read(log_path("keylime/mb_log.bin")).unwrap();
    let p = learned(&capture(&bytes), LearnMode::Exact);
    let i = find(&bytes, |e| {
        e.pcr() == 9 && e.event_type() == EventType::EV_IPL
    })
    .unwrap();
    let data = EventLog::parse(&bytes).unwrap().events()[i].data().to_vec();
    let mutated = rewrite(&bytes, i, &data, |alg, _| Digest::filled(alg, 7));
    let v = verdict(&p, &capture(&mutated));
    assert_eq!(failed_rules(&v), ["pcr sha256:9"], "{v}");
}

/// A trust-point event (pcrIndex 0xffffffff, as the Windows boot manager logs them) for a
/// crypto-agile log with `banks`, with digests that are nobody's hash.
fn trust_point(banks: &[HashAlg], event_type: u32, data: &[u8]) -> Vec<u8> {
    let mut e = u32::MAX.to_le_bytes().to_vec();
    e.extend_from_slice(&event_type.to_le_bytes());
    e.extend_from_slice(&u32::try_from(banks.len()).unwrap().to_le_bytes());
    for alg in banks {
        e.extend_from_slice(&alg.to_tpm().to_le_bytes());
        e.extend(std::iter::repeat_n(0x5a, alg.size()));
    }
    e.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    e.extend_from_slice(data);
    e
}

/// Trust points in a real log (before its StartupLocality event, in the middle, at the end)
/// change nothing downstream: the capture replays to the same PCRs, learning gives the same
/// policy in every mode, and each policy accepts the other log. Nothing indexes a PCR table
/// with a trust point's index.
#[test]
fn trust_points_change_no_policy() {
    let bytes = std::fs::read(log_path("go-tpm-tools/glinux-alex.bin")).unwrap();
    let plain = EventLog::parse(&bytes).unwrap();
    assert_eq!(plain.startup_locality(), Some(3));
    let banks = plain.banks().to_vec();
    let offsets: Vec<usize> = plain.events().iter().map(|e| e.offset()).collect();
    let mid = offsets[offsets.len() / 2];
    let mut with = bytes[..offsets[1]].to_vec();
    with.extend(trust_point(&banks, 3, b"tp"));
    with.extend(&bytes[offsets[1]..mid]);
    with.extend(trust_point(&banks, 0x8000_0007, b"Windows trust point"));
    with.extend(trust_point(&banks, 4, &[0; 4]));
    with.extend(&bytes[mid..bytes.len() - plain.padding()]);
    with.extend(trust_point(&banks, 0x8000_0003, &[0; 40]));
    let log = EventLog::parse(&with).unwrap();
    assert_eq!(log.events().len(), plain.events().len() + 4);
    assert_eq!(log.replay(), plain.replay());
    assert_eq!(log.findings(), plain.findings());
    assert_eq!(log.startup_locality(), Some(3));

    let (c_plain, c_with) = (capture(&bytes), capture(&with));
    for mode in [LearnMode::Exact, LearnMode::Reference, LearnMode::Both] {
        let p_plain = learned(&c_plain, mode);
        let p_with = learned(&c_with, mode);
        assert_eq!(p_plain.document(), p_with.document(), "{mode:?}");
        let v = verdict(&p_plain, &c_with);
        assert!(v.accepted(), "{mode:?}: {v}");
        let v = verdict(&p_with, &c_plain);
        assert!(v.accepted(), "{mode:?}: {v}");
    }
}
