//! Policy evaluations per second on the largest event logs of the shared test data, printed
//! next to parsing and replaying the same log (the cost validation pays anyway). The policy
//! is the strictest `learn` makes (exact PCRs and the whole reference state). Goal:
//! >= 20,000 evaluations/s on one core. `cargo bench -p verifier-core --bench policy`.
//!
//! Same method as `benches/verify.rs`: warm-up, calibrated batches, median of several runs.

// Bench code: a failed unwrap is a broken benchmark setup, which should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use verifier_core::eventlog::EventLog;
use verifier_core::policy::{learn, Evaluator, LearnMode, LearnOptions, Policy, UnverifiedCapture};
use verifier_core::proto::v1::{AgentId, CapturedEvidence, PcrBank, PcrValue, EVIDENCE_FORMAT};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::Digest;

const RUNS: usize = 7;
const RUN_TIME: Duration = Duration::from_millis(150);
const WARM_UP: Duration = Duration::from_millis(200);

fn per_second<R>(mut f: impl FnMut() -> R) -> f64 {
    let start = Instant::now();
    while start.elapsed() < WARM_UP {
        black_box(f());
    }
    let mut batch: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        if t.elapsed() >= RUN_TIME / 4 {
            batch *= 4;
            break;
        }
        batch *= 2;
    }
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            batch as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

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
        "test data missing at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

/// The parseable logs, largest first.
fn largest_logs(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut logs = Vec::new();
    for dir in std::fs::read_dir(testdata().join("eventlog")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bin") {
                let bytes = std::fs::read(&p).unwrap();
                if EventLog::parse(&bytes).is_ok() {
                    logs.push((p.file_name().unwrap().to_string_lossy().into_owned(), bytes));
                }
            }
        }
    }
    logs.sort_by_key(|(_, b)| std::cmp::Reverse(b.len()));
    logs.truncate(n);
    logs
}

fn capture(log: &[u8]) -> CapturedEvidence {
    let parsed = EventLog::parse(log).unwrap();
    let pcrs = parsed
        .replay()
        .banks()
        .map(|alg| PcrBank {
            hash: alg,
            values: (0..24u8)
                .map(|i| PcrValue {
                    index: i,
                    digest: Base64Bytes::new(
                        parsed
                            .replay()
                            .get(alg, i)
                            .copied()
                            .unwrap_or_else(|| {
                                if (17..=22).contains(&i) {
                                    Digest::filled(alg, 0xff)
                                } else {
                                    Digest::zero(alg)
                                }
                            })
                            .as_bytes()
                            .to_vec(),
                    ),
                })
                .collect(),
        })
        .collect();
    CapturedEvidence {
        format: EVIDENCE_FORMAT.into(),
        agent_id: AgentId::of_ek(b"bench"),
        ek: "ecc".into(),
        ek_pub: Base64Bytes::new(b"bench".to_vec()),
        ek_cert: None,
        ak_pub: Base64Bytes::new(Vec::new()),
        pcrs,
        event_log: Some(Base64Bytes::new(log.to_vec())),
        ima_log: None,
        clock_info: None,
    }
}

fn main() {
    println!(
        "{:<40} {:>7} {:>14} {:>14} {:>14} {:>14}",
        "log (events)", "KiB", "parse+replay/s", "+findings/s", "evaluate/s", "all three/s"
    );
    for (name, bytes) in largest_logs(3) {
        let c = capture(&bytes);
        let checked = UnverifiedCapture::check(&c).unwrap();
        let claims = checked.claims();
        let opts = LearnOptions {
            mode: LearnMode::Both,
            ..LearnOptions::default()
        };
        let doc = learn(&claims, &opts).unwrap().document;
        let policy = Policy::from_document(doc).unwrap();
        assert!(policy.evaluate_claims(&claims).accepted());
        let events = claims.event_log().unwrap().events().len();
        let parse = per_second(|| EventLog::parse(&bytes).unwrap().replay().is_empty());
        let findings = per_second(|| EventLog::parse(&bytes).unwrap().findings().len());
        // Findings are cached in the parsed log, as on the server after its first use.
        let eval = per_second(|| policy.evaluate_claims(&claims).accepted());
        let all = per_second(|| {
            let log = EventLog::parse(&bytes).unwrap();
            let n = log.findings().len();
            (n, policy.evaluate_claims(&claims).accepted())
        });
        println!(
            "{:<40} {:>7.1} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            format!("{name} ({events})"),
            bytes.len() as f64 / 1024.0,
            parse,
            findings,
            eval,
            all
        );
    }
    println!("goal: evaluate >= 20,000/s on one core");
}
