//! Request bodies, read into bounded buffers.
//!
//! Why not `axum::body::to_bytes`: it keeps every received frame until the body is complete,
//! and a frame is a slice of the connection's read buffer, which it keeps alive whole. A body
//! sent as 1-byte TLS records then pinned kilobytes of buffers per byte (an outside test
//! measured +1.5 GB for a 0.94 MiB body). Here each frame is copied into one `Vec` and
//! dropped at once, so a body costs what it carries, whatever its record size.
//!
//! Three limits apply to every body: the route's own size limit (what the route can
//! legitimately carry), a minimum data rate after a grace period, and the server-wide budget
//! of body bytes in flight, taken byte for byte as they arrive and given back when the
//! request is done with them.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use verifier_core::proto::v1::ErrorCode;

use verifier_core::source::PerSource;

use super::{Edge, SourceKey, Timeout};
use crate::error::ApiError;

/// The server-wide budget of request-body bytes held in memory, and each source's share.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    shares: PerSource,
    max_per_source: usize,
}

impl Budget {
    /// A budget of `bytes`, at most `per_source` of them held by one source.
    pub fn new(bytes: usize, per_source: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(bytes)),
            shares: PerSource::default(),
            max_per_source: per_source,
        }
    }

    /// Bytes not taken now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Takes `n` bytes for `source`, within its share and the total.
    fn take(&self, source: Option<SourceKey>, n: usize) -> Result<OwnedSemaphorePermit, Spent> {
        let permits = u32::try_from(n).map_err(|_| Spent::Total)?;
        if let Some(key) = source {
            if !self.shares.take(key, n, self.max_per_source) {
                return Err(Spent::Share);
            }
        }
        self.sem
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| {
                if let Some(key) = source {
                    self.shares.give_back(key, n);
                }
                Spent::Total
            })
    }

    fn give_back(&self, source: SourceKey, n: usize) {
        self.shares.give_back(source, n);
    }
}

/// Which budget a body ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spent {
    /// The source's share.
    Share,
    /// The server's total.
    Total,
}

/// A body in memory, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct BoundedBody {
    bytes: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
    source: Option<SourceKey>,
    edge: Arc<Edge>,
}

impl std::ops::Deref for BoundedBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BoundedBody {
    fn drop(&mut self) {
        let n = self.bytes.len();
        if let Some(key) = self.source {
            self.edge.bodies.give_back(key, n);
        }
        self.edge
            .metrics
            .inflight_body_bytes
            .fetch_sub(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Reads `body` from `peer` (at most `max` bytes) under the edge's rate and budget limits.
///
/// Refusals: `payload_too_large` (413) past `max`, said before reading when the declared
/// length is already over; `request_timeout` (408) when a window of `body_window_secs`
/// carries less than `min_body_rate` bytes a second and the body has not ended (a windowed
/// rate: bytes sent early buy no time to stall later); `server_busy` (503) when the source's
/// share or the server's budget of body bytes in flight is spent (the honest agent retries).
pub async fn read(
    edge: &Arc<Edge>,
    peer: Option<IpAddr>,
    body: Body,
    max: usize,
) -> Result<BoundedBody, ApiError> {
    let too_large = || {
        edge.metrics.body_too_large.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {max} bytes"),
        )
    };
    let declared = http_body::Body::size_hint(&body).exact();
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let limits = &edge.limits;
    let window = Duration::from_secs(limits.body_window_secs);
    let per_window = limits.min_body_rate.saturating_mul(limits.body_window_secs);
    let source = peer.map(SourceKey::of);
    let mut out = BoundedBody {
        bytes: Vec::new(),
        _permit: None,
        source,
        edge: edge.clone(),
    };
    // The current window began at `mark.0`, when `mark.1` bytes had arrived.
    let mut mark = (Instant::now(), 0usize);
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(mark.0 + window, body.frame()).await {
            Err(_) => {
                edge.metrics.timed_out(Timeout::Body);
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "request body slower than {} bytes/s over {} s; closed",
                        limits.min_body_rate, limits.body_window_secs
                    ),
                ));
            }
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("request body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        if data.is_empty() {
            continue;
        }
        let n = data.len();
        if out.bytes.len().saturating_add(n) > max {
            return Err(too_large());
        }
        let permit = match edge.bodies.take(source, n) {
            Ok(p) => p,
            Err(spent) => {
                edge.metrics
                    .body_budget_exhausted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    ?spent,
                    budget = limits.max_inflight_body_bytes,
                    per_source = limits.max_body_bytes_per_source,
                    "request-body budget spent: a body was refused (server_busy)"
                );
                return Err(ApiError::new(
                    ErrorCode::ServerBusy,
                    match spent {
                        Spent::Share => {
                            "this address holds its share of request bodies; retry shortly"
                        }
                        Spent::Total => {
                            "the server holds its limit of request bodies; retry shortly"
                        }
                    },
                ));
            }
        };
        match &mut out._permit {
            Some(p) => p.merge(permit),
            slot @ None => *slot = Some(permit),
        }
        edge.metrics
            .inflight_body_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        // Growth is by doubling but never past `max`: a body's buffer is at most twice what
        // it carries, and never larger than its route allows.
        if out.bytes.capacity() < out.bytes.len() + n {
            let want = (out.bytes.len() + n)
                .max(out.bytes.capacity().saturating_mul(2))
                .min(max);
            out.bytes.reserve_exact(want - out.bytes.len());
        }
        out.bytes.extend_from_slice(&data);
        drop(data);
        let received = out.bytes.len();
        if (received - mark.1) as u64 >= per_window {
            mark = (Instant::now(), received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Limits;
    use http_body_util::StreamBody;
    use std::net::IpAddr;

    fn edge(budget: usize, rate: u64) -> Arc<Edge> {
        Arc::new(Edge::new(Limits {
            max_inflight_body_bytes: budget,
            max_body_bytes_per_source: budget,
            min_body_rate: rate,
            body_window_secs: 1,
            ..Limits::default()
        }))
    }

    fn chunks(parts: Vec<Vec<u8>>) -> Body {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(http_body::Frame::data(axum::body::Bytes::from(p))));
        Body::new(StreamBody::new(futures_lite_stream(frames)))
    }

    /// A stream of ready items (no extra crate: `tokio_stream` is not a dependency).
    fn futures_lite_stream<I: Iterator + Unpin>(it: I) -> IterStream<I> {
        IterStream(it)
    }

    struct IterStream<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }

    #[tokio::test]
    async fn one_byte_frames_cost_what_they_carry() {
        let e = edge(1 << 20, 1024);
        let parts: Vec<Vec<u8>> = (0..5000u32).map(|i| vec![(i % 251) as u8]).collect();
        let want: Vec<u8> = parts.concat();
        let b = read(&e, None, chunks(parts), 10_000).await.unwrap();
        assert_eq!(&*b, want.as_slice());
        assert!(b.bytes.capacity() <= 2 * want.len());
        assert_eq!(e.bodies.available(), (1 << 20) - 5000);
        assert_eq!(e.metrics.inflight_body_bytes.load(Ordering::Relaxed), 5000);
        drop(b);
        assert_eq!(e.bodies.available(), 1 << 20);
        assert_eq!(e.metrics.inflight_body_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn over_the_route_limit_is_413() {
        let e = edge(1 << 20, 1024);
        let err = read(&e, None, chunks(vec![vec![0; 600], vec![0; 600]]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        // Nothing stays taken from the budget after a refusal.
        assert_eq!(e.bodies.available(), 1 << 20);
        let err = read(&e, None, Body::from(vec![0u8; 1001]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn a_spent_budget_is_503_and_comes_back() {
        let e = edge(65_536, 1024);
        let held = read(&e, None, Body::from(vec![1u8; 60_000]), 100_000)
            .await
            .unwrap();
        let err = read(&e, None, Body::from(vec![2u8; 10_000]), 100_000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ServerBusy);
        drop(held);
        let ok = read(&e, None, Body::from(vec![2u8; 10_000]), 100_000)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_is_cut() {
        let e = edge(1 << 20, 100);
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<axum::body::Bytes>, std::io::Error>,
        >(1);
        let body = Body::new(StreamBody::new(ReceiverStream(rx)));
        let sender = tokio::spawn(async move {
            // 50 bytes a second: half the minimum rate.
            for _ in 0..100 {
                if tx
                    .send(Ok(http_body::Frame::data(axum::body::Bytes::from(vec![
                        0u8;
                        50
                    ]))))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let err = read(&e, None, body, 1 << 20).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::RequestTimeout);
        assert_eq!(e.metrics.timed_out_total(Timeout::Body), 1);
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_sent_early_buy_no_time_to_stall() {
        // 100 B/s over 1 s windows. A fast first megabyte, then silence: cut after one
        // window, not after 1 MB / 100 B/s.
        let e = edge(4 << 20, 100);
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<axum::body::Bytes>, std::io::Error>,
        >(1);
        let body = Body::new(StreamBody::new(ReceiverStream(rx)));
        let sender = tokio::spawn(async move {
            let _ = tx
                .send(Ok(http_body::Frame::data(axum::body::Bytes::from(
                    vec![0u8; 1 << 20],
                ))))
                .await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let started = Instant::now();
        let err = read(&e, None, body, 2 << 20).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::RequestTimeout);
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        sender.abort();
    }

    #[tokio::test]
    async fn one_source_holds_at_most_its_share() {
        let e = Arc::new(Edge::new(Limits {
            max_inflight_body_bytes: 1 << 20,
            max_body_bytes_per_source: 100_000,
            ..Limits::default()
        }));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held = read(&e, Some(a), Body::from(vec![1u8; 90_000]), 1 << 20)
            .await
            .unwrap();
        let err = read(&e, Some(a), Body::from(vec![1u8; 20_000]), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ServerBusy);
        assert!(err.message.contains("this address"));
        // Another source is served meanwhile.
        read(&e, Some(b), Body::from(vec![1u8; 90_000]), 1 << 20)
            .await
            .unwrap();
        drop(held);
        read(&e, Some(a), Body::from(vec![1u8; 90_000]), 1 << 20)
            .await
            .unwrap();
        assert_eq!(e.bodies.available(), 1 << 20);
        assert_eq!(e.bodies.shares.sources(), 0);
    }

    struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> futures_core::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
