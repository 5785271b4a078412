//! Durable state of one role (verifier or tenant): enrollments, registrar state, challenges,
//! boot sessions and the attempt log, in SQLite (embedded default) or PostgreSQL (a fleet of
//! replicas), chosen by the database URL.
//!
//! Every decision is written once, against the small SQL surface of [`db::Conn`], and runs
//! unchanged on both backends. The release decision is one transaction that first takes the
//! agent's lock: on SQLite the database's single writer (`BEGIN IMMEDIATE`), on PostgreSQL
//! the agent's enrollment row (`SELECT ... FOR UPDATE`, READ COMMITTED). Either way the
//! checks (nonce unused, session not TERMINATED, resetCount not behind, boot budget left) and
//! the writes that consume a release never interleave with another request's for the same
//! agent, in this process or any other replica, and the commit is durable (SQLite
//! `synchronous=FULL`, PostgreSQL `synchronous_commit=on`) before the answer leaves.
//!
//! [`Store::purge`] (`purge.rs`) forgets what no decision needs any more (expired
//! registrations and challenges, aged attempts and old boot sessions), in short batches that
//! never take an agent's lock.

mod admission;
mod audit;
mod dashboard;
pub(crate) mod db;
mod iak;
mod pending;
mod pg;
mod policies;
mod purge;
mod sqlite;
mod tee;
mod types;
mod usage;

use std::path::{Path, PathBuf};

use db::{args, Conn, Row};
use verifier_core::proto::v1::EvidenceKind;

pub use admission::{Admission, AdmissionBudget, Admitted, NewAdmission};
pub use audit::{Actor, MAX_PAGE as AUDIT_PAGE};
pub use dashboard::AttemptBucket;
pub use pending::{Decision, PendingRow, Submitted};
pub use policies::{AppliedMove, PolicyRow, PolicySummaryRow};
pub use purge::{PurgeCounts, PurgePolicy};
pub use tee::TeeEvidence;
pub use types::*;
pub use usage::BootUsage;

/// Where a role's data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// SQLite files `<dir>/<role>.db` (`sqlite://<dir>`; the default is the state directory).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by replicas (`postgres://...` or `postgresql://...`);
    /// each role uses its own schema named after it.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://<dir>`, `postgres://...` or `postgresql://...`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(dir) = url.strip_prefix("sqlite://") {
            if dir.is_empty() {
                return Err(StoreError::Config(
                    "sqlite:// needs a directory (sqlite:///var/lib/unlock-server)",
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(dir)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(StoreError::Config(
            "database URL must start with sqlite:// or postgres://",
        ))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(d) => write!(f, "sqlite://{}", d.display()),
            // The URL may carry a password.
            Self::Postgres(_) => f.write_str("postgres://<redacted>"),
        }
    }
}

#[derive(Debug)]
enum Backend {
    Sqlite(Box<sqlite::SqliteDb>),
    Postgres(Box<pg::PgDb>),
}

/// A role's database.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
}

/// Errors of the storage layer. These are operational failures (disk, corruption); refusals
/// of an attestation are [`Refusal`]s, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (connection lost, server restarting, statement error).
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] postgres::Error),
    /// The database URL or schema name is unusable.
    #[error("database configuration: {0}")]
    Config(&'static str),
    /// Every pooled PostgreSQL connection stayed busy for the whole checkout timeout.
    #[error("no PostgreSQL connection became free in time (server overloaded)")]
    PoolExhausted,
    /// The database was written by a newer version of this program.
    #[error("database schema version {found} is newer than this program's {supported}; upgrade unlock-server")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Latest version this build knows.
        supported: i64,
    },
    /// An enrollment for this agent already exists.
    #[error("agent {0} is already enrolled (delete it first, or use rearm)")]
    AlreadyEnrolled(String),
    /// No enrollment for this agent.
    #[error("agent {0} is not enrolled")]
    NotFound(String),
    /// A named policy of this name already exists.
    #[error("policy {0} already exists (add a version with `unlockctl policy update`)")]
    PolicyExists(String),
    /// No such named policy (or version).
    #[error("no policy {0}")]
    PolicyNotFound(String),
    /// A version was added since a change was computed from `base`.
    #[error("policy {name} moved on: the change was computed from v{base}, the latest is v{latest}; run the command again")]
    PolicyMoved {
        /// The policy.
        name: String,
        /// The version the change was computed from.
        base: u32,
        /// The latest version now.
        latest: u32,
    },
    /// The agent already has as many undecided policy changes as allowed.
    #[error("agent {agent_id} already has {max} pending policy changes: an operator must decide them first")]
    TooManyPending {
        /// The agent.
        agent_id: String,
        /// The cap.
        max: u32,
    },
    /// No admission of this agent waits for a deposit (never admitted, expired, or the
    /// deposit was already made).
    #[error("agent {0} has no admission waiting for a deposit (never admitted by a rule, expired, or already deposited)")]
    NotAwaitingDeposit(String),
    /// An auto-enrollment budget is spent (the rule's admissions per hour, or the
    /// admissions waiting for a deposit).
    #[error("auto-enrollment budget spent: {0}")]
    AdmissionBudgetSpent(String),
    /// A stored value is not what this program wrote (corruption or manual edit).
    #[error("corrupt row in {table}: {what}")]
    Corrupt {
        /// Table of the row.
        table: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The answer to a release could not be produced (sealing failed).
    #[error("could not seal the release: {0}")]
    Seal(String),
    /// The lock around the connection was poisoned by a panic in another request.
    #[error("database connection lock poisoned")]
    Poisoned,
    /// The shared (group) transaction holding this request's writes could not be committed
    /// (disk error, disk full); nothing of the request was stored. The cause is in the log.
    #[error("the database could not commit this request's transaction (see the server log); nothing was stored, retry")]
    GroupCommitFailed,
}

impl StoreError {
    /// A uniqueness (primary key) violation, on either backend.
    fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlite(e) => sqlite::is_unique_violation(e),
            Self::Postgres(e) => pg::is_unique_violation(e),
            _ => false,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(Box::new(sqlite::SqliteDb::open(path)?)),
        })
    }

    /// An in-memory SQLite database, for tests of the release logic.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(Box::new(sqlite::SqliteDb::open_in_memory()?)),
        })
    }

    /// Opens the schema `schema` of the PostgreSQL database at `url` (created and migrated
    /// if needed; replicas starting together migrate once).
    pub fn open_postgres(url: &str, schema: &str) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(Box::new(pg::PgDb::open(url, schema)?)),
        })
    }

    /// Opens the database of role `role` at `url`: `<dir>/<role>.db` or schema `<role>`.
    pub fn open_url(url: &DatabaseUrl, role: &str) -> Result<Self, StoreError> {
        match url {
            DatabaseUrl::Sqlite(dir) => Self::open(&dir.join(format!("{role}.db"))),
            DatabaseUrl::Postgres(u) => Self::open_postgres(u, role),
        }
    }

    /// Whether the database answers (`/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query("SELECT 1", &[]).map(drop))
    }

    /// Group-commit figures of the SQLite backend: (requests, commits); `None` on
    /// PostgreSQL, whose server does its own group commit.
    pub fn group_commit_stats(&self) -> Option<(u64, u64)> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let s = db.stats();
                Some((s.requests, s.commits))
            }
            Backend::Postgres(_) => None,
        }
    }

    /// Runs `f`, which only reads: it sees committed data only, and never waits for a commit.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.read(f),
            Backend::Postgres(db) => db.run(f),
        }
    }

    /// Runs `f` atomically; returns once its writes are durable.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.write(f),
            Backend::Postgres(db) => db.write(f),
        }
    }

    /// Records a new enrollment. Refuses to overwrite an existing one.
    pub fn enroll(&self, e: &NewEnrollment, now: i64) -> Result<(), StoreError> {
        self.enroll_pinned(e, None, now)
    }

    /// Records a new enrollment pinned to a named policy version (`e.policy` must be that
    /// version's document), in one transaction that checks the version exists.
    pub fn enroll_pinned(
        &self,
        e: &NewEnrollment,
        policy_ref: Option<(&str, u32)>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.enroll_as(e, policy_ref, EvidenceKind::Tpm, now)
    }

    /// [`Self::enroll_pinned`] declaring the evidence kind the machine will present (the
    /// kind is written in the same transaction as the enrollment).
    pub fn enroll_as(
        &self,
        e: &NewEnrollment,
        policy_ref: Option<(&str, u32)>,
        evidence: EvidenceKind,
        now: i64,
    ) -> Result<(), StoreError> {
        let r = self.write(|c| {
            insert_enrollment(c, e, policy_ref, None, now)?;
            tee::declare(c, &e.agent_id, evidence)
        });
        match r {
            Err(err) if err.is_unique_violation() => {
                Err(StoreError::AlreadyEnrolled(e.agent_id.clone()))
            }
            r => r,
        }
    }

    /// The enrollment of `agent_id`, if any.
    pub fn enrollment(&self, agent_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.read(|c| load_enrollment(c, agent_id))
    }

    /// The enrollments whose agent id starts with `agent_ref` (a challenge ticket's
    /// reference: 24 hex characters, so in practice one at most).
    pub fn enrollments_by_ref(&self, agent_ref: &str) -> Result<Vec<Enrollment>, StoreError> {
        self.read(|c| {
            c.query(
                &format!("{ENROLLMENT_SELECT} WHERE e.agent_ref = ?1"),
                args![agent_ref],
            )?
            .iter()
            .map(enrollment_from_row)
            .collect()
        })
    }

    /// All enrollments (without their wrapped secrets), ordered by agent id.
    pub fn list(&self) -> Result<Vec<Enrollment>, StoreError> {
        self.read(|c| {
            c.query(&format!("{ENROLLMENT_SELECT} ORDER BY e.agent_id"), &[])?
                .iter()
                .map(enrollment_from_row)
                .collect()
        })
    }

    /// Boot sessions of `agent_id`, newest first.
    pub fn sessions(&self, agent_id: &str) -> Result<Vec<Session>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT reset_count, releases, state, first_release_at, last_release_at
                 FROM sessions WHERE agent_id = ?1 ORDER BY reset_count DESC",
                args![agent_id],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(Session {
                        reset_count: u32::try_from(row.int(0, "sessions")?)
                            .map_err(|_| corrupt_session())?,
                        releases: u32::try_from(row.int(1, "sessions")?)
                            .map_err(|_| corrupt_session())?,
                        state: SessionState::parse(&row.text(2, "sessions")?)
                            .ok_or_else(corrupt_session)?,
                        first_release_at: row.int(3, "sessions")?,
                        last_release_at: row.int(4, "sessions")?,
                    })
                })
                .collect()
        })
    }

    /// The most recent attempts of `agent_id` (newest first, at most `limit`).
    pub fn attempts(&self, agent_id: &str, limit: u32) -> Result<Vec<Attempt>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT challenge_id, at, result, reason FROM attempts
                 WHERE agent_id = ?1 ORDER BY id DESC LIMIT ?2",
                args![agent_id, limit],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(Attempt {
                        challenge_id: row.opt_text(0, "attempts")?,
                        at: row.int(1, "attempts")?,
                        released: row.text(2, "attempts")? == "released",
                        reason: row.text(3, "attempts")?,
                    })
                })
                .collect()
        })
    }

    /// Challenges of `agent_id` whose evidence was refused since its last release, counting
    /// only refusals at or after `since`: the input of the failed-attempt rate limit. The log is in the database,
    /// so every replica sees the same count.
    pub fn recent_refusals(&self, agent_id: &str, since: i64) -> Result<u32, StoreError> {
        self.read(|c| count_recent_refusals(c, agent_id, since))
    }

    /// Changes the enrollment state (revoke). Returns `NotFound` for an unknown agent.
    pub fn set_state(
        &self,
        agent_id: &str,
        state: EnrollmentState,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE enrollments SET state = ?2, updated_at = ?3 WHERE agent_id = ?1",
                args![agent_id, state.as_str(), now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            audit::append(
                c,
                now,
                "state",
                Some(agent_id),
                Actor::Admin,
                &serde_json::json!({"state": state.as_str()}),
            )
        })
    }

    /// Re-arms an agent: state back to armed, its boot budget and session history cleared
    /// (so a TPM whose resetCount restarted, e.g. after a TPM clear, can attest again).
    pub fn rearm(&self, agent_id: &str, now: i64) -> Result<(), StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE enrollments SET state = 'armed', boots_used = 0, updated_at = ?2
                 WHERE agent_id = ?1",
                args![agent_id, now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            c.execute("DELETE FROM sessions WHERE agent_id = ?1", args![agent_id])?;
            audit::append(
                c,
                now,
                "rearm",
                Some(agent_id),
                Actor::Admin,
                &serde_json::json!({}),
            )
        })
    }

    /// Deletes every trace of an agent's enrollment and keys.
    pub fn delete(&self, agent_id: &str, now: i64) -> Result<(), StoreError> {
        self.write(|c| {
            let n = c.execute(
                "DELETE FROM enrollments WHERE agent_id = ?1",
                args![agent_id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            for table in [
                "sessions",
                "aks",
                "challenges",
                "registrations",
                "iak_bindings",
                "tee_enrollments",
            ] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE agent_id = ?1"),
                    args![agent_id],
                )?;
            }
            // The audit trail keeps the agent's records: they outlive the enrollment.
            audit::append(
                c,
                now,
                "delete",
                Some(agent_id),
                Actor::Admin,
                &serde_json::json!({}),
            )
        })
    }

    /// Stores a pending registration (MakeCredential issued, not yet activated).
    pub fn insert_registration(&self, r: &Registration) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO registrations (registration_id, agent_id, ak_pub, ak_name, secret, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![&r.registration_id, &r.agent_id, &r.ak_pub, &r.ak_name, &r.secret_wrapped, r.expires_at],
            )?;
            Ok(())
        })
    }

    /// Removes and returns a pending registration: each MakeCredential challenge can be
    /// answered once, right or wrong. The delete decides: of two replicas racing on one
    /// registration, only the one whose `DELETE` removed the row gets it.
    pub fn take_registration(&self, id: &str) -> Result<Option<Registration>, StoreError> {
        self.write(|c| {
            let Some(row) = c.query_opt(
                "SELECT registration_id, agent_id, ak_pub, ak_name, secret, expires_at
                 FROM registrations WHERE registration_id = ?1",
                args![id],
            )?
            else {
                return Ok(None);
            };
            let t = "registrations";
            let r = Registration {
                registration_id: row.text(0, t)?,
                agent_id: row.text(1, t)?,
                ak_pub: row.blob(2, t)?,
                ak_name: row.blob(3, t)?,
                secret_wrapped: row.blob(4, t)?,
                expires_at: row.int(5, t)?,
            };
            let n = c.execute(
                "DELETE FROM registrations WHERE registration_id = ?1",
                args![id],
            )?;
            Ok((n == 1).then_some(r))
        })
    }

    /// Records that `ak_name` is proven to be in the TPM of `agent_id`'s EK, and pins it:
    /// `false` (nothing written) when another AK is pinned for the agent already. In one
    /// transaction, so two registrations of different AKs racing cannot both pin.
    pub fn activate_ak(
        &self,
        agent_id: &str,
        ak_name: &[u8],
        ak_pub: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let lock = format!(
                "SELECT 1 FROM enrollments WHERE agent_id = ?1{}",
                c.dialect().for_update()
            );
            c.query(&lock, args![agent_id])?;
            if !pin_ak(c, agent_id, ak_name, ak_pub, now)? {
                return Ok(false);
            }
            audit::append(
                c,
                now,
                "ak_activated",
                Some(agent_id),
                Actor::Agent,
                &serde_json::json!({"ak_name": hex::encode(ak_name)}),
            )?;
            Ok(true)
        })
    }

    /// Releases the agent's AK pin (an operator's decision after the TPM's keys really
    /// changed): the next activation pins again. How many AKs were unpinned.
    pub fn unpin_ak(&self, agent_id: &str, now: i64) -> Result<u64, StoreError> {
        self.write(|c| {
            if load_enrollment(c, agent_id)?.is_none() {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            let n = c.execute("DELETE FROM aks WHERE agent_id = ?1", args![agent_id])?;
            audit::append(
                c,
                now,
                "ak_unpinned",
                Some(agent_id),
                Actor::Admin,
                &serde_json::json!({"unpinned": n}),
            )?;
            Ok(n)
        })
    }

    /// The public area of an activated AK of `agent_id`, if `ak_name` is one.
    pub fn activated_ak(
        &self,
        agent_id: &str,
        ak_name: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            c.query_opt(
                "SELECT ak_pub FROM aks WHERE agent_id = ?1 AND ak_name = ?2",
                args![agent_id, ak_name],
            )?
            .map(|row| row.blob(0, "aks"))
            .transpose()
        })
    }

    /// The activated AKs of `agent_id`: (name, public area).
    pub fn activated_aks(&self, agent_id: &str) -> Result<Vec<AkRow>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT ak_name, ak_pub FROM aks WHERE agent_id = ?1 ORDER BY activated_at",
                args![agent_id],
            )?
            .iter()
            .map(|row| Ok((row.blob(0, "aks")?, row.blob(1, "aks")?)))
            .collect()
        })
    }

    /// Stores an unused challenge, as servers before tickets did at issue (tests of the purge
    /// of such rows).
    #[cfg(test)]
    pub(crate) fn insert_legacy_challenge(&self, ch: &NewChallenge) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO challenges (challenge_id, agent_id, ak_name, nonce, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args![
                    &ch.challenge_id,
                    &ch.agent_id,
                    &ch.ak_name,
                    ch.nonce.as_slice(),
                    ch.expires_at
                ],
            )?;
            Ok(())
        })
    }

    /// A used challenge by id (only used challenges are stored: issuing one writes nothing).
    pub fn challenge(&self, challenge_id: &str) -> Result<Option<Challenge>, StoreError> {
        self.read(|c| load_challenge(c, challenge_id))
    }

    /// Records a refused attempt. `evidence_failure`: refused for the machine's own
    /// evidence (validation, policy, activation proof), the kind the failed-attempt rate
    /// limit counts; refusals caused elsewhere (the host's provider) are logged but not
    /// counted, so an outage of the provider cannot lock machines out after it ends.
    /// Refusals never consume a release.
    pub fn record_refusal(
        &self,
        agent_id: &str,
        challenge_id: Option<&str>,
        reason: &str,
        evidence_failure: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        self.record_refusal_watching(agent_id, challenge_id, reason, evidence_failure, now, None)
            .map(drop)
    }

    /// [`Self::record_refusal`], and with `lockout = Some((since, max))` also whether this
    /// refusal is the one that locks the agent out (its `max`-th counted refusal since
    /// `since`): then a `lockout` record joins the audit trail in the same transaction.
    /// Returns whether it locked the agent out.
    pub fn record_refusal_watching(
        &self,
        agent_id: &str,
        challenge_id: Option<&str>,
        reason: &str,
        evidence_failure: bool,
        now: i64,
        lockout: Option<(i64, u32)>,
    ) -> Result<bool, StoreError> {
        let counted = i64::from(evidence_failure);
        self.write(|c| {
            c.execute(
                "INSERT INTO attempts (agent_id, challenge_id, at, result, reason, evidence_failure)
                 VALUES (?1, ?2, ?3, 'refused', ?4, ?5)",
                args![agent_id, challenge_id, now, reason, counted],
            )?;
            audit::append(
                c,
                now,
                "refusal",
                Some(agent_id),
                Actor::Agent,
                &serde_json::json!({"challenge_id": challenge_id, "reason": reason, "counted": evidence_failure}),
            )?;
            let Some((since, max)) = lockout.filter(|_| evidence_failure) else {
                return Ok(false);
            };
            let failures = count_recent_refusals(c, agent_id, since)?;
            if failures != max {
                return Ok(false);
            }
            audit::append(
                c,
                now,
                "lockout",
                Some(agent_id),
                Actor::Agent,
                &serde_json::json!({"failures": failures, "since": since}),
            )?;
            Ok(true)
        })
    }

    /// The release decision, atomically: checks that the challenge is the agent's, unused
    /// (or used by byte-identical evidence, which gets the stored answer again), unexpired;
    /// that the enrollment is armed; that the boot session `(agent_id, reset_count)` is not
    /// TERMINATED and no later session exists; that a new session fits `max_boots`. Then
    /// `seal` produces the answer and the release is counted, the session TERMINATED when its
    /// count reaches `max_attestations`, and everything is committed before returning.
    pub fn release(
        &self,
        req: &ReleaseRequest<'_>,
        seal: impl FnOnce(&Enrollment, ReleaseCount) -> Result<Vec<u8>, StoreError>,
    ) -> Result<ReleaseDecision, StoreError> {
        self.write(|c| {
            // The agent's lock first: every read below sees what the previous holder
            // committed (PostgreSQL; SQLite's writer lock is already held).
            let lock = format!(
                "SELECT 1 FROM enrollments WHERE agent_id = ?1{}",
                c.dialect().for_update()
            );
            c.query(&lock, args![req.agent_id()])?;
            let decision = release_in(c, req, seal)?;
            // One attempt row and one audit record per decision (an identical retry decided
            // nothing new and writes neither).
            let (result, reason, kind, detail) = match &decision {
                ReleaseDecision::Retried { .. } => return Ok(decision),
                ReleaseDecision::Released {
                    releases,
                    session_terminated,
                    ..
                } => (
                    "released",
                    "released".to_owned(),
                    "release",
                    serde_json::json!({
                        "challenge_id": req.challenge_id(),
                        "reset_count": req.reset_count,
                        "releases": releases,
                        "session_terminated": session_terminated,
                    }),
                ),
                ReleaseDecision::Resealed { .. } => (
                    "released",
                    "same NK: re-sealed, not counted".to_owned(),
                    "reseal",
                    serde_json::json!({
                        "challenge_id": req.challenge_id(),
                        "reset_count": req.reset_count,
                    }),
                ),
                ReleaseDecision::Refused(r) => {
                    let reason = r.to_string();
                    let detail = serde_json::json!({
                        "challenge_id": req.challenge_id(),
                        "reason": reason,
                        "reset_count": req.reset_count,
                    });
                    ("refused", reason, "refusal", detail)
                }
            };
            c.execute(
                "INSERT INTO attempts (agent_id, challenge_id, at, result, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args![
                    req.agent_id(),
                    req.challenge_id(),
                    req.now,
                    result,
                    reason.as_str()
                ],
            )?;
            audit::append(
                c,
                req.now,
                kind,
                Some(req.agent_id()),
                Actor::Agent,
                &detail,
            )?;
            Ok(decision)
        })
    }

    /// Every (table, column) of the schema, sorted: the two backends' migrations must agree.
    #[cfg(test)]
    pub(crate) fn schema_columns(&self) -> Result<Vec<(String, String)>, StoreError> {
        let sql = match &self.backend {
            Backend::Sqlite(_) => {
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
            }
            Backend::Postgres(_) => {
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'"
            }
        };
        let mut out = self.read(|c| {
            c.query(sql, &[])?
                .iter()
                .map(|r| Ok((r.text(0, "schema")?, r.text(1, "schema")?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        out.sort();
        Ok(out)
    }
}

fn release_in(
    c: &mut dyn Conn,
    req: &ReleaseRequest<'_>,
    seal: impl FnOnce(&Enrollment, ReleaseCount) -> Result<Vec<u8>, StoreError>,
) -> Result<ReleaseDecision, StoreError> {
    // Under the agent's lock: a challenge used by a concurrent request is seen here.
    if let Some(used) = load_challenge(c, req.challenge_id())? {
        return Ok(used_challenge_decision(
            &used,
            req.agent_id(),
            req.evidence_hash,
        ));
    }
    if req.challenge.expires_at <= req.now {
        return Ok(ReleaseDecision::Refused(Refusal::ChallengeExpired));
    }
    let Some(enr) = load_enrollment(c, req.agent_id())? else {
        return Ok(ReleaseDecision::Refused(Refusal::NotEnrolled));
    };
    if enr.state == EnrollmentState::Revoked {
        return Ok(ReleaseDecision::Refused(Refusal::Revoked));
    }
    let session = c
        .query_opt(
            "SELECT releases, state, nks FROM sessions WHERE agent_id = ?1 AND reset_count = ?2",
            args![req.agent_id(), req.reset_count],
        )?
        .map(|row| {
            Ok::<_, StoreError>((
                row.int(0, "sessions")?,
                row.text(1, "sessions")?,
                row.opt_blob(2, "sessions")?.unwrap_or_default(),
            ))
        })
        .transpose()?;
    // The same agent process (same NK) in the same boot already has this half: answer
    // again, re-sealed for this challenge, without counting. Checked before TERMINATED,
    // since the release that terminated the session may be the one being repeated.
    if let (Some((releases, state, nks)), Some(nk)) = (&session, &req.nk_hash) {
        if nks.chunks_exact(32).any(|h| h == nk.as_slice()) {
            let response = seal(
                &enr,
                ReleaseCount {
                    releases: u32::try_from(*releases).map_err(|_| corrupt_session())?,
                    terminated: SessionState::parse(state) != Some(SessionState::Open),
                },
            )?;
            insert_used_challenge(c, req, &response)?;
            return Ok(ReleaseDecision::Resealed { response });
        }
    }
    if enr.state == EnrollmentState::Terminated {
        return Ok(ReleaseDecision::Refused(Refusal::AgentTerminated));
    }
    if let Some((_, state, _)) = &session {
        if SessionState::parse(state) != Some(SessionState::Open) {
            return Ok(ReleaseDecision::Refused(Refusal::SessionTerminated {
                reset_count: req.reset_count,
            }));
        }
    }
    let latest = c
        .query_one(
            "SELECT MAX(reset_count) FROM sessions WHERE agent_id = ?1",
            args![req.agent_id()],
        )?
        .opt_int(0, "sessions")?;
    if let Some(latest) = latest {
        if latest > i64::from(req.reset_count) {
            return Ok(ReleaseDecision::Refused(Refusal::ResetCountWentBackwards {
                quoted: req.reset_count,
                latest: u32::try_from(latest).map_err(|_| corrupt_session())?,
            }));
        }
    }
    let new_session = session.is_none();
    if new_session {
        if let Some(max) = enr.max_boots {
            if enr.boots_used >= max {
                c.execute(
                    "UPDATE enrollments SET state = 'terminated', updated_at = ?2 WHERE agent_id = ?1",
                    args![req.agent_id(), req.now],
                )?;
                return Ok(ReleaseDecision::Refused(Refusal::MaxBootsReached {
                    max_boots: max,
                }));
            }
        }
    }

    let releases = session.as_ref().map_or(0, |(n, _, _)| *n) + 1;
    let mut nks = session
        .as_ref()
        .map(|(_, _, nks)| nks.clone())
        .unwrap_or_default();
    if let Some(nk) = &req.nk_hash {
        nks.extend_from_slice(nk);
    }
    let terminated = releases >= i64::from(enr.max_attestations);
    let response = seal(
        &enr,
        ReleaseCount {
            releases: u32::try_from(releases).map_err(|_| corrupt_session())?,
            terminated,
        },
    )?;
    let state = if terminated { "terminated" } else { "open" };
    c.execute(
        "INSERT INTO sessions (agent_id, reset_count, releases, state, first_release_at, last_release_at, nks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
         ON CONFLICT (agent_id, reset_count) DO UPDATE
            SET releases = excluded.releases, state = excluded.state,
                last_release_at = excluded.last_release_at, nks = excluded.nks",
        args![req.agent_id(), req.reset_count, releases, state, req.now, &nks],
    )?;
    if new_session {
        let boots_used = enr.boots_used + 1;
        let agent_done = terminated && enr.max_boots.is_some_and(|m| boots_used >= m);
        c.execute(
            "UPDATE enrollments SET boots_used = ?2, state = ?3, updated_at = ?4 WHERE agent_id = ?1",
            args![
                req.agent_id(),
                boots_used,
                if agent_done { "terminated" } else { "armed" },
                req.now
            ],
        )?;
    } else if terminated && enr.max_boots.is_some_and(|m| enr.boots_used >= m) {
        c.execute(
            "UPDATE enrollments SET state = 'terminated', updated_at = ?2 WHERE agent_id = ?1",
            args![req.agent_id(), req.now],
        )?;
    }
    if let (true, Some(usage)) = (new_session, &req.usage) {
        usage::record(c, req.agent_id(), req.reset_count, usage)?;
    }
    insert_used_challenge(c, req, &response)?;
    Ok(ReleaseDecision::Released {
        response,
        releases: u32::try_from(releases).map_err(|_| corrupt_session())?,
        session_terminated: terminated,
    })
}

/// What a challenge that is already used decides: the stored answer again for the same
/// evidence (however re-serialized, see `AttestRequest::evidence_digest`), a refusal for
/// anything else. A read decides it: no write, whoever asks.
pub fn used_challenge_decision(
    used: &Challenge,
    agent_id: &str,
    evidence_hash: &[u8; 32],
) -> ReleaseDecision {
    if used.agent_id != agent_id {
        return ReleaseDecision::Refused(Refusal::ChallengeUnknown);
    }
    match used.used.as_ref() {
        Some(UsedChallenge {
            evidence_hash: Some(h),
            response: Some(response),
            ..
        }) if h.as_slice() == evidence_hash.as_slice() => ReleaseDecision::Retried {
            response: response.clone(),
        },
        _ => ReleaseDecision::Refused(Refusal::NonceReused),
    }
}

/// Stores the challenge as used, with the evidence's identity and the answer: the single
/// durable record of a challenge, written in the release transaction that used it.
fn insert_used_challenge(
    c: &mut dyn Conn,
    req: &ReleaseRequest<'_>,
    response: &[u8],
) -> Result<(), StoreError> {
    let ch = req.challenge;
    c.execute(
        "INSERT INTO challenges (challenge_id, agent_id, ak_name, nonce, expires_at, used_at,
            evidence_hash, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            &ch.challenge_id,
            &ch.agent_id,
            &ch.ak_name,
            ch.nonce.as_slice(),
            ch.expires_at,
            req.now,
            req.evidence_hash.as_slice(),
            response
        ],
    )?;
    Ok(())
}

/// Counted refusals of `agent_id` since `since` and since its last release.
fn count_recent_refusals(c: &mut dyn Conn, agent_id: &str, since: i64) -> Result<u32, StoreError> {
    // Distinct challenges: copies of one quote replayed with mangled logs (by whoever can read
    // the agent's bodies) count once, as the one challenge the agent quoted.
    let row = c.query_one(
        "SELECT COUNT(DISTINCT challenge_id) FROM attempts
         WHERE agent_id = ?1 AND evidence_failure = 1 AND at >= ?2
           AND id > COALESCE((SELECT MAX(id) FROM attempts
                              WHERE agent_id = ?1 AND result = 'released'), 0)",
        args![agent_id, since],
    )?;
    Ok(u32::try_from(row.int(0, "attempts")?).unwrap_or(u32::MAX))
}

fn corrupt_session() -> StoreError {
    StoreError::Corrupt {
        table: "sessions",
        what: "value out of range",
    }
}

/// An enrollment pinned to a named policy version is evaluated against that stored version
/// (versions are immutable); an inline one against its own document.
/// Inserts an armed enrollment and its audit record: `admitted_by` `None` for an operator's
/// enrollment (actor admin), `Some` for one an auto-enrollment rule admitted (actor agent,
/// the machine's own deposit). Checks that the named policy version exists.
fn insert_enrollment(
    c: &mut dyn Conn,
    e: &NewEnrollment,
    policy_ref: Option<(&str, u32)>,
    admitted_by: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    if let Some((name, version)) = policy_ref {
        if c.query_opt(
            "SELECT 1 FROM policies WHERE name = ?1 AND version = ?2",
            args![name, version],
        )?
        .is_none()
        {
            return Err(StoreError::PolicyNotFound(format!("{name} v{version}")));
        }
    }
    c.execute(
        "INSERT INTO enrollments (agent_id, ek_pub, policy, max_attestations, max_boots,
            share_wrapped, payload_ct, state, boots_used, created_at, updated_at,
            policy_name, policy_version, agent_ref, admitted_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'armed', 0, ?8, ?8, ?9, ?10, substr(?1, 1, 24), ?11)",
        args![
            &e.agent_id,
            &e.ek_pub,
            &e.policy,
            e.max_attestations,
            e.max_boots,
            &e.share_wrapped,
            e.payload_ct.as_deref(),
            now,
            policy_ref.map(|(n, _)| n),
            policy_ref.map(|(_, v)| v),
            admitted_by,
        ],
    )?;
    let mut detail = serde_json::json!({
        "policy": policy_ref.map(|(n, v)| format!("{n} v{v}")),
        "max_attestations": e.max_attestations,
        "max_boots": e.max_boots,
    });
    let (kind, actor) = match admitted_by {
        None => ("enroll", Actor::Admin),
        Some(how) => {
            if let Some(o) = detail.as_object_mut() {
                o.insert("admitted_by".into(), how.into());
            }
            ("auto_enroll", Actor::Agent)
        }
    };
    audit::append(c, now, kind, Some(&e.agent_id), actor, &detail)
}

/// Pins `ak_name` as the agent's AK: `false` (nothing written) when another AK is pinned.
/// The caller holds the agent's enrollment lock in the same transaction, so two
/// registrations of different AKs racing cannot both pin.
pub(super) fn pin_ak(
    c: &mut dyn Conn,
    agent_id: &str,
    ak_name: &[u8],
    ak_pub: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let other = c.query_opt(
        "SELECT 1 FROM aks WHERE agent_id = ?1 AND ak_name <> ?2",
        args![agent_id, ak_name],
    )?;
    if other.is_some() {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO aks (agent_id, ak_name, ak_pub, activated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent_id, ak_name) DO UPDATE
            SET ak_pub = excluded.ak_pub, activated_at = excluded.activated_at",
        args![agent_id, ak_name, ak_pub, now],
    )?;
    Ok(true)
}

const ENROLLMENT_SELECT: &str = "SELECT e.agent_id, e.ek_pub, COALESCE(p.document, e.policy),
    e.max_attestations, e.max_boots, e.share_wrapped, e.payload_ct, e.state, e.boots_used,
    e.created_at, e.updated_at, e.policy_name, e.policy_version, e.admitted_by
    FROM enrollments e LEFT JOIN policies p
        ON p.name = e.policy_name AND p.version = e.policy_version";

fn load_enrollment(c: &mut dyn Conn, agent_id: &str) -> Result<Option<Enrollment>, StoreError> {
    c.query_opt(
        &format!("{ENROLLMENT_SELECT} WHERE e.agent_id = ?1"),
        args![agent_id],
    )?
    .as_ref()
    .map(enrollment_from_row)
    .transpose()
}

fn enrollment_from_row(row: &Row) -> Result<Enrollment, StoreError> {
    let t = "enrollments";
    let corrupt = |what| StoreError::Corrupt { table: t, what };
    let policy_ref = match (row.opt_text(11, t)?, row.opt_int(12, t)?) {
        (Some(n), Some(v)) => Some((n, u32::try_from(v).map_err(|_| corrupt("policy_version"))?)),
        (None, None) => None,
        _ => return Err(corrupt("policy_name/policy_version")),
    };
    Ok(Enrollment {
        agent_id: row.text(0, t)?,
        ek_pub: row.blob(1, t)?,
        policy: row.text(2, t)?,
        max_attestations: u32::try_from(row.int(3, t)?).map_err(|_| corrupt("max_attestations"))?,
        max_boots: row
            .opt_int(4, t)?
            .map(u32::try_from)
            .transpose()
            .map_err(|_| corrupt("max_boots"))?,
        share_wrapped: row.blob(5, t)?,
        payload_ct: row.opt_blob(6, t)?,
        state: EnrollmentState::parse(&row.text(7, t)?).ok_or_else(|| corrupt("state"))?,
        boots_used: u32::try_from(row.int(8, t)?).map_err(|_| corrupt("boots_used"))?,
        created_at: row.int(9, t)?,
        updated_at: row.int(10, t)?,
        policy_ref,
        admitted_by: row.opt_text(13, t)?,
    })
}

fn load_challenge(c: &mut dyn Conn, id: &str) -> Result<Option<Challenge>, StoreError> {
    let Some(row) = c.query_opt(
        "SELECT challenge_id, agent_id, ak_name, nonce, expires_at, used_at, evidence_hash, response
         FROM challenges WHERE challenge_id = ?1",
        args![id],
    )?
    else {
        return Ok(None);
    };
    let t = "challenges";
    let nonce: [u8; 32] = row
        .blob(3, t)?
        .try_into()
        .map_err(|_| StoreError::Corrupt {
            table: t,
            what: "nonce is not 32 bytes",
        })?;
    let evidence_hash = row.opt_blob(6, t)?;
    let response = row.opt_blob(7, t)?;
    Ok(Some(Challenge {
        challenge_id: row.text(0, t)?,
        agent_id: row.text(1, t)?,
        ak_name: row.blob(2, t)?,
        nonce,
        expires_at: row.int(4, t)?,
        used: row.opt_int(5, t)?.map(|at| UsedChallenge {
            at,
            evidence_hash,
            response,
        }),
    }))
}

#[cfg(test)]
mod tests;
