//! Durable state of one role (verifier or tenant): enrollments, registrar state, challenges,
//! boot sessions and the attempt log, in SQLite.
//!
//! The release decision is one `BEGIN IMMEDIATE` transaction: SQLite admits one writer at a
//! time, so the checks (nonce unused, session not TERMINATED, resetCount not behind, boot
//! budget left) and the writes that consume a release can never interleave with another
//! request's. The database runs in WAL mode with `synchronous=FULL`, so a release is on disk
//! before its answer leaves the process.

mod policies;
mod types;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

pub use policies::{AppliedMove, PolicyRow, PolicySummaryRow};
pub use types::*;

/// Migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_policies.sql"),
];

/// A role's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// Errors of the storage layer. These are operational failures (disk, corruption); refusals
/// of an attestation are [`Refusal`]s, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests of the release logic.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some((name, version)) = policy_ref {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM policies WHERE name = ?1 AND version = ?2",
                        params![name, version],
                        |row| row.get(0),
                    )
                    .optional()?;
                if exists.is_none() {
                    return Err(StoreError::PolicyNotFound(format!("{name} v{version}")));
                }
            }
            let r = tx.execute(
                "INSERT INTO enrollments (agent_id, ek_pub, policy, max_attestations, max_boots,
                    share_wrapped, payload_ct, state, boots_used, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'armed', 0, ?8, ?8)",
                params![
                    e.agent_id,
                    e.ek_pub,
                    e.policy,
                    e.max_attestations,
                    e.max_boots,
                    e.share_wrapped,
                    e.payload_ct,
                    now
                ],
            );
            match r {
                Ok(_) => {
                    if let Some((name, version)) = policy_ref {
                        tx.execute(
                            "UPDATE enrollments SET policy_name = ?2, policy_version = ?3
                             WHERE agent_id = ?1",
                            params![e.agent_id, name, version],
                        )?;
                    }
                    tx.commit()?;
                    Ok(())
                }
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::AlreadyEnrolled(e.agent_id.clone()))
                }
                Err(err) => Err(err.into()),
            }
        })
    }

    /// The enrollment of `agent_id`, if any.
    pub fn enrollment(&self, agent_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.with(|c| load_enrollment(c, agent_id))
    }

    /// All enrollments (without their wrapped secrets), ordered by agent id.
    pub fn list(&self) -> Result<Vec<Enrollment>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{ENROLLMENT_SELECT} ORDER BY e.agent_id"))?;
            let rows = stmt.query_map([], enrollment_from_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
                .collect()
        })
    }

    /// Boot sessions of `agent_id`, newest first.
    pub fn sessions(&self, agent_id: &str) -> Result<Vec<Session>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT reset_count, releases, state, first_release_at, last_release_at
                 FROM sessions WHERE agent_id = ?1 ORDER BY reset_count DESC",
            )?;
            let rows = stmt.query_map([agent_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (reset_count, releases, state, first, last) = r?;
                out.push(Session {
                    reset_count: u32::try_from(reset_count).map_err(|_| corrupt_session())?,
                    releases: u32::try_from(releases).map_err(|_| corrupt_session())?,
                    state: SessionState::parse(&state).ok_or_else(corrupt_session)?,
                    first_release_at: first,
                    last_release_at: last,
                });
            }
            Ok(out)
        })
    }

    /// The most recent attempts of `agent_id` (newest first, at most `limit`).
    pub fn attempts(&self, agent_id: &str, limit: u32) -> Result<Vec<Attempt>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT challenge_id, at, result, reason FROM attempts
                 WHERE agent_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![agent_id, limit], |row| {
                Ok(Attempt {
                    challenge_id: row.get(0)?,
                    at: row.get(1)?,
                    released: row.get::<_, String>(2)? == "released",
                    reason: row.get(3)?,
                })
            })?;
            rows.map(|r| r.map_err(StoreError::from)).collect()
        })
    }

    /// Changes the enrollment state (revoke). Returns `NotFound` for an unknown agent.
    pub fn set_state(
        &self,
        agent_id: &str,
        state: EnrollmentState,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE enrollments SET state = ?2, updated_at = ?3 WHERE agent_id = ?1",
                params![agent_id, state.as_str(), now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Re-arms an agent: state back to armed, its boot budget and session history cleared
    /// (so a TPM whose resetCount restarted, e.g. after a TPM clear, can attest again).
    pub fn rearm(&self, agent_id: &str, now: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE enrollments SET state = 'armed', boots_used = 0, updated_at = ?2
                 WHERE agent_id = ?1",
                params![agent_id, now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            tx.execute("DELETE FROM sessions WHERE agent_id = ?1", [agent_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes every trace of an agent's enrollment and keys.
    pub fn delete(&self, agent_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM enrollments WHERE agent_id = ?1", [agent_id])?;
            if n == 0 {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            for table in ["sessions", "aks", "challenges", "registrations"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE agent_id = ?1"),
                    [agent_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Stores a pending registration (MakeCredential issued, not yet activated).
    pub fn insert_registration(&self, r: &Registration) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO registrations (registration_id, agent_id, ak_pub, ak_name, secret, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.registration_id, r.agent_id, r.ak_pub, r.ak_name, r.secret_wrapped, r.expires_at],
            )?;
            Ok(())
        })
    }

    /// Removes and returns a pending registration: each MakeCredential challenge can be
    /// answered once, right or wrong.
    pub fn take_registration(&self, id: &str) -> Result<Option<Registration>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = tx
                .query_row(
                    "SELECT registration_id, agent_id, ak_pub, ak_name, secret, expires_at
                     FROM registrations WHERE registration_id = ?1",
                    [id],
                    |row| {
                        Ok(Registration {
                            registration_id: row.get(0)?,
                            agent_id: row.get(1)?,
                            ak_pub: row.get(2)?,
                            ak_name: row.get(3)?,
                            secret_wrapped: row.get(4)?,
                            expires_at: row.get(5)?,
                        })
                    },
                )
                .optional()?;
            if r.is_some() {
                tx.execute("DELETE FROM registrations WHERE registration_id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(r)
        })
    }

    /// Records that `ak_name` is proven to be in the TPM of `agent_id`'s EK.
    pub fn activate_ak(
        &self,
        agent_id: &str,
        ak_name: &[u8],
        ak_pub: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO aks (agent_id, ak_name, ak_pub, activated_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![agent_id, ak_name, ak_pub, now],
            )?;
            Ok(())
        })
    }

    /// The public area of an activated AK of `agent_id`, if `ak_name` is one.
    pub fn activated_ak(
        &self,
        agent_id: &str,
        ak_name: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT ak_pub FROM aks WHERE agent_id = ?1 AND ak_name = ?2",
                params![agent_id, ak_name],
                |row| row.get(0),
            )
            .optional()?)
        })
    }

    /// Stores a fresh challenge.
    pub fn insert_challenge(&self, ch: &NewChallenge) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO challenges (challenge_id, agent_id, ak_name, nonce, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    ch.challenge_id,
                    ch.agent_id,
                    ch.ak_name,
                    ch.nonce.as_slice(),
                    ch.expires_at
                ],
            )?;
            Ok(())
        })
    }

    /// A challenge by id.
    pub fn challenge(&self, challenge_id: &str) -> Result<Option<Challenge>, StoreError> {
        self.with(|c| load_challenge(c, challenge_id))
    }

    /// Records a refused attempt. Refusals never consume a release.
    pub fn record_refusal(
        &self,
        agent_id: &str,
        challenge_id: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO attempts (agent_id, challenge_id, at, result, reason)
                 VALUES (?1, ?2, ?3, 'refused', ?4)",
                params![agent_id, challenge_id, now, reason],
            )?;
            Ok(())
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let decision = release_in(&tx, req, seal)?;
            match &decision {
                ReleaseDecision::Released { .. } => {
                    tx.execute(
                        "INSERT INTO attempts (agent_id, challenge_id, at, result, reason)
                         VALUES (?1, ?2, ?3, 'released', 'released')",
                        params![req.agent_id, req.challenge_id, req.now],
                    )?;
                }
                ReleaseDecision::Retried { .. } => {}
                ReleaseDecision::Refused(r) => {
                    tx.execute(
                        "INSERT INTO attempts (agent_id, challenge_id, at, result, reason)
                         VALUES (?1, ?2, ?3, 'refused', ?4)",
                        params![req.agent_id, req.challenge_id, req.now, r.to_string()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(decision)
        })
    }
}

fn release_in(
    tx: &rusqlite::Transaction<'_>,
    req: &ReleaseRequest<'_>,
    seal: impl FnOnce(&Enrollment, ReleaseCount) -> Result<Vec<u8>, StoreError>,
) -> Result<ReleaseDecision, StoreError> {
    let Some(ch) = load_challenge(tx, req.challenge_id)? else {
        return Ok(ReleaseDecision::Refused(Refusal::ChallengeUnknown));
    };
    if ch.agent_id != req.agent_id {
        return Ok(ReleaseDecision::Refused(Refusal::ChallengeUnknown));
    }
    if let Some(used) = &ch.used {
        return Ok(match &used.evidence_hash {
            Some(h) if h.as_slice() == req.evidence_hash.as_slice() => match &used.response {
                Some(resp) => ReleaseDecision::Retried {
                    response: resp.clone(),
                },
                None => ReleaseDecision::Refused(Refusal::NonceReused),
            },
            _ => ReleaseDecision::Refused(Refusal::NonceReused),
        });
    }
    if ch.expires_at <= req.now {
        return Ok(ReleaseDecision::Refused(Refusal::ChallengeExpired));
    }
    let Some(enr) = load_enrollment(tx, req.agent_id)? else {
        return Ok(ReleaseDecision::Refused(Refusal::NotEnrolled));
    };
    match enr.state {
        EnrollmentState::Armed => {}
        EnrollmentState::Revoked => return Ok(ReleaseDecision::Refused(Refusal::Revoked)),
        EnrollmentState::Terminated => {
            return Ok(ReleaseDecision::Refused(Refusal::AgentTerminated))
        }
    }
    let session: Option<(i64, String)> = tx
        .query_row(
            "SELECT releases, state FROM sessions WHERE agent_id = ?1 AND reset_count = ?2",
            params![req.agent_id, req.reset_count],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((_, state)) = &session {
        if SessionState::parse(state) != Some(SessionState::Open) {
            return Ok(ReleaseDecision::Refused(Refusal::SessionTerminated {
                reset_count: req.reset_count,
            }));
        }
    }
    let latest: Option<i64> = tx.query_row(
        "SELECT MAX(reset_count) FROM sessions WHERE agent_id = ?1",
        [req.agent_id],
        |row| row.get(0),
    )?;
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
                tx.execute(
                    "UPDATE enrollments SET state = 'terminated', updated_at = ?2 WHERE agent_id = ?1",
                    params![req.agent_id, req.now],
                )?;
                return Ok(ReleaseDecision::Refused(Refusal::MaxBootsReached {
                    max_boots: max,
                }));
            }
        }
    }

    let releases = session.as_ref().map_or(0, |(n, _)| *n) + 1;
    let terminated = releases >= i64::from(enr.max_attestations);
    let response = seal(
        &enr,
        ReleaseCount {
            releases: u32::try_from(releases).map_err(|_| corrupt_session())?,
            terminated,
        },
    )?;
    let state = if terminated { "terminated" } else { "open" };
    tx.execute(
        "INSERT INTO sessions (agent_id, reset_count, releases, state, first_release_at, last_release_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT (agent_id, reset_count) DO UPDATE
            SET releases = excluded.releases, state = excluded.state, last_release_at = excluded.last_release_at",
        params![req.agent_id, req.reset_count, releases, state, req.now],
    )?;
    if new_session {
        let boots_used = enr.boots_used + 1;
        let agent_done = terminated && enr.max_boots.is_some_and(|m| boots_used >= m);
        tx.execute(
            "UPDATE enrollments SET boots_used = ?2, state = ?3, updated_at = ?4 WHERE agent_id = ?1",
            params![
                req.agent_id,
                boots_used,
                if agent_done { "terminated" } else { "armed" },
                req.now
            ],
        )?;
    } else if terminated && enr.max_boots.is_some_and(|m| enr.boots_used >= m) {
        tx.execute(
            "UPDATE enrollments SET state = 'terminated', updated_at = ?2 WHERE agent_id = ?1",
            params![req.agent_id, req.now],
        )?;
    }
    tx.execute(
        "UPDATE challenges SET used_at = ?2, evidence_hash = ?3, response = ?4 WHERE challenge_id = ?1",
        params![req.challenge_id, req.now, req.evidence_hash.as_slice(), response],
    )?;
    Ok(ReleaseDecision::Released {
        response,
        releases: u32::try_from(releases).map_err(|_| corrupt_session())?,
        session_terminated: terminated,
    })
}

fn corrupt_session() -> StoreError {
    StoreError::Corrupt {
        table: "sessions",
        what: "value out of range",
    }
}

/// An enrollment pinned to a named policy version is evaluated against that stored version
/// (versions are immutable); an inline one against its own document.
const ENROLLMENT_SELECT: &str = "SELECT e.agent_id, e.ek_pub, COALESCE(p.document, e.policy),
    e.max_attestations, e.max_boots, e.share_wrapped, e.payload_ct, e.state, e.boots_used,
    e.created_at, e.updated_at, e.policy_name, e.policy_version
    FROM enrollments e LEFT JOIN policies p
        ON p.name = e.policy_name AND p.version = e.policy_version";

fn load_enrollment(c: &Connection, agent_id: &str) -> Result<Option<Enrollment>, StoreError> {
    c.query_row(
        &format!("{ENROLLMENT_SELECT} WHERE e.agent_id = ?1"),
        [agent_id],
        enrollment_from_row,
    )
    .optional()?
    .transpose()
}

fn enrollment_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<Enrollment, StoreError>> {
    let corrupt = |what| StoreError::Corrupt {
        table: "enrollments",
        what,
    };
    let state: String = row.get(7)?;
    let max_att: i64 = row.get(3)?;
    let max_boots: Option<i64> = row.get(4)?;
    let boots_used: i64 = row.get(8)?;
    let policy_name: Option<String> = row.get(11)?;
    let policy_version: Option<i64> = row.get(12)?;
    let parsed = (|| {
        let policy_ref = match (policy_name, policy_version) {
            (Some(n), Some(v)) => {
                Some((n, u32::try_from(v).map_err(|_| corrupt("policy_version"))?))
            }
            (None, None) => None,
            _ => return Err(corrupt("policy_name/policy_version")),
        };
        Ok(Enrollment {
            agent_id: row.get(0)?,
            ek_pub: row.get(1)?,
            policy: row.get(2)?,
            max_attestations: u32::try_from(max_att).map_err(|_| corrupt("max_attestations"))?,
            max_boots: max_boots
                .map(u32::try_from)
                .transpose()
                .map_err(|_| corrupt("max_boots"))?,
            share_wrapped: row.get(5)?,
            payload_ct: row.get(6)?,
            state: EnrollmentState::parse(&state).ok_or_else(|| corrupt("state"))?,
            boots_used: u32::try_from(boots_used).map_err(|_| corrupt("boots_used"))?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            policy_ref,
        })
    })();
    Ok(parsed)
}

fn load_challenge(c: &Connection, id: &str) -> Result<Option<Challenge>, StoreError> {
    let row = c
        .query_row(
            "SELECT challenge_id, agent_id, ak_name, nonce, expires_at, used_at, evidence_hash, response
             FROM challenges WHERE challenge_id = ?1",
            [id],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, Option<i64>>(5)?,
                    row.get::<_, Option<Vec<u8>>>(6)?,
                    row.get::<_, Option<Vec<u8>>>(7)?,
                ))
            },
        )
        .optional()?;
    let Some((
        challenge_id,
        agent_id,
        ak_name,
        nonce,
        expires_at,
        used_at,
        evidence_hash,
        response,
    )) = row
    else {
        return Ok(None);
    };
    let nonce: [u8; 32] = nonce.try_into().map_err(|_| StoreError::Corrupt {
        table: "challenges",
        what: "nonce is not 32 bytes",
    })?;
    Ok(Some(Challenge {
        challenge_id,
        agent_id,
        ak_name,
        nonce,
        expires_at,
        used: used_at.map(|at| UsedChallenge {
            at,
            evidence_hash,
            response,
        }),
    }))
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
