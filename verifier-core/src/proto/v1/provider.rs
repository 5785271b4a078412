//! Provider mode: one host TPM quote answers many requesters.
//!
//! A guest VM's vTPM cannot quote the host's hardware TPM, so a tenant verifier that wants
//! to know what the *host* booted asks the host's provider: it posts its own fresh nonce
//! ([`HostQuoteRequest`]), the provider collects the nonces of a short window into an
//! RFC 6962 Merkle tree, takes ONE quote over the tree's root and answers each requester
//! with the quote, the host's PCRs and event log, and that requester's inclusion proof
//! ([`HostQuoteResponse`]). The requester checks it with
//! [`crate::provider::validate_host_quote`] against the host AK it pinned out of band; the
//! `ak_pub` the provider sends ([`HostAkResponse`], and echoed in each answer) is only what
//! an operator pins, never a trust input on its own.

use serde::{Deserialize, Serialize};

use super::attest::{InclusionProof, PcrBank, PcrValue};
use super::{Validate, MAX_ATTEST, MAX_EVENT_LOG, MAX_PUBLIC, MAX_SIGNATURE, NONCE_LEN};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::PcrValues;

/// `POST` path of a host quote request ([`HostQuoteRequest`] → [`HostQuoteResponse`]).
pub const HOST_QUOTE_PATH: &str = "/v1/provider/quote";
/// `GET` path of the provider's AK ([`HostAkResponse`]), for an operator to pin.
pub const HOST_AK_PATH: &str = "/v1/provider/ak";

/// `POST /v1/provider/quote`: a requester's fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostQuoteRequest {
    /// 32 random bytes chosen by the requester; its freshness is the answer's freshness.
    pub nonce: Base64Bytes,
}

impl HostQuoteRequest {
    /// The nonce, exactly 32 bytes.
    pub fn nonce(&self) -> Result<[u8; NONCE_LEN], ProtoError> {
        exact_nonce(&self.nonce)
    }
}

impl Validate for HostQuoteRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.nonce().map(drop)
    }
}

fn exact_nonce(nonce: &Base64Bytes) -> Result<[u8; NONCE_LEN], ProtoError> {
    let n = nonce.exact("nonce", NONCE_LEN)?;
    <[u8; NONCE_LEN]>::try_from(n).map_err(|_| ProtoError::Length {
        field: "nonce",
        len: n.len(),
        expected: NONCE_LEN,
    })
}

/// The answer to one requester: the batch's quote and this requester's inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostQuoteResponse {
    /// TPMS_ATTEST exactly as the host TPM signed it; its extraData is
    /// [`crate::provider::host_extra_data`] of the batch's Merkle root.
    pub quote: Base64Bytes,
    /// The marshalled TPMT_SIGNATURE over `quote`.
    pub signature: Base64Bytes,
    /// The host's PCR values the quote covers, by bank.
    pub pcrs: Vec<PcrBank>,
    /// The host's UEFI event log, when the provider serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Base64Bytes>,
    /// The provider's AK (TPMT_PUBLIC), for reference: a requester verifies with the AK it
    /// pinned, and a mismatch here only helps it say why the signature failed.
    pub ak_pub: Base64Bytes,
    /// The requester's nonce in the batch's tree.
    pub inclusion: InclusionProof,
}

impl HostQuoteResponse {
    /// The reported PCR values as typed digests.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        super::attest::bank_values(&self.pcrs)
    }

    /// Builds the `pcrs` list from typed values (banks and indexes in ascending order).
    pub fn banks_of(values: &PcrValues) -> Vec<PcrBank> {
        values
            .banks()
            .map(|alg| PcrBank {
                hash: alg,
                values: values
                    .bank(alg)
                    .map(|(index, d)| PcrValue {
                        index,
                        digest: d.as_bytes().into(),
                    })
                    .collect(),
            })
            .collect()
    }
}

impl Validate for HostQuoteResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.quote.non_empty("quote", MAX_ATTEST)?;
        self.signature.non_empty("signature", MAX_SIGNATURE)?;
        super::attest::validate_banks(&self.pcrs)?;
        if let Some(log) = &self.event_log {
            log.at_most("event_log", MAX_EVENT_LOG)?;
        }
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        self.inclusion.validate()
    }
}

/// `GET /v1/provider/ak`: the AK the provider quotes with, for an operator to pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAkResponse {
    /// The AK's TPMT_PUBLIC (no size prefix).
    pub ak_pub: Base64Bytes,
    /// The AK's name (nameAlg || digest), what an operator compares when pinning.
    pub ak_name: Base64Bytes,
}

impl Validate for HostAkResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        self.ak_name.non_empty("ak_name", 2 + 64).map(drop)
    }
}

/// The wire form of a Merkle inclusion proof (the provider fans one out per requester).
pub fn inclusion_to_wire(proof: &crate::merkle::InclusionProof) -> InclusionProof {
    InclusionProof::from_merkle(proof)
}
