//! Named, versioned policies and the pinning of enrollments to a version.
//!
//! A version is written once and never changed; an update adds the next version. Moving
//! enrollments to another version is its own operation (`apply`), done in one transaction
//! that returns, per enrollment, the document it was evaluated against before, so the
//! caller can show what changes.

use super::db::args;
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
        let r = self.write(|c| {
            c.execute(
                "INSERT INTO policies (name, version, document, created_at) VALUES (?1, 1, ?2, ?3)",
                args![name, document, now],
            )?;
            super::audit::append(
                c,
                now,
                "policy_create",
                None,
                super::Actor::Admin,
                &serde_json::json!({"name": name, "version": 1}),
            )
        });
        match r {
            Ok(()) => Ok(1),
            Err(e) if e.is_unique_violation() => Err(StoreError::PolicyExists(name.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Adds the next version of an existing policy; returns it. Enrollments are not moved.
    /// The latest version's row is locked, so two replicas adding versions take turns. With
    /// `base`, the version is added only if the latest is still `base` (the version the new
    /// document was computed from; otherwise [`StoreError::PolicyMoved`]), so two writers
    /// that each widened or narrowed the same version cannot drop each other's change.
    pub fn add_policy_version(
        &self,
        name: &str,
        base: Option<u32>,
        document: &str,
        actor: super::Actor,
        now: i64,
    ) -> Result<u32, StoreError> {
        let audit = VersionAudit {
            kind: "policy_version",
            actor,
            detail: serde_json::json!({}),
        };
        self.insert_version(name, base, document, &audit, now)
    }

    /// The one place a policy version is written: lock the latest, check `base`, insert, audit
    /// (`detail` gains `name`, `version` and, with a base, `from_version`).
    pub(super) fn insert_version(
        &self,
        name: &str,
        base: Option<u32>,
        document: &str,
        audit: &VersionAudit,
        now: i64,
    ) -> Result<u32, StoreError> {
        self.write(|c| {
            let lock = format!(
                "SELECT version FROM policies WHERE name = ?1 ORDER BY version DESC LIMIT 1{}",
                c.dialect().for_update()
            );
            let Some(latest) = c.query_opt(&lock, args![name])? else {
                return Err(StoreError::PolicyNotFound(name.to_owned()));
            };
            let latest = latest.int(0, "policies")?;
            if let Some(base) = base.filter(|b| i64::from(*b) != latest) {
                return Err(StoreError::PolicyMoved {
                    name: name.to_owned(),
                    base,
                    latest: u32::try_from(latest).unwrap_or(u32::MAX),
                });
            }
            let next = latest.saturating_add(1);
            c.execute(
                "INSERT INTO policies (name, version, document, created_at) VALUES (?1, ?2, ?3, ?4)",
                args![name, next, document, now],
            )?;
            let mut detail = audit.detail.clone();
            if let Some(map) = detail.as_object_mut() {
                map.insert("name".into(), name.into());
                map.insert("version".into(), next.into());
                if let Some(base) = base {
                    map.insert("from_version".into(), base.into());
                }
            }
            super::audit::append(c, now, audit.kind, None, audit.actor, &detail)?;
            version_u32(next)
        })
    }

    /// A version of a policy (`None`: the latest).
    pub fn policy(&self, name: &str, version: Option<u32>) -> Result<PolicyRow, StoreError> {
        self.read(|c| {
            let row = match version {
                Some(v) => c.query_opt(
                    "SELECT name, version, document, created_at FROM policies
                     WHERE name = ?1 AND version = ?2",
                    args![name, v],
                )?,
                None => c.query_opt(
                    "SELECT name, version, document, created_at FROM policies
                     WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                    args![name],
                )?,
            };
            let Some(row) = row else {
                return Err(StoreError::PolicyNotFound(match version {
                    Some(v) => format!("{name} v{v}"),
                    None => name.to_owned(),
                }));
            };
            let t = "policies";
            Ok(PolicyRow {
                name: row.text(0, t)?,
                version: version_u32(row.int(1, t)?)?,
                document: row.text(2, t)?,
                created_at: row.int(3, t)?,
            })
        })
    }

    /// Every named policy, by name.
    pub fn policies(&self) -> Result<Vec<PolicySummaryRow>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT p.name, p.version, p.created_at,
                    (SELECT COUNT(*) FROM enrollments e WHERE e.policy_name = p.name),
                    (SELECT COUNT(*) FROM enrollments e
                        WHERE e.policy_name = p.name AND e.policy_version < p.version)
                 FROM policies p
                 WHERE p.version = (SELECT MAX(version) FROM policies q WHERE q.name = p.name)
                 ORDER BY p.name",
                &[],
            )?;
            let t = "policies";
            rows.iter()
                .map(|row| {
                    Ok(PolicySummaryRow {
                        name: row.text(0, t)?,
                        latest_version: version_u32(row.int(1, t)?)?,
                        updated_at: row.int(2, t)?,
                        enrollments: count_u32(row.int(3, t)?),
                        behind: count_u32(row.int(4, t)?),
                    })
                })
                .collect()
        })
    }

    /// Enrollments of `name` and their versions, by agent id.
    pub fn policy_pins(&self, name: &str) -> Result<Vec<(String, u32)>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT agent_id, policy_version FROM enrollments WHERE policy_name = ?1
                 ORDER BY agent_id",
                args![name],
            )?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.text(0, "enrollments")?,
                        version_u32(row.int(1, "enrollments")?)?,
                    ))
                })
                .collect()
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
        self.write(|c| {
            let document = c
                .query_opt(
                    "SELECT document FROM policies WHERE name = ?1 AND version = ?2",
                    args![name, version],
                )?
                .ok_or_else(|| StoreError::PolicyNotFound(format!("{name} v{version}")))?
                .text(0, "policies")?;
            let select = "SELECT e.agent_id, e.policy_name, e.policy_version,
                    COALESCE(p.document, e.policy)
                 FROM enrollments e LEFT JOIN policies p
                    ON p.name = e.policy_name AND p.version = e.policy_version";
            let mut candidates = Vec::new();
            match agents {
                Some(list) => {
                    let sql = format!("{select} WHERE e.agent_id = ?1");
                    for a in list {
                        let row = c.query_opt(&sql, args![a])?;
                        candidates.push(row.ok_or_else(|| StoreError::NotFound(a.clone()))?);
                    }
                }
                None => {
                    candidates = c.query(
                        &format!("{select} WHERE e.policy_name = ?1 ORDER BY e.agent_id"),
                        args![name],
                    )?;
                }
            }
            let mut moved = Vec::new();
            let t = "enrollments";
            for row in candidates {
                let agent_id = row.text(0, t)?;
                let from = match (row.opt_text(1, t)?, row.opt_int(2, t)?) {
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
                    c.execute(
                        "UPDATE enrollments SET policy_name = ?2, policy_version = ?3,
                            policy = ?4, updated_at = ?5 WHERE agent_id = ?1",
                        args![&agent_id, name, version, &document, now],
                    )?;
                }
                if !dry_run {
                    super::audit::append(
                        c,
                        now,
                        "policy_apply",
                        Some(&agent_id),
                        super::Actor::Admin,
                        &serde_json::json!({
                            "to": format!("{name} v{version}"),
                            "from": from.as_ref().map(|(n, v)| format!("{n} v{v}")),
                        }),
                    )?;
                }
                moved.push(AppliedMove {
                    agent_id,
                    from,
                    old_document: row.text(3, t)?,
                });
            }
            Ok(moved)
        })
    }
}

/// The audit record written with a new policy version.
#[derive(Debug)]
pub(super) struct VersionAudit {
    /// `policy_version` or `policy_retire`.
    pub kind: &'static str,
    /// Who caused it (an operator, or an agent's auto-approved change).
    pub actor: super::Actor,
    /// Extra fields (a retirement's removed items and boots required).
    pub detail: serde_json::Value,
}
