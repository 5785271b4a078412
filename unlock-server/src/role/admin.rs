//! The admin API of a role: what `unlockctl` calls (bearer-token authenticated in `http`).

use verifier_core::keysplit::{wrap_context, Share};
use verifier_core::policy::{Policy, PolicyDocument};
use verifier_core::proto::v1::{
    AgentId, AttemptRecord, EnrollRequest, EnrollmentInfo, EnrollmentList, ErrorCode, Id,
    PolicyRef, Role, SessionRecord,
};

use super::RoleService;
use crate::error::ApiError;
use crate::store::{Enrollment, EnrollmentState, NewEnrollment, StoreError};

impl RoleService {
    /// Deposits this role's half for a machine. The share is wrapped under the master key
    /// before it is stored; the payload ciphertext is kept only by the verifier role.
    pub fn enroll(&self, req: &EnrollRequest, now: i64) -> Result<EnrollmentInfo, ApiError> {
        match (self.role, &req.payload_ct) {
            (Role::Verifier, None) => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    "payload_ct: the verifier role needs the payload ciphertext",
                ))
            }
            (Role::Tenant, Some(_)) => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    "payload_ct: the tenant role must not receive the payload ciphertext",
                ))
            }
            _ => {}
        }
        Policy::from_document(req.policy.clone())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        if let Some(r) = &req.policy_ref {
            // The operator enrolls with the document it saw: it must be the named version.
            let stored = self.policy_version(r.name.as_str(), Some(r.version))?;
            if stored.document != req.policy {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("policy: the document is not {r} as stored by this role"),
                ));
            }
        }
        let share = Share::from_slice(req.share.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("share: {e}")))?;
        let agent_id = req.agent_id.as_str();
        let wrapped = self
            .master
            .wrap_share(&share, &wrap_context(self.role.as_str(), agent_id))
            .map_err(ApiError::internal)?;
        self.require_kind_enabled(req.evidence)?;
        let policy = serde_json::to_string(&req.policy).map_err(ApiError::internal)?;
        let result = self.store.enroll_as(
            &NewEnrollment {
                agent_id: agent_id.to_owned(),
                ek_pub: req.ek_pub.as_bytes().to_vec(),
                policy,
                max_attestations: req.max_attestations,
                max_boots: req.max_boots,
                share_wrapped: wrapped,
                payload_ct: req.payload_ct.as_ref().map(|p| p.as_bytes().to_vec()),
            },
            req.policy_ref
                .as_ref()
                .map(|r| (r.name.as_str(), r.version)),
            req.evidence,
            now,
        );
        match result {
            Ok(()) => {}
            Err(StoreError::AlreadyEnrolled(a)) => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "agent {a} is already enrolled with the {} role; delete it first",
                        self.role.as_str()
                    ),
                ))
            }
            Err(StoreError::PolicyNotFound(p)) => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("no policy {p} on the {} role", self.role.as_str()),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(role = self.role.as_str(), agent_id, "enrolled");
        self.show(agent_id)
    }

    /// Every enrollment (without sessions).
    pub fn list(&self) -> Result<EnrollmentList, ApiError> {
        let enrollments = self
            .store
            .list()?
            .into_iter()
            .map(|e| info(e, Vec::new(), Vec::new()))
            .collect::<Result<_, _>>()?;
        Ok(EnrollmentList { enrollments })
    }

    /// One enrollment with its boot sessions and recent attempts.
    pub fn show(&self, agent_id: &str) -> Result<EnrollmentInfo, ApiError> {
        let e = self
            .store
            .enrollment(agent_id)?
            .ok_or_else(|| not_found(agent_id))?;
        let sessions = self
            .store
            .sessions(agent_id)?
            .into_iter()
            .map(|s| SessionRecord {
                reset_count: s.reset_count,
                releases: s.releases,
                state: s.state.as_str().to_owned(),
                first_release_at: s.first_release_at,
                last_release_at: s.last_release_at,
            })
            .collect();
        let attempts = self
            .store
            .attempts(agent_id, 20)?
            .into_iter()
            .map(|a| AttemptRecord {
                at: a.at,
                released: a.released,
                reason: a.reason,
            })
            .collect();
        info(e, sessions, attempts)
    }

    /// Re-arms: state armed, boot budget and session history cleared.
    pub fn rearm(&self, agent_id: &str, now: i64) -> Result<EnrollmentInfo, ApiError> {
        self.store
            .rearm(agent_id, now)
            .map_err(|e| store_not_found(e, agent_id))?;
        tracing::info!(role = self.role.as_str(), agent_id, "re-armed");
        self.show(agent_id)
    }

    /// Releases the agent's AK pin: its next registration pins the AK it then proves.
    pub fn unpin_ak(&self, agent_id: &str, now: i64) -> Result<EnrollmentInfo, ApiError> {
        let n = self
            .store
            .unpin_ak(agent_id, now)
            .map_err(|e| store_not_found(e, agent_id))?;
        tracing::warn!(
            role = self.role.as_str(),
            agent_id,
            unpinned = n,
            "AK pin released by an operator"
        );
        self.show(agent_id)
    }

    /// A page of the audit trail (oldest first) and the chain's head.
    pub fn audit(
        &self,
        after: i64,
        limit: u32,
        agent_id: Option<&str>,
    ) -> Result<verifier_core::audit::AuditPage, ApiError> {
        if let Some(a) = agent_id {
            verifier_core::proto::v1::AgentId::try_from(a.to_owned())
                .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("agent: {e}")))?;
        }
        let (records, head_seq, head_hash) = self.store.audit_page(after, limit, agent_id)?;
        Ok(verifier_core::audit::AuditPage {
            records,
            head_seq,
            head_hash: hex::encode(head_hash),
        })
    }

    /// Revokes: nothing is released until re-armed.
    pub fn revoke(&self, agent_id: &str, now: i64) -> Result<EnrollmentInfo, ApiError> {
        self.store
            .set_state(agent_id, EnrollmentState::Revoked, now)
            .map_err(|e| store_not_found(e, agent_id))?;
        tracing::info!(role = self.role.as_str(), agent_id, "revoked");
        self.show(agent_id)
    }

    /// Deletes the enrollment and the wrapped share.
    pub fn delete(&self, agent_id: &str, now: i64) -> Result<(), ApiError> {
        self.store
            .delete(agent_id, now)
            .map_err(|e| store_not_found(e, agent_id))?;
        tracing::info!(role = self.role.as_str(), agent_id, "deleted");
        Ok(())
    }
}

fn not_found(agent_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotEnrolled,
        format!("agent {agent_id} is not enrolled"),
    )
}

fn store_not_found(e: StoreError, agent_id: &str) -> ApiError {
    match e {
        StoreError::NotFound(_) => not_found(agent_id),
        other => other.into(),
    }
}

fn info(
    e: Enrollment,
    sessions: Vec<SessionRecord>,
    attempts: Vec<AttemptRecord>,
) -> Result<EnrollmentInfo, ApiError> {
    let policy: PolicyDocument = serde_json::from_str(&e.policy).map_err(ApiError::internal)?;
    let policy_ref = match e.policy_ref {
        Some((name, version)) => Some(PolicyRef {
            name: Id::try_from(name).map_err(ApiError::internal)?,
            version,
        }),
        None => None,
    };
    Ok(EnrollmentInfo {
        agent_id: AgentId::try_from(e.agent_id).map_err(ApiError::internal)?,
        state: e.state.as_str().to_owned(),
        max_attestations: e.max_attestations,
        max_boots: e.max_boots,
        boots_used: e.boots_used,
        created_at: e.created_at,
        updated_at: e.updated_at,
        policy,
        policy_ref,
        admitted_by: e.admitted_by,
        sessions,
        attempts,
    })
}
