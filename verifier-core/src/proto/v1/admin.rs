//! Admin API of a role (`/admin/v1/...`, bearer token): deposit, list, show, re-arm, revoke
//! and delete enrollments; create, version, diff and apply named policies. Used by
//! `unlockctl`; never by agents.

use serde::{Deserialize, Serialize};

use super::common::{AgentId, EvidenceKind, Id};
use super::{Validate, MAX_PUBLIC};
use crate::policy::{PolicyDiff, PolicyDocument};
use crate::proto::{Base64Bytes, ProtoError};

/// Admin paths, relative to a role's base URL.
pub mod admin_path {
    /// `GET` list, `POST` deposit.
    pub const ENROLLMENTS: &str = "/admin/v1/enrollments";
    /// `GET` list, `POST` create ([`super::PolicyCreateRequest`]). Below it, per name:
    /// `GET /{name}[?version=N]`, `POST /{name}/versions` ([`super::PolicyUpdateRequest`]),
    /// `GET /{name}/diff?from=A&to=B`, `POST /{name}/apply` ([`super::PolicyApplyRequest`]).
    pub const POLICIES: &str = "/admin/v1/policies";
    /// `GET ?after=SEQ&limit=N[&agent=ID]`: the audit trail, a page of
    /// [`crate::audit::AuditPage`].
    pub const AUDIT: &str = "/admin/v1/audit";
    /// `POST` [`super::IakBindRequest`]: binds an enrollment to the device its IAK
    /// certificate names (the IAK registration path).
    pub const IAK_BINDINGS: &str = "/admin/v1/iak-bindings";
}

/// A version of a named policy. Versions are immutable; enrollments stay on the version
/// they were given until an operator moves them, so a new version never silently changes
/// what an enrolled machine may boot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// The policy's name (1-64 characters of `[A-Za-z0-9_-]`).
    pub name: Id,
    /// Its version (1, 2, ...).
    pub version: u32,
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

fn check_policy(doc: &PolicyDocument) -> Result<(), ProtoError> {
    crate::policy::Policy::from_document(doc.clone())
        .map(drop)
        .map_err(|_| ProtoError::Invalid {
            field: "document",
            reason: "is not a valid policy (check it with `unlockctl policy check`)",
        })
}

/// `POST /admin/v1/policies`: a new named policy (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCreateRequest {
    /// The name, unique per role.
    pub name: Id,
    /// The document.
    pub document: PolicyDocument,
}

impl Validate for PolicyCreateRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        check_policy(&self.document)
    }
}

/// `POST /admin/v1/policies/{name}/versions`: the next version of a named policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdateRequest {
    /// The new document.
    pub document: PolicyDocument,
}

impl Validate for PolicyUpdateRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        check_policy(&self.document)
    }
}

/// One version of a named policy, with what changed since the previous version and which
/// enrollments are not on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyVersionInfo {
    /// Name and version.
    pub policy: PolicyRef,
    /// Unix seconds.
    pub created_at: i64,
    /// The document.
    pub document: PolicyDocument,
    /// Changes from the previous version (absent for version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_from_previous: Option<PolicyDiff>,
    /// Enrollments of this policy pinned to other versions (they keep those until moved
    /// with `apply`).
    #[serde(default)]
    pub pinned_elsewhere: Vec<PinnedAgent>,
}

impl Validate for PolicyVersionInfo {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// An enrollment and the policy version it is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedAgent {
    /// The machine.
    pub agent_id: AgentId,
    /// Its version.
    pub version: u32,
}

/// `GET /admin/v1/policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyList {
    /// By name.
    pub policies: Vec<PolicySummary>,
}

impl Validate for PolicyList {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// One named policy in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySummary {
    /// The name.
    pub name: Id,
    /// Highest version.
    pub latest_version: u32,
    /// Unix seconds of the latest version.
    pub updated_at: i64,
    /// Enrollments on any version of it.
    pub enrollments: u32,
    /// Of those, on an older version than the latest.
    pub behind: u32,
}

/// `GET /admin/v1/policies/{name}/diff?from=A&to=B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDiffInfo {
    /// Old version.
    pub from: PolicyRef,
    /// New version.
    pub to: PolicyRef,
    /// The changes.
    pub diff: PolicyDiff,
}

impl Validate for PolicyDiffInfo {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// `POST /admin/v1/policies/{name}/apply`: move enrollments to a version. With `dry_run`
/// nothing changes and the answer shows what would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyApplyRequest {
    /// The version to move to.
    pub version: u32,
    /// These agents (enrolled with any policy, named or inline)...
    #[serde(default)]
    pub agents: Vec<AgentId>,
    /// ...or every enrollment of this policy.
    #[serde(default)]
    pub all: bool,
    /// Only report.
    #[serde(default)]
    pub dry_run: bool,
}

impl Validate for PolicyApplyRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.all == self.agents.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Invalid {
                field: "agents",
                reason: "name agents, or set all, but not both",
            })
        }
    }
}

/// The answer to an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyApplyResponse {
    /// The version applied.
    pub to: PolicyRef,
    /// Whether anything changed.
    pub dry_run: bool,
    /// Each enrollment moved (or that would move), with what changes for it.
    pub moved: Vec<MovedAgent>,
}

impl Validate for PolicyApplyResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// One enrollment moved to another policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovedAgent {
    /// The machine.
    pub agent_id: AgentId,
    /// The version it was on (absent: an inline policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PolicyRef>,
    /// What changes for it.
    pub diff: PolicyDiff,
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
    /// The named policy version `policy` is (the role checks they are the same document and
    /// pins the enrollment to that version). Absent: an inline, anonymous policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<PolicyRef>,
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
    /// How the machine's AK is trusted (default `tpm`: EK certificate and MakeCredential;
    /// `azure-snp-vtpm`: the SEV-SNP report through the HCL report). The role refuses a
    /// registration of another kind.
    #[serde(default, skip_serializing_if = "EvidenceKind::is_tpm")]
    pub evidence: EvidenceKind,
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
    /// The named policy version it is pinned to (absent: inline policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<PolicyRef>,
    /// How it was admitted when an auto-enrollment rule enrolled it (rule name, mode and
    /// what matched); absent: an operator enrolled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_by: Option<String>,
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

/// Longest IAK identity key (`<hwType>:<hex hwSerialNum>`).
pub const MAX_IAK_IDENTITY: usize = 512;

/// `POST /admin/v1/iak-bindings`: the enrolled machine is the device with this IAK identity
/// (`crate::ekcert::IakIdentity::key`, read from its IAK certificate by `unlockctl`). Only
/// then does the role accept that machine's registration by IAK certificate: the
/// certificate proves a genuine device's key, the binding says it is *this* enrollment's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IakBindRequest {
    /// The enrolled machine.
    pub agent_id: AgentId,
    /// `<hwType dotted OID>:<lowercase hex of hwSerialNum>`.
    pub identity: String,
}

impl Validate for IakBindRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        let bad = |reason| ProtoError::Invalid {
            field: "identity",
            reason,
        };
        if self.identity.len() > MAX_IAK_IDENTITY {
            return Err(bad("longer than 512 characters"));
        }
        let (hw_type, serial) = self
            .identity
            .split_once(':')
            .ok_or(bad("is not <hwType>:<hex hwSerialNum>"))?;
        let oid_ok = !hw_type.is_empty()
            && hw_type
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let serial_ok = !serial.is_empty()
            && serial.len() % 2 == 0
            && serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !oid_ok || !serial_ok {
            return Err(bad(
                "is not <dotted OID>:<non-empty lowercase hex hwSerialNum>",
            ));
        }
        Ok(())
    }
}

/// The binding as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IakBindResponse {
    /// The machine.
    pub agent_id: AgentId,
    /// Its bound IAK identity.
    pub identity: String,
}

impl Validate for IakBindResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}
