//! Prometheus counters and the attest latency histogram, rendered by hand in the text
//! exposition format (no client crate: the label sets are small and known in advance).
//!
//! Every series is per role. Refusal reasons are the stable [`ErrorCode`] wire names, so a
//! dashboard survives message rewording (a policy's host check adds `host_unreachable`,
//! `host_quote_invalid` and `host_policy_denied`). Nothing here names an agent: `/metrics` is served
//! without authentication, like `/healthz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use verifier_core::proto::v1::{ErrorCode, Role};

use crate::store::PurgeCounts;

/// Upper bounds of the attest latency buckets, in milliseconds (`+Inf` is implied).
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// One role's counters. Shared between the role (which knows when a release happened or a
/// session was TERMINATED) and the HTTP layer (which times the whole handler).
#[derive(Debug, Default)]
pub struct RoleMetrics {
    attest_released: AtomicU64,
    /// Refused attestations by reason; a mutex, not atomics, since refusals are the rare
    /// path and the reasons are whatever [`ErrorCode`] grows to.
    attest_refused: Mutex<BTreeMap<String, u64>>,
    releases: AtomicU64,
    sessions_terminated: AtomicU64,
    registrations: AtomicU64,
    /// AKs pinned on the IAK path (an IAK certificate verified, no MakeCredential).
    iak_registrations: AtomicU64,
    /// Rows deleted by the periodic purge, per table in [`PurgeCounts::by_table`] order.
    purged: [AtomicU64; 4],
    /// Purge runs that failed (database error; the next run retries).
    purge_failures: AtomicU64,
    /// Cumulative counts are computed at render time; each slot is one bucket, the last
    /// is `+Inf`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl RoleMetrics {
    /// An attestation answered with a sealed half (fresh release or identical retry).
    pub fn attest_released(&self) {
        self.attest_released.fetch_add(1, Ordering::Relaxed);
    }

    /// An attestation refused with `code`.
    pub fn attest_refused(&self, code: ErrorCode) {
        let name = code_name(code);
        let mut m = self
            .attest_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(name).or_insert(0) += 1;
    }

    /// A release counted against the agent's bound (retries are not counted).
    pub fn release(&self, session_terminated: bool) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        if session_terminated {
            self.sessions_terminated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A registration answered with MakeCredential.
    pub fn registration(&self) {
        self.registrations.fetch_add(1, Ordering::Relaxed);
    }

    /// An IAK pinned on its certificate (no MakeCredential, no activation round).
    pub fn iak_registration(&self) {
        self.iak_registrations.fetch_add(1, Ordering::Relaxed);
    }

    /// A purge run deleted `counts`.
    pub fn purged(&self, counts: &PurgeCounts) {
        for (slot, (_, n)) in self.purged.iter().zip(counts.by_table()) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A purge run failed.
    pub fn purge_failed(&self) {
        self.purge_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The attest handler's wall time, body read to answer.
    pub fn observe_attest(&self, elapsed: Duration) {
        let ms = elapsed.as_millis();
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= u128::from(b))
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(b) = self.latency_buckets.get(slot) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The snake_case wire name of a code, as clients see it.
fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// Picks one counter of a role.
type Field = fn(&RoleMetrics) -> &AtomicU64;

/// Renders every role's metrics in the Prometheus text format (version 0.0.4).
pub fn render(roles: &[(Role, &RoleMetrics)]) -> String {
    let mut out = String::new();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    header(
        &mut out,
        "unlock_attestations_total",
        "counter",
        "Attestations answered, by role, result (released/refused) and refusal reason.",
    );
    for (role, m) in roles {
        let r = role.as_str();
        let _ = writeln!(
            out,
            "unlock_attestations_total{{role=\"{r}\",result=\"released\",reason=\"\"}} {}",
            load(&m.attest_released)
        );
        let refused = m
            .attest_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (reason, n) in refused {
            let _ = writeln!(
                out,
                "unlock_attestations_total{{role=\"{r}\",result=\"refused\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    let simple: [(&str, &str, Field); 5] = [
        (
            "unlock_releases_total",
            "Releases counted against an agent's bound (identical retries excluded).",
            |m| &m.releases,
        ),
        (
            "unlock_sessions_terminated_total",
            "Boot sessions that reached their release bound (TERMINATED).",
            |m| &m.sessions_terminated,
        ),
        (
            "unlock_registrations_total",
            "Registrations answered with MakeCredential.",
            |m| &m.registrations,
        ),
        (
            "unlock_iak_registrations_total",
            "AKs pinned on the IAK path: an IAK certificate verified, no MakeCredential.",
            |m| &m.iak_registrations,
        ),
        (
            "unlock_purge_failures_total",
            "Purge runs that failed (database error; the next run retries).",
            |m| &m.purge_failures,
        ),
    ];
    for (name, help, field) in simple {
        header(&mut out, name, "counter", help);
        for (role, m) in roles {
            let _ = writeln!(
                out,
                "{name}{{role=\"{}\"}} {}",
                role.as_str(),
                load(field(m))
            );
        }
    }

    let name = "unlock_purged_rows_total";
    header(
        &mut out,
        name,
        "counter",
        "Rows deleted by the periodic purge (expired or aged), by role and table.",
    );
    for (role, m) in roles {
        let tables = PurgeCounts::default().by_table();
        for (slot, (table, _)) in m.purged.iter().zip(tables) {
            let _ = writeln!(
                out,
                "{name}{{role=\"{}\",table=\"{table}\"}} {}",
                role.as_str(),
                load(slot)
            );
        }
    }

    let name = "unlock_attest_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Wall time of the attest handler, body read to answer.",
    );
    for (role, m) in roles {
        let r = role.as_str();
        let mut cumulative = 0u64;
        for (i, slot) in m.latency_buckets.iter().enumerate() {
            cumulative = cumulative.saturating_add(load(slot));
            let le = match LATENCY_BUCKETS_MS.get(i) {
                Some(ms) => format!("{}", Duration::from_millis(*ms).as_secs_f64()),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{role=\"{r}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = Duration::from_micros(load(&m.latency_sum_us)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum{{role=\"{r}\"}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{role=\"{r}\"}} {}",
            load(&m.latency_count)
        );
    }
    out
}

/// Renders the SQLite group-commit counters of each role that has them: requests per commit
/// is how many fsyncs the batching saves under load.
pub fn render_group_commit(roles: &[(Role, Option<(u64, u64)>)]) -> String {
    let mut out = String::new();
    type Pick = fn((u64, u64)) -> u64;
    let series: [(&str, &str, Pick); 2] = [
        (
            "unlock_db_requests_total",
            "Database requests (SQLite) run inside a group transaction.",
            |(requests, _)| requests,
        ),
        (
            "unlock_db_commits_total",
            "SQLite COMMITs (each one fsync) that made those requests durable.",
            |(_, commits)| commits,
        ),
    ];
    for (name, help, pick) in series {
        if roles.iter().all(|(_, s)| s.is_none()) {
            break;
        }
        header(&mut out, name, "counter", help);
        for (role, stats) in roles {
            if let Some(stats) = stats {
                let _ = writeln!(out, "{name}{{role=\"{}\"}} {}", role.as_str(), pick(*stats));
            }
        }
    }
    out
}

/// The `# HELP` and `# TYPE` lines of a series (shared by every renderer of `/metrics`).
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_counters_render_only_for_sqlite_roles() {
        let text = render_group_commit(&[(Role::Verifier, Some((10, 3))), (Role::Tenant, None)]);
        assert!(
            text.contains("unlock_db_requests_total{role=\"verifier\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("unlock_db_commits_total{role=\"verifier\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("tenant"), "{text}");
        assert_eq!(render_group_commit(&[(Role::Tenant, None)]), "");
    }

    #[test]
    fn histogram_is_cumulative_and_counters_render_per_role() {
        let m = RoleMetrics::default();
        m.observe_attest(Duration::from_micros(500));
        m.observe_attest(Duration::from_millis(30));
        m.observe_attest(Duration::from_secs(9));
        m.attest_refused(ErrorCode::PolicyDenied);
        m.attest_refused(ErrorCode::HostUnreachable);
        m.release(true);
        m.purged(&PurgeCounts {
            registrations: 5000,
            attempts: 7,
            ..PurgeCounts::default()
        });
        m.purged(&PurgeCounts {
            registrations: 1,
            ..PurgeCounts::default()
        });
        m.purge_failed();
        let text = render(&[(Role::Tenant, &m)]);
        assert!(
            text.contains(
                "unlock_purged_rows_total{role=\"tenant\",table=\"registrations\"} 5001\n"
            ),
            "{text}"
        );
        assert!(text.contains("unlock_purged_rows_total{role=\"tenant\",table=\"attempts\"} 7\n"));
        assert!(text.contains("unlock_purged_rows_total{role=\"tenant\",table=\"sessions\"} 0\n"));
        assert!(text.contains("unlock_purge_failures_total{role=\"tenant\"} 1\n"));
        assert!(
            text.contains(
                "unlock_attest_duration_seconds_bucket{role=\"tenant\",le=\"0.001\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("unlock_attest_duration_seconds_bucket{role=\"tenant\",le=\"0.02\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("unlock_attest_duration_seconds_bucket{role=\"tenant\",le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("unlock_attest_duration_seconds_bucket{role=\"tenant\",le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("unlock_attest_duration_seconds_bucket{role=\"tenant\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("unlock_attest_duration_seconds_count{role=\"tenant\"} 3\n"));
        assert!(text.contains(
            "unlock_attestations_total{role=\"tenant\",result=\"refused\",reason=\"policy_denied\"} 1\n"
        ));
        // A host check's refusal is its own reason (the provider, not the machine, failed).
        assert!(text.contains(
            "unlock_attestations_total{role=\"tenant\",result=\"refused\",reason=\"host_unreachable\"} 1\n"
        ));
        assert!(text.contains("unlock_sessions_terminated_total{role=\"tenant\"} 1\n"));
        assert!(text.contains("unlock_releases_total{role=\"tenant\"} 1\n"));
    }
}
