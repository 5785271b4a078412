//! Every event log of the shared test data: parses (or is refused as documented), replays to
//! the PCR values recorded independently (go-tpm-tools expected PCRs, tpm2_eventlog output,
//! the TPM 1.2 quote's PCRs, trustee's CCEL parse), and shows only the findings it should.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test, which is
// what clippy.toml allows inside #[test] functions too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use verifier_core::eventlog::{EventData, EventLog, EventLogError, EventType, Finding};
use verifier_core::wire::{Digest, HashAlg};

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("eventlog").is_dir(),
        "test data missing: {} has no eventlog/ (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

fn all_logs() -> Vec<PathBuf> {
    let mut logs = Vec::new();
    for dir in std::fs::read_dir(testdata().join("eventlog")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bin") {
                logs.push(p);
            }
        }
    }
    logs.sort();
    assert!(
        logs.len() >= 30,
        "expected the full event log set, found {}",
        logs.len()
    );
    logs
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The logs that are refused, with the event index and offset of the error.
const MALFORMED: &[(&str, Option<(usize, usize)>)] = &[
    ("binary_bios_measurements-empty.bin", None),
    // "bogus\ninv..." read as a TCG_PCR_EVENT: pcrIndex 0x75676f62.
    ("binary_bios_measurements-bogus.bin", Some((0, 0))),
    // vendorInfoSize 4 but the Spec ID event (37 bytes) ends before vendorInfo.
    ("specid-vendordata.bin", Some((0, 0))),
];

#[test]
fn every_log_parses_or_is_refused_as_documented() {
    for path in all_logs() {
        let bytes = std::fs::read(&path).unwrap();
        let n = name(&path);
        let result = EventLog::parse(&bytes);
        match MALFORMED.iter().find(|(m, _)| *m == n) {
            Some((_, at)) => {
                let err = result.expect_err(&n);
                assert_eq!(err.event_index().zip(err.offset()), *at, "{n}: {err}");
                if at.is_some() {
                    assert!(
                        err.to_string().starts_with("event 0 at offset 0: "),
                        "{err}"
                    );
                }
            }
            None => {
                let log = result.unwrap_or_else(|e| panic!("{n}: {e}"));
                assert!(log.events().len() > 1, "{n}");
                // Every event serializes (decoded content included).
                serde_json::to_string(log.events()).unwrap();
            }
        }
    }
}

#[test]
fn specid_vendordata_error_names_the_field() {
    let bytes =
        std::fs::read(testdata().join("eventlog/tpm2-tools/specid-vendordata.bin")).unwrap();
    let err = EventLog::parse(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "event 0 at offset 0: TCG_EfiSpecIdEvent.vendorInfo: truncated at offset 69 (needed 4 more bytes)"
    );
    assert_eq!(EventLog::parse(&[]).unwrap_err(), EventLogError::Empty);
}

fn expected_json(path: &Path) -> Option<BTreeMap<String, BTreeMap<String, String>>> {
    let p = PathBuf::from(format!("{}.expected-pcrs.json", path.display()));
    let text = std::fs::read_to_string(p).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(serde_json::from_value(v["pcrs"].clone()).unwrap())
}

fn check_pcrs(
    log: &EventLog<'_>,
    expected: &BTreeMap<String, BTreeMap<String, String>>,
    skip_pcr0: bool,
    what: &str,
) -> usize {
    let mut compared = 0;
    for (bank, pcrs) in expected {
        let alg = HashAlg::from_name(bank).unwrap_or_else(|| panic!("{what}: bank {bank}"));
        for (index, hex) in pcrs {
            let index: u8 = index.parse().unwrap();
            if skip_pcr0 && index == 0 {
                continue;
            }
            let want = Digest::from_hex(alg, hex).unwrap_or_else(|| panic!("{what}: {hex}"));
            let got = log.replay().get(alg, index);
            assert_eq!(got, Some(&want), "{what}: {bank} PCR {index}");
            compared += 1;
        }
    }
    compared
}

/// The `pcrs:` section at the end of tpm2_eventlog's output:
/// `pcrs:\n  sha1:\n    0  : 0x...\n`.
fn yaml_pcrs(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let Some(start) = text.rfind("\npcrs:") else {
        return out;
    };
    let mut bank = None;
    for line in text[start + 1..].lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if indent == 2 && line.ends_with(':') {
            bank = Some(line.trim_end_matches(':').to_string());
        } else if indent == 4 {
            let (k, v) = line.split_once(':').expect("pcr line");
            let v = v.trim().trim_start_matches("0x").to_lowercase();
            out.entry(bank.clone().expect("bank before pcr"))
                .or_default()
                .insert(k.trim().to_string(), v);
        } else {
            break;
        }
    }
    out
}

#[test]
fn yaml_reader_reads_pcrs_section() {
    let y =
        "events:\n- x: 1\npcrs:\n  sha1:\n    0  : 0xAB\n    10 : 0x01\n  sha256:\n    7  : 0x02\n";
    let p = yaml_pcrs(y);
    assert_eq!(p["sha1"]["0"], "ab");
    assert_eq!(p["sha1"]["10"], "01");
    assert_eq!(p["sha256"]["7"], "02");
}

/// Logs whose tpm2_eventlog PCR 0 differs from the TPM's (README: tpm2-tools ignores
/// StartupLocality and mishandles SP800-155 events).
const YAML_PCR0_EXCEPTIONS: &[&str] = &[
    "glinux-alex.bin",
    "eventlogwithsp800155.bin",
    "confidential-gke-debug-251000_eventlog.bin",
    "binary_bios_measurements.bin",
];

#[test]
fn replay_matches_expected_pcrs_and_tpm2_eventlog() {
    let mut matched = Vec::new();
    for path in all_logs() {
        let n = name(&path);
        if MALFORMED.iter().any(|(m, _)| *m == n) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let mut sources = Vec::new();
        if let Some(expected) = expected_json(&path) {
            let c = check_pcrs(&log, &expected, false, &format!("{n} expected-pcrs"));
            assert!(c > 0);
            sources.push(format!("expected-pcrs.json ({c} values)"));
        }
        let yaml = PathBuf::from(format!("{}.tpm2_eventlog.yaml", path.display()));
        if let Ok(text) = std::fs::read_to_string(&yaml) {
            let expected = yaml_pcrs(&text);
            let skip0 = YAML_PCR0_EXCEPTIONS.contains(&n.as_str());
            let c = check_pcrs(&log, &expected, skip0, &format!("{n} tpm2_eventlog"));
            // tpm2_eventlog lists exactly the PCRs that were extended.
            let listed: usize = expected.values().map(BTreeMap::len).sum();
            assert_eq!(log.replay().iter().count(), listed, "{n}: PCR set");
            assert!(c > 0, "{n}");
            sources.push(format!("tpm2_eventlog ({c} values)"));
        }
        if !sources.is_empty() {
            matched.push(format!("{n}: {}", sources.join(", ")));
        }
    }
    eprintln!("replayed to expected PCRs:\n  {}", matched.join("\n  "));
    assert!(matched.len() >= 25, "{matched:#?}");
}

#[test]
fn startup_locality_sets_pcr0_initial_value() {
    let bytes = std::fs::read(testdata().join("eventlog/go-tpm-tools/glinux-alex.bin")).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.startup_locality(), Some(3));
    let bytes =
        std::fs::read(testdata().join("eventlog/keylime/binary_bios_measurements.bin")).unwrap();
    assert_eq!(EventLog::parse(&bytes).unwrap().startup_locality(), Some(3));
}

#[test]
fn legacy_tpm12_log_replays_to_quoted_pcrs() {
    let text =
        std::fs::read_to_string(testdata().join("quote/go-eventlog/linux_tpm12.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["Log"]["Raw"].as_str().unwrap())
        .unwrap();
    let log = EventLog::parse(&raw).unwrap();
    assert_eq!(log.format(), verifier_core::eventlog::LogFormat::LegacySha1);
    let pcrs = v["Log"]["PCRs"].as_array().unwrap();
    let mut compared = 0;
    for p in pcrs {
        assert_eq!(p["DigestAlg"], 3);
        let index = u8::try_from(p["Index"].as_u64().unwrap()).unwrap();
        let digest = base64::engine::general_purpose::STANDARD
            .decode(p["Digest"].as_str().unwrap())
            .unwrap();
        let want = Digest::from_slice(HashAlg::Sha1, &digest).unwrap();
        // PCRs 0-7 come from this log; the others (IMA's PCR 10...) from elsewhere.
        if let Some(got) = log.replay().get(HashAlg::Sha1, index) {
            assert_eq!(*got, want, "PCR {index}");
            compared += 1;
        }
    }
    assert!((0..8).all(|i| log.replay().get(HashAlg::Sha1, i).is_some()));
    assert!(compared >= 8, "{compared}");
}

#[test]
fn ccel_logs_match_trustee() {
    let dir = testdata().join("eventlog/ccel");
    for n in ["CCEL_AAEL_alibabacloud.bin", "CCEL_data_ovmf.bin"] {
        let bytes = std::fs::read(dir.join(n)).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        assert_eq!(log.banks(), &[HashAlg::Sha384]);
        assert!(log.padding() > 0, "{n}: 0xff padding");
        let text = std::fs::read_to_string(dir.join(format!("{n}.trustee-parsed.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let theirs = v["uefi_event_logs"].as_array().unwrap();
        // trustee leaves out the Spec ID event.
        let ours = &log.events()[1..];
        assert_eq!(ours.len(), theirs.len(), "{n}");
        for (o, t) in ours.iter().zip(theirs) {
            assert_eq!(u64::from(o.pcr()), t["index"].as_u64().unwrap(), "{n}");
            assert_eq!(
                o.event_type().to_string(),
                t["type_name"].as_str().unwrap(),
                "{n}"
            );
            let d = o.digests().get(HashAlg::Sha384).unwrap();
            assert_eq!(
                d.to_hex(),
                t["digests"][0]["digest"].as_str().unwrap(),
                "{n}"
            );
        }
    }
    let bytes = std::fs::read(dir.join("cos-113-intel-tdx-dupe-separator-unpadded.bin")).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.padding(), 0);
    let separators = log
        .events()
        .iter()
        .filter(|e| e.event_type() == EventType::EV_SEPARATOR)
        .count();
    // Two EV_SEPARATORs in RTMR[0] (MR index 1): the duplicate is kept and replayed.
    let in_rtmr0 = log
        .events()
        .iter()
        .filter(|e| e.event_type() == EventType::EV_SEPARATOR && e.pcr() == 1)
        .count();
    assert_eq!((separators, in_rtmr0), (2, 2));
}

#[test]
fn digest_mismatch_findings_are_exactly_the_known_ones() {
    for path in all_logs() {
        let n = name(&path);
        if MALFORMED.iter().any(|(m, _)| *m == n) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let expected: Vec<Finding> = match n.as_str() {
            // systemd-boot's kernel command line (UTF-16, PCR 8) does not hash to its digest;
            // tpm2_eventlog warns about the same event.
            "arch-linux-workstation.bin" => [HashAlg::Sha1, HashAlg::Sha256]
                .into_iter()
                .map(|alg| Finding::DigestMismatch {
                    event_index: 24,
                    pcr: 8,
                    event_type: EventType::EV_IPL,
                    alg,
                })
                .collect(),
            _ => vec![],
        };
        let mismatches: Vec<Finding> = log
            .findings()
            .iter()
            .filter(|f| matches!(f, Finding::DigestMismatch { .. }))
            .copied()
            .collect();
        assert_eq!(mismatches, expected, "{n}");
        // Incomplete banks: exactly the declared banks tpm2_eventlog could not replay (the
        // minimal tpm2-tools fixtures declare four banks and log two).
        let incomplete: Vec<HashAlg> = log
            .findings()
            .iter()
            .filter_map(|f| match f {
                Finding::IncompleteBank { alg, .. } => Some(*alg),
                _ => None,
            })
            .collect();
        let yaml = PathBuf::from(format!("{}.tpm2_eventlog.yaml", path.display()));
        let expected_incomplete: Vec<HashAlg> = match std::fs::read_to_string(&yaml) {
            Ok(text) => {
                let replayed = yaml_pcrs(&text);
                log.banks()
                    .iter()
                    .copied()
                    .filter(|a| !replayed.contains_key(a.name()))
                    .collect()
            }
            Err(_) => vec![],
        };
        assert_eq!(incomplete, expected_incomplete, "{n}");
        assert_eq!(
            log.findings().len(),
            mismatches.len() + incomplete.len(),
            "{n}: {:?}",
            log.findings()
        );
    }
}

#[test]
fn typed_decoding_of_real_events() {
    let read = |p: &str| std::fs::read(testdata().join("eventlog").join(p)).unwrap();
    let bytes = read("go-tpm-tools/arch-linux-workstation.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let secure_boot = log.events().iter().find_map(|e| match e.decode() {
        EventData::Variable(v) if v.name == "SecureBoot" => Some(v),
        _ => None,
    });
    let sb = secure_boot.expect("SecureBoot event");
    assert_eq!(
        sb.value,
        verifier_core::eventlog::VariableValue::SecureBoot { value: None }
    );

    let bytes = read("go-tpm-tools/ubuntu-2104-no-dbx.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let cmdline = log.events().iter().find_map(|e| match e.decode() {
        EventData::Ipl(i) if i.form == verifier_core::eventlog::IplForm::KernelCmdline => {
            Some(i.text.into_owned())
        }
        _ => None,
    });
    assert!(cmdline.is_some_and(|c| c.starts_with("/boot/vmlinuz-5.11.0-1008-gcp root=")));

    let bytes = read("go-tpm-tools/rhel8-uefi.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let mut db_certs = 0;
    let mut grub_commands = 0;
    let mut paths = Vec::new();
    for e in log.events() {
        match e.decode() {
            EventData::Variable(v) if v.name == "db" => {
                if let verifier_core::eventlog::VariableValue::SignatureDb { lists } = v.value {
                    for l in lists {
                        assert_eq!(l.signature_type, verifier_core::eventlog::Guid::CERT_X509);
                        db_certs += l.signatures.len();
                        for s in l.signatures {
                            assert_eq!(s.data.first(), Some(&0x30), "DER certificate");
                        }
                    }
                }
            }
            EventData::Ipl(i) if i.form == verifier_core::eventlog::IplForm::GrubCommand => {
                grub_commands += 1;
            }
            EventData::ImageLoad(i) => paths.extend(i.file_path),
            EventData::Raw { note: Some(n) } => panic!("event {}: {n}", e.index()),
            _ => {}
        }
    }
    assert!(db_certs >= 2, "{db_certs}");
    assert!(grub_commands >= 40, "{grub_commands}");
    assert!(
        paths
            .iter()
            .any(|p| p.to_lowercase().contains("shimx64.efi")),
        "{paths:?}"
    );
}

#[test]
fn no_content_decode_failures_in_testdata() {
    for path in all_logs() {
        let n = name(&path);
        if MALFORMED.iter().any(|(m, _)| *m == n) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        for e in log.events() {
            if let EventData::Raw { note: Some(note) } = e.decode() {
                panic!("{n} event {} ({}): {note}", e.index(), e.event_type());
            }
        }
    }
}
