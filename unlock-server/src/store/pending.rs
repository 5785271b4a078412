//! Policy changes machines asked for (`pending_changes`), waiting for an operator.
//!
//! What a stranger could make this table hold is bounded twice: only a submission quoted by
//! an enrolled machine's activated AK reaches it (checked by the role before any write), and
//! each agent may have at most `max_pending` undecided rows. The id is the change's digest,
//! so a replay finds the row it made instead of adding one.

use super::db::args;
use super::{Store, StoreError};

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Hex SHA-256 of the change.
    pub id: String,
    /// The machine.
    pub agent_id: String,
    /// The change (JSON, `ProposedChange`).
    pub change: String,
    /// Unix seconds.
    pub submitted_at: i64,
    /// `pending`, `approved` or `rejected`.
    pub state: String,
    /// Unix seconds of the decision.
    pub decided_at: Option<i64>,
    /// The policy version an approval produced.
    pub result: Option<(String, u32)>,
    /// Who decided: `operator`, or `auto: signed by <subject>` (the policy's auto_approve).
    pub decided_by: Option<String>,
}

/// A decision on a pending change.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// Approved (true) or rejected.
    pub approved: bool,
    /// The policy version an approval produced.
    pub result: Option<(&'a str, u32)>,
    /// Who: `operator` or `auto: signed by <subject>`.
    pub by: &'a str,
    /// The audit actor: the admin token's holder, or the role deciding for a machine's
    /// request.
    pub actor: super::Actor,
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A new pending row.
    New,
    /// The same change was already there, in this state.
    Exists(String),
}

const COLUMNS: &str =
    "id, agent_id, change, submitted_at, state, decided_at, result_name, result_version, decided_by";

fn row(r: &super::db::Row) -> Result<PendingRow, StoreError> {
    let t = "pending_changes";
    let result = match (r.opt_text(6, t)?, r.opt_int(7, t)?) {
        (Some(n), Some(v)) => Some((
            n,
            u32::try_from(v).map_err(|_| StoreError::Corrupt {
                table: t,
                what: "result_version out of range",
            })?,
        )),
        _ => None,
    };
    Ok(PendingRow {
        id: r.text(0, t)?,
        agent_id: r.text(1, t)?,
        change: r.text(2, t)?,
        submitted_at: r.int(3, t)?,
        state: r.text(4, t)?,
        decided_at: r.opt_int(5, t)?,
        result,
        decided_by: r.opt_text(8, t)?,
    })
}

impl Store {
    /// Stores a pending change of `agent_id` unless the same change (same id) is already
    /// stored; refused with [`StoreError::TooManyPending`] when the agent already has
    /// `max_pending` undecided changes. The agent's enrollment row is locked first, so
    /// concurrent submissions of one agent take turns and the cap holds on PostgreSQL too.
    pub fn submit_pending(
        &self,
        id: &str,
        agent_id: &str,
        change: &str,
        max_pending: u32,
        now: i64,
    ) -> Result<Submitted, StoreError> {
        self.write(|c| {
            let lock = format!(
                "SELECT agent_id FROM enrollments WHERE agent_id = ?1{}",
                c.dialect().for_update()
            );
            if c.query_opt(&lock, args![agent_id])?.is_none() {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            if let Some(r) = c.query_opt(
                "SELECT state FROM pending_changes WHERE id = ?1",
                args![id],
            )? {
                return Ok(Submitted::Exists(r.text(0, "pending_changes")?));
            }
            let n = c
                .query_opt(
                    "SELECT COUNT(*) FROM pending_changes WHERE agent_id = ?1 AND state = 'pending'",
                    args![agent_id],
                )?
                .map(|r| r.int(0, "pending_changes"))
                .transpose()?
                .unwrap_or(0);
            if n >= i64::from(max_pending) {
                return Err(StoreError::TooManyPending {
                    agent_id: agent_id.to_owned(),
                    max: max_pending,
                });
            }
            c.execute(
                "INSERT INTO pending_changes (id, agent_id, change, submitted_at, state)
                 VALUES (?1, ?2, ?3, ?4, 'pending')",
                args![id, agent_id, change, now],
            )?;
            Ok(Submitted::New)
        })
    }

    /// Every stored change (newest first), or only one agent's.
    pub fn pending_changes(&self, agent_id: Option<&str>) -> Result<Vec<PendingRow>, StoreError> {
        self.read(|c| {
            let rows = match agent_id {
                Some(a) => c.query(
                    &format!(
                        "SELECT {COLUMNS} FROM pending_changes WHERE agent_id = ?1
                         ORDER BY submitted_at DESC, id"
                    ),
                    args![a],
                )?,
                None => c.query(
                    &format!(
                        "SELECT {COLUMNS} FROM pending_changes ORDER BY submitted_at DESC, id"
                    ),
                    &[],
                )?,
            };
            rows.iter().map(row).collect()
        })
    }

    /// One change.
    pub fn pending_change(&self, id: &str) -> Result<Option<PendingRow>, StoreError> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM pending_changes WHERE id = ?1"),
                args![id],
            )?
            .as_ref()
            .map(row)
            .transpose()
        })
    }

    /// Records the decision on a change still pending, and who made it (`by`, shown to
    /// operators and kept in the audit trail); `false` when it was not pending (already
    /// decided, or gone).
    pub fn decide_pending(
        &self,
        id: &str,
        decision: &Decision<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let state = if decision.approved {
            "approved"
        } else {
            "rejected"
        };
        let (name, version) = match decision.result {
            Some((n, v)) => (Some(n), Some(v)),
            None => (None, None),
        };
        self.write(|c| {
            let n = c.execute(
                "UPDATE pending_changes SET state = ?2, decided_at = ?3, result_name = ?4,
                    result_version = ?5, decided_by = ?6 WHERE id = ?1 AND state = 'pending'",
                args![id, state, now, name, version, decision.by],
            )?;
            if n == 1 {
                let agent = c
                    .query_opt(
                        "SELECT agent_id FROM pending_changes WHERE id = ?1",
                        args![id],
                    )?
                    .map(|r| r.text(0, "pending_changes"))
                    .transpose()?;
                super::audit::append(
                    c,
                    now,
                    "pending_decided",
                    agent.as_deref(),
                    decision.actor,
                    &serde_json::json!({
                        "id": id,
                        "state": state,
                        "by": decision.by,
                        "result": decision.result.map(|(n, v)| format!("{n} v{v}")),
                    }),
                )?;
            }
            Ok(n == 1)
        })
    }
}
