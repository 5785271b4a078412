//! Named, versioned policies and the pinning of enrollments to a version.
//!
//! A version is written once and never changed; an update adds the next version. Moving
//! enrollments to another version is its own operation (`apply`), done in one transaction
//! that returns, per enrollment, the document it was evaluated against before, so the
//! caller can show what changes.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{Store, StoreError};

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// Name.
    pub name: String,
    /// Version (1, 2, ...).
    pub version: u32,
    /// The document (JSON).
    pub document: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A named policy in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummaryRow {
    /// Name.
    pub name: String,
    /// Highest version.
    pub latest_version: u32,
    /// Unix seconds of the latest version.
    pub updated_at: i64,
    /// Enrollments on any version.
    pub enrollments: u32,
    /// Enrollments on an older version than the latest.
    pub behind: u32,
}

/// An enrollment moved to another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMove {
    /// The agent.
    pub agent_id: String,
    /// The version it was pinned to (`None`: an inline policy).
    pub from: Option<(String, u32)>,
    /// The document it was evaluated against until now.
    pub old_document: String,
}

fn version_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        table: "policies",
        what: "version out of range",
    })
}

fn count_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Store {
    /// Creates version 1 of a new named policy.
    pub fn create_policy(&self, name: &str, document: &str, now: i64) -> Result<u32, StoreError> {
        self.with(|c| {
            let r = c.execute(
                "INSERT INTO policies (name, version, document, created_at) VALUES (?1, 1, ?2, ?3)",
                params![name, document, now],
            );
            match r {
                Ok(_) => Ok(1),
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::PolicyExists(name.to_owned()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Adds the next version of an existing policy; returns it. Enrollments are not moved.
    pub fn add_policy_version(
        &self,
        name: &str,
        document: &str,
        now: i64,
    ) -> Result<u32, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let latest: Option<i64> = tx.query_row(
                "SELECT MAX(version) FROM policies WHERE name = ?1",
                [name],
                |row| row.get(0),
            )?;
            let Some(latest) = latest else {
                return Err(StoreError::PolicyNotFound(name.to_owned()));
            };
            let next = latest.saturating_add(1);
            tx.execute(
                "INSERT INTO policies (name, version, document, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, next, document, now],
            )?;
            tx.commit()?;
            version_u32(next)
        })
    }

    /// A version of a policy (`None`: the latest).
    pub fn policy(&self, name: &str, version: Option<u32>) -> Result<PolicyRow, StoreError> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT name, version, document, created_at FROM policies
                     WHERE name = ?1 AND (?2 IS NULL OR version = ?2)
                     ORDER BY version DESC LIMIT 1",
                    params![name, version],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()?;
            let Some((name, version, document, created_at)) = row else {
                return Err(StoreError::PolicyNotFound(match version {
                    Some(v) => format!("{name} v{v}"),
                    None => name.to_owned(),
                }));
            };
            Ok(PolicyRow {
                name,
                version: version_u32(version)?,
                document,
                created_at,
            })
        })
    }

    /// Every named policy, by name.
    pub fn policies(&self) -> Result<Vec<PolicySummaryRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT p.name, p.version, p.created_at,
                    (SELECT COUNT(*) FROM enrollments e WHERE e.policy_name = p.name),
                    (SELECT COUNT(*) FROM enrollments e
                        WHERE e.policy_name = p.name AND e.policy_version < p.version)
                 FROM policies p
                 WHERE p.version = (SELECT MAX(version) FROM policies q WHERE q.name = p.name)
                 ORDER BY p.name",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (name, version, updated_at, enrollments, behind) = r?;
                out.push(PolicySummaryRow {
                    name,
                    latest_version: version_u32(version)?,
                    updated_at,
                    enrollments: count_u32(enrollments),
                    behind: count_u32(behind),
                });
            }
            Ok(out)
        })
    }

    /// Enrollments of `name` and their versions, by agent id.
    pub fn policy_pins(&self, name: &str) -> Result<Vec<(String, u32)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT agent_id, policy_version FROM enrollments WHERE policy_name = ?1
                 ORDER BY agent_id",
            )?;
            let rows = stmt.query_map([name], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (agent, v) = r?;
                out.push((agent, version_u32(v)?));
            }
            Ok(out)
        })
    }

    /// Pins enrollments to `name` v`version`: the named agents (whatever policy they had), or
    /// with `agents = None` every enrollment of `name`. Enrollments already on that version
    /// are left out. With `dry_run` nothing is written. One transaction: the answer lists
    /// exactly what moved.
    pub fn apply_policy(
        &self,
        name: &str,
        version: u32,
        agents: Option<&[String]>,
        dry_run: bool,
        now: i64,
    ) -> Result<Vec<AppliedMove>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let document: String = tx
                .query_row(
                    "SELECT document FROM policies WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::PolicyNotFound(format!("{name} v{version}")))?;
            let select = "SELECT e.agent_id, e.policy_name, e.policy_version,
                    COALESCE(p.document, e.policy)
                 FROM enrollments e LEFT JOIN policies p
                    ON p.name = e.policy_name AND p.version = e.policy_version";
            let mut candidates: Vec<(String, Option<String>, Option<i64>, String)> = Vec::new();
            {
                let map = |row: &rusqlite::Row<'_>| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                };
                match agents {
                    Some(list) => {
                        let mut stmt = tx.prepare(&format!("{select} WHERE e.agent_id = ?1"))?;
                        for a in list {
                            let row = stmt.query_row([a], map).optional()?;
                            candidates.push(row.ok_or_else(|| StoreError::NotFound(a.clone()))?);
                        }
                    }
                    None => {
                        let mut stmt = tx.prepare(&format!(
                            "{select} WHERE e.policy_name = ?1 ORDER BY e.agent_id"
                        ))?;
                        for r in stmt.query_map([name], map)? {
                            candidates.push(r?);
                        }
                    }
                }
            }
            let mut moved = Vec::new();
            for (agent_id, old_name, old_version, old_document) in candidates {
                let from = match (old_name, old_version) {
                    (Some(n), Some(v)) => Some((n, version_u32(v)?)),
                    _ => None,
                };
                if from
                    .as_ref()
                    .is_some_and(|(n, v)| n == name && *v == version)
                {
                    continue;
                }
                if !dry_run {
                    tx.execute(
                        "UPDATE enrollments SET policy_name = ?2, policy_version = ?3,
                            policy = ?4, updated_at = ?5 WHERE agent_id = ?1",
                        params![agent_id, name, version, document, now],
                    )?;
                }
                moved.push(AppliedMove {
                    agent_id,
                    from,
                    old_document,
                });
            }
            if dry_run {
                tx.rollback()?;
            } else {
                tx.commit()?;
            }
            Ok(moved)
        })
    }
}
