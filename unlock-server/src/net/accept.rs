//! The accept loop and the life of one connection.
//!
//! A connection is admitted only under the total and per-source caps; it then lives under a
//! watchdog with one deadline at a time: the TLS handshake, the first request head, and,
//! after each answer, the next request head (which also bounds a client that does not read
//! its answer). While a request is being handled the body reader's own rate limit applies
//! ([`super::body`]) and the watchdog waits. A connection whose deadline passes is dropped.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Edge, Peer, Timeout};
use verifier_core::source::{Held, PerSource};

/// Largest buffer hyper keeps per connection for a request head (and body read-ahead).
const MAX_CONN_BUFFER: usize = 64 * 1024;

/// Accept back-off after an error (EMFILE, ENFILE, ENOMEM...): doubles up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one log line per this interval for accept errors and refused connections.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line that says how many like it were suppressed.
#[derive(Debug)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    const fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` (n suppressed since the last line) when a line may be written now.
    fn tick(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Admission: the total cap (a semaphore) and the per-source counts.
#[derive(Debug)]
struct Admission {
    total: Arc<Semaphore>,
    per_source: Arc<PerSource>,
    max_per_source: usize,
}

/// A connection's place under the caps, given back on drop.
#[derive(Debug)]
struct Admitted {
    _permit: OwnedSemaphorePermit,
    _source: Held,
    edge: Arc<Edge>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.edge.metrics.closed();
    }
}

impl Admission {
    fn admit(&self, edge: &Arc<Edge>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let Some(source) = self.per_source.try_take(ip, self.max_per_source) else {
            edge.metrics.rejected_source.fetch_add(1, Ordering::Relaxed);
            return Err("per-source connection cap");
        };
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            edge.metrics.rejected_cap.fetch_add(1, Ordering::Relaxed);
            return Err("connection cap");
        };
        edge.metrics.opened();
        Ok(Admitted {
            _permit: permit,
            _source: source,
            edge: edge.clone(),
        })
    }
}

/// Where a connection is in its life, for the watchdog.
#[derive(Debug)]
struct Watch {
    epoch: Instant,
    /// 0: waiting for the first head, 1: handling a request, 2: idle after an answer.
    phase: AtomicU8,
    /// When the current phase began, ms since `epoch`.
    since_ms: AtomicU64,
}

const AWAIT_FIRST: u8 = 0;
const IN_REQUEST: u8 = 1;
const IDLE: u8 = 2;

impl Watch {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            phase: AtomicU8::new(AWAIT_FIRST),
            since_ms: AtomicU64::new(0),
        }
    }

    fn set(&self, phase: u8) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// The current deadline and the timeout it stands for; `None` while a request is
    /// being handled.
    fn deadline(&self, edge: &Edge) -> Option<(Instant, Timeout)> {
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            AWAIT_FIRST => Some((since + edge.limits.header_timeout(), Timeout::Header)),
            IDLE => Some((since + edge.limits.idle_timeout(), Timeout::Idle)),
            _ => None,
        }
    }
}

/// Serves `app` on `listener` (TLS when `tls` is given) under the edge's limits until
/// `shutdown` resolves, then gives in-flight connections up to 10 s.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Admission {
        total: Arc::new(Semaphore::new(edge.limits.max_connections)),
        per_source: Arc::new(PerSource::default()),
        max_per_source: edge.limits.max_connections_per_source,
    };
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_log = RateLimitedLog::new();
    let mut reject_log = RateLimitedLog::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = ACCEPT_BACKOFF_MIN;
                x
            }
            Err(e) => {
                // Without the pause, EMFILE makes accept() fail at once, forever: a spinning
                // core and a log line per failure.
                edge.metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = accept_log.tick(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "accept failed; pausing accepts (raise LimitNOFILE or lower limits.max_connections)");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let admitted = match admission.admit(&edge, peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                if let Some(suppressed) = reject_log.tick(Instant::now()) {
                    tracing::warn!(%peer, limit = why, suppressed, "connection refused at accept");
                }
                drop(stream);
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        let edge = edge.clone();
        conns.spawn(async move {
            let _admitted = admitted;
            connection(stream, peer, tls, app, &edge).await;
        });
        while conns.try_join_next().is_some() {}
    }
    tracing::info!(
        in_flight = conns.len(),
        "shutting down: finishing in-flight connections (10 s at most)"
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    edge: &Arc<Edge>,
) {
    // Without it, Nagle holds the second small TLS write until the client's delayed ACK
    // (~40 ms per exchange on loopback).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
    }
    let Some(acceptor) = tls else {
        return http(stream, peer, app, edge).await;
    };
    match tokio::time::timeout(edge.limits.handshake_timeout(), acceptor.accept(stream)).await {
        Ok(Ok(s)) => http(s, peer, app, edge).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => {
            edge.metrics.timed_out(Timeout::Handshake);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

async fn http<IO>(io: IO, peer: SocketAddr, app: Router, edge: &Arc<Edge>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(Watch::new());
    let inner = TowerToHyperService::new(app);
    let svc = {
        let watch = watch.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            watch.set(IN_REQUEST);
            req.extensions_mut().insert(Peer(peer.ip()));
            let fut = hyper::service::Service::call(&inner, req);
            let watch = watch.clone();
            async move {
                let r = fut.await;
                watch.set(IDLE);
                r
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_CONN_BUFFER)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    loop {
        // Re-read the deadline at least every second: the phase moves under us.
        let now = Instant::now();
        let (wake, timeout) = match watch.deadline(edge) {
            Some((d, t)) => (d.min(now + Duration::from_secs(1)), Some((d, t))),
            None => (now + Duration::from_secs(1), None),
        };
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some((d, t)) = timeout {
                    // Only if the phase did not move while we slept.
                    if Instant::now() >= d && watch.deadline(edge).map(|(d2, _)| d2) == Some(d) {
                        edge.metrics.timed_out(t);
                        tracing::debug!(%peer, phase = ?t, "connection timed out; closed");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_rate_limited_and_count_what_they_hid() {
        let mut l = RateLimitedLog::new();
        let t0 = Instant::now();
        assert_eq!(l.tick(t0), Some(0));
        for i in 1..=1000u64 {
            assert_eq!(l.tick(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(l.tick(t0 + LOG_EVERY), Some(1000));
    }
}
