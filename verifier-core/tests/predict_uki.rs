//! A unified kernel image's measurements (`verifier_core::predict::uki`) against a real
//! event log of OVMF booting one built on Debian 12's systemd-stub 252
//! (`tests/data/ovmf-uki`, see its README), and the policy's reading of PCR 11: a section's
//! bytes are the event after its name event, whatever the events' labels say.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod policy_support;

use std::path::Path;

use policy_support::*;
use verifier_core::eventlog::{EventLog, EventType};
use verifier_core::policy::{
    Evaluator, MeasuredBootDocument, Policy, PolicyDocument, UnverifiedCapture, Verdict,
};
use verifier_core::predict::uki::{pcr11, stub_cmdline, MEASURED_SECTIONS};
use verifier_core::predict::{
    load_options_digest, Predicted, STUB_INITRD_TAG, STUB_LOAD_OPTIONS_TAG,
};
use verifier_core::proto::v1::CapturedEvidence;
use verifier_core::wire::{Digest, HashAlg};

const UKI_LOG: &str = "tests/data/ovmf-uki/binary_bios_measurements.bin";
const KERNEL_SHA256: &str = "85667e6c72245133bd7e3e80bac7d16b26fda15c0a3c68faa4b713850ea526cd";
const INITRD_SHA256: &str = "70104a7cf2b36225b6ba50168737acd024c856fe3365aa2cd16762d7ad867f68";
const OSREL: &[u8] = b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"unlock vm-tests UKI\"\n";
const UUID: &str = "21c09fd8-98ce-4a90-a523-af36a78f398a";
const S: HashAlg = HashAlg::Sha256;

fn cmdline() -> String {
    format!(
        "console=ttyS0 quiet panic=-1 rd.shell=0 rd.emergency=poweroff rd.luks.uuid={UUID} \
         rd.luks.options={UUID}=headless=true root=/dev/mapper/luks-{UUID} rootfstype=ext4 ro \
         ip=dhcp rd.unlock.server=https://10.0.2.100:8443 rd.unlock.timeout=30"
    )
}

fn hex(h: &str) -> Digest {
    Digest::from_hex(S, h).unwrap()
}

fn log_bytes() -> Vec<u8> {
    std::fs::read(Path::new(UKI_LOG)).unwrap()
}

/// (index, type, data, digest) of the extended events of `pcr`.
fn events(bytes: &[u8], pcr: u8) -> Vec<(usize, EventType, Vec<u8>, Digest)> {
    let log = EventLog::parse(bytes).unwrap();
    log.events()
        .iter()
        .filter(|e| e.pcr() == pcr && e.is_extended())
        .map(|e| {
            (
                e.index(),
                e.event_type(),
                e.data().to_vec(),
                *e.digests().get(S).unwrap(),
            )
        })
        .collect()
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The stub's PCR 11 events for the four sections this UKI has, from the files' bytes.
fn predicted_pcr11() -> Vec<Predicted> {
    let sections: [(&str, Digest); 4] = [
        (".linux", hex(KERNEL_SHA256)),
        (".osrel", S.hash(OSREL)),
        (".cmdline", S.hash(cmdline().as_bytes())),
        (".initrd", hex(INITRD_SHA256)),
    ];
    sections
        .iter()
        .flat_map(|(name, data)| {
            [
                Predicted {
                    what: format!("{name} (name)"),
                    digest: S.hash_parts(&[name.as_bytes(), b"\0"]),
                },
                Predicted {
                    what: (*name).into(),
                    digest: *data,
                },
            ]
        })
        .collect()
}

#[test]
fn systemd_stub_252_measures_name_then_bytes_per_section_in_its_order() {
    let bytes = log_bytes();
    let pcr11_events = events(&bytes, 11);
    let want = predicted_pcr11();
    let got: Vec<Digest> = pcr11_events.iter().map(|e| e.3).collect();
    let want_digests: Vec<Digest> = want.iter().map(|p| p.digest).collect();
    assert_eq!(got, want_digests);
    // Each event is EV_IPL labelled with the section's name in UTF-16LE with its NUL.
    for (e, p) in pcr11_events.iter().zip(&want) {
        let name = p.what.split(' ').next().unwrap();
        assert!(MEASURED_SECTIONS.contains(&name));
        assert_eq!(e.1, EventType::EV_IPL);
        assert_eq!(e.2, utf16z(name), "event {}", e.0);
    }
    // PCR 11's value is their replay, nothing else.
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.replay().get(S, 11), Some(&pcr11(&want, S)));
    // PCR 9: the kernel's EFI stub, given the .cmdline text and the .initrd section.
    let pcr9: Vec<(Option<u32>, Digest)> = events(&bytes, 9)
        .iter()
        .map(|e| (Some(u32::from_le_bytes(e.2[..4].try_into().unwrap())), e.3))
        .collect();
    let text = stub_cmdline(cmdline().as_bytes()).unwrap();
    assert_eq!(
        pcr9,
        [
            (Some(STUB_LOAD_OPTIONS_TAG), load_options_digest(&text, S)),
            (Some(STUB_INITRD_TAG), hex(INITRD_SHA256)),
        ]
    );
    // PCR 12: nothing (the embedded command line is not measured there).
    assert!(events(&bytes, 12).is_empty());
    // PCR 4: two applications, the UKI and then the kernel in it.
    let apps: Vec<_> = events(&bytes, 4)
        .into_iter()
        .filter(|e| e.1 == EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
        .collect();
    assert_eq!(apps.len(), 2);
}

/// The kernel's Authenticode digest on this machine, when it still has that kernel: the
/// second PCR 4 application.
#[test]
fn the_embedded_kernel_is_measured_into_pcr4_as_loaded() {
    let Ok(kernel) = std::fs::read("/boot/vmlinuz-6.1.0-57-amd64") else {
        eprintln!("skipped: /boot/vmlinuz-6.1.0-57-amd64 is gone (the log's kernel)");
        return;
    };
    assert_eq!(S.hash(&kernel), hex(KERNEL_SHA256));
    let apps: Vec<Digest> = events(&log_bytes(), 4)
        .into_iter()
        .filter(|e| e.1 == EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| e.3)
        .collect();
    let ours = verifier_core::predict::authenticode(&kernel, S).unwrap();
    assert_eq!(apps[1], ours);
}

fn eval(doc: &PolicyDocument, c: &CapturedEvidence) -> Verdict {
    let p = Policy::from_document(doc.clone()).unwrap();
    p.evaluate_claims(&UnverifiedCapture::check(c).unwrap().claims())
}

/// Allows this UKI's kernel and initrd as read from PCR 11.
fn sections_policy(kernels: &[Digest], initrds: &[Digest]) -> PolicyDocument {
    let hexes = |v: &[Digest]| Some(v.iter().map(|d| d.to_hex()).collect::<Vec<_>>());
    PolicyDocument {
        require_event_log: true,
        measured_boot: Some(MeasuredBootDocument {
            pcrs: Some(vec![11]),
            kernels: hexes(kernels),
            initrds: hexes(initrds),
            ..MeasuredBootDocument::default()
        }),
        ..PolicyDocument::default()
    }
}

fn failed(v: &Verdict) -> Vec<&str> {
    v.failures.iter().map(|f| f.rule.as_str()).collect()
}

#[test]
fn policy_reads_a_ukis_kernel_and_initrd_from_pcr11() {
    let bytes = log_bytes();
    let good = sections_policy(&[hex(KERNEL_SHA256)], &[hex(INITRD_SHA256)]);
    let v = eval(&good, &capture(&bytes));
    assert!(v.accepted(), "{v}");
    // The name events are not sections: allowing only the name's digest allows nothing.
    let names = sections_policy(&[S.hash(b".linux\0")], &[S.hash(b".initrd\0")]);
    let v = eval(&names, &capture(&bytes));
    assert_eq!(
        failed(&v),
        ["measured_boot.kernels", "measured_boot.initrds"],
        "{v}"
    );
}

#[test]
fn another_kernel_in_pcr11_is_refused() {
    let bytes = log_bytes();
    let linux = events(&bytes, 11)[1].clone();
    // Forged: another kernel's bytes measured as .linux (label and position kept; the
    // captured PCR 11 follows the forged log, so only the rule can refuse it).
    let forged = rewrite(&bytes, linux.0, &linux.2, |alg, _| alg.hash(b"evil kernel"));
    let v = eval(
        &sections_policy(&[hex(KERNEL_SHA256)], &[hex(INITRD_SHA256)]),
        &capture(&forged),
    );
    assert_eq!(failed(&v), ["measured_boot.kernels"], "{v}");
}

#[test]
fn labels_do_not_decide_which_section_an_event_is() {
    let bytes = log_bytes();
    let ev = events(&bytes, 11);
    // Relabelled: the kernel's bytes event says ".initrd", the initrd's says ".linux"; the
    // digests (what the quote attests) are unchanged, so the reading is too.
    let (linux, initrd) = (ev[1].0, ev[7].0);
    let swapped = rewrite(&bytes, linux, &utf16z(".initrd"), |_, _| ev[1].3);
    let swapped = rewrite(&swapped, initrd, &utf16z(".linux"), |_, _| ev[7].3);
    let policy = sections_policy(&[hex(KERNEL_SHA256)], &[hex(INITRD_SHA256)]);
    let v = eval(&policy, &capture(&swapped));
    assert!(v.accepted(), "{v}");
    // Without its name event before it, an event labelled ".linux" is no kernel: the
    // .linux name event's digest replaced (label kept) leaves no kernel measured.
    let nameless = rewrite(&bytes, ev[0].0, &ev[0].2, |alg, _| alg.hash(b"not a name"));
    let v = eval(&policy, &capture(&nameless));
    assert_eq!(failed(&v), ["measured_boot.kernels"], "{v}");
}

#[test]
fn an_event_type_does_not_hide_a_section() {
    let bytes = log_bytes();
    let ev = events(&bytes, 11);
    assert_eq!(
        ev[2].2,
        utf16z(".osrel"),
        "the .osrel name event follows the kernel"
    );
    // Forged: the kernel's bytes event carries another kernel and is retyped EV_ACTION (its
    // data is those bytes, so its digest is "of the data" as EV_ACTION requires); the
    // .osrel pair is replaced by the .linux name and the allowed kernel's digest, as code
    // running before the quote could extend. Reading only EV_IPL events would see just the
    // allowed kernel; every PCR 11 event counts, so the other kernel is read and refused.
    let evil = b"another kernel";
    let mut forged = rewrite(&bytes, ev[1].0, evil, |alg, _| alg.hash(evil));
    let at = EventLog::parse(&forged).unwrap().events()[ev[1].0].offset() + 4;
    forged[at..at + 4].copy_from_slice(&EventType::EV_ACTION.0.to_le_bytes());
    let forged = rewrite(&forged, ev[2].0, &utf16z(".linux"), |_, _| ev[0].3);
    let forged = rewrite(&forged, ev[3].0, &utf16z(".linux"), |_, _| ev[1].3);
    let parsed = EventLog::parse(&forged).unwrap();
    assert_eq!(parsed.events()[ev[1].0].event_type(), EventType::EV_ACTION);
    let v = eval(
        &sections_policy(&[hex(KERNEL_SHA256)], &[hex(INITRD_SHA256)]),
        &capture(&forged),
    );
    assert_eq!(failed(&v), ["measured_boot.kernels"], "{v}");
}

#[test]
fn allowing_a_new_uki_adds_its_pcr11_value_and_nothing_else() {
    use verifier_core::policy::{check_only_allows_more, widen, PcrRuleDocument, WidenError};
    use verifier_core::predict::Prediction;
    let bytes = log_bytes();
    let log = EventLog::parse(&bytes).unwrap();
    let old_pcr11 = *log.replay().get(S, 11).unwrap();
    let mut old = sections_policy(&[hex(KERNEL_SHA256)], &[hex(INITRD_SHA256)]);
    old.pcrs = vec![PcrRuleDocument {
        bank: "sha256".into(),
        index: 11,
        allowed: vec![old_pcr11.to_hex()],
        initial: false,
    }];
    assert!(eval(&old, &capture(&bytes)).accepted());
    // The next UKI: a new initrd, so new .initrd bytes and a new PCR 11.
    let mut events = predicted_pcr11();
    events[7].digest = S.hash(b"new initramfs");
    let new_pcr11 = pcr11(&events, S);
    let p = Prediction {
        alg: S,
        boot_applications: Vec::new(),
        kernels: vec![Predicted {
            what: "uki .linux".into(),
            digest: hex(KERNEL_SHA256),
        }],
        initrds: vec![Predicted {
            what: "uki .initrd".into(),
            digest: events[7].digest,
        }],
        cmdline: None,
        pcr9: None,
        pcr11_events: events,
        pcr11: Some(new_pcr11),
    };
    let w = widen(&old, &[p]).unwrap();
    let paths: Vec<&str> = w.diff.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        ["measured_boot.initrds", "pcrs[sha256:11].allowed"],
        "{}",
        w.diff
    );
    assert_eq!(
        w.document.pcrs[0].allowed,
        [old_pcr11.to_hex(), new_pcr11.to_hex()]
    );
    // The old UKI still passes.
    assert!(eval(&w.document, &capture(&bytes)).accepted());
    // Forged change: PCR 11's value replaced instead of added, is not an allowance.
    let mut replaced = w.document.clone();
    replaced.pcrs[0].allowed = vec![new_pcr11.to_hex()];
    assert!(matches!(
        check_only_allows_more(&old, &replaced),
        Err(WidenError::NotOnlyWidening(_))
    ));
}
