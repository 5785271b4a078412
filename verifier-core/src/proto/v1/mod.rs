//! Protocol v1 (see `docs/protocol.md`): registration, activation, challenge, attestation.
//!
//! Flow: `POST` [`path::REGISTER`] ([`RegisterRequest`] → [`RegisterResponse`]), then
//! [`path::ACTIVATE`] ([`ActivateRequest`] → [`ActivateResponse`]); per role
//! [`path::CHALLENGE`] ([`ChallengeRequest`] → [`ChallengeResponse`]) and [`path::ATTEST`]
//! ([`AttestRequest`] → [`AttestResponse`]). Any failure is an HTTP 4xx/5xx with an
//! [`ErrorResponse`].
//!
//! The quote's `extraData` binding is [`crate::merkle::quote_extra_data`], computed over the
//! Merkle root of the roles' nonces and [`NkPublic::key`]'s bytes.

#[cfg(feature = "policy")]
mod admin;
mod attest;
mod common;
mod deposit;
mod evidence;
mod host_link;
mod pending;
mod provider;
mod register;
#[cfg(feature = "policy")]
mod retire;

#[cfg(feature = "policy")]
pub use admin::{
    admin_path, AttemptRecord, EnrollRequest, EnrollmentInfo, EnrollmentList, IakBindRequest,
    IakBindResponse, MovedAgent, PinnedAgent, PolicyApplyRequest, PolicyApplyResponse,
    PolicyCreateRequest, PolicyDiffInfo, PolicyList, PolicyRef, PolicySummary, PolicyUpdateRequest,
    PolicyVersionInfo, SessionRecord,
};
#[cfg(feature = "policy")]
pub use retire::{PolicyRetireRequest, PolicyRetireResponse, MAX_AFTER_BOOTS, MAX_RETIRE_ITEMS};

pub use attest::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorCode, ErrorResponse,
    ImaLog, ImaLogFormat, InclusionProof, NkKem, NkPublic, PcrBank, PcrValue, Sealed, SessionInfo,
    MAX_CHALLENGE_ANSWER, MAX_CHALLENGE_PARAMS, MAX_ERROR_MESSAGE, MAX_SEALED,
};
pub use common::{AgentId, EvidenceKind, Id, PcrSelection, Role, UnknownEvidenceKind};
pub use deposit::{
    Deposit, DepositNonceRequest, DepositNonceResponse, DepositRequest, DepositResponse,
    DEPOSIT_NONCE_PATH, DEPOSIT_PATH, MAX_ADMITTED_BY,
};
pub use evidence::{CapturedClock, CapturedEvidence, EVIDENCE_FORMAT};
pub use host_link::{
    HostHelloRequest, HostHelloResponse, HostJob, HostNextRequest, HostQuotePost, HOST_HELLO_PATH,
    HOST_NEXT_PATH, HOST_RESULT_PATH,
};
pub use pending::{
    Allowance, PendingDecisionRequest, PendingState, PendingSubmitRequest, PendingSubmitResponse,
    ProposedChange, ADMIN_PENDING_PATH, MAX_BANKS, MAX_CMDLINE, MAX_DIGESTS, MAX_IMAGE_SIGNATURE,
    MAX_IMAGE_SIGNATURES, MAX_NOTE, PENDING_PATH,
};
#[cfg(feature = "policy")]
pub use pending::{PendingChangeInfo, PendingList};
pub use provider::{
    inclusion_to_wire, HostAkResponse, HostQuoteRequest, HostQuoteResponse, HOST_AK_PATH,
    HOST_QUOTE_PATH,
};
pub use register::{
    activation_proof, verify_activation_proof, ActivateRequest, ActivateResponse,
    RegisterIakRequest, RegisterRequest, RegisterResponse, SnpVtpmRegisterRequest, MAX_HCL_REPORT,
    MAX_IAK_CHAIN, MAX_VCEK, PROOF_LEN,
};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ProtoError;

/// URL paths of v1. The `/v1/` prefix is the protocol version.
pub mod path {
    /// Registration: [`super::RegisterRequest`].
    pub const REGISTER: &str = "/v1/register";
    /// Credential activation: [`super::ActivateRequest`].
    pub const ACTIVATE: &str = "/v1/activate";
    /// Registration with an IAK certificate, no activation round:
    /// [`super::RegisterIakRequest`].
    pub const REGISTER_IAK: &str = "/v1/register/iak";
    /// Registration of an SEV-SNP vTPM (evidence kind `azure-snp-vtpm`):
    /// [`super::SnpVtpmRegisterRequest`] → [`super::ActivateResponse`], no MakeCredential.
    pub const REGISTER_SNP_VTPM: &str = "/v1/register/snp-vtpm";
    /// Nonce request: [`super::ChallengeRequest`].
    pub const CHALLENGE: &str = "/v1/attest/challenge";
    /// Evidence: [`super::AttestRequest`].
    pub const ATTEST: &str = "/v1/attest";
}

/// Largest request or response body (16 MiB): an IMA list (8 MiB) and an event log
/// (2 MiB) in base64 plus the rest. Servers should refuse larger bodies before reading them.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Nonce size. Exactly this many bytes, never padded or truncated.
pub const NONCE_LEN: usize = 32;
/// Largest marshalled TPMT_PUBLIC (EK or AK). An RSA-4096 key with a policy digest is
/// about 600 bytes.
pub const MAX_PUBLIC: usize = 1024;
/// Largest EK certificate (DER). Vendor EK certificates are 1-2 KiB.
pub const MAX_EK_CERT: usize = 8 * 1024;
/// Most chain certificates sent with an EK certificate (real chains have one or two CAs
/// below the root). The EK certificate check refuses more than this too.
pub const MAX_EK_CHAIN: usize = 8;
/// Largest TPM2B_ID_OBJECT contents (integrity HMAC and encrypted identity, 2+64 each).
pub const MAX_ID_OBJECT: usize = 256;
/// Largest TPM2B_ENCRYPTED_SECRET contents (RSA-4096 ciphertext).
pub const MAX_ENCRYPTED_SECRET: usize = 512;
/// Largest TPMS_ATTEST (a quote over all PCRs of four banks is about 350 bytes).
pub const MAX_ATTEST: usize = 1024;
/// Largest TPMT_SIGNATURE (RSA-4096: 6 + 512 bytes).
pub const MAX_SIGNATURE: usize = 1024;
/// Largest UEFI event log. Real logs are 20-200 KiB; 2 MiB leaves room for large dbx.
pub const MAX_EVENT_LOG: usize = 2 * 1024 * 1024;
/// Largest IMA list (the IMA parser's own bound).
pub const MAX_IMA_LOG: usize = crate::ima::MAX_LIST_BYTES;

/// What every v1 message checks after JSON decoding: sizes, exact lengths, orderings.
pub trait Validate {
    /// Refuses the message with the first broken rule, naming its field.
    fn validate(&self) -> Result<(), ProtoError>;
}

/// Decodes and validates a message body. Unknown fields, bad base64, wrong lengths and
/// oversize fields are all refused with the field named.
pub fn decode<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ProtoError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ProtoError::MessageTooLarge {
            len: body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let msg: T = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ProtoError::decode(e.path().to_string(), &e.inner().to_string()))?;
    de.end()
        .map_err(|e| ProtoError::decode(".".into(), &e.to_string()))?;
    msg.validate()?;
    Ok(msg)
}

/// Validates and encodes a message, so neither side sends what the other must refuse.
pub fn encode<T: Serialize + Validate>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    msg.validate()?;
    serde_json::to_vec(msg).map_err(|e| ProtoError::Encode {
        message: e.to_string(),
    })
}
