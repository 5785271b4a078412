//! Forged and malformed event logs: each lie is refused with an error naming the event index
//! and offset, or (for content the replay does not trust anyway) reported as a finding; and
//! no input panics.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test, which is
// what clippy.toml allows inside #[test] functions too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use verifier_core::eventlog::{Event, EventData, EventLog, EventLogError, EventType, Finding};
use verifier_core::wire::{Digest, HashAlg};
use verifier_core::ParseError;

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

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(testdata().join("eventlog").join(rel)).unwrap()
}

/// A Spec ID event (legacy header, PCR 0, zero digest) declaring `algs` as (id, size).
fn spec_id(algs: &[(u16, u16)]) -> Vec<u8> {
    let mut data = b"Spec ID Event03\0".to_vec();
    data.extend_from_slice(&0u32.to_le_bytes());
    data.extend_from_slice(&[0, 2, 0, 2]);
    data.extend_from_slice(&u32::try_from(algs.len()).unwrap().to_le_bytes());
    for (id, size) in algs {
        data.extend_from_slice(&id.to_le_bytes());
        data.extend_from_slice(&size.to_le_bytes());
    }
    data.push(0);
    legacy(0, 3, &[0; 20], &data)
}

fn legacy(pcr: u32, event_type: u32, digest: &[u8; 20], data: &[u8]) -> Vec<u8> {
    let mut e = pcr.to_le_bytes().to_vec();
    e.extend_from_slice(&event_type.to_le_bytes());
    e.extend_from_slice(digest);
    e.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    e.extend_from_slice(data);
    e
}

fn event2(pcr: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
    let mut e = pcr.to_le_bytes().to_vec();
    e.extend_from_slice(&event_type.to_le_bytes());
    e.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_le_bytes());
    for (alg, d) in digests {
        e.extend_from_slice(&alg.to_le_bytes());
        e.extend_from_slice(d);
    }
    e.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    e.extend_from_slice(data);
    e
}

/// A log with SHA-1 and SHA-256 banks and honest events measuring `datas` into PCR 4.
fn honest_log(datas: &[&[u8]], event_type: u32) -> Vec<u8> {
    let mut log = spec_id(&[(0x0004, 20), (0x000b, 32)]);
    for d in datas {
        log.extend(event2(
            4,
            event_type,
            &[
                (0x0004, HashAlg::Sha1.hash(d).as_bytes().to_vec()),
                (0x000b, HashAlg::Sha256.hash(d).as_bytes().to_vec()),
            ],
            d,
        ));
    }
    log
}

const EV_EFI_ACTION: u32 = 0x8000_0007;
const EV_SEPARATOR: u32 = 4;

fn malformed(err: &EventLogError) -> (usize, usize, ParseError) {
    match err {
        EventLogError::Malformed {
            index,
            offset,
            error,
        } => (*index, *offset, *error),
        other => panic!("expected Malformed, got {other}"),
    }
}

#[test]
fn honest_synthetic_log_replays_by_hand() {
    let log_bytes = honest_log(&[b"one", b"two"], EV_EFI_ACTION);
    let log = EventLog::parse(&log_bytes).unwrap();
    assert_eq!(log.events().len(), 3);
    assert!(log.findings().is_empty());
    for alg in [HashAlg::Sha1, HashAlg::Sha256] {
        let mut pcr = Digest::zero(alg);
        pcr.extend(alg.hash(b"one").as_bytes());
        pcr.extend(alg.hash(b"two").as_bytes());
        assert_eq!(log.replay().get(alg, 4), Some(&pcr));
    }
    assert_eq!(log.replay().iter().count(), 2, "only PCR 4, in two banks");
}

#[test]
fn edited_digest_changes_the_replay() {
    let bytes = read("go-tpm-tools/arch-linux-workstation.bin");
    let honest = EventLog::parse(&bytes).unwrap();
    let target = &honest.events()[5];
    let (pcr, offset) = (target.pcr(), target.offset());
    // pcrIndex, eventType, count, algId(sha1), then the SHA-1 digest.
    let mut forged = bytes.clone();
    forged[offset + 14] ^= 1;
    let log = EventLog::parse(&forged).unwrap();
    assert_ne!(
        log.replay().get(HashAlg::Sha1, pcr),
        honest.replay().get(HashAlg::Sha1, pcr)
    );
    assert_eq!(
        log.replay().get(HashAlg::Sha256, pcr),
        honest.replay().get(HashAlg::Sha256, pcr)
    );
    for other in (0..24).filter(|p| *p != pcr) {
        assert_eq!(
            log.replay().get(HashAlg::Sha1, other),
            honest.replay().get(HashAlg::Sha1, other)
        );
    }
}

#[test]
fn forged_separator_digest_is_a_finding_and_replay_follows_the_digest() {
    let mut bytes = honest_log(&[&[0, 0, 0, 0]], EV_SEPARATOR);
    let forged_sha256 = HashAlg::Sha256.hash(b"not the data");
    let start = bytes.len() - 4 - 4 - 32;
    bytes[start..start + 32].copy_from_slice(forged_sha256.as_bytes());
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(
        log.findings(),
        &[Finding::DigestMismatch {
            event_index: 1,
            pcr: 4,
            event_type: EventType::EV_SEPARATOR,
            alg: HashAlg::Sha256,
        }]
    );
    let mut expected = Digest::zero(HashAlg::Sha256);
    expected.extend(forged_sha256.as_bytes());
    assert_eq!(log.replay().get(HashAlg::Sha256, 4), Some(&expected));
}

#[test]
fn truncation_at_every_offset_is_a_clean_error() {
    for rel in [
        "tpm2-tools/event-uefiaction.bin",
        "tpm2-tools/event.bin",
        "tpm2-tools/event-uefivar.bin",
        "tpm2-tools/event-uefiservices.bin",
    ] {
        let bytes = read(rel);
        let full = EventLog::parse(&bytes).unwrap();
        let boundaries: Vec<usize> = full.events().iter().map(|e| e.offset()).collect();
        for cut in 1..bytes.len() {
            match EventLog::parse(&bytes[..cut]) {
                Ok(_) => assert!(boundaries.contains(&cut), "{rel}: accepted a cut at {cut}"),
                Err(e) => {
                    let index = e.event_index().unwrap();
                    let offset = e.offset().unwrap();
                    assert_eq!(offset, boundaries[index], "{rel} cut {cut}: {e}");
                    assert!(
                        e.to_string()
                            .starts_with(&format!("event {index} at offset {offset}: ")),
                        "{e}"
                    );
                }
            }
        }
    }
}

#[test]
fn huge_event_size_is_refused_without_allocation() {
    let mut bytes = honest_log(&[b"x"], EV_EFI_ACTION);
    let event_offset = EventLog::parse(&bytes).unwrap().events()[1].offset();
    let size_at = bytes.len() - 1 - 4;
    bytes[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = EventLog::parse(&bytes).unwrap_err();
    let (index, offset, source) = malformed(&err);
    assert_eq!((index, offset), (1, event_offset));
    assert!(
        matches!(source, ParseError::Truncated { field: "event", .. }),
        "{source}"
    );
}

#[test]
fn huge_digest_count_is_refused() {
    let mut bytes = honest_log(&[b"x"], EV_EFI_ACTION);
    let event_offset = EventLog::parse(&bytes).unwrap().events()[1].offset();
    bytes[event_offset + 8..event_offset + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = EventLog::parse(&bytes).unwrap_err();
    let (index, offset, source) = malformed(&err);
    assert_eq!((index, offset), (1, event_offset));
    assert!(
        matches!(
            source,
            ParseError::TooLarge {
                field: "count",
                max: 2,
                ..
            }
        ),
        "{source}"
    );
}

#[test]
fn unknown_algorithm_in_spec_id_is_refused() {
    // SM3_256 (0x0012) declared: we could neither replay the bank nor trust its size.
    let bytes = spec_id(&[(0x000b, 32), (0x0012, 32)]);
    let err = EventLog::parse(&bytes).unwrap_err();
    assert_eq!(
        malformed(&err),
        (
            0,
            0,
            ParseError::UnknownAlgorithm {
                structure: "TCG_EfiSpecIdEvent",
                field: "algorithmId",
                alg: 0x12
            }
        )
    );
}

#[test]
fn spec_id_lies_are_refused() {
    let err = EventLog::parse(&spec_id(&[(0x000b, 20)])).unwrap_err();
    assert_eq!(
        err,
        EventLogError::DigestSize {
            alg: HashAlg::Sha256,
            size: 20
        }
    );
    let err = EventLog::parse(&spec_id(&[(0x000b, 32), (0x000b, 32)])).unwrap_err();
    assert_eq!(
        err,
        EventLogError::DuplicateBank {
            alg: HashAlg::Sha256
        }
    );
    let err = EventLog::parse(&spec_id(&[])).unwrap_err();
    assert!(matches!(
        malformed(&err).2,
        ParseError::InvalidValue {
            field: "numberOfAlgorithms",
            ..
        }
    ));
}

#[test]
fn undeclared_or_repeated_bank_in_an_event_is_refused() {
    let mut bytes = spec_id(&[(0x000b, 32)]);
    let offset = bytes.len();
    bytes.extend(event2(4, EV_EFI_ACTION, &[(0x0004, vec![0; 20])], b"x"));
    assert_eq!(
        EventLog::parse(&bytes).unwrap_err(),
        EventLogError::BankMismatch {
            index: 1,
            offset,
            alg: HashAlg::Sha1
        }
    );
    let mut bytes = spec_id(&[(0x000b, 32), (0x0004, 20)]);
    bytes.extend(event2(
        4,
        EV_EFI_ACTION,
        &[(0x000b, vec![0; 32]), (0x000b, vec![1; 32])],
        b"x",
    ));
    assert!(matches!(
        EventLog::parse(&bytes).unwrap_err(),
        EventLogError::BankMismatch {
            index: 1,
            alg: HashAlg::Sha256,
            ..
        }
    ));
    let mut bytes = spec_id(&[(0x000b, 32)]);
    bytes.extend(event2(4, EV_EFI_ACTION, &[(0x0099, vec![0; 32])], b"x"));
    assert!(matches!(
        malformed(&EventLog::parse(&bytes).unwrap_err()).2,
        ParseError::UnknownAlgorithm { alg: 0x99, .. }
    ));
}

#[test]
fn missing_bank_makes_that_bank_unreplayable() {
    let mut bytes = spec_id(&[(0x0004, 20), (0x000b, 32)]);
    bytes.extend(event2(4, EV_EFI_ACTION, &[(0x000b, vec![7; 32])], b"x"));
    let log = EventLog::parse(&bytes).unwrap();
    assert!(log.replay().get(HashAlg::Sha1, 4).is_none());
    assert!(log.replay().get(HashAlg::Sha256, 4).is_some());
    assert!(log.findings().contains(&Finding::IncompleteBank {
        alg: HashAlg::Sha1,
        event_index: 1
    }));
}

#[test]
fn pcr_index_out_of_range_is_refused() {
    for pcr in [24u32, 0xff, 0x1_0000, 0xffff_fffe] {
        let mut bytes = honest_log(&[b"x"], EV_EFI_ACTION);
        let offset = EventLog::parse(&bytes).unwrap().events()[1].offset();
        bytes[offset..offset + 4].copy_from_slice(&pcr.to_le_bytes());
        assert_eq!(
            EventLog::parse(&bytes).unwrap_err(),
            EventLogError::PcrIndex {
                index: 1,
                offset,
                pcr
            }
        );
    }
}

/// A trust-point event as the Windows boot manager logs them: pcrIndex 0xffffffff (-1). The
/// digests here are deliberately not the hash of the data, and the type is one whose digest
/// is checked (EV_SEPARATOR) or one that is normally extended (EV_EFI_ACTION), so that any
/// replay or digest check of the event would show.
fn trust_point(event_type: u32, data: &[u8]) -> Vec<u8> {
    event2(
        u32::MAX,
        event_type,
        &[(0x0004, vec![0x11; 20]), (0x000b, vec![0x22; 32])],
        data,
    )
}

#[test]
fn trust_points_are_kept_and_decoded_but_never_replayed() {
    let honest = honest_log(&[b"one", b"two"], EV_EFI_ACTION);
    let plain = EventLog::parse(&honest).unwrap();
    // Spec ID, trust point, "one", trust point, "two", trust point (last, before padding).
    let offsets: Vec<usize> = plain.events().iter().map(|e| e.offset()).collect();
    let mut bytes = honest[..offsets[1]].to_vec();
    bytes.extend(trust_point(EV_SEPARATOR, &[0, 0, 0, 0]));
    bytes.extend(&honest[offsets[1]..offsets[2]]);
    bytes.extend(trust_point(EV_EFI_ACTION, b"Windows trust point"));
    bytes.extend(&honest[offsets[2]..]);
    bytes.extend(trust_point(3, b"StartupLocality\0\x03"));
    bytes.extend([0u8; 40]);

    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.events().len(), 6);
    assert_eq!(log.padding(), 40);
    let points: Vec<_> = log.events().iter().filter(|e| e.is_trust_point()).collect();
    assert_eq!(points.len(), 3);
    for e in &points {
        assert_eq!(e.pcr_index(), 0xffff_ffff);
        assert_eq!(e.pcr(), Event::NO_PCR);
        assert!(!e.is_extended());
    }
    assert!(matches!(
        points[1].decode(),
        EventData::Action { ref text } if text == "Windows trust point"
    ));
    // Same replay and no findings: the mismatching digests were never looked at, and the
    // StartupLocality-looking data of a trust point sets nothing.
    assert_eq!(log.replay(), plain.replay());
    assert!(log.findings().is_empty(), "{:?}", log.findings());
    assert_eq!(log.startup_locality(), None);
    // The JSON shows the index as logged.
    let json = serde_json::to_value(log.events()).unwrap();
    assert_eq!(json[1]["pcr"], 4_294_967_295u64);
    assert_eq!(json[2]["pcr"], 4);
    verifier_core::fuzzing::eventlog(&bytes);

    // Legacy (SHA-1) logs too, first event included.
    let mut legacy_log = legacy(u32::MAX, EV_EFI_ACTION, &[0x33; 20], b"tp");
    legacy_log.extend(legacy(
        0,
        EV_SEPARATOR,
        &HashAlg::Sha1.hash(&[0; 4]).as_bytes().try_into().unwrap(),
        &[0; 4],
    ));
    legacy_log.extend(legacy(u32::MAX, EV_SEPARATOR, &[0x44; 20], &[0; 4]));
    let log = EventLog::parse(&legacy_log).unwrap();
    assert_eq!(log.events().len(), 3);
    let mut pcr0 = Digest::zero(HashAlg::Sha1);
    pcr0.extend(HashAlg::Sha1.hash(&[0; 4]).as_bytes());
    assert_eq!(log.replay().get(HashAlg::Sha1, 0), Some(&pcr0));
    assert_eq!(log.replay().iter().count(), 1);
    assert!(log.findings().is_empty(), "{:?}", log.findings());
    verifier_core::fuzzing::eventlog(&legacy_log);
}

#[test]
fn trailing_garbage_is_refused_but_padding_is_not() {
    let honest = honest_log(&[b"x"], EV_EFI_ACTION);
    for garbage in [
        &b"junk"[..],
        &[0, 0, 0, 0, 1],
        &[0xff, 0xfe],
        &[0; 31],
        &[0, 0xff, 0, 0],
    ] {
        let mut bytes = honest.clone();
        bytes.extend_from_slice(garbage);
        let err = EventLog::parse(&bytes).unwrap_err();
        assert_eq!(err.event_index(), Some(2), "{err}");
        assert_eq!(err.offset(), Some(honest.len()), "{err}");
    }
    // Fewer than 32 bytes of 0x00/0xff starting with 0x00: a cut-off header, not events (16
    // zeros would frame a digest-less TCG_PCR_EVENT2), not padding.
    let mut bytes = honest.clone();
    bytes.extend_from_slice(&[0; 31]);
    assert_eq!(
        malformed(&EventLog::parse(&bytes).unwrap_err()).2,
        ParseError::TrailingData {
            structure: "TCG_PCR_EVENT2",
            offset: honest.len(),
            remaining: 31
        }
    );
    for pad in [
        &[0u8; 100][..],
        &[0xff; 100],
        &[0xff, 0, 0],
        &[0xff],
        &[0; 32],
    ] {
        let mut bytes = honest.clone();
        bytes.extend_from_slice(pad);
        let log = EventLog::parse(&bytes).unwrap();
        assert_eq!(log.padding(), pad.len());
        assert_eq!(log.events().len(), 2);
    }
}

/// A StartupLocality `EV_NO_ACTION` event (legacy log, locality 3).
fn startup_locality_legacy(locality: u8) -> Vec<u8> {
    let mut data = b"StartupLocality\0".to_vec();
    data.push(locality);
    legacy(0, 3, &[0; 20], &data)
}

/// The fuzzer's counterexample to "padding holds no events" (issue 12, item 8): a
/// StartupLocality event, then 32 zero bytes, then 0xff bytes. The 32 zeros are also a
/// well-formed TCG_PCR_EVENT (EV_PREBOOT_CERT, PCR 0, zero digest, no data). Padding used to
/// be decided by looking for a run of *one* byte value, so with the 0xff tail the zeros were
/// parsed as an event extending PCR 0 (from its locality-3 initial value), and without it they
/// were padding: two replays of PCR 0 for one log. Bytes made only of 0x00 and 0xff are now
/// never parsed as events, whatever follows them.
#[test]
fn padding_after_startup_locality_is_padding_with_or_without_a_tail() {
    let mut bytes = startup_locality_legacy(3);
    let log_len = bytes.len();
    bytes.extend([0u8; 32]);
    bytes.extend([0xffu8; 4]);
    let padded = EventLog::parse(&bytes).unwrap();
    assert_eq!(padded.events().len(), 1);
    assert_eq!(padded.padding(), 36);
    assert_eq!(padded.startup_locality(), Some(3));
    for cut in [log_len, log_len + 32, log_len + 33] {
        let trimmed = EventLog::parse(&bytes[..cut]).unwrap();
        assert_eq!(trimmed.events().len(), 1, "cut {cut}");
        assert_eq!(trimmed.padding(), cut - log_len, "cut {cut}");
        assert_eq!(trimmed.replay(), padded.replay(), "cut {cut}");
        assert_eq!(trimmed.startup_locality(), Some(3), "cut {cut}");
    }
    // Nothing extended PCR 0, so the replay says nothing about it.
    assert_eq!(padded.replay().get(HashAlg::Sha1, 0), None);
    verifier_core::fuzzing::eventlog(&bytes);

    // The crypto-agile twin: 16 zero bytes are a digest-less TCG_PCR_EVENT2.
    let mut locality = b"StartupLocality\0".to_vec();
    locality.push(3);
    let mut agile = spec_id(&[(0x0004, 20), (0x000b, 32)]);
    agile.extend(event2(
        0,
        3,
        &[(0x0004, vec![0; 20]), (0x000b, vec![0; 32])],
        &locality,
    ));
    let log_len = agile.len();
    agile.extend([0u8; 32]);
    agile.extend([0xffu8; 4]);
    let padded = EventLog::parse(&agile).unwrap();
    assert_eq!(padded.events().len(), 2);
    assert_eq!(padded.padding(), 36);
    assert!(padded.findings().is_empty(), "{:?}", padded.findings());
    let trimmed = EventLog::parse(&agile[..log_len + 32]).unwrap();
    assert_eq!(trimmed.events().len(), 2);
    assert_eq!(trimmed.replay(), padded.replay());
    verifier_core::fuzzing::eventlog(&agile);
}

#[test]
fn startup_locality_4_and_late_startup_locality() {
    let mut locality = b"StartupLocality\0".to_vec();
    locality.push(4);
    let no_action = event2(
        0,
        3,
        &[(0x0004, vec![0; 20]), (0x000b, vec![0; 32])],
        &locality,
    );
    let measure = event2(
        0,
        EV_EFI_ACTION,
        &[
            (0x0004, HashAlg::Sha1.hash(b"m").as_bytes().to_vec()),
            (0x000b, HashAlg::Sha256.hash(b"m").as_bytes().to_vec()),
        ],
        b"m",
    );
    let mut bytes = spec_id(&[(0x0004, 20), (0x000b, 32)]);
    bytes.extend(&no_action);
    bytes.extend(&measure);
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.startup_locality(), Some(4));
    let mut init = [0u8; 32];
    init[31] = 4;
    let mut expected = Digest::from_slice(HashAlg::Sha256, &init).unwrap();
    expected.extend(HashAlg::Sha256.hash(b"m").as_bytes());
    assert_eq!(log.replay().get(HashAlg::Sha256, 0), Some(&expected));
    assert!(matches!(
        log.events()[1].decode(),
        EventData::NoAction(verifier_core::eventlog::NoActionEvent::StartupLocality {
            locality: 4
        })
    ));

    // After PCR 0 was extended, a StartupLocality event cannot change its initial value.
    let mut late = spec_id(&[(0x0004, 20), (0x000b, 32)]);
    late.extend(&measure);
    late.extend(&no_action);
    let log = EventLog::parse(&late).unwrap();
    assert_eq!(log.startup_locality(), None);
    assert_eq!(
        log.findings(),
        &[Finding::LateStartupLocality { event_index: 2 }]
    );
    let mut expected = Digest::zero(HashAlg::Sha256);
    expected.extend(HashAlg::Sha256.hash(b"m").as_bytes());
    assert_eq!(log.replay().get(HashAlg::Sha256, 0), Some(&expected));
}

#[test]
fn legacy_log_replays_sha1_only() {
    let mut bytes = legacy(
        0,
        8,
        &HashAlg::Sha1.hash(b"v\0").as_bytes().try_into().unwrap(),
        b"v\0",
    );
    bytes.extend(legacy(0, EV_SEPARATOR, &[9; 20], &[0, 0, 0, 0]));
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.banks(), &[HashAlg::Sha1]);
    let mut expected = Digest::zero(HashAlg::Sha1);
    expected.extend(HashAlg::Sha1.hash(b"v\0").as_bytes());
    expected.extend(&[9; 20]);
    assert_eq!(log.replay().get(HashAlg::Sha1, 0), Some(&expected));
    assert_eq!(
        log.findings(),
        &[Finding::DigestMismatch {
            event_index: 1,
            pcr: 0,
            event_type: EventType::EV_SEPARATOR,
            alg: HashAlg::Sha1
        }]
    );
}

#[test]
fn undecodable_content_is_raw_with_a_note_and_still_replays() {
    // An EV_EFI_VARIABLE_DRIVER_CONFIG whose UnicodeNameLength lies.
    let mut data = [0u8; 16].to_vec();
    data.extend_from_slice(&u64::MAX.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    let bytes = honest_log(&[&data], 0x8000_0001);
    let log = EventLog::parse(&bytes).unwrap();
    assert!(matches!(
        log.events()[1].decode(),
        EventData::Raw {
            note: Some(ParseError::Truncated {
                field: "UnicodeName",
                ..
            })
        }
    ));
    assert!(log.replay().get(HashAlg::Sha256, 4).is_some());
    let json = serde_json::to_value(log.events()).unwrap();
    assert!(json[1]["data"]["note"]
        .as_str()
        .unwrap()
        .contains("UnicodeName"));
}

/// Deterministic pseudo-random positions (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutations_of_every_testdata_log_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut logs = Vec::new();
    for dir in std::fs::read_dir(testdata().join("eventlog")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bin") {
                logs.push(std::fs::read(p).unwrap());
            }
        }
    }
    assert!(logs.len() >= 30);
    let mut parsed = 0;
    for bytes in logs.iter().filter(|b| !b.is_empty()) {
        for _ in 0..150 {
            let mut m = bytes.clone();
            let flips = 1 + rng.next() % 3;
            for _ in 0..flips {
                let at = usize::try_from(rng.next() % m.len() as u64).unwrap();
                m[at] ^= u8::try_from(rng.next() % 255 + 1).unwrap();
            }
            if rng.next() % 4 == 0 {
                let cut = usize::try_from(rng.next() % m.len() as u64).unwrap();
                m.truncate(cut);
            }
            if let Ok(log) = EventLog::parse(&m) {
                parsed += 1;
                // Decoding every event's content must not panic either.
                serde_json::to_string(log.events()).unwrap();
            }
        }
    }
    assert!(
        parsed > 0,
        "some mutations (e.g. in event data) still parse"
    );
}

/// What two parses of one log must agree on when only their padding differs.
fn same_but_padding(a: &EventLog<'_>, b: &EventLog<'_>, what: &str) {
    assert_eq!(
        format!("{:?}", a.events()),
        format!("{:?}", b.events()),
        "{what}"
    );
    assert_eq!(a.replay(), b.replay(), "{what}");
    assert_eq!(a.findings(), b.findings(), "{what}");
    assert_eq!(a.startup_locality(), b.startup_locality(), "{what}");
}

/// Property of the padding rule, over every test-data log that parses plus logs that end in
/// a StartupLocality event, and 60 generated tails each (runs of 0x00 and 0xff of random
/// lengths, the shapes that used to parse as events): appending a tail gives the same log
/// with `padding()` grown by its length, and cutting the padding off again gives the same
/// log; the only refusal is a tail shorter than 32 bytes starting with 0x00 after a log
/// without padding. (No proptest in this crate: a seeded xorshift keeps failures
/// reproducible.)
#[test]
fn property_padding_never_changes_events_or_replay() {
    let mut logs: Vec<Vec<u8>> = Vec::new();
    for dir in std::fs::read_dir(testdata().join("eventlog")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bin") {
                logs.push(std::fs::read(p).unwrap());
            }
        }
    }
    logs.push(startup_locality_legacy(3));
    logs.push(startup_locality_legacy(4));
    let mut locality = b"StartupLocality\0".to_vec();
    locality.push(3);
    let mut agile = spec_id(&[(0x000b, 32)]);
    agile.extend(event2(0, 3, &[(0x000b, vec![0; 32])], &locality));
    logs.push(agile);
    logs.retain(|b| EventLog::parse(b).is_ok());
    assert!(logs.len() >= 25, "only {} logs parse", logs.len());

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0;
    for bytes in &logs {
        let base = EventLog::parse(bytes).unwrap();
        for _ in 0..60 {
            let mut tail = Vec::new();
            let runs = 1 + rng.next() % 4;
            for _ in 0..runs {
                let byte = if rng.next() % 2 == 0 { 0 } else { 0xff };
                let len = usize::try_from(1 + rng.next() % 40).unwrap();
                tail.extend(std::iter::repeat_n(byte, len));
            }
            let mut padded = bytes.clone();
            padded.extend_from_slice(&tail);
            let what = format!("log of {} bytes + tail {}", bytes.len(), hex::encode(&tail));
            match EventLog::parse(&padded) {
                Ok(log) => {
                    same_but_padding(&base, &log, &what);
                    assert_eq!(log.padding(), base.padding() + tail.len(), "{what}");
                    let cut = &padded[..padded.len() - log.padding()];
                    let trimmed = EventLog::parse(cut).unwrap();
                    same_but_padding(&log, &trimmed, &what);
                    assert_eq!(trimmed.padding(), 0, "{what}");
                    checked += 1;
                }
                Err(e) => {
                    assert!(
                        base.padding() == 0 && tail[0] == 0 && tail.len() < 32,
                        "{what}: {e}"
                    );
                    assert_eq!(e.offset(), Some(bytes.len()), "{what}");
                    assert_eq!(e.event_index(), Some(base.events().len()), "{what}");
                }
            }
        }
    }
    assert!(
        checked > logs.len() * 40,
        "only {checked} padded logs parsed"
    );
}
