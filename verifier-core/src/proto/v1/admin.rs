//! Admin API of a role (`/admin/v1/...`, bearer token): deposit, list, show, re-arm, revoke
//! and delete enrollments. Used by `unlockctl`; never by agents.

use serde::{Deserialize, Serialize};

use super::common::AgentId;
use super::{Validate, MAX_PUBLIC};
use crate::policy::PolicyDocument;
use crate::proto::{Base64Bytes, ProtoError};

/// Admin paths, relative to a role's base URL.
pub mod admin_path {
    /// `GET` list, `POST` deposit.
    pub const ENROLLMENTS: &str = "/admin/v1/enrollments";
}

/// `POST /admin/v1/enrollments`: deposit this role's half for one machine.
///
/// The share travels in clear inside TLS to the one role that keeps it, which wraps it under
/// its master key before it touches the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The machine (SHA-256 of `ek_pub`; checked).
    pub agent_id: AgentId,
    /// The EK's TPMT_PUBLIC.
    pub ek_pub: Base64Bytes,
    /// Policy the evidence must satisfy.
    pub policy: PolicyDocument,
    /// Releases allowed per boot session.
    pub max_attestations: u32,
    /// Boot sessions allowed in the enrollment's lifetime (absent: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_boots: Option<u32>,
    /// This role's 32-byte half of K_b.
    pub share: Base64Bytes,
    /// The payload ciphertext: required by the verifier role, refused by the tenant role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ct: Option<Base64Bytes>,
}

impl Validate for EnrollRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        let ek = self.ek_pub.non_empty("ek_pub", MAX_PUBLIC)?;
        if AgentId::of_ek(ek) != self.agent_id {
            return Err(ProtoError::Invalid {
                field: "agent_id",
                reason: "is not the SHA-256 of ek_pub",
            });
        }
        if self.max_attestations == 0 || self.max_attestations > 1000 {
            return Err(ProtoError::Invalid {
                field: "max_attestations",
                reason: "must be between 1 and 1000",
            });
        }
        if self.max_boots == Some(0) {
            return Err(ProtoError::Invalid {
                field: "max_boots",
                reason: "must be at least 1 (omit it for no bound)",
            });
        }
        self.share
            .exact("share", crate::keysplit::KEY_LEN)
            .map(drop)?;
        if let Some(ct) = &self.payload_ct {
            ct.non_empty("payload_ct", crate::keysplit::MAX_PAYLOAD_CIPHERTEXT_LEN)?;
        }
        crate::policy::Policy::from_document(self.policy.clone()).map_err(|_| {
            ProtoError::Invalid {
                field: "policy",
                reason: "is not a valid policy (check it with `unlockctl policy check`)",
            }
        })?;
        Ok(())
    }
}

/// One enrollment as the admin API shows it (never the share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentInfo {
    /// The machine.
    pub agent_id: AgentId,
    /// `armed`, `revoked` or `terminated`.
    pub state: String,
    /// Releases allowed per boot.
    pub max_attestations: u32,
    /// Lifetime bound on boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_boots: Option<u32>,
    /// Boots that released so far.
    pub boots_used: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The policy.
    pub policy: PolicyDocument,
    /// Boot sessions, newest first.
    #[serde(default)]
    pub sessions: Vec<SessionRecord>,
    /// Recent attempts, newest first.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
}

impl Validate for EnrollmentInfo {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// A boot session as recorded by the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    /// TPM resetCount.
    pub reset_count: u32,
    /// Releases in this boot.
    pub releases: u32,
    /// `open` or `terminated`.
    pub state: String,
    /// Unix seconds.
    pub first_release_at: i64,
    /// Unix seconds.
    pub last_release_at: i64,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRecord {
    /// Unix seconds.
    pub at: i64,
    /// Whether a half was released.
    pub released: bool,
    /// The reason given.
    pub reason: String,
}

/// `GET /admin/v1/enrollments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentList {
    /// Every enrollment, by agent id.
    pub enrollments: Vec<EnrollmentInfo>,
}

impl Validate for EnrollmentList {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}
