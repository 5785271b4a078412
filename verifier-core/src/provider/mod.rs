//! Provider mode, requester side: checking one host quote that answered a whole batch.
//!
//! The host's provider quotes once over the Merkle root of every nonce that arrived in a
//! short window (see `docs/provider.md`), so a quote is shared by many requesters. What makes
//! it *this* requester's proof of the host's state:
//! - **freshness**: the requester's own nonce, which it chose just before asking, is a leaf
//!   of the tree ([`crate::merkle::root_from_proof`]); a quote taken before the nonce existed
//!   cannot commit to it;
//! - **binding**: the quote's extraData is [`host_extra_data`] of that root, which no agent
//!   quote can carry (see there);
//! - **origin**: the signature verifies with the host AK the requester pinned out of band
//!   ([`HostTrust::ak`]), never with a key taken from the answer;
//! - **consistency**: the reported PCRs hash to the quoted digest and the host's event log,
//!   when sent, replays to every quoted PCR it extends.
//!
//! Whether the host's state is *acceptable* is decided on the returned [`VerifiedHostQuote`]
//! by a policy's `host` section ([`HostPolicy::evaluate`]); [`check_host_answer`] does
//! decoding, validation and evaluation in one step for a role that just asked the provider.

pub mod batch;

use crate::crypto::digest;

use crate::eventlog::EventLog;
use crate::evidence::ValidationError;
use crate::merkle::{self, InclusionProof, MerkleError};
#[cfg(feature = "policy")]
use crate::policy::{HostPolicy, Verdict};
#[cfg(feature = "policy")]
use crate::proto::v1::HostQuoteResponse;
#[cfg(feature = "policy")]
use crate::proto::ProtoError;
use crate::quote::{verify_quote, AkPublic, VerifiedQuote, VerifyError};
use crate::wire::{PcrValues, Signature};
#[cfg(feature = "policy")]
use crate::ParseError;

/// Label of the provider binding. It differs from the agent binding's label (`"unlock/v1"`,
/// see [`crate::merkle::quote_extra_data`]) and the two preimages differ in length (50 bytes
/// here, 73 there), so a quote made for one purpose can never satisfy the other.
pub const HOST_BINDING_LABEL: &[u8] = b"unlock/v1 provider";

/// The host quote's `extraData`: `SHA-256("unlock/v1 provider" || merkle_root)`.
///
/// No NK is bound: the provider releases nothing, so there is nothing to seal, and the
/// answer's only job is to prove the host's state at a moment after each requester's nonce.
pub fn host_extra_data(merkle_root: &[u8; 32]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(HOST_BINDING_LABEL);
    ctx.update(merkle_root);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What the requester itself knows (trust inputs, never from the provider's answer).
#[derive(Debug, Clone, Copy)]
pub struct HostTrust<'a> {
    /// The host AK, pinned out of band (or bound to the host's EK by a registrar).
    pub ak: &'a AkPublic,
    /// The nonce this requester generated for this request.
    pub nonce: &'a [u8; 32],
}

/// What the provider answered.
#[derive(Debug, Clone, Copy)]
pub struct HostAnswer<'a> {
    /// TPMS_ATTEST exactly as signed.
    pub attest: &'a [u8],
    /// The quote's signature.
    pub signature: &'a Signature,
    /// The host's reported PCR values (only the quoted ones are kept).
    pub pcrs: &'a PcrValues,
    /// This requester's inclusion proof in the batch's tree.
    pub proof: &'a InclusionProof,
    /// The host's UEFI event log, when sent.
    pub event_log: Option<&'a [u8]>,
}

/// A host quote that passed every check of [`validate_host_quote`]; only it constructs one.
#[derive(Debug)]
pub struct VerifiedHostQuote<'a> {
    quote: VerifiedQuote,
    event_log: Option<EventLog<'a>>,
    root: [u8; 32],
    batch_size: u32,
}

impl<'a> VerifiedHostQuote<'a> {
    /// The verified quote: the host's quoted PCRs (exactly the signed selection) and clock.
    pub fn quote(&self) -> &VerifiedQuote {
        &self.quote
    }
    /// The host's event log, whose replay matched every quoted PCR it extends.
    pub fn event_log(&self) -> Option<&EventLog<'a>> {
        self.event_log.as_ref()
    }
    /// The batch's Merkle root (for the record: which quote answered whom).
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }
    /// How many requesters the quote answered (the proof's tree size).
    pub fn batch_size(&self) -> u32 {
        self.batch_size
    }
}

/// Why a host quote was refused; each variant names the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostQuoteError {
    /// The inclusion proof is malformed (size, index or sibling count).
    #[error("host quote: inclusion proof of our nonce is invalid: {0}")]
    Inclusion(MerkleError),
    /// The quote does not verify: signature by another AK, extraData not the binding of a
    /// root holding our nonce (stale quote, altered proof, another batch), PCR digest.
    #[error("host quote: {0}")]
    Quote(VerifyError),
    /// The host's event log does not parse or does not replay to the quoted PCRs.
    #[error("host event log: {0}")]
    EventLog(ValidationError),
}

impl HostQuoteError {
    /// The protocol's refusal code, the same the attest path gives for the same check.
    pub fn code(&self) -> crate::proto::v1::ErrorCode {
        match self {
            Self::Inclusion(e) => ValidationError::Merkle(*e).code(),
            Self::Quote(e) => ValidationError::Quote(e.clone()).code(),
            Self::EventLog(e) => e.code(),
        }
    }
}

/// Checks a provider's answer for this requester.
///
/// Order: the root is recomputed from the requester's own nonce and the proof; the expected
/// extraData is [`host_extra_data`] of that root; the quote must verify with the pinned AK
/// and carry exactly it (a proof for another leaf, an altered sibling or a quote of another
/// batch all give another root, so they fail here); then the event log must replay to the
/// quoted PCRs it extends.
pub fn validate_host_quote<'a>(
    trust: HostTrust<'_>,
    answer: HostAnswer<'a>,
) -> Result<VerifiedHostQuote<'a>, HostQuoteError> {
    let root =
        merkle::root_from_proof(trust.nonce, answer.proof).map_err(HostQuoteError::Inclusion)?;
    let extra_data = host_extra_data(&root);
    let quote = verify_quote(
        trust.ak,
        &extra_data,
        answer.attest,
        answer.signature,
        answer.pcrs,
    )
    .map_err(HostQuoteError::Quote)?;
    let event_log = match answer.event_log {
        Some(bytes) => {
            let log = EventLog::parse(bytes)
                .map_err(|e| HostQuoteError::EventLog(ValidationError::EventLog(e)))?;
            crate::evidence::check_event_log(&log, quote.pcrs())
                .map_err(HostQuoteError::EventLog)?;
            Some(log)
        }
        None => None,
    };
    Ok(VerifiedHostQuote {
        quote,
        event_log,
        root,
        batch_size: answer.proof.tree_size,
    })
}

/// Why a provider's answer did not satisfy a policy's `host` section; the variants are the
/// three different things an operator must fix (the provider, the pin, the host).
#[cfg(feature = "policy")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostCheckError {
    /// A field of the answer is malformed (sizes, PCR banks, inclusion proof).
    #[error("host answer is malformed: {0}")]
    Malformed(ProtoError),
    /// The signature is not a TPMT_SIGNATURE.
    #[error("host answer is malformed: signature: {0}")]
    Signature(ParseError),
    /// The answer decodes but is not a valid quote over our nonce by the pinned AK.
    #[error("{0}")]
    Quote(HostQuoteError),
    /// The host's quote is genuine and fresh, but its state fails the host rules.
    #[error("host state refused: {0}")]
    Policy(Verdict),
}

/// A provider's answer that passed [`check_host_answer`]: what to record about it.
#[cfg(feature = "policy")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAccepted {
    /// The batch's Merkle root (which quote answered us).
    pub root: [u8; 32],
    /// How many requesters the quote answered.
    pub batch_size: u32,
    /// The host TPM's resetCount in the quote.
    pub reset_count: u32,
}

/// Everything a requester decides about a provider's answer, for a policy's `host` section:
/// decode it, [`validate_host_quote`] with the policy's pinned AK and the requester's own
/// `nonce`, then evaluate the host rules. Pure: the caller did the HTTP exchange.
#[cfg(feature = "policy")]
pub fn check_host_answer(
    policy: &HostPolicy,
    nonce: &[u8; 32],
    answer: &HostQuoteResponse,
) -> Result<HostAccepted, HostCheckError> {
    use crate::proto::v1::Validate as _;
    answer.validate().map_err(HostCheckError::Malformed)?;
    let pcrs = answer.pcr_values().map_err(HostCheckError::Malformed)?;
    let proof = answer
        .inclusion
        .to_merkle()
        .map_err(HostCheckError::Malformed)?;
    let signature =
        Signature::parse(answer.signature.as_bytes()).map_err(HostCheckError::Signature)?;
    let verified = validate_host_quote(
        HostTrust {
            ak: policy.ak(),
            nonce,
        },
        HostAnswer {
            attest: answer.quote.as_bytes(),
            signature: &signature,
            pcrs: &pcrs,
            proof: &proof,
            event_log: answer.event_log.as_ref().map(|l| l.as_bytes()),
        },
    )
    .map_err(HostCheckError::Quote)?;
    let verdict = policy.evaluate(&verified);
    if !verdict.accepted() {
        return Err(HostCheckError::Policy(verdict));
    }
    Ok(HostAccepted {
        root: *verified.root(),
        batch_size: verified.batch_size(),
        reset_count: verified.quote().reset_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binding_differs_from_agent_binding_for_every_nk() {
        let root = [7u8; 32];
        assert_ne!(host_extra_data(&root), merkle::quote_extra_data(&root, &[]));
        assert_ne!(
            host_extra_data(&root),
            merkle::quote_extra_data(&root, &[0u8; 32])
        );
        assert_ne!(host_extra_data(&root), host_extra_data(&[8u8; 32]));
    }
}
