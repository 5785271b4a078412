//! The provider's batching engine with a software AK as the host TPM: many concurrent
//! requesters, few quotes, every answer verified with verifier-core as a requester would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use verifier_core::provider::batch::{
    Answer, BatchConfig, BatchError, Batcher, HostQuote, HostQuoter,
};
use verifier_core::provider::host_extra_data;
use verifier_core::provider::{validate_host_quote, HostAnswer, HostTrust};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::AkPublic;
use verifier_core::wire::{
    BankSelection, ClockInfo, Digest, HashAlg, PcrSelection, PcrValues, Signature,
};

#[derive(Debug, thiserror::Error)]
#[error("software quote failed")]
struct QuoteFailed;

/// A software AK standing in for the host TPM, optionally slow like a hardware one.
struct SoftQuoter {
    ak: SoftwareAk,
    delay: Duration,
    fail: bool,
    log: Arc<Mutex<Vec<Instant>>>,
}

fn selection() -> PcrSelection {
    PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[0, 7]).unwrap()]).unwrap()
}

fn pcrs() -> PcrValues {
    let mut p = PcrValues::new();
    p.insert(0, Digest::filled(HashAlg::Sha256, 1));
    p.insert(7, Digest::filled(HashAlg::Sha256, 7));
    p
}

impl HostQuoter for SoftQuoter {
    type Error = QuoteFailed;
    fn quote(&mut self, root: &[u8; 32]) -> Result<HostQuote, QuoteFailed> {
        let extra_data = &host_extra_data(root);
        self.log.lock().unwrap().push(Instant::now());
        std::thread::sleep(self.delay);
        if self.fail {
            return Err(QuoteFailed);
        }
        let clock = ClockInfo {
            clock: 1,
            reset_count: 1,
            restart_count: 0,
            safe: true,
        };
        let (attest, sig) = self
            .ak
            .quote(extra_data, &selection(), &pcrs(), clock, 0)
            .map_err(|_| QuoteFailed)?;
        Ok(HostQuote {
            attest,
            signature: sig.marshal(),
            pcrs: pcrs(),
            host: None,
        })
    }
    fn ak_public(&self) -> Vec<u8> {
        self.ak.public().marshal()
    }
}

struct Engine {
    batcher: Arc<Batcher>,
    ak: AkPublic,
    log: Arc<Mutex<Vec<Instant>>>,
}

fn engine(config: BatchConfig, delay: Duration, fail: bool) -> Engine {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let ak_pub = ak.ak().clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let quoter_log = Arc::clone(&log);
    let batcher = Batcher::spawn(config, move || {
        Ok::<_, QuoteFailed>(SoftQuoter {
            ak,
            delay,
            fail,
            log: quoter_log,
        })
    })
    .unwrap();
    Engine {
        batcher: Arc::new(batcher),
        ak: ak_pub,
        log,
    }
}

fn nonce(i: usize, salt: u8) -> [u8; 32] {
    let mut n = [salt; 32];
    n[..8].copy_from_slice(&(i as u64).to_be_bytes());
    n
}

fn verify(ak: &AkPublic, nonce: &[u8; 32], a: &Answer) {
    let q = &a.quote.quote;
    let sig = Signature::parse(&q.signature).unwrap();
    validate_host_quote(
        HostTrust { ak, nonce },
        HostAnswer {
            attest: &q.attest,
            signature: &sig,
            pcrs: &q.pcrs,
            proof: &a.proof,
            event_log: None,
        },
    )
    .unwrap_or_else(|e| panic!("answer for nonce {:02x?} does not verify: {e}", &nonce[..8]));
}

/// `n` requesters released at once; returns (nonce, answer, latency) per requester.
fn burst(e: &Engine, n: usize, salt: u8) -> Vec<([u8; 32], Result<Answer, BatchError>, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = Arc::clone(&e.batcher);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let n = nonce(i, salt);
                barrier.wait();
                let t = Instant::now();
                let a = b.submit(n);
                (n, a, t.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn config(window_ms: u64, max_batch: usize) -> BatchConfig {
    BatchConfig {
        window: Duration::from_millis(window_ms),
        max_batch,
        max_pending: 10_000,
    }
}

#[test]
fn two_hundred_concurrent_requesters_in_one_window_share_very_few_quotes() {
    let e = engine(config(200, 1000), Duration::from_millis(5), false);
    let answers = burst(&e, 200, 0xa1);
    for (n, a, _) in &answers {
        verify(&e.ak, n, a.as_ref().unwrap());
    }
    let stats = e.batcher.stats();
    assert_eq!(stats.answered, 200);
    assert_eq!(stats.failed, 0);
    // All arrive well inside one 200 ms window; allow a straggler batch on a loaded machine.
    assert!(
        stats.quotes <= 2,
        "{} quotes for 200 requesters",
        stats.quotes
    );
    let mut seqs: Vec<u64> = answers
        .iter()
        .map(|(_, a, _)| a.as_ref().unwrap().quote.seq)
        .collect();
    seqs.dedup();
    assert!(seqs.len() <= 2);
}

#[test]
fn max_batch_closes_a_batch_before_the_window_ends() {
    // A window far longer than the test: only the batch size can trigger the quotes.
    let e = engine(config(60_000, 50), Duration::ZERO, false);
    let t = Instant::now();
    let answers = burst(&e, 200, 0xa2);
    assert!(t.elapsed() < Duration::from_secs(30));
    for (n, a, _) in &answers {
        let a = a.as_ref().unwrap();
        assert_eq!(a.quote.size, 50);
        verify(&e.ak, n, a);
    }
    assert_eq!(e.batcher.stats().quotes, 4);
}

#[test]
fn next_batch_fills_while_a_quote_is_in_flight() {
    // A slow quote (300 ms, like a hardware TPM) and a short window: requesters arriving
    // during the quote form ONE next batch, quoted as soon as the TPM is free.
    let e = engine(config(20, 1000), Duration::from_millis(300), false);
    let b = Arc::clone(&e.batcher);
    let first = std::thread::spawn(move || b.submit(nonce(0, 0xa3)));
    std::thread::sleep(Duration::from_millis(100)); // first quote now in flight
    let answers = burst(&e, 100, 0xa4);
    verify(&e.ak, &nonce(0, 0xa3), &first.join().unwrap().unwrap());
    for (n, a, latency) in &answers {
        verify(&e.ak, n, a.as_ref().unwrap());
        // At most the rest of the in-flight quote plus their own: well under window + 2 quotes.
        assert!(
            *latency < Duration::from_millis(20 + 2 * 300 + 200),
            "{latency:?}"
        );
    }
    assert_eq!(e.batcher.stats().quotes, 2);
    let times = e.log.lock().unwrap().clone();
    // The second quote started right after the first ended (no second window wait).
    assert!(
        times[1] - times[0] < Duration::from_millis(300 + 100),
        "{times:?}"
    );
}

#[test]
fn unbatched_takes_one_quote_per_request() {
    let e = engine(BatchConfig::unbatched(), Duration::ZERO, false);
    let answers = burst(&e, 20, 0xa5);
    for (n, a, _) in &answers {
        let a = a.as_ref().unwrap();
        assert_eq!(a.quote.size, 1);
        assert!(a.proof.siblings.is_empty());
        verify(&e.ak, n, a);
    }
    assert_eq!(e.batcher.stats().quotes, 20);
}

#[test]
fn answers_do_not_verify_for_another_requesters_nonce() {
    let e = engine(config(100, 1000), Duration::ZERO, false);
    let answers = burst(&e, 10, 0xa6);
    let (n0, a0, _) = &answers[0];
    let (n1, a1, _) = &answers[1];
    let (a0, a1) = (a0.as_ref().unwrap(), a1.as_ref().unwrap());
    verify(&e.ak, n0, a0);
    let q = &a1.quote.quote;
    let sig = Signature::parse(&q.signature).unwrap();
    let swapped = validate_host_quote(
        HostTrust {
            ak: &e.ak,
            nonce: n0,
        },
        HostAnswer {
            attest: &q.attest,
            signature: &sig,
            pcrs: &q.pcrs,
            proof: &a1.proof,
            event_log: None,
        },
    );
    assert_ne!(n0, n1);
    assert!(swapped.is_err());
}

#[test]
fn a_failed_quote_fails_its_batch_only_and_is_reported() {
    let e = engine(config(50, 1000), Duration::ZERO, true);
    let answers = burst(&e, 10, 0xa7);
    for (_, a, _) in &answers {
        assert!(matches!(a, Err(BatchError::Quote(_))), "{a:?}");
    }
    let s = e.batcher.stats();
    assert_eq!((s.answered, s.failed, s.quotes), (0, 10, 0));
}

#[test]
fn too_many_waiting_is_refused_as_busy() {
    let e = engine(
        BatchConfig {
            window: Duration::from_millis(300),
            max_batch: 1000,
            max_pending: 5,
        },
        Duration::ZERO,
        false,
    );
    let answers = burst(&e, 8, 0xa8);
    let busy = answers
        .iter()
        .filter(|(_, a, _)| matches!(a, Err(BatchError::Busy { .. })))
        .count();
    assert_eq!(busy, 3);
    for (n, a, _) in &answers {
        if let Ok(a) = a {
            verify(&e.ak, n, a);
        }
    }
}

#[test]
fn factory_error_is_returned_by_spawn() {
    let r = Batcher::spawn(config(10, 10), || Err::<SoftQuoter, _>("no TPM"));
    assert_eq!(r.unwrap_err(), "no TPM");
}

#[test]
fn enqueue_answers_through_the_callback_without_blocking_the_caller() {
    let e = engine(config(50, 1000), Duration::from_millis(100), false);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Instant::now();
    for i in 0..10 {
        let tx = tx.clone();
        let n = nonce(i, 0xa9);
        e.batcher
            .enqueue(n, move |r| tx.send((n, r)).unwrap())
            .unwrap();
    }
    // Ten enqueues return at once, long before the window and the 100 ms quote.
    assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
    for _ in 0..10 {
        let (n, a) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        verify(&e.ak, &n, &a.unwrap());
    }
    assert_eq!(e.batcher.stats().quotes, 1);
}
