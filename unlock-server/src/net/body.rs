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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use verifier_core::proto::v1::ErrorCode;

use super::{Edge, Timeout};
use crate::error::ApiError;

/// The server-wide budget of request-body bytes held in memory.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Bytes not taken now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

/// A body in memory, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct BoundedBody {
    bytes: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
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
        let n = u64::try_from(self.bytes.len()).unwrap_or(u64::MAX);
        self.edge
            .metrics
            .inflight_body_bytes
            .fetch_sub(n, Ordering::Relaxed);
    }
}

/// Reads `body` (at most `max` bytes) under the edge's rate and budget limits.
///
/// Refusals: `payload_too_large` (413) past `max`, said before reading when the declared
/// length is already over; `request_timeout` (408) when the body is slower than
/// `min_body_rate` after `body_grace_secs`; `server_busy` (503) when the budget of body
/// bytes in flight is spent (the client retries later; the honest agent does).
pub async fn read(edge: &Arc<Edge>, body: Body, max: usize) -> Result<BoundedBody, ApiError> {
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
    let started = Instant::now();
    let grace = Duration::from_secs(limits.body_grace_secs);
    let mut out = BoundedBody {
        bytes: Vec::new(),
        _permit: None,
        edge: edge.clone(),
    };
    let mut body = body;
    loop {
        // The body must have delivered `min_body_rate` bytes per second since the grace
        // ended: the next byte is due at this deadline.
        let due = (out.bytes.len() as u64).saturating_add(1) / limits.min_body_rate;
        let deadline = started + grace + Duration::from_secs(due);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                edge.metrics.timed_out(Timeout::Body);
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "request body slower than {} bytes/s (after {} s); closed",
                        limits.min_body_rate, limits.body_grace_secs
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
        let Ok(permit) = u32::try_from(n)
            .ok()
            .and_then(|n| edge.bodies.sem.clone().try_acquire_many_owned(n).ok())
            .ok_or(())
        else {
            edge.metrics
                .body_budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                budget = limits.max_inflight_body_bytes,
                "request-body budget spent: a body was refused (server_busy)"
            );
            return Err(ApiError::new(
                ErrorCode::ServerBusy,
                "the server holds its limit of request bodies; retry shortly",
            ));
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Limits;
    use http_body_util::StreamBody;

    fn edge(budget: usize, rate: u64) -> Arc<Edge> {
        Arc::new(Edge::new(Limits {
            max_inflight_body_bytes: budget,
            min_body_rate: rate,
            body_grace_secs: 1,
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
        let b = read(&e, chunks(parts), 10_000).await.unwrap();
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
        let err = read(&e, chunks(vec![vec![0; 600], vec![0; 600]]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        // Nothing stays taken from the budget after a refusal.
        assert_eq!(e.bodies.available(), 1 << 20);
        let err = read(&e, Body::from(vec![0u8; 1001]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn a_spent_budget_is_503_and_comes_back() {
        let e = edge(65_536, 1024);
        let held = read(&e, Body::from(vec![1u8; 60_000]), 100_000)
            .await
            .unwrap();
        let err = read(&e, Body::from(vec![2u8; 10_000]), 100_000)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ServerBusy);
        drop(held);
        let ok = read(&e, Body::from(vec![2u8; 10_000]), 100_000)
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
        let err = read(&e, body, 1 << 20).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::RequestTimeout);
        assert_eq!(e.metrics.timed_out_total(Timeout::Body), 1);
        sender.abort();
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
