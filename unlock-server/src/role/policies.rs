//! Named policies of a role: create, add a version (with the diff), show, list, diff, and
//! apply a version to enrollments. Enrollments never follow a new version on their own: an
//! operator applies it, after seeing what changes for each machine.

use verifier_core::policy::{diff, Policy, PolicyDocument};
use verifier_core::proto::v1::{
    AgentId, ErrorCode, Id, MovedAgent, PinnedAgent, PolicyApplyRequest, PolicyApplyResponse,
    PolicyCreateRequest, PolicyDiffInfo, PolicyList, PolicyRef, PolicySummary, PolicyUpdateRequest,
    PolicyVersionInfo,
};

use super::RoleService;
use crate::error::ApiError;
use crate::store::{Actor, PolicyRow, StoreError};

/// A stored version, parsed.
pub(super) struct StoredPolicy {
    pub(super) policy: PolicyRef,
    pub(super) created_at: i64,
    pub(super) document: PolicyDocument,
}

fn parse_name(name: &str) -> Result<Id, ApiError> {
    Id::try_from(name.to_owned())
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("policy name: {e}")))
}

fn document(text: &str) -> Result<PolicyDocument, ApiError> {
    serde_json::from_str(text).map_err(ApiError::internal)
}

fn stored(row: PolicyRow) -> Result<StoredPolicy, ApiError> {
    Ok(StoredPolicy {
        policy: PolicyRef {
            name: Id::try_from(row.name).map_err(ApiError::internal)?,
            version: row.version,
        },
        created_at: row.created_at,
        document: document(&row.document)?,
    })
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::PolicyNotFound(p) => {
            ApiError::new(ErrorCode::MalformedRequest, format!("no policy {p}"))
        }
        StoreError::PolicyExists(p) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("policy {p} already exists (add a version with `unlockctl policy update`)"),
        ),
        StoreError::PolicyMoved { .. } => ApiError::new(ErrorCode::MalformedRequest, e.to_string()),
        StoreError::NotFound(a) => {
            ApiError::new(ErrorCode::NotEnrolled, format!("agent {a} is not enrolled"))
        }
        other => other.into(),
    }
}

impl RoleService {
    /// One version (`None`: the latest) of a named policy.
    pub(super) fn policy_version(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<StoredPolicy, ApiError> {
        let name = parse_name(name)?;
        stored(
            self.store
                .policy(name.as_str(), version)
                .map_err(store_error)?,
        )
    }

    fn version_info(&self, p: StoredPolicy) -> Result<PolicyVersionInfo, ApiError> {
        let diff_from_previous = match p.policy.version.checked_sub(1).filter(|v| *v > 0) {
            Some(prev) => {
                let old = self.policy_version(p.policy.name.as_str(), Some(prev))?;
                Some(diff(&old.document, &p.document))
            }
            None => None,
        };
        let pinned_elsewhere = self
            .store
            .policy_pins(p.policy.name.as_str())?
            .into_iter()
            .filter(|(_, v)| *v != p.policy.version)
            .map(|(a, version)| {
                Ok(PinnedAgent {
                    agent_id: AgentId::try_from(a).map_err(ApiError::internal)?,
                    version,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(PolicyVersionInfo {
            policy: p.policy,
            created_at: p.created_at,
            document: p.document,
            diff_from_previous,
            pinned_elsewhere,
        })
    }

    /// Creates version 1.
    pub fn create_policy(
        &self,
        req: &PolicyCreateRequest,
        now: i64,
    ) -> Result<PolicyVersionInfo, ApiError> {
        Policy::from_document(req.document.clone())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        let text = serde_json::to_string(&req.document).map_err(ApiError::internal)?;
        self.store
            .create_policy(req.name.as_str(), &text, now)
            .map_err(store_error)?;
        tracing::info!(role = self.role.as_str(), policy = %req.name, "policy created");
        let p = self.policy_version(req.name.as_str(), Some(1))?;
        self.version_info(p)
    }

    /// Adds the next version; enrollments stay where they are. The answer carries the diff
    /// from the previous version and the enrollments still pinned to older versions.
    pub fn update_policy(
        &self,
        name: &str,
        req: &PolicyUpdateRequest,
        now: i64,
    ) -> Result<PolicyVersionInfo, ApiError> {
        let name = parse_name(name)?;
        Policy::from_document(req.document.clone())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        let latest = self.policy_version(name.as_str(), None)?;
        if latest.document == req.document {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("{} is already this document", latest.policy),
            ));
        }
        let text = serde_json::to_string(&req.document).map_err(ApiError::internal)?;
        let version = self
            .store
            .add_policy_version(name.as_str(), None, &text, Actor::Admin, now)
            .map_err(store_error)?;
        tracing::info!(role = self.role.as_str(), policy = %name, version, "policy version added");
        let p = self.policy_version(name.as_str(), Some(version))?;
        self.version_info(p)
    }

    /// One version with its diff from the previous one.
    pub fn show_policy(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<PolicyVersionInfo, ApiError> {
        let p = self.policy_version(name, version)?;
        self.version_info(p)
    }

    /// Every named policy.
    pub fn list_policies(&self) -> Result<PolicyList, ApiError> {
        let policies = self
            .store
            .policies()?
            .into_iter()
            .map(|r| {
                Ok(PolicySummary {
                    name: Id::try_from(r.name).map_err(ApiError::internal)?,
                    latest_version: r.latest_version,
                    updated_at: r.updated_at,
                    enrollments: r.enrollments,
                    behind: r.behind,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(PolicyList { policies })
    }

    /// The changes between two versions (`to` absent: the latest).
    pub fn diff_policy(
        &self,
        name: &str,
        from: u32,
        to: Option<u32>,
    ) -> Result<PolicyDiffInfo, ApiError> {
        let a = self.policy_version(name, Some(from))?;
        let b = self.policy_version(name, to)?;
        Ok(PolicyDiffInfo {
            diff: diff(&a.document, &b.document),
            from: a.policy,
            to: b.policy,
        })
    }

    /// Moves enrollments to a version, or with `dry_run` shows what would change for each.
    pub fn apply_policy(
        &self,
        name: &str,
        req: &PolicyApplyRequest,
        now: i64,
    ) -> Result<PolicyApplyResponse, ApiError> {
        let target = self.policy_version(name, Some(req.version))?;
        let agents: Option<Vec<String>> = if req.all {
            None
        } else {
            Some(req.agents.iter().map(|a| a.as_str().to_owned()).collect())
        };
        let moves = self
            .store
            .apply_policy(
                target.policy.name.as_str(),
                req.version,
                agents.as_deref(),
                req.dry_run,
                now,
            )
            .map_err(store_error)?;
        let mut moved = Vec::with_capacity(moves.len());
        for m in moves {
            let old = document(&m.old_document)?;
            let from = match m.from {
                Some((n, version)) => Some(PolicyRef {
                    name: Id::try_from(n).map_err(ApiError::internal)?,
                    version,
                }),
                None => None,
            };
            moved.push(MovedAgent {
                agent_id: AgentId::try_from(m.agent_id).map_err(ApiError::internal)?,
                from,
                diff: diff(&old, &target.document),
            });
        }
        if !req.dry_run {
            tracing::info!(
                role = self.role.as_str(),
                policy = %target.policy,
                moved = moved.len(),
                "policy applied"
            );
        }
        Ok(PolicyApplyResponse {
            to: target.policy,
            dry_run: req.dry_run,
            moved,
        })
    }
}
