//! One role (verifier or tenant): its own registrar, challenges, attestation decisions and
//! admin operations over its own store and master key.
//!
//! Handlers here are synchronous (SQLite and crypto); the HTTP layer runs them on the
//! blocking pool. The unlock path is `attest`: validate the evidence (verifier-core),
//! evaluate the policy, then let the store decide the release atomically. Nothing else
//! happens on it.

mod admin;
/// Auto-enrollment rules and the machine's deposit.
pub mod admission;
mod agent;
/// The guest policy's host check (part of the attest path).
mod host;
/// Registration by IAK certificate (no MakeCredential, no activation round).
mod iak;
mod pending;
mod policies;
pub mod provider;
mod retirement;
/// Confidential VMs: SEV-SNP vTPM registration and its attest-time verifier.
pub mod round;
pub mod tee;
/// Challenge ids that are authenticated tickets (no write to issue one).
pub mod ticket;

pub use agent::{FAILURE_WINDOW_SECS, MAX_CONSECUTIVE_FAILURES};
pub use pending::MAX_PENDING_PER_AGENT;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use verifier_core::ekcert::TrustStore;
use verifier_core::keysplit::MasterKey;
use verifier_core::proto::v1::{ErrorCode, Role};

use crate::error::ApiError;
use crate::metrics::RoleMetrics;
use crate::store::Store;

/// Settings a role needs beyond its store and key.
#[derive(Debug, Clone)]
pub struct RoleSettings {
    /// EK CA certificates; empty means none configured.
    pub ek_trust: Arc<TrustStore>,
    /// OEM CAs trusted to issue IAK certificates (`--iak-ca`); empty means none configured.
    pub iak_trust: Arc<TrustStore>,
    /// Accept EKs without a certificate (the enrolled EK is then the only anchor).
    pub allow_ek_without_cert: bool,
    /// Fetches the EK certificate of an agent that sends none (`--ek-cert-command`).
    pub ek_cert_hook: Option<Arc<crate::ek_cert_hook::EkCertHook>>,
    /// Challenge lifetime in seconds.
    pub challenge_ttl_secs: u64,
    /// Registration (MakeCredential) lifetime in seconds.
    pub registration_ttl_secs: u64,
}

/// A role's state.
#[derive(Debug)]
pub struct RoleService {
    role: Role,
    store: Store,
    master: MasterKey,
    tickets: ticket::TicketKey,
    settings: RoleSettings,
    metrics: RoleMetrics,
    admission: Arc<admission::Admission>,
    tee: tee::TeeTrust,
    test_round: Option<round::TestRound>,
}

impl RoleService {
    /// A role over its store and master key.
    pub fn new(role: Role, store: Store, master: MasterKey, settings: RoleSettings) -> Self {
        Self {
            role,
            store,
            tickets: ticket::TicketKey::derive(&master, role),
            master,
            settings,
            metrics: RoleMetrics::default(),
            admission: Arc::default(),
            tee: tee::TeeTrust::shipped(),
            test_round: None,
        }
    }

    /// The same role trusting `trust`'s AMD roots for confidential VMs instead of the
    /// shipped ones (the operator's `--amd-roots`).
    #[must_use]
    pub fn with_tee_trust(mut self, trust: tee::TeeTrust) -> Self {
        self.tee = trust;
        self
    }

    /// TESTS ONLY (`--test-attester-key`): the role accepting the `test-challenge-round`
    /// evidence kind, its parameters sealed to `attester`.
    #[must_use]
    pub fn with_test_round(mut self, attester: verifier_core::keysplit::NkPublic) -> Self {
        self.test_round = Some(round::TestRound::derive(&self.master, self.role, attester));
        self
    }

    /// The role with these auto-enrollment rules (without: off).
    #[must_use]
    pub fn with_admission(mut self, rules: Arc<admission::Admission>) -> Self {
        self.admission = rules;
        self
    }

    /// Which role this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The role's store (for tests and status).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The role's counters (releases and registrations are counted here, where they are
    /// decided; the HTTP layer adds attest outcomes and latency).
    pub fn metrics(&self) -> &RoleMetrics {
        &self.metrics
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random identifier (128 bits, hex) for registrations and challenges.
fn random_id() -> Result<verifier_core::proto::v1::Id, crate::error::ApiError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| crate::error::ApiError::internal("RNG failed"))?;
    verifier_core::proto::v1::Id::try_from(hex::encode(b)).map_err(crate::error::ApiError::internal)
}

/// A request the machine signed with a quote by its AK (a pending policy change, an
/// auto-enrollment deposit): the quote's qualifyingData is the request's digest, and the
/// AK is a restricted key, so only that TPM can have made it.
pub(super) struct MachineQuote<'a> {
    /// Name of the AK that signed (one this role activated for the agent).
    pub(super) ak_name: &'a [u8],
    /// TPMS_ATTEST bytes.
    pub(super) quote: &'a [u8],
    /// TPMT_SIGNATURE bytes.
    pub(super) signature: &'a [u8],
    /// The PCR values the quote covers.
    pub(super) pcrs: &'a verifier_core::wire::PcrValues,
}

impl RoleService {
    /// Checks that `q` is a quote over `digest` by an AK this role activated for
    /// `agent_id`. `refusal` says what the request is when the quote does not verify.
    pub(super) fn check_machine_quote(
        &self,
        agent_id: &str,
        q: &MachineQuote<'_>,
        digest: &[u8],
        refusal: &str,
    ) -> Result<(), ApiError> {
        let ak_pub = self
            .store
            .activated_ak(agent_id, q.ak_name)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownAgent,
                    "this AK is not activated for the agent: register and activate first",
                )
            })?;
        let ak = verifier_core::wire::Public::parse(&ak_pub)
            .map_err(ApiError::internal)
            .and_then(|p| {
                verifier_core::quote::AkPublic::try_from(p).map_err(ApiError::internal)
            })?;
        let signature = verifier_core::wire::Signature::parse(q.signature)
            .map_err(|e| ApiError::new(ErrorCode::QuoteInvalid, format!("signature: {e}")))?;
        verifier_core::quote::verify_quote(&ak, digest, q.quote, &signature, q.pcrs)
            .map(drop)
            .map_err(|e| ApiError::new(ErrorCode::QuoteInvalid, format!("{refusal}: {e}")))
    }
}
