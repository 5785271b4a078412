//! The server's edge: everything a stranger on the network can make the server hold —
//! connections, time, body bytes in memory, and the work of unauthenticated requests — is
//! bounded here, before a request reaches a role.
//!
//! - [`accept`]: the accept loop (TLS or plain), a cap on connections in all and per source
//!   address, a per-connection watchdog (handshake, request head, idle keep-alive), back-off
//!   on accept errors such as `EMFILE` with rate-limited logging.
//! - [`body`]: request bodies read into bounded buffers, against a per-route limit, a
//!   minimum data rate and a server-wide budget of body bytes in flight.
//! - [`throttle`]: token buckets for unauthenticated failures, per source address and
//!   globally; never per agent, so a stranger who knows a machine's public EK cannot spend
//!   that machine's budget.
//!
//! Every limit has a default in [`Limits`], is configurable (`[limits]` in the config file),
//! and every rejection is counted in [`NetMetrics`] (rendered on `/metrics`).

pub mod accept;
pub mod body;
pub mod throttle;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// The peer of a request, put into its extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// A source for limits (IPv4 address or IPv6 /64): one definition, in verifier-core.
pub use verifier_core::source::SourceKey;

/// The edge's limits. Defaults suit a fleet server with `LimitNOFILE=65536` (the shipped
/// systemd unit); the connection cap is lowered at start to fit the descriptor limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Most connections open at once from one source (IPv4 address or IPv6 /64).
    pub max_connections_per_source: usize,
    /// Descriptors kept free of connections (databases, TLS files, blocking threads).
    pub reserved_descriptors: usize,
    /// Longest TLS handshake, seconds.
    pub handshake_timeout_secs: u64,
    /// Longest wait for a connection's first request head, seconds.
    pub header_timeout_secs: u64,
    /// Longest wait, after an answer, for the next request head on a kept-alive connection,
    /// seconds (also bounds a client that does not read its answer).
    pub idle_timeout_secs: u64,
    /// The window of the minimum body rate, seconds: every window must carry
    /// `min_body_rate` × window bytes, or the body must end within it.
    pub body_window_secs: u64,
    /// Slowest accepted request body, bytes per second, over every window.
    pub min_body_rate: u64,
    /// Most request-body bytes held in memory across all connections.
    pub max_inflight_body_bytes: usize,
    /// Most request-body bytes one source (IPv4 address or IPv6 /64) may hold at once.
    pub max_body_bytes_per_source: usize,
    /// Unauthenticated failures one source may have in a burst.
    pub source_failure_burst: u32,
    /// Unauthenticated failures per second one source earns back.
    pub source_failure_refill_per_sec: u32,
    /// Unauthenticated failures all sources together may have in a burst.
    pub global_failure_burst: u32,
    /// Unauthenticated failures per second all sources together earn back.
    pub global_failure_refill_per_sec: u32,
    /// Most sources the failure throttle remembers (older full buckets are dropped first).
    pub max_tracked_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_connections_per_source: 512,
            reserved_descriptors: 128,
            handshake_timeout_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 30,
            body_window_secs: 10,
            min_body_rate: 4 * 1024,
            max_inflight_body_bytes: 64 << 20,
            max_body_bytes_per_source: 8 << 20,
            source_failure_burst: 20,
            source_failure_refill_per_sec: 1,
            global_failure_burst: 2000,
            global_failure_refill_per_sec: 200,
            max_tracked_sources: 65_536,
        }
    }
}

impl Limits {
    /// Checks that every limit can work; the message names the field.
    pub fn validate(&self) -> Result<(), &'static str> {
        let checks: [(bool, &'static str); 11] = [
            (
                self.max_connections >= 1,
                "limits.max_connections must be at least 1",
            ),
            (
                self.max_connections_per_source >= 1,
                "limits.max_connections_per_source must be at least 1",
            ),
            (
                (1..=300).contains(&self.handshake_timeout_secs),
                "limits.handshake_timeout_secs must be between 1 and 300",
            ),
            (
                (1..=300).contains(&self.header_timeout_secs),
                "limits.header_timeout_secs must be between 1 and 300",
            ),
            (
                (1..=3600).contains(&self.idle_timeout_secs),
                "limits.idle_timeout_secs must be between 1 and 3600",
            ),
            (
                (1..=300).contains(&self.body_window_secs),
                "limits.body_window_secs must be between 1 and 300",
            ),
            (
                self.max_body_bytes_per_source >= 65_536
                    && self.max_body_bytes_per_source <= self.max_inflight_body_bytes,
                "limits.max_body_bytes_per_source must be between 65536 and max_inflight_body_bytes",
            ),
            (
                self.min_body_rate >= 1,
                "limits.min_body_rate must be at least 1",
            ),
            (
                self.max_inflight_body_bytes >= 65_536
                    && u32::try_from(self.max_inflight_body_bytes).is_ok(),
                "limits.max_inflight_body_bytes must be between 65536 and 4294967295",
            ),
            (
                self.source_failure_burst >= 1
                    && self.global_failure_burst >= 1
                    && self.source_failure_refill_per_sec >= 1
                    && self.global_failure_refill_per_sec >= 1,
                "limits.*_failure_burst and limits.*_failure_refill_per_sec must be at least 1",
            ),
            (
                self.max_tracked_sources >= 1,
                "limits.max_tracked_sources must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg),
            None => Ok(()),
        }
    }

    /// Checks the limits against the largest body a route accepts: the budgets must hold
    /// at least one such body, or every large request would be refused forever.
    pub fn validate_for_body(&self, max_body_bytes: usize) -> Result<(), &'static str> {
        if self.max_body_bytes_per_source < max_body_bytes {
            return Err("limits.max_body_bytes_per_source must be at least max_body_bytes");
        }
        Ok(())
    }

    /// [`Self::handshake_timeout_secs`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// [`Self::header_timeout_secs`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// [`Self::idle_timeout_secs`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The connection cap that fits `open_files` descriptors (`None`: unknown), and whether
    /// it had to be lowered.
    pub fn fitted_max_connections(&self, open_files: Option<u64>) -> (usize, bool) {
        let Some(n) = open_files else {
            return (self.max_connections, false);
        };
        let usable = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.reserved_descriptors)
            .max(1);
        if usable < self.max_connections {
            (usable, true)
        } else {
            (self.max_connections, false)
        }
    }
}

/// The soft descriptor limit of this process, read from `/proc/self/limits` (no libc call:
/// the crate forbids unsafe code). `None` when it cannot be read or is unlimited.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Counters of the edge, on `/metrics`.
#[derive(Debug, Default)]
pub struct NetMetrics {
    open: AtomicU64,
    accepted: AtomicU64,
    rejected_cap: AtomicU64,
    rejected_source: AtomicU64,
    timed_out_handshake: AtomicU64,
    timed_out_header: AtomicU64,
    timed_out_idle: AtomicU64,
    timed_out_body: AtomicU64,
    accept_errors: AtomicU64,
    body_too_large: AtomicU64,
    body_budget_exhausted: AtomicU64,
    throttled: AtomicU64,
    inflight_body_bytes: AtomicU64,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The TLS handshake did not finish.
    Handshake,
    /// The first request head did not arrive.
    Header,
    /// No next request (or the answer was not read) after an answer.
    Idle,
    /// A request body was slower than the minimum rate.
    Body,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl NetMetrics {
    fn opened(&self) {
        bump(&self.accepted);
        bump(&self.open);
    }
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
    fn timeout_counter(&self, t: Timeout) -> &AtomicU64 {
        match t {
            Timeout::Handshake => &self.timed_out_handshake,
            Timeout::Header => &self.timed_out_header,
            Timeout::Idle => &self.timed_out_idle,
            Timeout::Body => &self.timed_out_body,
        }
    }

    fn timed_out(&self, t: Timeout) {
        bump(self.timeout_counter(t));
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed for a timeout of kind `t`, in all.
    pub fn timed_out_total(&self, t: Timeout) -> u64 {
        self.timeout_counter(t).load(Ordering::Relaxed)
    }

    /// Requests refused by the unauthenticated-failure throttle, in all.
    pub fn throttled_total(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Request-body bytes held in memory now.
    pub fn inflight_body_bytes(&self) -> u64 {
        self.inflight_body_bytes.load(Ordering::Relaxed)
    }

    /// Connections closed at accept for the total and the per-source cap, in all.
    pub fn rejected_total(&self) -> (u64, u64) {
        (
            self.rejected_cap.load(Ordering::Relaxed),
            self.rejected_source.load(Ordering::Relaxed),
        )
    }

    /// A request refused by the unauthenticated-failure throttle.
    pub fn throttled(&self) {
        bump(&self.throttled);
    }

    /// Renders the edge's series in the Prometheus text format.
    pub fn render(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            crate::metrics::header(&mut out, name, kind, help);
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        one(
            "unlock_connections_open",
            "gauge",
            "Connections open now.",
            &[("", l(&self.open))],
        );
        one(
            "unlock_connections_accepted_total",
            "counter",
            "Connections accepted.",
            &[("", l(&self.accepted))],
        );
        one(
            "unlock_connections_rejected_total",
            "counter",
            "Connections closed at accept, by the limit they hit.",
            &[
                ("{limit=\"total\"}", l(&self.rejected_cap)),
                ("{limit=\"per_source\"}", l(&self.rejected_source)),
            ],
        );
        one(
            "unlock_connections_timed_out_total",
            "counter",
            "Connections closed by the server for a timeout, by phase.",
            &[
                ("{phase=\"handshake\"}", l(&self.timed_out_handshake)),
                ("{phase=\"header\"}", l(&self.timed_out_header)),
                ("{phase=\"idle\"}", l(&self.timed_out_idle)),
                ("{phase=\"body\"}", l(&self.timed_out_body)),
            ],
        );
        one(
            "unlock_accept_errors_total",
            "counter",
            "accept() errors (EMFILE, ENFILE, ...), each followed by a back-off.",
            &[("", l(&self.accept_errors))],
        );
        one(
            "unlock_request_bodies_refused_total",
            "counter",
            "Request bodies refused, by reason.",
            &[
                ("{reason=\"too_large\"}", l(&self.body_too_large)),
                ("{reason=\"budget\"}", l(&self.body_budget_exhausted)),
            ],
        );
        one(
            "unlock_request_body_bytes_in_flight",
            "gauge",
            "Request-body bytes held in memory now.",
            &[("", l(&self.inflight_body_bytes))],
        );
        one(
            "unlock_throttled_total",
            "counter",
            "Requests refused because their source (or all sources) spent the unauthenticated-failure budget.",
            &[("", l(&self.throttled))],
        );
        out
    }
}

/// The edge of one server process: its limits, counters, body budget and throttle.
#[derive(Debug)]
pub struct Edge {
    /// The limits in force (the connection cap already fitted to the descriptor limit).
    pub limits: Limits,
    /// Counters.
    pub metrics: NetMetrics,
    /// Body bytes in flight.
    pub bodies: body::Budget,
    /// Unauthenticated failures.
    pub throttle: throttle::Throttle,
}

impl Edge {
    /// An edge enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            bodies: body::Budget::new(
                limits.max_inflight_body_bytes,
                limits.max_body_bytes_per_source,
            ),
            throttle: throttle::Throttle::new(&limits),
            metrics: NetMetrics::default(),
            limits,
        }
    }
}

impl Default for Edge {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_fits_the_descriptor_limit() {
        let l = Limits::default();
        assert_eq!(l.fitted_max_connections(None), (8192, false));
        assert_eq!(l.fitted_max_connections(Some(1024)), (1024 - 128, true));
        assert_eq!(l.fitted_max_connections(Some(1 << 20)), (8192, false));
        assert_eq!(l.fitted_max_connections(Some(10)), (1, true));
    }

    #[test]
    fn invalid_limits_are_named() {
        let l = Limits {
            idle_timeout_secs: 0,
            ..Limits::default()
        };
        assert_eq!(
            l.validate(),
            Err("limits.idle_timeout_secs must be between 1 and 3600")
        );
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn descriptor_limit_is_the_one_a_child_inherits() {
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -n"])
            .output()
            .unwrap();
        let shell = String::from_utf8(out.stdout).unwrap();
        let expected = shell.trim().parse::<u64>().ok();
        assert_eq!(open_files_limit(), expected, "shell says {shell:?}");
    }
}
