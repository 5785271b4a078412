//! Each rule has a test that makes exactly that rule fail, and the forgeries a policy must
//! see through (edited event data, events in PCRs the quote does not vouch for, a PCR
//! extended outside the log) are refused.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod policy_support;

use policy_support::*;
use verifier_core::eventlog::{EventData, EventLog, IplForm};
use verifier_core::policy::{
    learn, CmdlineRuleDocument, Evaluator, LearnMode, LearnOptions, Policy, PolicyDocument,
    UnverifiedCapture, Verdict,
};
use verifier_core::proto::v1::CapturedEvidence;
use verifier_core::wire::{Digest, HashAlg};

/// grub, Secure Boot on, shim, PK/KEK/db/dbx, kernel + initrd in PCR 9, kernel_cmdline.
const GRUB_LOG: &str = "keylime/mb_log.bin";

fn grub() -> (Vec<u8>, CapturedEvidence) {
    let bytes = std::fs::read(log_path(GRUB_LOG)).unwrap();
    let c = capture(&bytes);
    (bytes, c)
}

fn learn_doc(c: &CapturedEvidence, mode: LearnMode) -> PolicyDocument {
    let capture = UnverifiedCapture::check(c).unwrap();
    learn(
        &capture.claims(),
        &LearnOptions {
            mode,
            ..LearnOptions::default()
        },
    )
    .unwrap()
    .document
}

fn eval(doc: &PolicyDocument, c: &CapturedEvidence) -> Verdict {
    let p = Policy::from_document(doc.clone()).unwrap();
    let capture = UnverifiedCapture::check(c).unwrap();
    p.evaluate_claims(&capture.claims())
}

/// Asserts that exactly `rule` fails, with a reason containing `why`.
fn only(v: &Verdict, rule: &str, why: &str) {
    let rules: Vec<&str> = v.failures.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, [rule], "{v}");
    assert!(v.failures[0].reason.contains(why), "{v}");
}

#[test]
fn baseline_accepts() {
    let (_, c) = grub();
    let doc = learn_doc(&c, LearnMode::Both);
    let mb = doc.measured_boot.as_ref().unwrap();
    assert!(mb.require_secure_boot);
    assert!(mb.kernels.is_some() && mb.initrds.is_some() && mb.kernel_cmdline.is_some());
    assert!(eval(&doc, &c).accepted(), "{}", eval(&doc, &c));
}

#[test]
fn pcr_value_not_allowed() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Exact);
    doc.pcrs[0].allowed = vec!["11".repeat(32)];
    let i = doc.pcrs[0].index;
    only(
        &eval(&doc, &c),
        &format!("pcr sha256:{i}"),
        "not one of the 1 allowed",
    );
}

#[test]
fn pcr_must_be_initial() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Exact);
    doc.pcrs.clear();
    let rule = |index| {
        serde_json::from_value(
            serde_json::json!({"bank": "sha256", "index": index, "initial": true}),
        )
        .unwrap()
    };
    doc.pcrs.push(rule(16));
    assert!(eval(&doc, &c).accepted());
    doc.pcrs.push(rule(7));
    only(&eval(&doc, &c), "pcr sha256:7", "not the initial value");
}

#[test]
fn release_pcr_extended() {
    let (_, mut c) = grub();
    let doc = learn_doc(&c, LearnMode::Reference);
    let mut v = Digest::zero(HashAlg::Sha256);
    v.extend(b"released");
    set_pcr(&mut c, HashAlg::Sha256, 15, v);
    only(&eval(&doc, &c), "release_pcr sha256:15", "already extended");
}

#[test]
fn event_log_required() {
    let (_, mut c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Exact);
    c.event_log = None;
    only(&eval(&doc, &c), "require_event_log", "no UEFI event log");
    doc.require_event_log = false;
    doc.measured_boot = Some(Default::default());
    only(&eval(&doc, &c), "measured_boot", "no UEFI event log");
}

#[test]
fn event_digest_mismatch() {
    // arch-linux-workstation.bin's event 24 digest is not the hash of its data.
    let bytes = std::fs::read(log_path("go-tpm-tools/arch-linux-workstation.bin")).unwrap();
    let c = capture(&bytes);
    let mut doc = learn_doc(&c, LearnMode::Exact);
    assert!(doc.allow_event_digest_mismatch);
    doc.allow_event_digest_mismatch = false;
    let v = eval(&doc, &c);
    assert!(
        v.failures.iter().all(|f| f.rule == "event_digest_mismatch"),
        "{v}"
    );
    assert!(v.failures[0].reason.contains("event 24"), "{v}");
}

#[test]
fn clock_rules() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Exact);
    doc.require_clock_safe = true;
    only(&eval(&doc, &c), "require_clock_safe", "no clockInfo");
    only(
        &eval(&doc, &with_clock(c.clone(), 5, 0, false)),
        "require_clock_safe",
        "not safe",
    );
    doc.require_clock_safe = false;
    doc.clock = Some(serde_json::from_str(
        r#"{"require_safe":true,"reset_count_at_enrollment":5,"max_reboots":2,"max_restarts":1}"#,
    )
    .unwrap());
    assert!(eval(&doc, &with_clock(c.clone(), 7, 1, true)).accepted());
    only(
        &eval(&doc, &with_clock(c.clone(), 7, 1, false)),
        "clock.require_safe",
        "not safe",
    );
    only(
        &eval(&doc, &with_clock(c.clone(), 8, 0, true)),
        "clock.max_reboots",
        "3 reboots",
    );
    only(
        &eval(&doc, &with_clock(c.clone(), 4, 0, true)),
        "clock.max_reboots",
        "TPM cleared",
    );
    only(
        &eval(&doc, &with_clock(c.clone(), 5, 2, true)),
        "clock.max_restarts",
        "2 resumes",
    );
}

#[test]
fn measured_boot_pcr_not_quoted_or_extended_outside_the_log() {
    let (_, mut c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    doc.measured_boot
        .as_mut()
        .unwrap()
        .pcrs
        .as_mut()
        .unwrap()
        .push(11);
    assert!(eval(&doc, &c).accepted());
    // PCR 11 is not in the log: anything measured there was measured outside it.
    set_pcr(
        &mut c,
        HashAlg::Sha256,
        11,
        Digest::filled(HashAlg::Sha256, 1),
    );
    only(
        &eval(&doc, &c),
        "measured_boot.pcr sha256:11",
        "measured outside the log",
    );
    drop_pcr(&mut c, HashAlg::Sha256, 11);
    only(
        &eval(&doc, &c),
        "measured_boot.pcr sha256:11",
        "not covered by the quote",
    );
}

#[test]
fn events_of_uncovered_pcrs_prove_nothing() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    // Without PCR 9 covered, the kernel measurements are not trusted: no kernel is found.
    doc.measured_boot.as_mut().unwrap().pcrs = Some(vec![4, 7, 8, 11]);
    let v = eval(&doc, &c);
    let rules: Vec<&str> = v.failures.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["measured_boot.kernels", "measured_boot.initrds"],
        "{v}"
    );
    assert!(
        v.failures[0].reason.contains("no kernel is measured"),
        "{v}"
    );
}

#[test]
fn secure_boot_disabled() {
    let bytes = std::fs::read(log_path("go-tpm-tools/ubuntu-2104-no-secure-boot.bin")).unwrap();
    let c = capture(&bytes);
    let mut doc = learn_doc(&c, LearnMode::Reference);
    assert!(!doc.measured_boot.as_ref().unwrap().require_secure_boot);
    doc.measured_boot.as_mut().unwrap().require_secure_boot = true;
    only(
        &eval(&doc, &c),
        "measured_boot.secure_boot",
        "Secure Boot is disabled",
    );
}

#[test]
fn key_databases() {
    let (_, c) = grub();
    for db in ["pk", "kek", "db"] {
        let mut doc = learn_doc(&c, LearnMode::Reference);
        let mb = doc.measured_boot.as_mut().unwrap();
        let list = match db {
            "pk" => mb.pk.as_mut(),
            "kek" => mb.kek.as_mut(),
            _ => mb.db.as_mut(),
        }
        .unwrap();
        let removed = list.pop().unwrap();
        let v = eval(&doc, &c);
        only(&v, &format!("measured_boot.{db}"), "not allowed");
        assert!(v.failures[0].reason.contains(&removed), "{v}");
    }
}

#[test]
fn dbx_rolled_back() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    let dbx = doc.measured_boot.as_mut().unwrap().dbx.as_mut().unwrap();
    dbx.required.push(format!("sha256:{}", "42".repeat(32)));
    only(&eval(&doc, &c), "measured_boot.dbx", "missing from dbx");
    let dbx = doc.measured_boot.as_mut().unwrap().dbx.as_mut().unwrap();
    dbx.required.pop();
    let n = dbx.min_entries.unwrap();
    dbx.min_entries = Some(n + 1);
    only(&eval(&doc, &c), "measured_boot.dbx", "fewer than");
}

#[test]
fn allowlists_of_boot_applications_kernels_initrds() {
    let (_, c) = grub();
    for (rule, what) in [
        ("measured_boot.boot_applications", "boot application"),
        ("measured_boot.kernels", "kernel"),
        ("measured_boot.initrds", "initrd"),
    ] {
        let mut doc = learn_doc(&c, LearnMode::Reference);
        let mb = doc.measured_boot.as_mut().unwrap();
        let list = match what {
            "boot application" => mb.boot_applications.as_mut(),
            "kernel" => mb.kernels.as_mut(),
            _ => mb.initrds.as_mut(),
        }
        .unwrap();
        list[0] = "00".repeat(32);
        only(&eval(&doc, &c), rule, "not allowed");
    }
}

#[test]
fn kernel_cmdline_rules() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    let mb = doc.measured_boot.as_mut().unwrap();
    mb.kernel_cmdline = Some(vec![CmdlineRuleDocument::Regex(
        r"\(hd0,gpt2\)/vmlinuz-[0-9.]+-[0-9]+\.el9\.x86_64 root=/dev/mapper/cs-root ro .*".into(),
    )]);
    assert!(eval(&doc, &c).accepted(), "{}", eval(&doc, &c));
    // Anchored: a pattern matching only a prefix does not match the whole line.
    mb_set(
        &mut doc,
        vec![CmdlineRuleDocument::Regex(r"\(hd0,gpt2\)/vmlinuz".into())],
    );
    only(
        &eval(&doc, &c),
        "measured_boot.kernel_cmdline",
        "matches no rule",
    );
    mb_set(&mut doc, vec![CmdlineRuleDocument::Exact("quiet".into())]);
    only(
        &eval(&doc, &c),
        "measured_boot.kernel_cmdline",
        "matches no rule",
    );
}

fn mb_set(doc: &mut PolicyDocument, rules: Vec<CmdlineRuleDocument>) {
    doc.measured_boot.as_mut().unwrap().kernel_cmdline = Some(rules);
}

#[test]
fn edited_cmdline_text_with_the_original_digest_is_refused() {
    // The attacker boots `init=/bin/sh` but edits the log to show the allowed line: the log
    // still replays (digests untouched), but the text is no longer what was measured.
    let (bytes, c) = grub();
    let doc = learn_doc(&c, LearnMode::Reference);
    let log = EventLog::parse(&bytes).unwrap();
    let e = log
        .events()
        .iter()
        .find(|e| matches!(e.decode(), EventData::Ipl(i) if i.form == IplForm::KernelCmdline))
        .unwrap();
    let original: Vec<Digest> = e.digests().as_slice().to_vec();
    let forged_text = b"kernel_cmdline: (hd0,gpt2)/vmlinuz-5.14.0-183.el9.x86_64 init=/bin/sh\0";
    let forged = rewrite(&bytes, e.index(), forged_text, |alg, _| {
        *original.iter().find(|d| d.alg() == alg).unwrap()
    });
    let mut fc = capture(&forged);
    // Same PCRs as the honest log: only the text changed.
    assert_eq!(fc.pcrs, c.pcrs);
    fc.event_log = Some(verifier_core::proto::Base64Bytes::new(forged));
    let mut allow_forged = doc.clone();
    mb_set(
        &mut allow_forged,
        vec![CmdlineRuleDocument::Regex(".*init=/bin/sh.*".into())],
    );
    only(
        &eval(&allow_forged, &fc),
        "measured_boot.kernel_cmdline",
        "not what was measured",
    );
}

#[test]
fn edited_variable_data_with_the_original_digest_is_refused() {
    let (bytes, honest) = grub();
    let log = EventLog::parse(&bytes).unwrap();
    let e = log
        .events()
        .iter()
        .find(|e| matches!(e.decode(), EventData::Variable(v) if v.name == "db"))
        .unwrap();
    let mut data = e.data().to_vec();
    let at = data.len() - 10;
    data[at] ^= 1;
    let original: Vec<Digest> = e.digests().as_slice().to_vec();
    let forged = rewrite(&bytes, e.index(), &data, |alg, _| {
        *original.iter().find(|d| d.alg() == alg).unwrap()
    });
    let c = capture(&forged);
    assert_eq!(c.pcrs, honest.pcrs);
    // Even with digest mismatches allowed, the db rule refuses data that is not bound.
    let mut doc = learn_doc(&honest, LearnMode::Reference);
    doc.allow_event_digest_mismatch = true;
    let v = eval(&doc, &c);
    only(&v, "measured_boot.db", "not what was measured");
}

#[test]
fn ima_rules() {
    let ascii =
        std::fs::read(testdata().join("ima/rust-keylime/ascii_runtime_measurements")).unwrap();
    let (_, c) = grub();
    let c = with_ima(c, &ascii, HashAlg::Sha1);
    let mut doc = learn_doc(&c, LearnMode::Reference);
    assert!(eval(&doc, &c).accepted(), "{}", eval(&doc, &c));
    let ima = doc.ima.as_mut().unwrap();
    assert!(ima.allowed.len() > 100);
    ima.allowed.remove("/init");
    only(
        &eval(&doc, &c),
        "ima.allowlist",
        "/init sha1:19f13b42c2745066347e76454788c0fe083643f3 not in the allowlist",
    );
    let ima = doc.ima.as_mut().unwrap();
    ima.excludes.push("^/init$".into());
    assert!(eval(&doc, &c).accepted());
    let ima = doc.ima.as_mut().unwrap();
    ima.allowed
        .insert("/bin/sh".into(), vec![format!("sha1:{}", "00".repeat(20))]);
    only(&eval(&doc, &c), "ima.allowlist", "digest not allowed");
    let mut no_list = c.clone();
    no_list.ima_log = None;
    let mut pcr10 = Digest::zero(HashAlg::Sha256);
    pcr10.extend(b"x");
    set_pcr(&mut no_list, HashAlg::Sha256, 10, pcr10);
    only(&eval(&doc, &no_list), "ima", "no IMA measurement list");
}

#[test]
fn ima_violations_need_allowing() {
    let list = "10 0000000000000000000000000000000000000000 ima-ng sha1:0000000000000000000000000000000000000000 /var/log/x\n";
    let (_, c) = grub();
    let c = with_ima(c, list.as_bytes(), HashAlg::Sha1);
    let mut doc = learn_doc(&c, LearnMode::Reference);
    assert!(doc.ima.as_ref().unwrap().allow_violations);
    assert!(eval(&doc, &c).accepted());
    doc.ima.as_mut().unwrap().allow_violations = false;
    only(&eval(&doc, &c), "ima.violations", "1 violation");
}

#[test]
fn every_failed_rule_is_reported() {
    let (_, mut c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Both);
    doc.pcrs[0].allowed = vec!["11".repeat(32)];
    doc.measured_boot.as_mut().unwrap().kernels = Some(vec!["00".repeat(32)]);
    let mut v = Digest::zero(HashAlg::Sha256);
    v.extend(b"released");
    set_pcr(&mut c, HashAlg::Sha256, 15, v);
    let verdict = eval(&doc, &c);
    assert_eq!(verdict.failures.len(), 3, "{verdict}");
    let p = Policy::from_document(doc).unwrap();
    let capture = UnverifiedCapture::check(&c).unwrap();
    let report = p.check(&capture.claims());
    assert!(report.outcomes.iter().filter(|o| o.passed).count() >= 10);
    assert_eq!(report.verdict(), verdict);
}

/// Authority events of PCR 7 as (variable, entry) for a log, via a learned Reference policy.
fn learned_authorities(c: &CapturedEvidence) -> Option<Vec<String>> {
    learn_doc(c, LearnMode::Reference)
        .measured_boot
        .and_then(|mb| mb.authorities)
}

#[test]
fn authorities_learned_from_real_logs_name_db_certificates() {
    let mut learned = 0;
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let c = capture(&bytes);
        let doc = learn_doc(&c, LearnMode::Reference);
        let log = EventLog::parse(&bytes).unwrap();
        // Authorities other than shim's state variables, in PCR 7.
        let logged = log.events().iter().any(|e| {
            e.pcr() == 7
                && e.event_type() == verifier_core::eventlog::EventType::EV_EFI_VARIABLE_AUTHORITY
                && matches!(e.decode(), EventData::Variable(v)
                    if v.name != "SbatLevel" && v.name != "MokListTrusted")
        });
        let auth = doc
            .measured_boot
            .as_ref()
            .and_then(|mb| mb.authorities.as_ref());
        // Every form firmware and shim log is read and found bound to its digest.
        assert_eq!(logged, auth.is_some(), "{}: {auth:?}", name(&path));
        let (Some(mb), Some(auth)) = (doc.measured_boot.as_ref(), auth) else {
            continue;
        };
        learned += 1;
        assert!(!auth.is_empty(), "{}", name(&path));
        // Firmware logs the db certificate that verified shim (or the boot loader): it is
        // one of the certificates the same log measured in db.
        let from_db = log.events().iter().any(|e| {
            matches!(e.decode(), EventData::Variable(v) if v.name == "db"
                && e.event_type() == verifier_core::eventlog::EventType::EV_EFI_VARIABLE_AUTHORITY)
        });
        if let (true, Some(db)) = (from_db, &mb.db) {
            assert!(
                auth.iter().any(|a| db.contains(a)),
                "{}: authorities {auth:?} name no db entry {db:?}",
                name(&path)
            );
        }
        // The learned policy accepts its own log.
        assert!(eval(&doc, &c).accepted(), "{}", name(&path));
    }
    assert!(
        learned >= 5,
        "only {learned} logs had Secure Boot authorities"
    );
}

#[test]
fn authority_not_allowed_is_refused() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    let auth = learned_authorities(&c).unwrap();
    let mb = doc.measured_boot.as_mut().unwrap();
    // Exact boot application digests off: the authority rule alone decides.
    mb.boot_applications = None;
    let removed = auth[0].clone();
    mb.authorities = Some(auth.into_iter().skip(1).collect());
    if mb.authorities.as_ref().unwrap().is_empty() {
        mb.authorities = Some(vec![format!("x509:{}", "42".repeat(32))]);
    }
    let v = eval(&doc, &c);
    only(&v, "measured_boot.authorities", "not an allowed authority");
    assert!(v.failures[0].reason.contains(&removed), "{v}");
}

#[test]
fn edited_authority_with_the_original_digest_is_refused() {
    let (bytes, honest) = grub();
    let log = EventLog::parse(&bytes).unwrap();
    let e = log
        .events()
        .iter()
        .find(|e| {
            e.event_type() == verifier_core::eventlog::EventType::EV_EFI_VARIABLE_AUTHORITY
                && e.pcr() == 7
        })
        .unwrap();
    let mut data = e.data().to_vec();
    let at = data.len() - 10;
    data[at] ^= 1;
    let original: Vec<Digest> = e.digests().as_slice().to_vec();
    let forged = rewrite(&bytes, e.index(), &data, |alg, _| {
        *original.iter().find(|d| d.alg() == alg).unwrap()
    });
    let c = capture(&forged);
    assert_eq!(c.pcrs, honest.pcrs);
    let mut doc = learn_doc(&honest, LearnMode::Reference);
    // The forger also lists the certificate its edited bytes now name.
    let forged_auth = {
        let mut d = learn_doc(&c, LearnMode::Reference);
        d.allow_event_digest_mismatch = true;
        d.measured_boot.and_then(|mb| mb.authorities)
    };
    let mb = doc.measured_boot.as_mut().unwrap();
    if let Some(extra) = forged_auth {
        mb.authorities.as_mut().unwrap().extend(extra);
    }
    let v = eval(&doc, &c);
    only(&v, "measured_boot.authorities", "not what was measured");
}

#[test]
fn authorities_without_secure_boot_are_refused() {
    let bytes = std::fs::read(log_path("go-tpm-tools/ubuntu-2104-no-secure-boot.bin")).unwrap();
    let c = capture(&bytes);
    let (_, grub_c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Reference);
    doc.measured_boot.as_mut().unwrap().authorities = learned_authorities(&grub_c);
    doc.measured_boot.as_mut().unwrap().pcrs = None;
    only(
        &eval(&doc, &c),
        "measured_boot.authorities",
        "no Secure Boot authority is measured",
    );
}

#[test]
fn a_new_authority_widens_and_a_removed_one_narrows() {
    let (_, c) = grub();
    let old = learn_doc(&c, LearnMode::Reference);
    let mut new = old.clone();
    new.measured_boot
        .as_mut()
        .unwrap()
        .authorities
        .as_mut()
        .unwrap()
        .push(format!("x509:{}", "42".repeat(32)));
    let d = verifier_core::policy::diff(&old, &new);
    assert!(d.may_widen(), "{d:?}");
    assert!(d
        .changes
        .iter()
        .any(|c| c.path == "measured_boot.authorities"));
    let d = verifier_core::policy::diff(&new, &old);
    assert!(!d.may_widen(), "{d:?}");
}

/// An accepted boot reports the allowlist items it matched (what the server records per
/// boot to retire unused ones), in the notation `retirable_items` gives the document, and
/// never an item it did not match.
#[test]
fn accepted_boot_reports_the_items_it_matched() {
    let (_, c) = grub();
    let mut doc = learn_doc(&c, LearnMode::Both);
    let mb = doc.measured_boot.as_mut().unwrap();
    mb.kernels.as_mut().unwrap().push("ab".repeat(32));
    mb.kernel_cmdline
        .as_mut()
        .unwrap()
        .push(CmdlineRuleDocument::Exact("never measured".into()));
    doc.pcrs[0].allowed.push("cd".repeat(32));
    let v = eval(&doc, &c);
    assert!(v.accepted(), "{v}");
    let items = verifier_core::policy::retirable_items(&doc);
    let used: Vec<_> = v.used.iter().map(|m| m.item()).collect();
    for u in &used {
        assert!(items.contains(u), "{u} is not an item of the document");
    }
    for list in [
        "measured_boot.kernels",
        "measured_boot.initrds",
        "measured_boot.kernel_cmdline",
    ] {
        assert!(used.iter().any(|u| u.list == list), "{list}: {used:?}");
    }
    let pcr_items = used.iter().filter(|u| u.list.starts_with("pcrs[")).count();
    assert_eq!(pcr_items, doc.pcrs.len(), "{used:?}");
    let never = ["ab".repeat(32), "never measured".into(), "cd".repeat(32)];
    assert!(used.iter().all(|u| !never.contains(&u.item)), "{used:?}");
    // A rule that fails names no item of its list.
    doc.pcrs[0].allowed = vec!["cd".repeat(32)];
    let refused = eval(&doc, &c);
    assert!(!refused.accepted());
    let list = format!("pcrs[{}:{}].allowed", doc.pcrs[0].bank, doc.pcrs[0].index);
    assert!(
        !refused.used.iter().any(|m| m.item().list == list),
        "{:?}",
        refused.used
    );
}
