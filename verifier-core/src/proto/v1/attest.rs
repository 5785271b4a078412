//! Challenge, attestation and errors.

use serde::{Deserialize, Serialize};

use super::common::{validate_selection, AgentId, Id, PcrSelection, Role};
use super::{Validate, MAX_ATTEST, MAX_EVENT_LOG, MAX_IMA_LOG, MAX_SIGNATURE, NONCE_LEN};
use crate::ima::{ImaError, MeasurementList};
use crate::keysplit::{MAX_PAYLOAD_CIPHERTEXT_LEN, NK_PUBLIC_LEN};
use crate::merkle::{MAX_LEAVES, MAX_PROOF_SIBLINGS};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::{Digest, HashAlg, PcrValues};

/// Largest sealed-half ciphertext: v1 seals a 32-byte share (48 bytes with the tag).
pub const MAX_SEALED: usize = 1024;
/// AEAD tag length (the smallest possible sealed ciphertext).
const AEAD_TAG_LEN: usize = 16;
/// Largest error message.
pub const MAX_ERROR_MESSAGE: usize = 512;
/// Largest verifier-made challenge parameters ([`ChallengeResponse::params`]): room for an
/// attester's request structure (IBM Secure Execution's is a few hundred bytes), small
/// enough that a challenge stays cheap to issue and to carry.
pub const MAX_CHALLENGE_PARAMS: usize = 4096;
/// Largest attester answer ([`AttestRequest::answer`]).
pub const MAX_CHALLENGE_ANSWER: usize = 4096;

/// `POST /v1/attest/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The registered agent.
    pub agent_id: AgentId,
    /// Name (nameAlg || digest) of the activated AK that will sign the quote. The role
    /// binds the challenge to this AK, so a quote by any other key is refused.
    pub ak_name: Base64Bytes,
}

impl Validate for ChallengeRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        // nameAlg (2 bytes) and a SHA-256/384/512 digest.
        let name = self.ak_name.non_empty("ak_name", 2 + 64)?;
        if name.len() < 2 + 32 {
            return Err(ProtoError::Invalid {
                field: "ak_name",
                reason: "must be nameAlg followed by a SHA-256 or stronger digest",
            });
        }
        Ok(())
    }
}

/// A fresh nonce from one role, and what to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// Names this challenge in [`AttestRequest`].
    pub challenge_id: Id,
    /// 32 random bytes, a leaf of the agent's Merkle tree.
    pub nonce: Base64Bytes,
    /// PCRs to quote (always including the release PCR).
    pub pcr_selection: Vec<PcrSelection>,
    /// Hash algorithm of the quote signature scheme.
    pub hash_alg: HashAlg,
    /// Unix time (seconds) after which the nonce is refused.
    pub expires_at: u64,
    /// The role that issued the nonce.
    pub role: Role,
    /// Verifier-made parameters for an attester that needs a challenge round (see
    /// [`crate::round`]); absent for the TPM and SEV-SNP kinds. Opaque to the agent, which
    /// hands them to its attester. The first byte is the format version the evidence kind
    /// defines. At most [`MAX_CHALLENGE_PARAMS`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Base64Bytes>,
}

impl ChallengeResponse {
    /// The nonce, exactly 32 bytes.
    pub fn nonce(&self) -> Result<[u8; NONCE_LEN], ProtoError> {
        let n = self.nonce.exact("nonce", NONCE_LEN)?;
        <[u8; NONCE_LEN]>::try_from(n).map_err(|_| ProtoError::Length {
            field: "nonce",
            len: n.len(),
            expected: NONCE_LEN,
        })
    }
}

impl Validate for ChallengeResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.nonce()?;
        if let Some(p) = &self.params {
            p.non_empty("params", MAX_CHALLENGE_PARAMS)?;
        }
        validate_selection(&self.pcr_selection, "pcr_selection", "pcr_selection[].pcrs")
    }
}

/// The PCR values of one bank, as read from the TPM with the quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrBank {
    /// The bank.
    pub hash: HashAlg,
    /// Values, by strictly increasing index.
    pub values: Vec<PcrValue>,
}

/// One PCR value. A list rather than a JSON object keyed by index, so that duplicate keys
/// (which JSON parsers resolve differently) cannot occur.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    /// PCR index (0-23).
    pub index: u8,
    /// The value; its length is the bank's digest size.
    pub digest: Base64Bytes,
}

/// Format of an IMA list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImaLogFormat {
    /// `ascii_runtime_measurements*`.
    Ascii,
    /// `binary_runtime_measurements*` (little-endian).
    Binary,
}

/// An IMA measurement list as read from securityfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImaLog {
    /// Which file format `data` is in.
    pub format: ImaLogFormat,
    /// Algorithm of the logged template hashes (sha1 for the classic files).
    pub template_hash_alg: HashAlg,
    /// The file's bytes.
    pub data: Base64Bytes,
}

impl ImaLog {
    /// Parses the list.
    pub fn parse(&self) -> Result<MeasurementList, ImaError> {
        match self.format {
            ImaLogFormat::Ascii => {
                MeasurementList::parse_ascii(self.data.as_bytes(), self.template_hash_alg)
            }
            ImaLogFormat::Binary => {
                MeasurementList::parse_binary(self.data.as_bytes(), self.template_hash_alg)
            }
        }
    }
}

/// Key encapsulation for the sealed halves. v1 implements one scheme (see
/// [`crate::keysplit`]); naming it on the wire lets a later version add P-256 or RSA-OAEP
/// without guessing from key lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NkKem {
    /// HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM;
    /// keys and `enc` are 32 raw bytes.
    X25519HkdfSha256,
}

/// The agent's ephemeral public key NK.
///
/// The quote binds `key` exactly as sent ([`crate::merkle::quote_extra_data`]'s `nk_pub`
/// is `key.as_bytes()`), so a swapped NK invalidates the quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NkPublic {
    /// The scheme.
    pub kem: NkKem,
    /// The public key, in the scheme's encoding (32 raw bytes for X25519).
    pub key: Base64Bytes,
}

impl NkPublic {
    /// The wire form of an X25519 NK.
    pub fn from_keysplit(nk: &crate::keysplit::NkPublic) -> Self {
        Self {
            kem: NkKem::X25519HkdfSha256,
            key: Base64Bytes::from(nk.as_bytes().as_slice()),
        }
    }

    /// As the key type of [`crate::keysplit`].
    pub fn to_keysplit(&self) -> Result<crate::keysplit::NkPublic, ProtoError> {
        let bytes = self.key.exact("nk_pub.key", NK_PUBLIC_LEN)?;
        crate::keysplit::NkPublic::from_slice(bytes).map_err(|_| ProtoError::Length {
            field: "nk_pub.key",
            len: bytes.len(),
            expected: NK_PUBLIC_LEN,
        })
    }
}

impl Validate for NkPublic {
    fn validate(&self) -> Result<(), ProtoError> {
        match self.kem {
            NkKem::X25519HkdfSha256 => self.key.exact("nk_pub.key", NK_PUBLIC_LEN).map(drop),
        }
    }
}

/// Inclusion of this role's nonce in the agent's Merkle tree ([`crate::merkle`], RFC 6962).
/// Required: a single role is a one-leaf tree (`leaf_index` 0, `tree_size` 1, no siblings),
/// so there is one code path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Position of this role's leaf.
    pub leaf_index: u32,
    /// Number of leaves.
    pub tree_size: u32,
    /// Sibling hashes from the leaf up, 32 bytes each.
    pub siblings: Vec<Base64Bytes>,
}

impl InclusionProof {
    /// The wire form of a [`crate::merkle`] proof: the one place it is written.
    pub fn from_merkle(proof: &crate::merkle::InclusionProof) -> Self {
        Self {
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            siblings: proof.siblings.iter().map(|s| s.as_slice().into()).collect(),
        }
    }

    /// As the proof type of [`crate::merkle`] (validated first).
    pub fn to_merkle(&self) -> Result<crate::merkle::InclusionProof, ProtoError> {
        self.validate()?;
        let mut siblings = Vec::with_capacity(self.siblings.len());
        for s in &self.siblings {
            let bytes = s.exact("inclusion.siblings[]", 32)?;
            siblings.push(<[u8; 32]>::try_from(bytes).unwrap_or_default());
        }
        Ok(crate::merkle::InclusionProof {
            leaf_index: self.leaf_index,
            tree_size: self.tree_size,
            siblings,
        })
    }
}

impl Validate for InclusionProof {
    fn validate(&self) -> Result<(), ProtoError> {
        let size = usize::try_from(self.tree_size).unwrap_or(usize::MAX);
        if size == 0 || size > MAX_LEAVES {
            return Err(ProtoError::Invalid {
                field: "inclusion.tree_size",
                reason: "must be between 1 and 65536",
            });
        }
        if self.leaf_index >= self.tree_size {
            return Err(ProtoError::Invalid {
                field: "inclusion.leaf_index",
                reason: "must be below tree_size",
            });
        }
        if self.siblings.len() > MAX_PROOF_SIBLINGS {
            return Err(ProtoError::TooLarge {
                field: "inclusion.siblings",
                len: self.siblings.len(),
                max: MAX_PROOF_SIBLINGS,
            });
        }
        for s in &self.siblings {
            s.exact("inclusion.siblings[]", 32)?;
        }
        Ok(())
    }
}

/// `POST /v1/attest`: the evidence, sent to each role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// From this role's [`ChallengeResponse`].
    pub challenge_id: Id,
    /// The TPMS_ATTEST exactly as the TPM signed it (TPM2B_ATTEST contents, no size prefix).
    pub quote: Base64Bytes,
    /// The marshalled TPMT_SIGNATURE over `quote`.
    pub signature: Base64Bytes,
    /// PCR values the quote covers, by bank.
    pub pcrs: Vec<PcrBank>,
    /// The UEFI event log (`binary_bios_measurements`), when the platform has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Base64Bytes>,
    /// The IMA list, when IMA is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_log: Option<ImaLog>,
    /// The ephemeral key the halves are sealed to.
    pub nk_pub: NkPublic,
    /// This role's nonce in the tree whose root the quote binds.
    pub inclusion: InclusionProof,
    /// The attester's answer to this challenge's [`ChallengeResponse::params`], for the
    /// evidence kinds that need a challenge round; at most [`MAX_CHALLENGE_ANSWER`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Base64Bytes>,
}

impl AttestRequest {
    /// The reported PCR values as typed digests.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        bank_values(&self.pcrs)
    }

    /// What makes two attestations the same attestation: the challenge, the quote, its
    /// signature and NK (the key the halves are sealed to), hashed with length prefixes.
    /// Not the body's bytes: a re-serialization (keys reordered, whitespace, an explicit
    /// `null`) of the agent's own evidence is the same evidence, so a server that keys
    /// "identical retry" on this gives whoever sent it first and the agent the same answer
    /// instead of burning the challenge on a copy.
    pub fn evidence_digest(&self) -> [u8; 32] {
        let parts: [&[u8]; 5] = [
            b"unlock/v1 evidence",
            self.challenge_id.as_str().as_bytes(),
            self.quote.as_bytes(),
            self.signature.as_bytes(),
            self.nk_pub.key.as_bytes(),
        ];
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for p in parts {
            buf.extend_from_slice(&(p.len() as u64).to_be_bytes());
            buf.extend_from_slice(p);
        }
        let d = HashAlg::Sha256.hash(&buf);
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(d.as_bytes()) {
            *o = *b;
        }
        out
    }
}

/// PCR banks as typed digests: each digest exactly its bank's size, indexes below 24.
/// Shared by every message that reports PCR values (attest, host quote, captured evidence).
pub(super) fn bank_values(banks: &[PcrBank]) -> Result<PcrValues, ProtoError> {
    let mut out = PcrValues::new();
    for bank in banks {
        for v in &bank.values {
            let bytes = v.digest.exact("pcrs[].values[].digest", bank.hash.size())?;
            let d = Digest::from_slice(bank.hash, bytes).ok_or(ProtoError::Length {
                field: "pcrs[].values[].digest",
                len: bytes.len(),
                expected: bank.hash.size(),
            })?;
            if !out.insert(v.index, d) {
                return Err(ProtoError::Invalid {
                    field: "pcrs[].values[].index",
                    reason: "PCR index must be below 24",
                });
            }
        }
    }
    Ok(out)
}

/// The structural rules of reported PCR banks (banks unique, indexes strictly increasing
/// and in range, digest sizes), as for a selection, then the values themselves.
pub(super) fn validate_banks(banks: &[PcrBank]) -> Result<(), ProtoError> {
    let selection: Vec<PcrSelection> = banks
        .iter()
        .map(|b| PcrSelection {
            hash: b.hash,
            pcrs: b.values.iter().map(|v| v.index).collect(),
        })
        .collect();
    validate_selection(&selection, "pcrs", "pcrs[].values")?;
    bank_values(banks).map(drop)
}

impl Validate for AttestRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.quote.non_empty("quote", MAX_ATTEST)?;
        self.signature.non_empty("signature", MAX_SIGNATURE)?;
        validate_banks(&self.pcrs)?;
        if let Some(log) = &self.event_log {
            log.at_most("event_log", MAX_EVENT_LOG)?;
        }
        if let Some(ima) = &self.ima_log {
            ima.data.at_most("ima_log.data", MAX_IMA_LOG)?;
        }
        self.nk_pub.validate()?;
        if let Some(a) = &self.answer {
            a.non_empty("answer", MAX_CHALLENGE_ANSWER)?;
        }
        self.inclusion.validate()
    }
}

/// A key half sealed to NK ([`crate::keysplit::Sealed`] on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The scheme (the one of `nk_pub`).
    pub kem: NkKem,
    /// The encapsulated key (HPKE `enc`, 32 bytes for X25519).
    pub enc: Base64Bytes,
    /// The AEAD ciphertext with its tag.
    pub ciphertext: Base64Bytes,
}

impl Sealed {
    /// As the sealed type of [`crate::keysplit`] (validated first).
    pub fn to_keysplit(&self) -> Result<crate::keysplit::Sealed, ProtoError> {
        self.validate()?;
        let enc = self.enc.exact("sealed_half.enc", NK_PUBLIC_LEN)?;
        Ok(crate::keysplit::Sealed {
            enc: <[u8; NK_PUBLIC_LEN]>::try_from(enc).unwrap_or_default(),
            ciphertext: self.ciphertext.as_bytes().to_vec(),
        })
    }

    /// From the sealed type of [`crate::keysplit`].
    pub fn from_keysplit(sealed: &crate::keysplit::Sealed) -> Self {
        Self {
            kem: NkKem::X25519HkdfSha256,
            enc: sealed.enc.as_slice().into(),
            ciphertext: sealed.ciphertext.as_slice().into(),
        }
    }
}

impl Validate for Sealed {
    fn validate(&self) -> Result<(), ProtoError> {
        match self.kem {
            NkKem::X25519HkdfSha256 => self.enc.exact("sealed_half.enc", NK_PUBLIC_LEN)?,
        };
        let len = self
            .ciphertext
            .at_most("sealed_half.ciphertext", MAX_SEALED)?
            .len();
        if len < AEAD_TAG_LEN {
            return Err(ProtoError::Invalid {
                field: "sealed_half.ciphertext",
                reason: "shorter than the AEAD tag",
            });
        }
        Ok(())
    }
}

/// The boot session's release accounting, so the agent can report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionInfo {
    /// TPM resetCount of the quote (the boot session).
    pub reset_count: u32,
    /// Releases made in this session, this one included.
    pub releases: u32,
    /// Releases allowed per session.
    pub max_attestations: u32,
    /// True when no further release will be made in this session.
    pub terminated: bool,
}

/// A successful attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// The role that answered.
    pub role: Role,
    /// This role's half of K_b.
    pub sealed_half: Sealed,
    /// The payload ciphertext ([`crate::keysplit::PayloadCiphertext`]: version, nonce,
    /// AES-256-GCM ciphertext and tag); only the verifier role sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Base64Bytes>,
    /// Release accounting.
    pub session: SessionInfo,
}

impl Validate for AttestResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.sealed_half.validate()?;
        match (&self.payload, self.role) {
            (Some(p), Role::Verifier) => {
                p.non_empty("payload", MAX_PAYLOAD_CIPHERTEXT_LEN)?;
            }
            (Some(_), Role::Tenant) => {
                return Err(ProtoError::Invalid {
                    field: "payload",
                    reason: "only the verifier role sends the payload",
                })
            }
            (None, Role::Verifier) => {
                return Err(ProtoError::Invalid {
                    field: "payload",
                    reason: "the verifier role must send the payload",
                })
            }
            (None, Role::Tenant) => {}
        }
        if self.session.releases > self.session.max_attestations {
            return Err(ProtoError::Invalid {
                field: "session.releases",
                reason: "exceeds max_attestations",
            });
        }
        Ok(())
    }
}

/// Stable, machine-readable failure reasons. New codes are a protocol change.
///
/// Deliberately not `#[non_exhaustive]`: the server decides each code's charge and HTTP
/// status in exhaustive matches (unlock-server's `error.rs`), so a new code does not compile
/// until it has been given both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body did not decode or validate.
    MalformedRequest,
    /// The body exceeds the size limit.
    PayloadTooLarge,
    /// Missing or wrong credentials (admin API).
    Unauthorized,
    /// The EK certificate does not chain to the trust store or does not match `ek_pub`.
    EkCertUntrusted,
    /// The AK is not a restricted, fixedTPM/fixedParent, sensitiveDataOrigin signing key.
    AkNotAcceptable,
    /// The agent's AK is pinned (proven once with its EK) and this is another AK: an
    /// operator must release the pin (`unlockctl ak unpin`) after a TPM's keys really changed.
    AkNotPinned,
    /// The IAK certificate does not chain to the OEM CA, is not an IAK certificate (an
    /// IDevID, a CA), does not certify the presented AK, or names no TPM 2.0 device.
    IakCertUntrusted,
    /// The IAK certificate is genuine but names another device than the one the operator
    /// bound to this enrollment.
    IakIdentityMismatch,
    /// The enrollment is not bound to an IAK identity (`unlockctl iak bind`), so it does
    /// not accept registration by IAK certificate.
    IakNotBound,
    /// No such registration, or it expired.
    UnknownRegistration,
    /// The activation proof is wrong.
    ActivationFailed,
    /// The agent is not registered (or not activated) this boot.
    UnknownAgent,
    /// The agent has no enrollment with this role.
    NotEnrolled,
    /// A deposit for an agent with no admission waiting for one: never admitted by an
    /// auto-enrollment rule, the admission expired or its rule was removed, or the deposit
    /// was already made (a second deposit is refused).
    NotAwaitingDeposit,
    /// No such challenge.
    UnknownChallenge,
    /// The nonce expired.
    ChallengeExpired,
    /// The nonce was already used with other evidence.
    ChallengeUsed,
    /// The quote is malformed, of the wrong type or not signed by the bound AK.
    QuoteInvalid,
    /// `extraData` is not the binding of the nonces and NK.
    BindingMismatch,
    /// The reported PCR values do not match the quote's digest.
    PcrMismatch,
    /// The event log does not replay to the quoted PCRs.
    EventLogMismatch,
    /// The IMA list does not replay to PCR 10 or is inconsistent.
    ImaLogMismatch,
    /// The validated evidence does not satisfy the policy.
    PolicyDenied,
    /// The policy requires a fresh host quote and the host's provider gave none (down,
    /// timeout, HTTP error): refused, fail closed. Retrying later may succeed.
    HostUnreachable,
    /// The provider's answer is not a valid quote over our nonce by the pinned host AK
    /// (malformed, another AK, a replayed answer, an altered proof, a non-replaying log).
    HostQuoteInvalid,
    /// The host's verified quote does not satisfy the policy's `host` section.
    HostPolicyDenied,
    /// This boot session has used all its releases.
    SessionTerminated,
    /// The TPM resetCount went backwards (cleared TPM or replay): re-enrollment required.
    ResetCountRegressed,
    /// The agent reached its lifetime bound and is terminated for good.
    AgentTerminated,
    /// Too many consecutive failures; retry later.
    RateLimited,
    /// The request (head or body) did not arrive at the server's minimum rate; the
    /// connection is closed. Retrying on a better link may succeed.
    RequestTimeout,
    /// The server holds its limit of request bodies in memory; retry shortly.
    ServerBusy,
    /// The enrollment declares another evidence kind than the one presented (a `tpm`
    /// registration for a confidential VM enrolled as `azure-snp-vtpm`, or the reverse):
    /// re-enroll with the right `--evidence`, or configure the agent's `evidence`.
    EvidenceKindMismatch,
    /// A confidential VM's evidence is not genuine or does not vouch for the keys
    /// presented: the VCEK does not chain to an AMD root, the SNP report's signature, chip
    /// or TCB does not verify, the HCL runtime data is not what the report signed, or its
    /// AK/EK is not the one presented.
    TeeEvidenceInvalid,
    /// The enrollment's evidence kind needs a challenge round and the attest request
    /// carries no answer: the agent's attester must answer the challenge's `params`.
    ChallengeAnswerMissing,
    /// The attester's answer is not the answer to this challenge's parameters (made for
    /// another challenge, replayed, for altered parameters, or for another quote).
    ChallengeAnswerInvalid,
    /// The evidence kind exists only on a server started for tests
    /// (`test-challenge-round` without `--test-attester-key`): refused.
    EvidenceKindDisabled,
    /// A server fault; details are in the server's log only.
    Internal,
}

/// Any refusal. `message` is for people and carries no secrets or internal causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// Stable reason.
    pub code: ErrorCode,
    /// Human-readable detail (at most 512 bytes).
    pub message: String,
}

impl Validate for ErrorResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.message.len() > MAX_ERROR_MESSAGE {
            return Err(ProtoError::TooLarge {
                field: "message",
                len: self.message.len(),
                max: MAX_ERROR_MESSAGE,
            });
        }
        Ok(())
    }
}
