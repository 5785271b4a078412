//! Helpers for the policy tests: the shared event logs, evidence captured from a log (PCRs
//! as the log replays them), and rewriting one event of a log as a different boot would
//! have logged it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    dead_code
)]

use std::path::{Path, PathBuf};

use verifier_core::eventlog::{EventLog, LogFormat};
use verifier_core::ima::MeasurementList;
use verifier_core::proto::v1::{
    AgentId, CapturedClock, CapturedEvidence, ImaLog, ImaLogFormat, PcrBank, PcrValue,
    EVIDENCE_FORMAT,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{Digest, HashAlg};

pub fn testdata() -> PathBuf {
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

/// Logs refused by the parser (see tests/eventlog_testdata.rs `MALFORMED`).
pub const MALFORMED: &[&str] = &[
    "binary_bios_measurements-empty.bin",
    "binary_bios_measurements-bogus.bin",
    "specid-vendordata.bin",
];

/// Every parseable event log of the shared test data.
pub fn all_logs() -> Vec<PathBuf> {
    let mut logs = Vec::new();
    for dir in std::fs::read_dir(testdata().join("eventlog")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bin") && !MALFORMED.contains(&name(&p).as_str())
            {
                logs.push(p);
            }
        }
    }
    logs.sort();
    assert!(
        logs.len() >= 28,
        "expected the full event log set, found {}",
        logs.len()
    );
    logs
}

pub fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

pub fn log_path(rel: &str) -> PathBuf {
    testdata().join("eventlog").join(rel)
}

/// The PCR value after TPM2_Startup.
pub fn initial(alg: HashAlg, i: u8) -> Digest {
    if (17..=22).contains(&i) {
        Digest::filled(alg, 0xff)
    } else {
        Digest::zero(alg)
    }
}

/// Evidence as `initrd-agent evidence` would capture it on the machine that wrote `log`:
/// every PCR 0-23 of every bank the log replays (the log's value or the initial one), plus
/// the PCRs the log does not touch in a SHA-256 bank when the log has none (the release
/// PCR lives there; the touched ones would be unexplained).
pub fn capture(log: &[u8]) -> CapturedEvidence {
    let parsed = EventLog::parse(log).unwrap();
    let mut banks: Vec<HashAlg> = parsed.replay().banks().collect();
    let replayed = banks.clone();
    if !banks.contains(&HashAlg::Sha256) {
        banks.push(HashAlg::Sha256);
    }
    banks.sort();
    let touched: Vec<u8> = parsed
        .events()
        .iter()
        .filter(|e| e.is_extended())
        .map(|e| e.pcr())
        .collect();
    let pcrs = banks
        .iter()
        .map(|&alg| PcrBank {
            hash: alg,
            values: (0..24u8)
                .filter(|i| replayed.contains(&alg) || !touched.contains(i))
                .map(|i| PcrValue {
                    index: i,
                    digest: Base64Bytes::new(
                        parsed
                            .replay()
                            .get(alg, i)
                            .copied()
                            .unwrap_or_else(|| initial(alg, i))
                            .as_bytes()
                            .to_vec(),
                    ),
                })
                .collect(),
        })
        .collect();
    CapturedEvidence {
        format: EVIDENCE_FORMAT.into(),
        agent_id: AgentId::of_ek(b"test ek"),
        ek: "ecc".into(),
        ek_pub: Base64Bytes::new(b"test ek".to_vec()),
        ek_cert: None,
        ak_pub: Base64Bytes::new(b"test ak".to_vec()),
        pcrs,
        event_log: Some(Base64Bytes::new(log.to_vec())),
        ima_log: None,
        clock_info: None,
    }
}

/// A capture with clock info.
pub fn with_clock(
    mut c: CapturedEvidence,
    reset_count: u32,
    restart_count: u32,
    safe: bool,
) -> CapturedEvidence {
    c.clock_info = Some(CapturedClock {
        clock: 1000,
        reset_count,
        restart_count,
        safe,
    });
    c
}

/// Adds an IMA list (ascii, `alg` template hashes) and its PCR 10 in every captured bank.
pub fn with_ima(mut c: CapturedEvidence, ascii: &[u8], alg: HashAlg) -> CapturedEvidence {
    let list = MeasurementList::parse_ascii(ascii, alg).unwrap();
    for bank in &mut c.pcrs {
        let v = *list.replay(bank.hash).pcr(bank.hash, 10).unwrap();
        for p in &mut bank.values {
            if p.index == 10 {
                p.digest = Base64Bytes::new(v.as_bytes().to_vec());
            }
        }
    }
    c.ima_log = Some(ImaLog {
        format: ImaLogFormat::Ascii,
        template_hash_alg: alg,
        data: Base64Bytes::new(ascii.to_vec()),
    });
    c
}

/// Sets one captured PCR.
pub fn set_pcr(c: &mut CapturedEvidence, alg: HashAlg, index: u8, value: Digest) {
    for bank in c.pcrs.iter_mut().filter(|b| b.hash == alg) {
        for p in bank.values.iter_mut().filter(|p| p.index == index) {
            p.digest = Base64Bytes::new(value.as_bytes().to_vec());
        }
    }
}

/// Removes one captured PCR.
pub fn drop_pcr(c: &mut CapturedEvidence, alg: HashAlg, index: u8) {
    for bank in c.pcrs.iter_mut().filter(|b| b.hash == alg) {
        bank.values.retain(|p| p.index != index);
    }
}

/// The log with event `index` replaced: new data, and each bank's digest from `digest`
/// (given the bank and the new data). Every other byte is kept.
pub fn rewrite(
    log: &[u8],
    index: usize,
    data: &[u8],
    digest: impl Fn(HashAlg, &[u8]) -> Digest,
) -> Vec<u8> {
    let parsed = EventLog::parse(log).unwrap();
    let events = parsed.events();
    let e = &events[index];
    let start = e.offset();
    let end = events
        .get(index + 1)
        .map_or(log.len() - parsed.padding(), |n| n.offset());
    let mut out = log[..start].to_vec();
    out.extend_from_slice(&u32::from(e.pcr()).to_le_bytes());
    out.extend_from_slice(&e.event_type().0.to_le_bytes());
    match parsed.format() {
        LogFormat::LegacySha1 => {
            out.extend_from_slice(digest(HashAlg::Sha1, data).as_bytes());
        }
        LogFormat::CryptoAgile => {
            let digests = e.digests().as_slice();
            out.extend_from_slice(&(digests.len() as u32).to_le_bytes());
            for d in digests {
                out.extend_from_slice(&d.alg().to_tpm().to_le_bytes());
                out.extend_from_slice(digest(d.alg(), data).as_bytes());
            }
        }
    }
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&log[end..]);
    out
}

/// The digest a firmware would log for `data`: its hash.
pub fn hash_of(alg: HashAlg, data: &[u8]) -> Digest {
    alg.hash(data)
}
