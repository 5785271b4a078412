//! The periodic purge: every role's database forgets what no decision needs any more
//! (expired registrations and challenges, aged attempts, old boot sessions; what is kept and
//! why is in `store/purge.rs`).
//!
//! One background task runs [`Store::purge`](crate::store::Store::purge) for each role on the
//! blocking pool, shortly after start (so a restart cleans up what piled up before it) and
//! then every [`PurgeSettings::interval`]; sooner again while a run stopped at its per-run
//! cap. The purge deletes in short batches, so it never holds the unlock path's locks for
//! more than one small statement. With several replicas on one PostgreSQL database each
//! runs it; they skip each other's rows instead of waiting.

use std::sync::Arc;
use std::time::Duration;

use crate::role::{unix_now, RoleService, FAILURE_WINDOW_SECS};
use crate::store::{PurgeCounts, PurgePolicy, StoreError};

/// How soon the next run starts after one that stopped at its per-run cap.
const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// When the purge runs and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeSettings {
    /// Time between runs; zero switches the purge off.
    pub interval: Duration,
    /// Delay of the first run after start.
    pub first_run: Duration,
    /// Attempts (the failed-attempt log) are kept this long (never less than the rate-limit
    /// window, which reads them).
    pub attempt_retention: Duration,
    /// Beyond the newest this many attempts of an agent, older ones are deleted (those in
    /// the rate-limit window never); 0: no cap.
    pub attempts_per_agent: u32,
    /// A boot session that is not its agent's latest is kept this long after its last
    /// release (the latest is always kept: the resetCount check needs it).
    pub session_retention: Duration,
    /// A used challenge, holding the answer an identical retry gets again, is kept this long
    /// after it expired.
    pub used_challenge_retention: Duration,
    /// Registrations and unused challenges are deleted this long after they expired (and
    /// the rate-limit window is protected this much longer): room for replicas' clocks to
    /// differ.
    pub expiry_grace: Duration,
}

impl Default for PurgeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            first_run: Duration::from_secs(10),
            attempt_retention: Duration::from_secs(7 * 86_400),
            attempts_per_agent: 1000,
            session_retention: Duration::from_secs(30 * 86_400),
            used_challenge_retention: Duration::from_secs(3600),
            expiry_grace: Duration::from_secs(300),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl PurgeSettings {
    /// The store's policy for these settings. Attempts younger than the rate-limit window
    /// plus the grace are protected whatever the retention says.
    pub fn policy(&self) -> PurgePolicy {
        let grace = secs(self.expiry_grace);
        PurgePolicy {
            expiry_grace: grace,
            used_challenge_retention: secs(self.used_challenge_retention),
            attempt_retention: secs(self.attempt_retention),
            attempts_per_agent: self.attempts_per_agent,
            attempt_protect: FAILURE_WINDOW_SECS.saturating_add(grace),
            session_retention: secs(self.session_retention),
            ..PurgePolicy::default()
        }
    }
}

/// One purge of `role` as of `now`: counted in the role's metrics, logged at info when
/// something was deleted, at error when it failed.
pub fn run_once(
    role: &RoleService,
    policy: &PurgePolicy,
    now: i64,
) -> Result<PurgeCounts, StoreError> {
    let started = std::time::Instant::now();
    match role.store().purge(now, policy) {
        Ok(c) => {
            role.metrics().purged(&c);
            if c.total() > 0 {
                tracing::info!(
                    role = role.role().as_str(),
                    registrations = c.registrations,
                    challenges = c.challenges,
                    attempts = c.attempts,
                    sessions = c.sessions,
                    more = c.more,
                    ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "purged expired rows"
                );
            }
            Ok(c)
        }
        Err(e) => {
            role.metrics().purge_failed();
            tracing::error!(role = role.role().as_str(), error = %e, "purge failed; the next run retries");
            Err(e)
        }
    }
}

/// Starts the purge of `roles` (nothing to do for none, or when the interval is zero).
/// Runs until the runtime shuts down; each run is on the blocking pool.
pub fn spawn(roles: Vec<Arc<RoleService>>, settings: PurgeSettings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if roles.is_empty() || settings.interval.is_zero() {
            return;
        }
        let policy = settings.policy();
        let mut wait = settings.first_run;
        loop {
            tokio::time::sleep(wait).await;
            let mut more = false;
            for role in &roles {
                let role = role.clone();
                let run = tokio::task::spawn_blocking(move || run_once(&role, &policy, unix_now()));
                match run.await {
                    Ok(Ok(c)) => more |= c.more,
                    Ok(Err(_)) => {}
                    Err(e) => tracing::error!(error = %e, "purge task ended abnormally"),
                }
            }
            wait = if more {
                BACKLOG_PAUSE
            } else {
                settings.interval
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use verifier_core::ekcert::TrustStore;
    use verifier_core::keysplit::MasterKey;
    use verifier_core::proto::v1::Role;

    use super::*;
    use crate::role::RoleSettings;
    use crate::store::{Registration, Store};

    fn role() -> Arc<RoleService> {
        Arc::new(RoleService::new(
            Role::Verifier,
            Store::open_in_memory().unwrap(),
            MasterKey::generate().unwrap(),
            RoleSettings {
                ek_trust: Arc::new(TrustStore::new()),
                iak_trust: Arc::new(TrustStore::new()),
                allow_ek_without_cert: true,
                ek_cert_hook: None,
                challenge_ttl_secs: 60,
                registration_ttl_secs: 120,
            },
        ))
    }

    #[test]
    fn the_policy_always_protects_the_rate_limit_window() {
        let p = PurgeSettings {
            attempt_retention: Duration::ZERO,
            expiry_grace: Duration::from_secs(7),
            ..PurgeSettings::default()
        }
        .policy();
        assert_eq!(p.attempt_protect, FAILURE_WINDOW_SECS + 7);
        assert_eq!(p.attempt_retention, 0);
        assert!(PurgeSettings::default().policy().used_challenge_retention >= 3600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_purge_runs_soon_after_start_and_counts_in_metrics() {
        let role = role();
        for i in 0..1200 {
            role.store()
                .insert_registration(&Registration {
                    registration_id: format!("r{i}"),
                    agent_id: "aa00".into(),
                    ak_pub: vec![1],
                    ak_name: vec![2],
                    secret_wrapped: vec![3],
                    expires_at: 0,
                })
                .unwrap();
        }
        let task = spawn(
            vec![role.clone()],
            PurgeSettings {
                first_run: Duration::from_millis(10),
                interval: Duration::from_secs(3600),
                ..PurgeSettings::default()
            },
        );
        let metric = "unlock_purged_rows_total{role=\"verifier\",table=\"registrations\"} 1200\n";
        let mut text = String::new();
        for _ in 0..500 {
            text = crate::metrics::render(&[(role.role(), role.metrics())]);
            if text.contains(metric) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.contains(metric), "{text}");
        assert_eq!(
            role.store()
                .purge(unix_now(), &PurgePolicy::default())
                .unwrap(),
            PurgeCounts::default()
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_zero_interval_switches_the_purge_off() {
        let task = spawn(
            vec![role()],
            PurgeSettings {
                interval: Duration::ZERO,
                ..PurgeSettings::default()
            },
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
