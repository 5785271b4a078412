//! Evidence verifiers: one interface over the kinds of evidence an attester can present
//! (a TPM quote, a confidential VM's vTPM quote bound to its CPU report, ...).
//!
//! Validation stays apart from policy: a verifier checks that evidence is genuine and
//! returns typed, verified results from which [`Claims`] are read; the policy engine
//! ([`crate::policy`]) evaluates those claims and nothing else.
//!
//! The exchange has an optional challenge step. Most attesters need only the verifier's
//! nonce, but some (IBM Secure Execution) cannot produce evidence until the verifier has
//! sent parameters of its own making (request → challenge with parameters → evidence →
//! result). [`EvidenceVerifier::challenge`] therefore returns a [`Challenge`] holding the
//! nonce and optional verifier-made parameters, and [`EvidenceVerifier::verify`] receives
//! the same challenge back (the caller keeps it, as the server keeps its ticket).
//!
//! Implementations:
//! - [`TpmQuoteVerifier`]: the TPM path ([`crate::evidence::validate`]), unchanged.
//! - [`AzureSnpVtpmVerifier`]: an Azure SEV-SNP CVM: SNP report (VCEK → ASK → ARK), HCL
//!   runtime data bound to it, then the vTPM quote by the AK the report vouches for,
//!   validated exactly as a TPM quote (nonce inclusion, extraData with NK, logs).

pub mod amd;
pub mod azure;
pub mod capture;
pub mod snp;

use std::time::SystemTime;

use serde::Serialize;

use crate::evidence::{validate, Expected, Submitted, ValidatedEvidence, ValidationError};
use crate::keysplit::NkPublic;
use crate::policy::Claims;
use crate::proto::v1::ErrorCode;
pub use crate::proto::v1::{EvidenceKind, UnknownEvidenceKind};
use crate::quote::AkPublic;
use crate::round::{RoundError, RoundKey};

use amd::{AmdRoots, VcekError};
use azure::{AzureError, VerifiedHclReport, VmConfiguration};
use snp::{TcbVersion, VerifiedSnpReport};

/// What the verifier sends the attester: its nonce and, for attesters that need them,
/// parameters of the verifier's making (opaque bytes whose meaning the verifier defines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The verifier's nonce.
    pub nonce: [u8; 32],
    /// Verifier-made parameters, `None` for attesters that need only the nonce.
    pub params: Option<Vec<u8>>,
}

impl Challenge {
    /// A challenge of only a nonce.
    pub fn nonce_only(nonce: [u8; 32]) -> Self {
        Self {
            nonce,
            params: None,
        }
    }
}

/// A verified result that policy can read claims from.
pub trait VerifiedClaims {
    /// The claims the policy evaluates.
    fn claims(&self) -> Claims<'_>;
}

impl VerifiedClaims for ValidatedEvidence<'_> {
    fn claims(&self) -> Claims<'_> {
        ValidatedEvidence::claims(self)
    }
}

/// A verifier for one kind of evidence.
pub trait EvidenceVerifier {
    /// What the attester sent (borrowed from the request).
    type Evidence<'a>;
    /// The verified result; only the implementation can construct it.
    type Verified<'a>: VerifiedClaims;
    /// Why evidence was refused; each variant names the failed check.
    type Error: std::error::Error;

    /// The kind this verifier handles.
    fn kind(&self) -> EvidenceKind;

    /// The challenge for a fresh nonce. The default sends only the nonce; an attester that
    /// needs a challenge round returns parameters too (and `verify` checks the evidence
    /// against them). Fallible: making parameters may need the system's generator.
    fn challenge(&self, nonce: [u8; 32]) -> Result<Challenge, Self::Error> {
        Ok(Challenge::nonce_only(nonce))
    }

    /// Verifies evidence made for `challenge` (the one [`Self::challenge`] returned, kept
    /// by the caller).
    fn verify<'a>(
        &self,
        challenge: &Challenge,
        evidence: Self::Evidence<'a>,
    ) -> Result<Self::Verified<'a>, Self::Error>;
}

/// The TPM quote path as an [`EvidenceVerifier`]: [`crate::evidence::validate`] with the
/// AK proven at registration (MakeCredential).
#[derive(Debug, Clone, Copy)]
pub struct TpmQuoteVerifier<'k> {
    /// The AK activated with the enrolled EK.
    pub ak: &'k AkPublic,
}

impl EvidenceVerifier for TpmQuoteVerifier<'_> {
    type Evidence<'a> = Submitted<'a>;
    type Verified<'a> = ValidatedEvidence<'a>;
    type Error = ValidationError;

    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Tpm
    }

    fn verify<'a>(
        &self,
        challenge: &Challenge,
        evidence: Self::Evidence<'a>,
    ) -> Result<Self::Verified<'a>, Self::Error> {
        validate(
            Expected {
                ak: self.ak,
                nonce: &challenge.nonce,
            },
            evidence,
        )
    }
}

/// The challenge round's test attester ([`crate::round`], evidence kind
/// `test-challenge-round`) as an [`EvidenceVerifier`]: the answer to this challenge's
/// parameters for the submitted quote, then the quote exactly as a TPM quote.
#[derive(Debug, Clone, Copy)]
pub struct TestRoundVerifier<'k> {
    /// The AK activated with the enrolled EK.
    pub ak: &'k AkPublic,
    /// The verifier's round key.
    pub key: &'k RoundKey,
    /// The test attester's public key the parameters are sealed to.
    pub attester: &'k NkPublic,
}

/// What a test-round attester sends: the TPM evidence and its answer.
#[derive(Debug, Clone, Copy)]
pub struct TestRoundEvidence<'a> {
    /// The attester's answer, if it sent one.
    pub answer: Option<&'a [u8]>,
    /// The quote and everything that goes with it.
    pub tpm: Submitted<'a>,
}

/// Why test-round evidence was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestRoundError {
    /// No answer, or not the answer to this challenge (checked before the quote: cheap,
    /// and anyone could have sent it).
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The quote failed validation.
    #[error(transparent)]
    Quote(#[from] ValidationError),
}

impl TestRoundError {
    /// The protocol's refusal code, decided here once.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Round(RoundError::AnswerMissing) => ErrorCode::ChallengeAnswerMissing,
            Self::Round(RoundError::Seal(_)) => ErrorCode::Internal,
            Self::Round(
                RoundError::AnswerLength(_)
                | RoundError::AnswerMismatch
                | RoundError::UnknownVersion(_)
                | RoundError::EmptyParams
                | RoundError::Params(_)
                | RoundError::SecretLength,
            ) => ErrorCode::ChallengeAnswerInvalid,
            Self::Quote(q) => q.code(),
        }
    }

    /// Whether the refused evidence was provably the machine's own: only quote failures
    /// (see [`ValidationError::signed_by_ak`]); a wrong answer anyone could send.
    pub fn signed_by_ak(&self) -> bool {
        match self {
            Self::Round(_) => false,
            Self::Quote(q) => q.signed_by_ak(),
        }
    }
}

impl EvidenceVerifier for TestRoundVerifier<'_> {
    type Evidence<'a> = TestRoundEvidence<'a>;
    type Verified<'a> = ValidatedEvidence<'a>;
    type Error = TestRoundError;

    fn kind(&self) -> EvidenceKind {
        EvidenceKind::TestChallengeRound
    }

    fn challenge(&self, nonce: [u8; 32]) -> Result<Challenge, Self::Error> {
        Ok(Challenge {
            nonce,
            params: Some(self.key.params(self.attester, &nonce)?),
        })
    }

    /// The answer is recomputed from the challenge's nonce (not from parameters sent
    /// back), so only an answer made with the secret sealed into THIS challenge passes.
    fn verify<'a>(
        &self,
        challenge: &Challenge,
        evidence: Self::Evidence<'a>,
    ) -> Result<Self::Verified<'a>, Self::Error> {
        self.key
            .check(&challenge.nonce, evidence.tpm.attest, evidence.answer)?;
        Ok(validate(
            Expected {
                ak: self.ak,
                nonce: &challenge.nonce,
            },
            evidence.tpm,
        )?)
    }
}

/// What an Azure SEV-SNP CVM sends: its HCL report and VCEK beside the usual quote.
#[derive(Debug, Clone, Copy)]
pub struct AzureSnpVtpmEvidence<'a> {
    /// The HCL report read from the vTPM NV index [`azure::HCL_REPORT_NV_INDEX`].
    pub hcl_report: &'a [u8],
    /// The chip's VCEK certificate (DER), e.g. from Azure's instance metadata (THIM) or
    /// AMD's KDS. Untrusted: it must chain to a shipped AMD root.
    pub vcek: &'a [u8],
    /// The quote by the vTPM AK and everything that goes with it, as for a TPM.
    pub tpm: Submitted<'a>,
}

/// Why Azure SEV-SNP vTPM evidence was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureSnpVtpmError {
    /// The VCEK does not chain to an AMD root (or is malformed).
    #[error(transparent)]
    Vcek(#[from] VcekError),
    /// The HCL or SNP report is not genuine, or does not vouch for the AK.
    #[error(transparent)]
    Report(#[from] AzureError),
    /// The vTPM quote (or its logs) failed validation with the vouched-for AK.
    #[error(transparent)]
    Quote(#[from] ValidationError),
}

impl AzureSnpVtpmError {
    /// The protocol's refusal code, decided here once and exhaustively: a VCEK that does
    /// not chain, a report that is not genuine or does not vouch for the AK are
    /// `tee_evidence_invalid` (a malformed HCL report is a malformed request); the quote's
    /// own failures keep their codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Vcek(_) => ErrorCode::TeeEvidenceInvalid,
            Self::Report(r) => match r {
                AzureError::Parse(_) => ErrorCode::MalformedRequest,
                AzureError::NotSnp
                | AzureError::Snp(_)
                | AzureError::RuntimeDataNotBound
                | AzureError::RuntimeData(_)
                | AzureError::Ak(_)
                | AzureError::KeyNotVouched(..) => ErrorCode::TeeEvidenceInvalid,
            },
            Self::Quote(q) => q.code(),
        }
    }

    /// Whether the refused evidence was provably the machine's own (see
    /// [`ValidationError::signed_by_ak`]): only quote failures after the signature and the
    /// binding verified; a report or VCEK failure anyone could have sent.
    pub fn signed_by_ak(&self) -> bool {
        match self {
            Self::Vcek(_) | Self::Report(_) => false,
            Self::Quote(q) => q.signed_by_ak(),
        }
    }
}

/// Azure SEV-SNP CVM evidence verifier.
#[derive(Debug, Clone, Copy)]
pub struct AzureSnpVtpmVerifier<'r> {
    /// The AMD roots (see [`AmdRoots::shipped`]).
    pub roots: &'r AmdRoots,
    /// Verification time for the certificate chain.
    pub now: SystemTime,
    /// Verified VCEKs to reuse (the chain's RSA work once per chip and TCB); `None` verifies
    /// the chain on every attestation.
    pub cache: Option<&'r amd::VcekCache>,
}

impl AzureSnpVtpmVerifier<'_> {
    /// The registration check: the VCEK chain, the HCL report (SNP report signature, chip,
    /// TCB, runtime-data hash), then that the keys the agent presents are the runtime
    /// data's: `ak` (the TPMT_PUBLIC at the vTPM's AK handle, the key the server pins) must
    /// be `HCLAkPub` and `ek` (whose hash is the agent id) must be `HCLEkPub`. No nonce: the
    /// report is the vTPM's boot-time statement, freshness comes from each quote.
    pub fn verify_registration(
        &self,
        hcl_report: &[u8],
        vcek: &[u8],
        ak: &crate::wire::Public,
        ek: &crate::wire::Public,
    ) -> Result<VerifiedHclReport, AzureSnpVtpmError> {
        let vcek = match self.cache {
            Some(cache) => self.roots.verify_vcek_cached(cache, vcek, self.now)?,
            None => self.roots.verify_vcek(vcek, &[], self.now)?,
        };
        let hcl = azure::verify_hcl_report(hcl_report, &vcek)?;
        if !hcl.ak_matches(ak) {
            return Err(AzureError::KeyNotVouched("AK", "HCLAkPub").into());
        }
        if !hcl.ek_matches(ek) {
            return Err(AzureError::KeyNotVouched("EK", "HCLEkPub").into());
        }
        Ok(hcl)
    }

    /// The attest check for an AK pinned at registration: [`Self::verify_registration`] on
    /// the stored HCL report and VCEK (re-checked now, so an expired VCEK or a changed root
    /// set counts), then the quote validated exactly as a TPM quote with the pinned `ak`
    /// (its real name, which the challenge ticket names). The claims carry the SNP report's
    /// claims beside the quote's, for the policy's `snp` section.
    pub fn verify_pinned<'a>(
        &self,
        challenge: &Challenge,
        evidence: AzureSnpVtpmEvidence<'a>,
        ak: &AkPublic,
        ek: &crate::wire::Public,
    ) -> Result<VerifiedAzureSnpVtpm<'a>, AzureSnpVtpmError> {
        let hcl = self.verify_registration(evidence.hcl_report, evidence.vcek, ak.public(), ek)?;
        let validated = validate(
            Expected {
                ak,
                nonce: &challenge.nonce,
            },
            evidence.tpm,
        )?;
        let snp = SnpClaims::new(hcl.snp(), Some(hcl.vm_configuration()));
        Ok(VerifiedAzureSnpVtpm {
            hcl,
            snp,
            evidence: validated,
        })
    }
}

/// Verified Azure SEV-SNP vTPM evidence. Only [`AzureSnpVtpmVerifier`] constructs it.
#[derive(Debug)]
pub struct VerifiedAzureSnpVtpm<'a> {
    hcl: VerifiedHclReport,
    snp: SnpClaims,
    evidence: ValidatedEvidence<'a>,
}

impl<'a> VerifiedAzureSnpVtpm<'a> {
    /// The verified HCL report (SNP report, AK).
    pub fn hcl(&self) -> &VerifiedHclReport {
        &self.hcl
    }
    /// The validated vTPM quote and logs.
    pub fn evidence(&self) -> &ValidatedEvidence<'a> {
        &self.evidence
    }
    /// The SNP claims.
    pub fn snp(&self) -> &SnpClaims {
        &self.snp
    }
}

impl VerifiedClaims for VerifiedAzureSnpVtpm<'_> {
    fn claims(&self) -> Claims<'_> {
        self.evidence.claims().with_snp(&self.snp)
    }
}

impl EvidenceVerifier for AzureSnpVtpmVerifier<'_> {
    type Evidence<'a> = AzureSnpVtpmEvidence<'a>;
    type Verified<'a> = VerifiedAzureSnpVtpm<'a>;
    type Error = AzureSnpVtpmError;

    fn kind(&self) -> EvidenceKind {
        EvidenceKind::AzureSnpVtpm
    }

    /// Order: VCEK chain, SNP report signature (and chip/TCB against the VCEK), runtime
    /// data hash in REPORT_DATA, AK from the runtime data, then the quote exactly as for a
    /// TPM: our nonce's inclusion proof, extraData = H(root, NK), signature by that AK, PCR
    /// digest, logs. The SNP report itself is from the CVM's boot and binds the AK, not our
    /// nonce: freshness and the NK binding come from the quote.
    fn verify<'a>(
        &self,
        challenge: &Challenge,
        evidence: Self::Evidence<'a>,
    ) -> Result<Self::Verified<'a>, Self::Error> {
        let vcek = match self.cache {
            Some(cache) => self
                .roots
                .verify_vcek_cached(cache, evidence.vcek, self.now)?,
            None => self.roots.verify_vcek(evidence.vcek, &[], self.now)?,
        };
        let hcl = azure::verify_hcl_report(evidence.hcl_report, &vcek)?;
        let validated = validate(
            Expected {
                ak: hcl.ak(),
                nonce: &challenge.nonce,
            },
            evidence.tpm,
        )?;
        let snp = SnpClaims::new(hcl.snp(), Some(hcl.vm_configuration()));
        Ok(VerifiedAzureSnpVtpm {
            hcl,
            snp,
            evidence: validated,
        })
    }
}

/// What a verified SEV-SNP report says about the guest, for policy.
///
/// Everything here was signed by the chip's VCEK. What it proves: the guest's launch
/// measurement (initial memory and VMSA, including the paravisor on Azure), the guest
/// policy AMD's firmware enforces (debug, migration agent, SMT), the firmware TCB, and the
/// report data the guest asked to have signed. What it does not prove: anything the guest
/// did after launch (that is what the vTPM's PCRs are for), or freshness (the report is
/// from boot; the quote is fresh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpClaims {
    /// Product line of the AMD root the VCEK chains to.
    pub product: String,
    /// Launch measurement (hex in serialized form).
    #[serde(with = "hex_bytes")]
    pub measurement: Vec<u8>,
    /// Host-supplied launch data.
    #[serde(with = "hex_bytes")]
    pub host_data: Vec<u8>,
    /// Report data the guest had signed.
    #[serde(with = "hex_bytes")]
    pub report_data: Vec<u8>,
    /// The TCB the VCEK certifies.
    pub reported_tcb: TcbVersion,
    /// The TCB the platform runs.
    pub current_tcb: TcbVersion,
    /// The committed TCB (anti-rollback floor).
    pub committed_tcb: TcbVersion,
    /// The TCB at the guest's launch.
    pub launch_tcb: TcbVersion,
    /// The raw guest policy.
    pub policy: u64,
    /// The host may debug the guest.
    pub debug_allowed: bool,
    /// A migration agent may be associated with the guest.
    pub migration_agent_allowed: bool,
    /// The guest policy allows SMT.
    pub smt_allowed: bool,
    /// SMT is enabled on the platform.
    pub smt_enabled: bool,
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// Guest SVN (ID block).
    pub guest_svn: u32,
    /// ID key digest (ID block signer), hex.
    #[serde(with = "hex_bytes")]
    pub id_key_digest: Vec<u8>,
    /// The HCL's VM configuration, for Azure CVMs.
    pub azure: Option<VmConfiguration>,
}

impl SnpClaims {
    fn new(report: &VerifiedSnpReport, azure: Option<VmConfiguration>) -> Self {
        let r = report.report();
        Self {
            product: report.product().to_owned(),
            measurement: r.measurement.to_vec(),
            host_data: r.host_data.to_vec(),
            report_data: r.report_data.to_vec(),
            reported_tcb: r.reported_tcb,
            current_tcb: r.current_tcb,
            committed_tcb: r.committed_tcb,
            launch_tcb: r.launch_tcb,
            policy: r.policy,
            debug_allowed: r.debug_allowed(),
            migration_agent_allowed: r.migration_agent_allowed(),
            smt_allowed: r.smt_allowed(),
            smt_enabled: r.smt_enabled(),
            vmpl: r.vmpl,
            guest_svn: r.guest_svn,
            id_key_digest: r.id_key_digest.to_vec(),
            azure,
        }
    }
}

mod hex_bytes {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

#[cfg(test)]
mod bare_snp_tests;
#[cfg(test)]
mod tests;
