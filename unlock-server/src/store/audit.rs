//! Appending to the audit trail, inside the transaction whose decision it records (so a
//! crash leaves neither a decision without its record nor a record without its decision),
//! and reading it back in pages.
//!
//! Appenders take turns on the chain head's row (`audit_head`, locked `FOR UPDATE` on
//! PostgreSQL; SQLite has one writer), so replicas sharing a database extend one chain and
//! it never forks.

use verifier_core::audit::{record_hash, AuditRecord, MAX_DETAIL};

use super::db::{args, Conn, Row};
use super::{Store, StoreError};

/// Who caused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The unlock path (an agent's request, decided by the role).
    Agent,
    /// A holder of the admin token.
    Admin,
}

impl Actor {
    fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }
}

/// Appends one record: `kind` and `detail` (a JSON object) about `agent_id`, at `at`.
pub(crate) fn append(
    c: &mut dyn Conn,
    at: i64,
    kind: &str,
    agent_id: Option<&str>,
    actor: Actor,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let mut detail = detail.to_string();
    if detail.len() > MAX_DETAIL {
        // Never silently cut: say that it was, and keep what fits of the kind.
        detail = serde_json::json!({"truncated": true, "bytes": detail.len()}).to_string();
    }
    let head = c.query_one(
        &format!(
            "SELECT seq, hash FROM audit_head WHERE id = 1{}",
            c.dialect().for_update()
        ),
        &[],
    )?;
    let seq = head.int(0, "audit_head")?.saturating_add(1);
    let prev = head.blob(1, "audit_head")?;
    let hash = record_hash(&prev, seq, at, kind, agent_id, actor.as_str(), &detail);
    c.execute(
        "INSERT INTO audit (seq, at, kind, agent_id, actor, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            seq,
            at,
            kind,
            agent_id,
            actor.as_str(),
            detail.as_str(),
            prev.as_slice(),
            hash.as_slice()
        ],
    )?;
    c.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        args![seq, hash.as_slice()],
    )?;
    Ok(())
}

/// Most records one page returns.
pub const MAX_PAGE: u32 = 1000;

impl Store {
    /// Records after `after` (oldest first, at most `limit`, capped at [`MAX_PAGE`]), of
    /// `agent_id` only if given; and the chain's head (seq, hash) as read with them.
    pub fn audit_page(
        &self,
        after: i64,
        limit: u32,
        agent_id: Option<&str>,
    ) -> Result<(Vec<AuditRecord>, i64, Vec<u8>), StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_PAGE));
        self.read(|c| {
            let rows = match agent_id {
                Some(a) => c.query(
                    "SELECT seq, at, kind, agent_id, actor, detail, prev_hash, hash FROM audit
                     WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    args![a, after, limit],
                )?,
                None => c.query(
                    "SELECT seq, at, kind, agent_id, actor, detail, prev_hash, hash FROM audit
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    args![after, limit],
                )?,
            };
            let records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            let head = c.query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?;
            Ok((
                records,
                head.int(0, "audit_head")?,
                head.blob(1, "audit_head")?,
            ))
        })
    }

    /// Takes the webhook delivery lease for `holder` until `until` if it is free (expired or
    /// already ours); the cursor (last delivered seq) when taken.
    pub fn take_webhook_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE webhook_cursor SET holder = ?1, lease_until = ?3
                 WHERE id = 1 AND (lease_until < ?2 OR holder = ?1)",
                args![holder, now, until],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let row = c.query_one("SELECT seq FROM webhook_cursor WHERE id = 1", &[])?;
            Ok(Some(row.int(0, "webhook_cursor")?))
        })
    }

    /// Records that everything up to `seq` was delivered (only by the lease holder).
    pub fn advance_webhook_cursor(&self, holder: &str, seq: i64) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE webhook_cursor SET seq = ?2 WHERE id = 1 AND holder = ?1 AND seq < ?2",
                args![holder, seq],
            )?;
            Ok(n == 1)
        })
    }

    /// Overwrites one record's detail in place (tests: what an attacker with database
    /// access would do, for `audit verify` to find).
    #[cfg(test)]
    pub(crate) fn tamper_audit(&self, seq: i64, detail: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "UPDATE audit SET detail = ?2 WHERE seq = ?1",
                args![seq, detail],
            )
            .map(drop)
        })
    }
}

fn record(row: &Row) -> Result<AuditRecord, StoreError> {
    let t = "audit";
    Ok(AuditRecord {
        seq: row.int(0, t)?,
        at: row.int(1, t)?,
        kind: row.text(2, t)?,
        agent_id: row.opt_text(3, t)?,
        actor: row.text(4, t)?,
        detail: row.text(5, t)?,
        prev_hash: hex::encode(row.blob(6, t)?),
        hash: hex::encode(row.blob(7, t)?),
    })
}
