//! Auto-enrollment deposits: a machine that an enrollment rule of the role admitted at
//! registration deposits its own share (and, with the verifier role, the payload ciphertext).
//!
//! The machine makes K_b, splits it and encrypts its payload itself; each role receives only
//! its own part, over its own TLS connection, so neither role (nor anyone between them) ever
//! holds K_b. The deposit is authenticated as the machine by the AK the role activated for
//! it at that registration: a TPM2_Quote whose qualifyingData is [`Deposit::digest`], which
//! covers a nonce the role drew when it admitted the machine ([`DepositNonceResponse`]). The
//! nonce makes a deposit good for one admission only: a recorded deposit cannot be replayed
//! after the enrollment was deleted and the machine admitted again, and a second deposit for
//! the same admission is refused because the admission is used.

use serde::{Deserialize, Serialize};

use super::attest::{bank_values, validate_banks, PcrBank};
use super::common::{AgentId, Role};
use super::{Validate, MAX_ATTEST, MAX_PUBLIC, MAX_SIGNATURE, NONCE_LEN};
use crate::keysplit::{KEY_LEN, MAX_PAYLOAD_CIPHERTEXT_LEN};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::{HashAlg, PcrValues};

/// The agent route for the admission's nonce: `POST` a [`DepositNonceRequest`].
pub const DEPOSIT_NONCE_PATH: &str = "/v1/enroll/nonce";
/// The agent route for the deposit: `POST` a [`DepositRequest`].
pub const DEPOSIT_PATH: &str = "/v1/enroll/deposit";
/// Longest `admitted_by` text a role sends.
pub const MAX_ADMITTED_BY: usize = 512;

/// Which admission's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositNonceRequest {
    /// The machine (the agent id of its EK).
    pub agent_id: AgentId,
}

impl Validate for DepositNonceRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// The admission waiting for the machine's deposit. The nonce is no secret: it only ties a
/// deposit to this admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositNonceResponse {
    /// Drawn by the role when it admitted the machine.
    pub nonce: Base64Bytes,
    /// How the role admitted it (rule name and what matched), for the machine's log.
    pub admitted_by: String,
}

impl Validate for DepositNonceResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.nonce.exact("nonce", NONCE_LEN)?;
        if self.admitted_by.len() > MAX_ADMITTED_BY {
            return Err(ProtoError::TooLarge {
                field: "admitted_by",
                len: self.admitted_by.len(),
                max: MAX_ADMITTED_BY,
            });
        }
        Ok(())
    }
}

/// What the machine deposits with one role. Its canonical form is its JSON encoding by this
/// type (fields in declaration order, no whitespace). `Debug` redacts the share.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    /// The machine.
    pub agent_id: AgentId,
    /// The role this is for (a deposit quoted for one role is refused by the other).
    pub role: Role,
    /// This role's share of K_b (U for the tenant, V for the verifier).
    pub share: Base64Bytes,
    /// The payload under K_b: the verifier role's only, absent for the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ct: Option<Base64Bytes>,
}

impl std::fmt::Debug for Deposit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deposit")
            .field("agent_id", &self.agent_id)
            .field("role", &self.role)
            .field("share", &"[redacted]")
            .field(
                "payload_ct",
                &self.payload_ct.as_ref().map(Base64Bytes::len),
            )
            .finish()
    }
}

impl Validate for Deposit {
    fn validate(&self) -> Result<(), ProtoError> {
        self.share.exact("deposit.share", KEY_LEN)?;
        match (self.role, &self.payload_ct) {
            (Role::Verifier, Some(ct)) => {
                ct.non_empty("deposit.payload_ct", MAX_PAYLOAD_CIPHERTEXT_LEN)?;
            }
            (Role::Verifier, None) => {
                return Err(ProtoError::Invalid {
                    field: "deposit.payload_ct",
                    reason: "the verifier role's deposit carries the payload ciphertext",
                })
            }
            (Role::Tenant, Some(_)) => {
                return Err(ProtoError::Invalid {
                    field: "deposit.payload_ct",
                    reason: "the tenant role must not receive the payload ciphertext",
                })
            }
            (Role::Tenant, None) => {}
        }
        Ok(())
    }
}

impl Deposit {
    /// The quote's qualifyingData: SHA-256 of a domain label, the admission's nonce and the
    /// canonical JSON.
    pub fn digest(&self, nonce: &[u8]) -> Result<[u8; 32], ProtoError> {
        let json = serde_json::to_vec(self).map_err(|e| ProtoError::Encode {
            message: e.to_string(),
        })?;
        let d = HashAlg::Sha256.hash_parts(&[b"unlock/v1 enrollment deposit\0", nonce, &json]);
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(d.as_bytes()) {
            *o = *b;
        }
        Ok(out)
    }
}

/// The machine's deposit and its quote by the activated AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The deposit.
    pub deposit: Deposit,
    /// The name of the AK that quoted (activated for `deposit.agent_id` on this role).
    pub ak_name: Base64Bytes,
    /// TPMS_ATTEST as signed; its extraData is `deposit.digest(nonce)`.
    pub quote: Base64Bytes,
    /// TPMT_SIGNATURE over `quote`.
    pub signature: Base64Bytes,
    /// The PCR values the quote covers (any selection; they are not judged).
    pub pcrs: Vec<PcrBank>,
}

impl DepositRequest {
    /// The quoted PCR values.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        bank_values(&self.pcrs)
    }
}

impl Validate for DepositRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.deposit.validate()?;
        self.ak_name.non_empty("ak_name", MAX_PUBLIC)?;
        self.quote.non_empty("quote", MAX_ATTEST)?;
        self.signature.non_empty("signature", MAX_SIGNATURE)?;
        validate_banks(&self.pcrs)
    }
}

/// The role's answer: the machine is enrolled with it, armed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositResponse {
    /// The machine.
    pub agent_id: AgentId,
    /// How the role admitted it.
    pub admitted_by: String,
}

impl Validate for DepositResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.admitted_by.len() > MAX_ADMITTED_BY {
            return Err(ProtoError::TooLarge {
                field: "admitted_by",
                len: self.admitted_by.len(),
                max: MAX_ADMITTED_BY,
            });
        }
        Ok(())
    }
}
