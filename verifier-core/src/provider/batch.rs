//! The batching engine: many requesters' nonces, one quote.
//!
//! Requesters call [`Batcher::submit`] from their own threads and block until their answer
//! is ready. One worker thread owns the quoter (the TPM context is not `Send`, so it is
//! created on that thread by the factory passed to [`Batcher::spawn`]) and loops:
//! 1. wait for a first pending nonce;
//! 2. wait until `window` has passed since that nonce arrived, or `max_batch` nonces wait;
//! 3. take up to `max_batch` nonces, build their RFC 6962 tree, quote once over
//!    [`host_extra_data`] of the root, and hand every requester the shared quote and its own
//!    inclusion proof.
//!
//! While step 3 runs, new nonces keep queueing under the lock, so the next batch fills while
//! a quote is in flight; when the quote returns, a batch whose window has already run out
//! is taken at once. A requester therefore waits at most about one window plus two quote
//! times (the one in flight when it arrived, then its own). With `window = 0` and
//! `max_batch = 1` the engine quotes once per request (batching off), the benchmark's
//! baseline.
//!
//! The engine does no I/O itself: the quote is a [`HostQuoter`], so tests drive it with a
//! software AK, `initrd-agent provider --listen` with the host TPM, and `unlock-server
//! --role provider` with a host agent connected over the network. It lives here, not in a
//! binary, so both provider front ends batch with the same code.
//!
//! Requesters either block ([`Batcher::submit`], a thread per requester) or hand over a
//! callback ([`Batcher::enqueue`], for an async server that must not park a worker).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::HostQuoteError;
use crate::eventlog::EventLog;
use crate::evidence::ValidationError;
use crate::merkle::{InclusionProof, MerkleTree, MAX_LEAVES};
use crate::proto::v1::{inclusion_to_wire, HostQuoteResponse};
use crate::proto::{Base64Bytes, ProtoError};
use crate::quote::{verify_quote, AkPublic};
use crate::wire::{PcrValues, Signature};

/// A quote as the host TPM produced it, with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostQuote {
    /// TPMS_ATTEST exactly as signed.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// Values of the quoted PCRs.
    pub pcrs: PcrValues,
    /// Which host quoted, when that can change between quotes (a remote host agent that
    /// reconnects with a new AK); `None` when the front end knows it statically (a local
    /// TPM). Carried with the quote so an answer never pairs a quote with another AK's
    /// public area or event log.
    pub host: Option<Arc<HostIdentity>>,
}

/// The host's public AK and event log as they were when it quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// The AK's TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The host's UEFI event log, when it serves one.
    pub event_log: Option<Vec<u8>>,
}

/// Something that quotes with the host's AK: the TPM in the provider, a software AK in tests.
pub trait HostQuoter {
    /// Why a quote failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// One quote over a batch whose Merkle root is `root`, with
    /// [`host_extra_data`](super::host_extra_data)`(root)` as qualifyingData. The quoter
    /// gets the root, not the finished extraData, so a quoter that forwards the job (to a
    /// host agent) can let the signer derive the binding itself and never sign arbitrary
    /// data.
    fn quote(&mut self, root: &[u8; 32]) -> Result<HostQuote, Self::Error>;
    /// The AK's TPMT_PUBLIC (what requesters pin).
    fn ak_public(&self) -> Vec<u8>;
}

/// How nonces are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// How long the first nonce of a batch waits for others.
    pub window: Duration,
    /// Most nonces in one quote (at most [`MAX_LEAVES`]); a full batch is quoted at once.
    pub max_batch: usize,
    /// Most nonces waiting at once; beyond it [`Batcher::submit`] refuses with
    /// [`BatchError::Busy`] instead of queueing without bound.
    pub max_pending: usize,
}

impl BatchConfig {
    /// One quote per request: the baseline batching is measured against.
    pub fn unbatched() -> Self {
        Self {
            window: Duration::ZERO,
            max_batch: 1,
            max_pending: 100_000,
        }
    }
}

/// One batch's quote, shared by all its requesters.
#[derive(Debug)]
pub struct BatchQuote {
    /// The quote and PCRs.
    pub quote: HostQuote,
    /// The Merkle root the quote binds.
    pub root: [u8; 32],
    /// Requesters in the batch.
    pub size: usize,
    /// Sequence number of the quote (0 is the first).
    pub seq: u64,
}

/// A requester's answer: the batch's quote and its own inclusion proof.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The shared quote.
    pub quote: Arc<BatchQuote>,
    /// The requester's nonce in the batch's tree.
    pub proof: InclusionProof,
}

/// Why a requester got no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Too many nonces are already waiting (`max_pending`); retry later.
    #[error("provider busy: {pending} requests already waiting")]
    Busy {
        /// Nonces waiting.
        pending: usize,
    },
    /// The host quote for this batch failed (the cause is the quoter's error).
    #[error("host quote failed: {0}")]
    Quote(Arc<dyn std::error::Error + Send + Sync>),
    /// The batch could not be built (a bug: sizes are bounded by `max_batch`).
    #[error("batch tree: {0}")]
    Tree(crate::merkle::MerkleError),
    /// The engine stopped (shutdown, or its worker ended).
    #[error("provider engine stopped")]
    Stopped,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Quotes taken.
    pub quotes: u64,
    /// Requests answered with a quote.
    pub answered: u64,
    /// Requests answered with an error.
    pub failed: u64,
}

/// Where a requester's answer goes: a channel it blocks on, or its callback.
type Reply = Box<dyn FnOnce(Result<Answer, BatchError>) + Send>;

struct Pending {
    nonce: [u8; 32],
    arrived: Instant,
    reply: Reply,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    config: BatchConfig,
    quotes: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue that is still consistent
        // (push/drain are single calls), so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running engine. Dropping it stops the worker after the batch in flight.
pub struct Batcher {
    shared: Arc<Shared>,
    ak_public: Vec<u8>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the worker thread, which builds its quoter with `make` (so a quoter that
    /// cannot move between threads, like a TPM context, works). Returns the factory's error
    /// if it fails.
    pub fn spawn<Q, E, F>(config: BatchConfig, make: F) -> Result<Self, E>
    where
        Q: HostQuoter,
        E: Send + 'static,
        F: FnOnce() -> Result<Q, E> + Send + 'static,
    {
        let config = BatchConfig {
            max_batch: config.max_batch.clamp(1, MAX_LEAVES),
            max_pending: config.max_pending.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            config,
            quotes: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Vec<u8>, E>>(1);
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("provider-quoter".into())
            .spawn(move || {
                let mut quoter = match make() {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(quoter.ak_public()));
                drop(ready_tx);
                run(&worker_shared, &mut quoter);
            });
        let worker = match worker {
            Ok(w) => w,
            // Out of threads at startup: the caller sees a stopped engine on first submit.
            Err(_) => {
                return Ok(Self {
                    shared,
                    ak_public: Vec::new(),
                    worker: None,
                })
            }
        };
        match ready_rx.recv() {
            Ok(Ok(ak_public)) => Ok(Self {
                shared,
                ak_public,
                worker: Some(worker),
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => Ok(Self {
                shared,
                ak_public: Vec::new(),
                worker: None,
            }),
        }
    }

    /// The quoter's AK (TPMT_PUBLIC).
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// The effective configuration.
    pub fn config(&self) -> BatchConfig {
        self.shared.config
    }

    /// Queues `nonce` and blocks until its batch is quoted.
    pub fn submit(&self, nonce: [u8; 32]) -> Result<Answer, BatchError> {
        let (reply, answer) = mpsc::sync_channel::<Result<Answer, BatchError>>(1);
        self.enqueue(nonce, move |r| {
            // The requester may have given up; nobody to tell then.
            let _ = reply.send(r);
        })?;
        answer.recv().unwrap_or(Err(BatchError::Stopped))
    }

    /// Queues `nonce` without blocking; `done` is called once with the answer, on the
    /// engine's worker thread (so it must be quick: send on a channel, nothing more).
    /// A refusal at the door (busy, stopped) is returned here and `done` is not called.
    pub fn enqueue(
        &self,
        nonce: [u8; 32],
        done: impl FnOnce(Result<Answer, BatchError>) + Send + 'static,
    ) -> Result<(), BatchError> {
        let mut st = self.shared.lock();
        if st.stopping || self.worker.is_none() {
            return Err(BatchError::Stopped);
        }
        let pending = st.pending.len();
        if pending >= self.shared.config.max_pending {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            return Err(BatchError::Busy { pending });
        }
        st.pending.push_back(Pending {
            nonce,
            arrived: Instant::now(),
            reply: Box::new(done),
        });
        // The worker sleeps until a first nonce, then until the window ends or the batch
        // is full; only those two events need to wake it.
        let len = st.pending.len();
        if len == 1 || len >= self.shared.config.max_batch {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        Stats {
            quotes: self.shared.quotes.load(Ordering::Relaxed),
            answered: self.shared.answered.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The worker loop: take a batch when its window ends or it is full, quote, fan out.
fn run<Q: HostQuoter>(shared: &Shared, quoter: &mut Q) {
    let config = shared.config;
    loop {
        let batch: Vec<Pending> = {
            let mut st = shared.lock();
            loop {
                if st.stopping {
                    for p in st.pending.drain(..) {
                        (p.reply)(Err(BatchError::Stopped));
                    }
                    return;
                }
                let Some(first) = st.pending.front() else {
                    st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    continue;
                };
                let deadline = first.arrived + config.window;
                let now = Instant::now();
                if st.pending.len() >= config.max_batch || now >= deadline {
                    break;
                }
                st = shared
                    .wake
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let n = st.pending.len().min(config.max_batch);
            st.pending.drain(..n).collect()
        };
        answer_batch(shared, quoter, batch);
    }
}

fn answer_batch<Q: HostQuoter>(shared: &Shared, quoter: &mut Q, batch: Vec<Pending>) {
    let fail = |batch: Vec<Pending>, e: BatchError| {
        shared.failed.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        for p in batch {
            (p.reply)(Err(e.clone()));
        }
    };
    let nonces: Vec<[u8; 32]> = batch.iter().map(|p| p.nonce).collect();
    let tree = match MerkleTree::new(&nonces) {
        Ok(t) => t,
        Err(e) => return fail(batch, BatchError::Tree(e)),
    };
    let root = tree.root();
    let quote = match quoter.quote(&root) {
        Ok(q) => q,
        Err(e) => return fail(batch, BatchError::Quote(Arc::new(e))),
    };
    let seq = shared.quotes.fetch_add(1, Ordering::Relaxed);
    let shared_quote = Arc::new(BatchQuote {
        quote,
        root,
        size: batch.len(),
        seq,
    });
    for (i, p) in batch.into_iter().enumerate() {
        let answer = tree.proof(i).map_err(BatchError::Tree).map(|proof| Answer {
            quote: Arc::clone(&shared_quote),
            proof,
        });
        if answer.is_ok() {
            shared.answered.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        (p.reply)(answer);
    }
}

/// Encodes answers as [`HostQuoteResponse`](crate::proto::v1::HostQuoteResponse) JSON. The
/// part every requester of a batch shares (quote, PCRs, event log, AK) is serialized once
/// per quote and reused, so a batch of 1000 with a 100 KiB event log costs one encoding,
/// not 1000; only the inclusion proof is per requester.
#[derive(Debug, Default)]
pub struct AnswerEncoder {
    cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// The fields every answer of a batch shares, in `HostQuoteResponse`'s field order.
#[derive(serde::Serialize)]
struct SharedPart {
    quote: Base64Bytes,
    signature: Base64Bytes,
    pcrs: Vec<crate::proto::v1::PcrBank>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_log: Option<Base64Bytes>,
    ak_pub: Base64Bytes,
}

impl AnswerEncoder {
    /// `answer` as JSON. The AK and event log are the ones that came with the quote
    /// ([`HostQuote::host`]) or else `host`, the front end's static identity.
    pub fn encode(&self, answer: &Answer, host: &HostIdentity) -> Result<Vec<u8>, ProtoError> {
        let shared = self.shared(answer, host)?;
        let proof = serde_json::to_vec(&inclusion_to_wire(&answer.proof)).map_err(|e| {
            ProtoError::Encode {
                message: e.to_string(),
            }
        })?;
        let mut out = Vec::with_capacity(shared.len() + proof.len() + 16);
        // `shared` is an object ending in '}'; reopen it to append the proof.
        out.extend_from_slice(shared.get(..shared.len().saturating_sub(1)).unwrap_or(&[]));
        out.extend_from_slice(b",\"inclusion\":");
        out.extend_from_slice(&proof);
        out.push(b'}');
        Ok(out)
    }

    fn shared(&self, answer: &Answer, host: &HostIdentity) -> Result<Arc<Vec<u8>>, ProtoError> {
        let seq = answer.quote.seq;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, json)) = cache.as_ref() {
            if *s == seq {
                return Ok(Arc::clone(json));
            }
        }
        let q = &answer.quote.quote;
        let host = q.host.as_deref().unwrap_or(host);
        let part = SharedPart {
            quote: q.attest.as_slice().into(),
            signature: q.signature.as_slice().into(),
            pcrs: HostQuoteResponse::banks_of(&q.pcrs),
            event_log: host.event_log.as_deref().map(Base64Bytes::from),
            ak_pub: host.ak_public.as_slice().into(),
        };
        let json = Arc::new(serde_json::to_vec(&part).map_err(|e| ProtoError::Encode {
            message: e.to_string(),
        })?);
        *cache = Some((seq, Arc::clone(&json)));
        Ok(json)
    }
}

/// The checks every requester will make on a batch's quote, minus the inclusion proof:
/// signature under `ak`, extraData = [`host_extra_data`](super::host_extra_data)`(root)`,
/// PCR digest of the reported values, and replay of `event_log` (when sent) to the quoted
/// PCRs. A front end whose quoter it does not control (a remote host agent) runs them before
/// any requester sees the quote. Returns the quoted PCR values (the reported values the
/// quote covers).
pub fn check_batch_quote(
    ak: &AkPublic,
    root: &[u8; 32],
    attest: &[u8],
    signature: &[u8],
    pcrs: &PcrValues,
    event_log: Option<&[u8]>,
) -> Result<PcrValues, HostQuoteError> {
    let sig = Signature::parse(signature).map_err(|e| HostQuoteError::Quote(e.into()))?;
    let quote = verify_quote(ak, &super::host_extra_data(root), attest, &sig, pcrs)
        .map_err(HostQuoteError::Quote)?;
    if let Some(bytes) = event_log {
        let log = EventLog::parse(bytes)
            .map_err(|e| HostQuoteError::EventLog(ValidationError::EventLog(e)))?;
        crate::evidence::check_event_log(&log, quote.pcrs()).map_err(HostQuoteError::EventLog)?;
    }
    Ok(quote.pcrs().clone())
}
