//! Confidential VMs (evidence kind `azure-snp-vtpm`): the registration that trusts a vTPM's
//! AK through the CPU's attestation report instead of an EK certificate and MakeCredential,
//! and the attest-time check that picks this verifier for such enrollments.
//!
//! Registration (`POST /v1/register/snp-vtpm`): the agent sends its vTPM EK and AK public
//! areas, the HCL report it read from NV index `0x01400001` and the chip's VCEK. The role
//! verifies the VCEK chain to AMD's roots, the SNP report (signature, chip, TCB), that the
//! HCL runtime data is what the report signed, and that the runtime data's `HCLAkPub` is
//! the AK presented and its `HCLEkPub` the enrolled EK; then it pins the AK (as activation
//! does for a TPM) and keeps the report and VCEK. No MakeCredential: the report is what
//! proves the AK lives in this CVM's vTPM.
//!
//! Attestation: the per-boot flow is the TPM's (one quote for both roles, U/V, resetCount,
//! TERMINATED). The stored report and VCEK are verified again (the chain's RSA work cached
//! per VCEK) and the quote is validated with the pinned AK; the policy then sees the SNP
//! claims beside the quote's, so the `snp` section (measurement, minimum TCB, debug,
//! migration agent, SMT, VMPL) is evaluated at every unlock against the current policy.
//!
//! Freshness: the Azure HCL report is produced when the vTPM boots (the paravisor asks the
//! CPU for it then), so it binds the AK and EK, not our nonce. Freshness and the binding
//! to this unlock's NK come from the quote, exactly as for a TPM.

use std::time::{Duration, UNIX_EPOCH};

use verifier_core::attester::amd::{AmdRoots, VcekCache};
use verifier_core::attester::{
    AzureSnpVtpmError, AzureSnpVtpmEvidence, AzureSnpVtpmVerifier, Challenge, VerifiedClaims,
};
use verifier_core::evidence::Submitted;
use verifier_core::policy::{Evaluator, Matched, Policy, UsedItem};
use verifier_core::proto::v1::{
    ActivateResponse, AgentId, ErrorCode, EvidenceKind, SnpVtpmRegisterRequest,
};
use verifier_core::quote::AkPublic;
use verifier_core::wire::Public;

use super::RoleService;
use crate::error::ApiError;
use crate::store::{NewChallenge, StoreError, TeeEvidence};

/// A role's trust anchors for confidential VMs: AMD's roots (shipped with verifier-core, or
/// replaced by the operator's) and the cache of verified VCEKs.
#[derive(Debug)]
pub struct TeeTrust {
    roots: Result<AmdRoots, String>,
    cache: VcekCache,
}

impl TeeTrust {
    /// The AMD roots shipped with verifier-core (Milan, Genoa). They are checked by
    /// verifier-core's tests; should they fail to load, every SEV-SNP registration and
    /// attestation is refused as an internal error (fail closed), the TPM path unaffected.
    pub fn shipped() -> Self {
        Self {
            roots: AmdRoots::shipped().map_err(|e| e.to_string()),
            cache: VcekCache::new(),
        }
    }

    /// Other roots (an operator's chain for another product line; tests' own chain).
    pub fn with_roots(roots: AmdRoots) -> Self {
        Self {
            roots: Ok(roots),
            cache: VcekCache::new(),
        }
    }

    fn verifier(&self, now: i64) -> Result<AzureSnpVtpmVerifier<'_>, ApiError> {
        let roots = self
            .roots
            .as_ref()
            .map_err(|e| ApiError::internal(format!("AMD roots unusable: {e}")))?;
        Ok(AzureSnpVtpmVerifier {
            roots,
            now: UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0)),
            cache: Some(&self.cache),
        })
    }
}

impl RoleService {
    /// Registration of a confidential VM's vTPM (see the module docs): the enrollment must
    /// declare `azure-snp-vtpm`, the report must be genuine and name both keys presented;
    /// then the AK is pinned, with the report and VCEK kept for the attestations.
    pub fn register_snp_vtpm(
        &self,
        req: &SnpVtpmRegisterRequest,
        now: i64,
    ) -> Result<ActivateResponse, ApiError> {
        let ek_bytes = req.ek_pub.as_bytes();
        let ek = Public::parse(ek_bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ek_pub: {e}")))?;
        let agent_id = AgentId::of_ek(ek_bytes);
        let enrollment = self.store.enrollment(agent_id.as_str())?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotEnrolled,
                format!(
                    "agent {agent_id} is not enrolled with the {} role",
                    self.role.as_str()
                ),
            )
        })?;
        if enrollment.ek_pub != ek_bytes {
            return Err(ApiError::new(
                ErrorCode::NotEnrolled,
                "EK differs from the enrolled EK",
            ));
        }
        self.require_evidence_kind(agent_id.as_str(), EvidenceKind::AzureSnpVtpm)?;
        let ak_public = Public::parse(req.ak_pub.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ak_pub: {e}")))?;
        let ak = AkPublic::try_from(ak_public)
            .map_err(|e| ApiError::new(ErrorCode::AkNotAcceptable, e.to_string()))?;
        // The pin (a read) before the chain and report (the costly checks).
        self.check_ak_pin(agent_id.as_str(), ak.name())?;
        self.tee
            .verifier(now)?
            .verify_registration(
                req.hcl_report.as_bytes(),
                req.vcek.as_bytes(),
                ak.public(),
                &ek,
            )
            .map_err(|e| tee_error(&e))?;
        let pinned = self
            .store
            .pin_tee_ak(
                agent_id.as_str(),
                ak.name(),
                req.ak_pub.as_bytes(),
                &TeeEvidence {
                    hcl_report: req.hcl_report.as_bytes().to_vec(),
                    vcek: req.vcek.as_bytes().to_vec(),
                    registered_at: now,
                },
            )
            .map_err(|e| match e {
                StoreError::NotFound(_) => ApiError::new(
                    ErrorCode::NotEnrolled,
                    "the enrollment changed during registration; register again",
                ),
                e => ApiError::from(e),
            })?;
        if !pinned {
            return Err(super::agent::ak_not_pinned(agent_id.as_str()));
        }
        self.metrics.registration();
        tracing::info!(role = self.role.as_str(), agent_id = %agent_id, "SEV-SNP vTPM registered: report verified, AK pinned");
        Ok(ActivateResponse { agent_id })
    }

    /// Refuses a registration of another kind than the enrollment declares: a confidential
    /// VM enrolled as `azure-snp-vtpm` must not be registered with MakeCredential alone
    /// (that would skip the report), nor a TPM machine through a CVM's report.
    pub(super) fn require_evidence_kind(
        &self,
        agent_id: &str,
        presented: EvidenceKind,
    ) -> Result<(), ApiError> {
        let declared = self.store.evidence_kind(agent_id)?;
        // A test-round enrollment registers as a TPM does (MakeCredential).
        let registers_as = match declared {
            EvidenceKind::TestChallengeRound => EvidenceKind::Tpm,
            k => k,
        };
        if registers_as == presented {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::EvidenceKindMismatch,
                format!(
                    "agent {agent_id} is enrolled for evidence `{declared}` with the {} role, \
                     and this registration presents `{presented}`: configure the agent's \
                     `evidence`, or re-enroll with `unlockctl enroll --evidence {presented}`",
                    self.role.as_str()
                ),
            ))
        }
    }

    /// The attest-time verification of an `azure-snp-vtpm` enrollment: the stored report
    /// and VCEK verified again and naming the pinned AK and the enrolled EK, the quote
    /// validated with the pinned AK, the signer in the endorsement hierarchy (the resetCount
    /// names the boot only there), then the policy on the claims with the SNP claims. The
    /// verified resetCount and the allowlist items matched, or the refusal (not yet recorded).
    pub(super) fn validate_snp_vtpm(
        &self,
        ch: &NewChallenge,
        ak: &AkPublic,
        ek: &Public,
        submitted: Submitted<'_>,
        policy: &Policy,
    ) -> Result<(u32, Vec<UsedItem>), ApiError> {
        let stored = self.store.tee_evidence(&ch.agent_id)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownAgent,
                "no SEV-SNP report registered for this agent: register first",
            )
        })?;
        let now = super::unix_now();
        let verified = self
            .tee
            .verifier(now)?
            .verify_pinned(
                &Challenge::nonce_only(ch.nonce),
                AzureSnpVtpmEvidence {
                    hcl_report: &stored.hcl_report,
                    vcek: &stored.vcek,
                    tpm: submitted,
                },
                ak,
                ek,
            )
            .map_err(|e| tee_error(&e))?;
        let quote = verified.evidence().quote();
        if !quote.signed_in_endorsement_hierarchy(Some(ek)) {
            return Err(ApiError::new(
                ErrorCode::AkNotAcceptable,
                "the quote's qualifiedSigner puts the vTPM AK outside the endorsement \
                 hierarchy (neither a primary key there nor a child of the enrolled EK)",
            )
            .by_agent());
        }
        let verdict = policy.evaluate_claims(&verified.claims());
        if !verdict.accepted() {
            return Err(ApiError::new(ErrorCode::PolicyDenied, verdict.to_string()).by_agent());
        }
        Ok((
            quote.reset_count(),
            verdict.used.iter().map(Matched::item).collect(),
        ))
    }
}

/// A refusal of SEV-SNP vTPM evidence: the code from verifier-core, charged to the agent
/// only when its AK signed the refused quote (a report or VCEK anyone could send).
fn tee_error(e: &AzureSnpVtpmError) -> ApiError {
    let refusal = ApiError::new(e.code(), e.to_string());
    if e.signed_by_ak() {
        refusal.by_agent()
    } else {
        refusal
    }
}
