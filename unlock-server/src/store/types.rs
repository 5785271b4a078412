//! Rows of a role's database and the outcomes of the release decision.

use std::fmt;

/// Lifecycle of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentState {
    /// May release.
    Armed,
    /// An operator revoked it; nothing is released until re-armed.
    Revoked,
    /// `max_boots` reached: terminated for good (until re-armed).
    Terminated,
}

impl EnrollmentState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Armed => "armed",
            Self::Revoked => "revoked",
            Self::Terminated => "terminated",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "armed" => Some(Self::Armed),
            "revoked" => Some(Self::Revoked),
            "terminated" => Some(Self::Terminated),
            _ => None,
        }
    }
}

/// State of one boot session (agent, resetCount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Releases left in this boot.
    Open,
    /// `max_attestations` reached: nothing more in this boot.
    Terminated,
}

impl SessionState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Terminated => "terminated",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "terminated" => Some(Self::Terminated),
            _ => None,
        }
    }
}

/// An enrollment as deposited by `unlockctl enroll`.
#[derive(Clone)]
pub struct NewEnrollment {
    /// Lowercase hex SHA-256 of the EK's TPMT_PUBLIC.
    pub agent_id: String,
    /// The EK's TPMT_PUBLIC.
    pub ek_pub: Vec<u8>,
    /// Policy document (JSON).
    pub policy: String,
    /// Releases allowed per boot session.
    pub max_attestations: u32,
    /// Boot sessions allowed in the enrollment's lifetime (`None`: unbounded).
    pub max_boots: Option<u32>,
    /// This role's half, wrapped under its master key.
    pub share_wrapped: Vec<u8>,
    /// The payload ciphertext (verifier role only).
    pub payload_ct: Option<Vec<u8>>,
}

impl fmt::Debug for NewEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEnrollment")
            .field("agent_id", &self.agent_id)
            .field("max_attestations", &self.max_attestations)
            .field("max_boots", &self.max_boots)
            .finish_non_exhaustive()
    }
}

/// A stored enrollment.
#[derive(Clone)]
pub struct Enrollment {
    /// Agent id.
    pub agent_id: String,
    /// The EK's TPMT_PUBLIC.
    pub ek_pub: Vec<u8>,
    /// Policy document (JSON).
    pub policy: String,
    /// Releases allowed per boot session.
    pub max_attestations: u32,
    /// Lifetime bound on boot sessions.
    pub max_boots: Option<u32>,
    /// Wrapped half.
    pub share_wrapped: Vec<u8>,
    /// Payload ciphertext (verifier role).
    pub payload_ct: Option<Vec<u8>>,
    /// Lifecycle state.
    pub state: EnrollmentState,
    /// Boot sessions that released so far.
    pub boots_used: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The named policy version `policy` is (`None`: inline policy).
    pub policy_ref: Option<(String, u32)>,
    /// The auto-enrollment rule that admitted it and what matched (`None`: an operator).
    pub admitted_by: Option<String>,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("agent_id", &self.agent_id)
            .field("state", &self.state)
            .field("max_attestations", &self.max_attestations)
            .field("max_boots", &self.max_boots)
            .field("boots_used", &self.boots_used)
            .finish_non_exhaustive()
    }
}

/// A boot session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// TPM resetCount of the boot.
    pub reset_count: u32,
    /// Releases so far in this boot.
    pub releases: u32,
    /// Open or TERMINATED.
    pub state: SessionState,
    /// Unix seconds.
    pub first_release_at: i64,
    /// Unix seconds.
    pub last_release_at: i64,
}

/// A logged attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The challenge answered, if any.
    pub challenge_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// Whether a half was released.
    pub released: bool,
    /// Why (for refusals).
    pub reason: String,
}

/// A pending MakeCredential challenge.
#[derive(Clone)]
pub struct Registration {
    /// Random id handed to the agent.
    pub registration_id: String,
    /// Agent id.
    pub agent_id: String,
    /// AK TPMT_PUBLIC.
    pub ak_pub: Vec<u8>,
    /// AK name.
    pub ak_name: Vec<u8>,
    /// The credential secret, wrapped under the master key.
    pub secret_wrapped: Vec<u8>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("registration_id", &self.registration_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// A challenge to store.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    /// The ticket (see `role::ticket`).
    pub challenge_id: String,
    /// Agent it was issued to.
    pub agent_id: String,
    /// AK the agent will quote with.
    pub ak_name: Vec<u8>,
    /// The nonce (a Merkle leaf).
    pub nonce: [u8; 32],
    /// Unix seconds.
    pub expires_at: i64,
}

/// A stored challenge.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Random id.
    pub challenge_id: String,
    /// Agent it was issued to.
    pub agent_id: String,
    /// AK the agent will quote with.
    pub ak_name: Vec<u8>,
    /// The nonce.
    pub nonce: [u8; 32],
    /// Unix seconds.
    pub expires_at: i64,
    /// Set once the challenge released.
    pub used: Option<UsedChallenge>,
}

/// How a challenge was used.
#[derive(Debug, Clone)]
pub struct UsedChallenge {
    /// Unix seconds.
    pub at: i64,
    /// SHA-256 of the evidence that released.
    pub evidence_hash: Option<Vec<u8>>,
    /// The sealed answer given.
    pub response: Option<Vec<u8>>,
}

/// Inputs of the atomic release decision; all evidence checks have passed before this.
#[derive(Debug, Clone)]
pub struct ReleaseRequest<'a> {
    /// The challenge answered, as its verified ticket says (stored as used on release).
    pub challenge: &'a NewChallenge,
    /// resetCount from the verified quote.
    pub reset_count: u32,
    /// The evidence's identity (`AttestRequest::evidence_digest`), for idempotent retries.
    pub evidence_hash: &'a [u8; 32],
    /// SHA-256 of the NK the answer is sealed to, for validated evidence: a session that
    /// already released to this NK answers again without counting.
    pub nk_hash: Option<[u8; 32]>,
    /// Unix seconds.
    pub now: i64,
    /// What the boot used of its named policy, recorded with a new session (`None`: an
    /// inline policy, or nothing to record).
    pub usage: Option<super::BootUsage<'a>>,
}

impl ReleaseRequest<'_> {
    /// The agent the challenge was issued to.
    pub fn agent_id(&self) -> &str {
        &self.challenge.agent_id
    }

    /// The challenge's id (its ticket).
    pub fn challenge_id(&self) -> &str {
        &self.challenge.challenge_id
    }
}

/// An activated AK: its name and public area (TPMT_PUBLIC).
pub type AkRow = (Vec<u8>, Vec<u8>);

/// The count a release will have, handed to the sealing step so the answer can say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseCount {
    /// Releases in this boot session including this one.
    pub releases: u32,
    /// Whether this release TERMINATES the session.
    pub terminated: bool,
}

/// Outcome of [`super::Store::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseDecision {
    /// A release was counted and the answer is durable.
    Released {
        /// The sealed answer.
        response: Vec<u8>,
        /// Releases in this boot session, including this one.
        releases: u32,
        /// Whether this release TERMINATED the session.
        session_terminated: bool,
    },
    /// The same evidence for an already-released challenge: the same answer, not counted
    /// again.
    Retried {
        /// The stored sealed answer.
        response: Vec<u8>,
    },
    /// Fresh, validated evidence of a boot session that already released to the same NK
    /// (the same agent process, e.g. retrying after the other role failed): the half
    /// re-sealed to that NK for this challenge, not counted.
    Resealed {
        /// The sealed answer.
        response: Vec<u8>,
    },
    /// Nothing released.
    Refused(Refusal),
}

/// Why the store refused a release. Each maps to a stable protocol error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such challenge for this agent.
    ChallengeUnknown,
    /// The challenge expired.
    ChallengeExpired,
    /// The challenge was already used by other evidence.
    NonceReused,
    /// The agent is not enrolled with this role.
    NotEnrolled,
    /// Revoked by an operator.
    Revoked,
    /// `max_boots` used up earlier.
    AgentTerminated,
    /// This boot session is TERMINATED.
    SessionTerminated {
        /// resetCount of the session.
        reset_count: u32,
    },
    /// The quote's resetCount is behind a session already seen.
    ResetCountWentBackwards {
        /// resetCount in the quote.
        quoted: u32,
        /// Highest resetCount seen.
        latest: u32,
    },
    /// This new boot would exceed `max_boots`.
    MaxBootsReached {
        /// The bound.
        max_boots: u32,
    },
}

impl Refusal {
    /// The protocol's code for this refusal (exhaustive: one place).
    pub fn code(&self) -> verifier_core::proto::v1::ErrorCode {
        use verifier_core::proto::v1::ErrorCode;
        match self {
            Self::ChallengeUnknown => ErrorCode::UnknownChallenge,
            Self::ChallengeExpired => ErrorCode::ChallengeExpired,
            Self::NonceReused => ErrorCode::ChallengeUsed,
            Self::NotEnrolled | Self::Revoked => ErrorCode::NotEnrolled,
            Self::AgentTerminated | Self::MaxBootsReached { .. } => ErrorCode::AgentTerminated,
            Self::SessionTerminated { .. } => ErrorCode::SessionTerminated,
            Self::ResetCountWentBackwards { .. } => ErrorCode::ResetCountRegressed,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChallengeUnknown => f.write_str("unknown challenge for this agent"),
            Self::ChallengeExpired => f.write_str("challenge expired; request a new one"),
            Self::NonceReused => f.write_str("nonce already used by other evidence (replay)"),
            Self::NotEnrolled => f.write_str("agent is not enrolled"),
            Self::Revoked => f.write_str("enrollment revoked by an operator"),
            Self::AgentTerminated => {
                f.write_str("agent TERMINATED for good (max_boots used up); re-arm to allow more")
            }
            Self::SessionTerminated { reset_count } => write!(
                f,
                "boot session (resetCount {reset_count}) is TERMINATED: its releases are used up"
            ),
            Self::ResetCountWentBackwards { quoted, latest } => write!(
                f,
                "TPM resetCount {quoted} is behind {latest} already seen: replay or cleared TPM; re-enrollment required"
            ),
            Self::MaxBootsReached { max_boots } => {
                write!(f, "max_boots ({max_boots}) reached: agent TERMINATED")
            }
        }
    }
}
