//! Expiry and purge: what a role's database may forget, and when.
//!
//! Registrations, challenges and the attempt log are written for every boot (and for every
//! request of a flood); without a purge they only grow. [`Store::purge`] deletes what no
//! decision can need any more, written once over [`Conn`] like every other decision so it
//! runs on both backends.
//!
//! It never holds a lock for long. Rows go in batches of at most [`PurgePolicy::batch`]
//! (one short statement, one write each): on SQLite every batch is an ordinary request of
//! the group-commit write path, so it holds the single writer for one statement and a
//! release queued behind it waits for that batch only, never the whole purge; on PostgreSQL
//! each batch is its own transaction that locks just the rows it deletes, picks them with
//! `FOR UPDATE SKIP LOCKED` (a row a release holds is left for the next run, nobody waits),
//! and never touches an enrollment row, so the agent's lock of the unlock path is never
//! taken or waited for. A run stops after [`PurgePolicy::max_rows`] rows per table (the
//! caller runs again soon when [`PurgeCounts::more`] says so).
//!
//! What stays, and why (each point is what the release decision, `release_in`, or the
//! rate limit reads):
//!
//! - **Registrations** are kept until `expires_at + expiry_grace`. `activate` refuses an
//!   expired one anyway; the grace only covers replicas whose clocks differ.
//! - **Unused challenges** likewise until `expires_at + expiry_grace`: past expiry the
//!   release refuses them (`ChallengeExpired`), and once gone it refuses them as unknown;
//!   either way nothing is released. The grace keeps a replica whose clock runs behind from
//!   seeing its still-valid challenge vanish.
//! - **Used challenges** hold the sealed answer that an identical retry (byte-identical
//!   evidence, an HTTP retry after a lost answer) gets again, and their `used_at` makes any
//!   other evidence a `NonceReused` refusal. They are kept until
//!   `expires_at + used_challenge_retention`. After that a retry, or a replay, finds no
//!   challenge and is refused as unknown: still a refusal, never a release, so forgetting a
//!   nonce can not make it usable again.
//! - **Boot sessions**: the latest session of each agent is never deleted. The release
//!   reads `MAX(reset_count)` to refuse a quote whose resetCount went backwards (a replay
//!   of an old boot) and the latest session's state to refuse a TERMINATED boot; the purge
//!   only deletes a session that has a later one, so that maximum and that state never
//!   change. An older session is deleted once its last release is older than
//!   `session_retention`; a quote of that old boot is still refused (its resetCount is
//!   behind the latest). The boot budget (`boots_used`) is on the enrollment, not counted
//!   from sessions, so it is not affected either.
//! - **Attempts** (the failed-attempt log, and the release rows the rate limit counts
//!   from) are deleted when older than `attempt_retention`, and beyond the newest
//!   `attempts_per_agent` of each agent — but never a row younger than
//!   `attempt_protect` (at least the rate-limit window plus the clock grace): the rate
//!   limit counts refusals in that window since the agent's last release. Deleting an
//!   older release row cannot raise that count: every refusal logged before it is older
//!   than it, so outside the window too.
//!
//! Enrollments, activated AKs and named policies are operator state and never purged.

use super::db::{args, Dialect};
use super::{Store, StoreError};

/// Ages after which rows are deleted, in seconds, and the batch sizes. See the module
/// documentation for what each protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePolicy {
    /// Registrations and unused challenges are deleted this long after `expires_at`
    /// (covers clock differences between replicas).
    pub expiry_grace: i64,
    /// Used challenges (the stored answer of an identical retry) are deleted this long
    /// after `expires_at`; never less than `expiry_grace`.
    pub used_challenge_retention: i64,
    /// Attempts older than this are deleted.
    pub attempt_retention: i64,
    /// Beyond the newest this many attempts of an agent, older ones are deleted (0: no cap).
    pub attempts_per_agent: u32,
    /// Attempts younger than this are never deleted, whatever the retention or cap: the
    /// rate limit reads them. At least the rate-limit window plus `expiry_grace`.
    pub attempt_protect: i64,
    /// A boot session that is not its agent's latest is deleted once its last release is
    /// older than this.
    pub session_retention: i64,
    /// Most rows one statement (one write, one transaction) deletes.
    pub batch: u32,
    /// Most rows deleted from one table in one run.
    pub max_rows: u64,
}

impl Default for PurgePolicy {
    /// One hour for a retry's stored answer, a week of attempts (at most 1000 per agent),
    /// 30 days of old boot sessions, five minutes of clock grace, batches of 500.
    fn default() -> Self {
        Self {
            expiry_grace: 300,
            used_challenge_retention: 3600,
            attempt_retention: 7 * 86_400,
            attempts_per_agent: 1000,
            attempt_protect: 600,
            session_retention: 30 * 86_400,
            batch: 500,
            max_rows: 100_000,
        }
    }
}

/// Rows deleted by one purge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Expired registrations.
    pub registrations: u64,
    /// Expired challenges (unused, and used ones past their retention).
    pub challenges: u64,
    /// Attempts past the retention or the per-agent cap.
    pub attempts: u64,
    /// Boot sessions that were not their agent's latest, past the retention.
    pub sessions: u64,
    /// A table hit `max_rows`: more is left for the next run.
    pub more: bool,
}

impl PurgeCounts {
    /// Every row deleted.
    pub fn total(&self) -> u64 {
        self.registrations
            .saturating_add(self.challenges)
            .saturating_add(self.attempts)
            .saturating_add(self.sessions)
    }

    /// `(table, rows)` for each table, for logs and metrics.
    pub fn by_table(&self) -> [(&'static str, u64); 4] {
        [
            ("registrations", self.registrations),
            ("challenges", self.challenges),
            ("attempts", self.attempts),
            ("sessions", self.sessions),
        ]
    }
}

impl Store {
    /// Deletes what no decision needs any more (see the module documentation), as of `now`
    /// (seconds since the epoch), in batches that each hold the database's locks briefly.
    /// Safe to run at any time, concurrently with any request and with other replicas'
    /// purges.
    pub fn purge(&self, now: i64, p: &PurgePolicy) -> Result<PurgeCounts, StoreError> {
        let grace = p.expiry_grace.max(0);
        let used_retention = p.used_challenge_retention.max(grace);
        let attempts_cut = now
            .saturating_sub(p.attempt_retention.max(0))
            .min(now.saturating_sub(p.attempt_protect.max(0)));
        let protect_cut = now.saturating_sub(p.attempt_protect.max(0));
        let sessions_cut = now.saturating_sub(p.session_retention.max(0));
        let batch = i64::from(p.batch.max(1));
        let mut counts = PurgeCounts::default();
        let mut more = false;

        let skip = self.dialect().skip_locked();

        self.delete_batches(
            &format!(
                "DELETE FROM registrations WHERE registration_id IN (
                    SELECT registration_id FROM registrations WHERE expires_at < ?1
                    LIMIT ?2{skip})"
            ),
            now.saturating_sub(grace),
            batch,
            p.max_rows,
            &mut counts.registrations,
            &mut more,
        )?;
        // Used challenges past their retention, then unused ones past the grace.
        self.delete_batches(
            &format!(
                "DELETE FROM challenges WHERE challenge_id IN (
                    SELECT challenge_id FROM challenges WHERE expires_at < ?1
                    LIMIT ?2{skip})"
            ),
            now.saturating_sub(used_retention),
            batch,
            p.max_rows,
            &mut counts.challenges,
            &mut more,
        )?;
        self.delete_batches(
            &format!(
                "DELETE FROM challenges WHERE challenge_id IN (
                    SELECT challenge_id FROM challenges WHERE expires_at < ?1 AND used_at IS NULL
                    LIMIT ?2{skip})"
            ),
            now.saturating_sub(grace),
            batch,
            p.max_rows,
            &mut counts.challenges,
            &mut more,
        )?;
        self.delete_batches(
            &format!(
                "DELETE FROM attempts WHERE id IN (
                    SELECT id FROM attempts WHERE at < ?1 LIMIT ?2{skip})"
            ),
            attempts_cut,
            batch,
            p.max_rows,
            &mut counts.attempts,
            &mut more,
        )?;
        if p.attempts_per_agent > 0 {
            // Agents over the cap, and for each the id of its N-th newest attempt: older
            // ones (outside the protected window) go. Found on a reader, outside the writer.
            let cap = i64::from(p.attempts_per_agent);
            let over: Vec<(String, i64)> = self.read(|c| {
                let agents = c.query(
                    "SELECT agent_id FROM attempts GROUP BY agent_id HAVING COUNT(*) > ?1",
                    args![cap],
                )?;
                let mut out = Vec::with_capacity(agents.len());
                for row in agents {
                    let agent = row.text(0, "attempts")?;
                    let keep_from = c
                        .query_one(
                            "SELECT id FROM attempts WHERE agent_id = ?1
                             ORDER BY id DESC LIMIT 1 OFFSET ?2",
                            args![agent.as_str(), cap - 1],
                        )?
                        .opt_int(0, "attempts")?;
                    if let Some(id) = keep_from {
                        out.push((agent, id));
                    }
                }
                Ok(out)
            })?;
            let sql = format!(
                "DELETE FROM attempts WHERE id IN (
                    SELECT id FROM attempts WHERE agent_id = ?1 AND id < ?2 AND at < ?3
                    LIMIT ?4{skip})"
            );
            for (agent, keep_from) in over {
                if counts.attempts >= p.max_rows {
                    more = true;
                    break;
                }
                loop {
                    let n = self.write(|c| {
                        c.execute(&sql, args![agent.as_str(), keep_from, protect_cut, batch])
                    })?;
                    counts.attempts = counts.attempts.saturating_add(n);
                    if n < u64::try_from(batch).unwrap_or(u64::MAX) {
                        break;
                    }
                    if counts.attempts >= p.max_rows {
                        more = true;
                        break;
                    }
                }
            }
        }
        self.delete_batches(
            &format!(
                "DELETE FROM sessions WHERE (agent_id, reset_count) IN (
                    SELECT s.agent_id, s.reset_count FROM sessions s
                    WHERE s.last_release_at < ?1
                      AND EXISTS (SELECT 1 FROM sessions n
                                  WHERE n.agent_id = s.agent_id AND n.reset_count > s.reset_count)
                    LIMIT ?2{skip})"
            ),
            sessions_cut,
            batch,
            p.max_rows,
            &mut counts.sessions,
            &mut more,
        )?;
        counts.more = more;
        Ok(counts)
    }

    /// Runs the delete `sql` (`?1` the cut-off, `?2` the batch size) one batch per write
    /// until a batch comes back short or `max_rows` rows are gone from the table.
    fn delete_batches(
        &self,
        sql: &str,
        cut: i64,
        batch: i64,
        max_rows: u64,
        total: &mut u64,
        more: &mut bool,
    ) -> Result<(), StoreError> {
        let full = u64::try_from(batch).unwrap_or(u64::MAX);
        loop {
            if *total >= max_rows {
                *more = true;
                return Ok(());
            }
            let n = self.write(|c| c.execute(sql, args![cut, batch]))?;
            *total = total.saturating_add(n);
            if n < full {
                return Ok(());
            }
        }
    }

    fn dialect(&self) -> Dialect {
        match &self.backend {
            super::Backend::Sqlite(_) => Dialect::Sqlite,
            super::Backend::Postgres(_) => Dialect::Postgres,
        }
    }
}
