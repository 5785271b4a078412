//! The provider role: host quotes for many requesters, quoted by a host agent that connects
//! out to this server (`initrd-agent provider --server URL`). See `docs/provider.md`.
//!
//! Requesters post nonces into the shared batching engine
//! ([`verifier_core::provider::batch`]); its quoter here is the *link* to the host agent:
//! for each batch it posts a job (the Merkle root) where the host's long poll picks it up,
//! and waits for the host's quote. Every posted quote is verified before any requester sees
//! it: signature under the AK the host announced, extraData =
//! `host_extra_data(root)` of exactly that job, PCR digest, event-log replay. A quote that
//! fails fails its batch; a missing host fails requests at once with 503.
//!
//! The async side never blocks on the engine: requesters hand the engine a callback that
//! completes a oneshot ([`verifier_core::provider::batch::Batcher::enqueue`]), and the host's
//! long poll waits on a watch channel. Only the engine's worker thread blocks, on the host's
//! answer.

use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use verifier_core::eventlog::EventLog;
use verifier_core::proto::v1::{
    HostAkResponse, HostHelloRequest, HostHelloResponse, HostJob, HostQuotePost, Id,
};
use verifier_core::provider::batch::{
    check_batch_quote, Answer, AnswerEncoder, BatchConfig, BatchError, Batcher, HostIdentity,
    HostQuote, HostQuoter,
};
use verifier_core::provider::HostQuoteError;
use verifier_core::quote::AkPublic;
use verifier_core::wire::Public;

/// How the provider role batches and waits.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSettings {
    /// Batching (window, batch size, most waiting requesters).
    pub batch: BatchConfig,
    /// Longest a batch waits for the host's quote before it fails.
    pub quote_timeout: Duration,
    /// Longest the server holds a host's poll open before answering `204`.
    pub poll: Duration,
    /// Most requests one source (IPv4 address or IPv6 /64) may have waiting, so that one
    /// requester cannot take all of `batch.max_pending` and starve the others.
    pub max_pending_per_source: usize,
}

/// Why a batch got no quote from the host, or a host message was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No host agent is connected (none said hello, or it stopped polling).
    #[error("no host agent is connected to this provider; retry later")]
    NoHost,
    /// The host agent took the job but sent no quote in time.
    #[error("the host agent did not answer within {0} s")]
    Timeout(u64),
    /// The host's quote does not verify (signature by another key, extraData not the
    /// binding of this batch's root, PCR digest, event-log replay).
    #[error("the host's quote was refused: {0}")]
    Quote(HostQuoteError),
    /// The posted PCR values are inconsistent (a bank or index twice).
    #[error("the host's PCR values are refused: {0}")]
    Pcrs(verifier_core::proto::ProtoError),
    /// The announced event log does not parse.
    #[error("the host's event log does not parse: {0}")]
    EventLog(verifier_core::eventlog::EventLogError),
    /// A poll or post named a session that is not the current one.
    #[error("unknown or replaced host session; send hello again")]
    UnknownSession,
    /// A post named a job that is not waiting (answered, timed out, or never existed).
    #[error("no such job waiting (it was answered, timed out or never existed)")]
    UnknownJob,
    /// The announced AK is not an acceptable attestation key.
    #[error("the host AK is not acceptable: {0}")]
    Ak(String),
    /// The server's random generator failed (no session id).
    #[error("internal server error (see the server log)")]
    Rng,
}

/// The connected host, as it announced itself.
struct Session {
    id: Id,
    ak: AkPublic,
    ak_name: Vec<u8>,
    host: Arc<HostIdentity>,
    polls: usize,
    last_seen: Instant,
}

/// A batch waiting for the host's quote.
struct Job {
    id: u64,
    root: [u8; 32],
    reply: SyncSender<Result<HostQuote, LinkError>>,
}

#[derive(Default)]
struct LinkState {
    session: Option<Session>,
    job: Option<Job>,
    next_job: u64,
}

/// What requesters, the host's handlers and the engine's quoter share.
struct Link {
    state: Mutex<LinkState>,
    /// Bumped on every new job and session, so polls wake without a lost-wakeup race.
    changed: tokio::sync::watch::Sender<u64>,
    settings: ProviderSettings,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Every update is a single assignment, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A host counts as connected while it polls, and for one poll time after its last
    /// message (between two polls, or right after hello).
    fn connected(&self, st: &LinkState) -> bool {
        st.session.as_ref().is_some_and(|s| {
            s.polls > 0 || s.last_seen.elapsed() < self.settings.poll + Duration::from_secs(5)
        })
    }
}

/// The engine's quoter: forwards each batch to the host agent and waits for its quote.
struct LinkQuoter(Arc<Link>);

impl HostQuoter for LinkQuoter {
    type Error = LinkError;

    fn quote(&mut self, root: &[u8; 32]) -> Result<HostQuote, LinkError> {
        let link = &self.0;
        let (reply, answer) = mpsc::sync_channel(1);
        let id = {
            let mut st = link.lock();
            if !link.connected(&st) {
                return Err(LinkError::NoHost);
            }
            let id = st.next_job;
            st.next_job = st.next_job.wrapping_add(1);
            st.job = Some(Job {
                id,
                root: *root,
                reply,
            });
            id
        };
        link.bump();
        let timeout = link.settings.quote_timeout;
        answer.recv_timeout(timeout).unwrap_or_else(|_| {
            let mut st = link.lock();
            if st.job.as_ref().is_some_and(|j| j.id == id) {
                st.job = None;
            }
            Err(LinkError::Timeout(timeout.as_secs()))
        })
    }

    /// Unknown until a host says hello, and it changes when the host reconnects: answers
    /// take the AK from [`HostQuote::host`] instead.
    fn ak_public(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// The provider role's state.
pub struct ProviderService {
    batcher: Batcher,
    pending: Arc<verifier_core::source::PerSource>,
    link: Arc<Link>,
    encoder: AnswerEncoder,
    no_host: HostIdentity,
}

impl std::fmt::Debug for ProviderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderService")
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
}

/// A requester's refusal, for the HTTP layer to map to a status.
#[derive(Debug)]
pub enum RequestError {
    /// Too many requesters wait already.
    Busy,
    /// This source has its share of the waiting requests already.
    SourceBusy(usize),
    /// No host agent connected.
    NoHost,
    /// The host did not answer in time.
    Timeout(String),
    /// The host's quote for this batch was refused by verification.
    BadHostQuote(String),
    /// The engine stopped or failed otherwise.
    Internal(String),
}

impl ProviderService {
    /// Starts the engine; no host is connected yet.
    pub fn start(settings: ProviderSettings) -> std::io::Result<Self> {
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let link = Arc::new(Link {
            state: Mutex::new(LinkState::default()),
            changed,
            settings,
        });
        let quoter_link = Arc::clone(&link);
        let batcher = Batcher::spawn(settings.batch, move || {
            Ok::<_, std::io::Error>(LinkQuoter(quoter_link))
        })?;
        Ok(Self {
            batcher,
            pending: Arc::default(),
            link,
            encoder: AnswerEncoder::default(),
            no_host: HostIdentity {
                ak_public: Vec::new(),
                event_log: None,
            },
        })
    }

    /// The engine (for its counters).
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// The settings.
    pub fn settings(&self) -> ProviderSettings {
        self.link.settings
    }

    /// A requester's nonce → its answer JSON. Waits (without blocking a thread) for its
    /// batch's quote.
    pub async fn quote(
        &self,
        nonce: [u8; 32],
        source: Option<std::net::IpAddr>,
    ) -> Result<Vec<u8>, RequestError> {
        if !self.link.connected(&self.link.lock()) {
            return Err(RequestError::NoHost);
        }
        // Held until this request is answered or given up.
        let max = self.link.settings.max_pending_per_source;
        let _held = match source {
            Some(ip) => Some(
                self.pending
                    .try_take(ip, max)
                    .ok_or(RequestError::SourceBusy(max))?,
            ),
            None => None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Answer, BatchError>>();
        self.batcher
            .enqueue(nonce, move |r| {
                // The requester may have gone; nothing to do then.
                let _ = tx.send(r);
            })
            .map_err(request_error)?;
        // A requester never waits without bound: its own window, the quote in flight when it
        // came and its own quote, each at most the quote timeout, plus slack for the queue.
        let settings = self.link.settings;
        let deadline = settings.batch.window + settings.quote_timeout * 3;
        let answer = tokio::time::timeout(deadline, rx)
            .await
            .map_err(|_| {
                RequestError::Timeout(format!(
                    "no host quote for this request within {} ms",
                    deadline.as_millis()
                ))
            })?
            .map_err(|_| RequestError::Internal("provider engine stopped".into()))?
            .map_err(request_error)?;
        self.encoder
            .encode(&answer, &self.no_host)
            .map_err(|e| RequestError::Internal(e.to_string()))
    }

    /// `GET /v1/provider/ak`: the connected host's AK, if any.
    pub fn ak(&self) -> Result<HostAkResponse, RequestError> {
        let st = self.link.lock();
        match st.session.as_ref() {
            Some(s) if self.link.connected(&st) => Ok(HostAkResponse {
                ak_pub: s.host.ak_public.as_slice().into(),
                ak_name: s.ak_name.as_slice().into(),
            }),
            _ => Err(RequestError::NoHost),
        }
    }

    /// A host announces itself; replaces any previous session. A batch waiting for the old
    /// session's quote is handed to the new one (it quotes with its own, new AK).
    pub fn hello(&self, req: &HostHelloRequest) -> Result<HostHelloResponse, LinkError> {
        let id = super::random_id().map_err(|_| LinkError::Rng)?;
        let public =
            Public::parse(req.ak_pub.as_bytes()).map_err(|e| LinkError::Ak(e.to_string()))?;
        let ak_name = public.name();
        let ak = AkPublic::try_from(public).map_err(|e| LinkError::Ak(e.to_string()))?;
        if let Some(log) = &req.event_log {
            EventLog::parse(log.as_bytes()).map_err(LinkError::EventLog)?;
        }
        let session = Session {
            id: id.clone(),
            ak,
            ak_name,
            host: Arc::new(HostIdentity {
                ak_public: req.ak_pub.as_bytes().to_vec(),
                event_log: req.event_log.as_ref().map(|l| l.as_bytes().to_vec()),
            }),
            polls: 0,
            last_seen: Instant::now(),
        };
        self.link.lock().session = Some(session);
        self.link.bump();
        tracing::info!(session = %id.as_str(), "provider: host agent connected");
        Ok(HostHelloResponse {
            session_id: id,
            poll_secs: u32::try_from(self.link.settings.poll.as_secs()).unwrap_or(u32::MAX),
        })
    }

    /// The host's long poll: the waiting job, or `None` after the poll time.
    pub async fn next(&self, session: &Id) -> Result<Option<HostJob>, LinkError> {
        let mut changed = self.link.changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.link.settings.poll;
        let _poll = {
            let mut st = self.link.lock();
            let s = current(&mut st, session)?;
            s.polls = s.polls.saturating_add(1);
            s.last_seen = Instant::now();
            PollGuard(Arc::clone(&self.link))
        };
        loop {
            {
                let mut st = self.link.lock();
                current(&mut st, session)?;
                if let Some(job) = &st.job {
                    // Handed out again if the host asks again (its previous poll's answer
                    // may have been lost); a job is done only when a quote is posted.
                    return Ok(Some(HostJob {
                        job_id: job.id,
                        root: job.root.as_slice().into(),
                    }));
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(None),
            }
        }
    }

    /// The host's quote for a job: verified, then handed to the batch. A quote that fails
    /// verification fails the batch (its requesters get an error, never this quote).
    pub fn post_quote(&self, post: &HostQuotePost) -> Result<(), LinkError> {
        let (job, ak, host) = {
            let mut st = self.link.lock();
            let s = current(&mut st, &post.session_id)?;
            s.last_seen = Instant::now();
            let (ak, host) = (s.ak.clone(), Arc::clone(&s.host));
            match st.job.take() {
                Some(job) if job.id == post.job_id => (job, ak, host),
                other => {
                    st.job = other;
                    return Err(LinkError::UnknownJob);
                }
            }
        };
        let verdict = verify_post(post, &job.root, &ak, &host);
        let outcome = verdict.clone().map(|pcrs| HostQuote {
            attest: post.quote.as_bytes().to_vec(),
            signature: post.signature.as_bytes().to_vec(),
            pcrs,
            host: Some(host),
        });
        if let Err(e) = &outcome {
            tracing::warn!(job = job.id, error = %e, "provider: host quote refused; its batch fails");
        }
        let _ = job.reply.send(outcome);
        verdict.map(drop)
    }
}

/// The session named `id`, if it is the current one.
fn current<'a>(st: &'a mut LinkState, id: &Id) -> Result<&'a mut Session, LinkError> {
    st.session
        .as_mut()
        .filter(|s| &s.id == id)
        .ok_or(LinkError::UnknownSession)
}

/// Counts an open poll for [`Link::connected`]; dropped when the poll ends or its
/// connection goes away.
struct PollGuard(Arc<Link>);

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if let Some(s) = st.session.as_mut() {
            s.polls = s.polls.saturating_sub(1);
            s.last_seen = Instant::now();
        }
    }
}

/// What every requester will check, checked first here (verifier-core's
/// [`check_batch_quote`]). Returns the PCR values the quote covers.
fn verify_post(
    post: &HostQuotePost,
    root: &[u8; 32],
    ak: &AkPublic,
    host: &HostIdentity,
) -> Result<verifier_core::wire::PcrValues, LinkError> {
    let pcrs = post.pcr_values().map_err(LinkError::Pcrs)?;
    check_batch_quote(
        ak,
        root,
        post.quote.as_bytes(),
        post.signature.as_bytes(),
        &pcrs,
        host.event_log.as_deref(),
    )
    .map_err(LinkError::Quote)
}

fn request_error(e: BatchError) -> RequestError {
    match e {
        BatchError::Busy { .. } => RequestError::Busy,
        BatchError::Quote(cause) => match cause.downcast_ref::<LinkError>() {
            Some(LinkError::NoHost) => RequestError::NoHost,
            Some(e @ LinkError::Timeout(_)) => RequestError::Timeout(e.to_string()),
            Some(e) => RequestError::BadHostQuote(e.to_string()),
            None => RequestError::Internal(cause.to_string()),
        },
        other => RequestError::Internal(other.to_string()),
    }
}
