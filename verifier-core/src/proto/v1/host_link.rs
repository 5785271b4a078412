//! Provider server, host side: the host agent connects OUT to `unlock-server --role
//! provider` and quotes the batches the server collects.
//!
//! Push model (the host initiates, as an agent does): [`HostHelloRequest`] announces the
//! host's AK and event log and opens a session; the host then long-polls
//! [`HOST_NEXT_PATH`] ([`HostNextRequest`] → [`HostJob`], or `204 No Content` when nothing
//! came within the poll time) and posts each quote to [`HOST_RESULT_PATH`]
//! ([`HostQuotePost`] → `204`). All three need the host bearer token.
//!
//! A job carries the batch's Merkle root, not a finished extraData: the host computes
//! [`crate::provider::host_extra_data`] itself, so its AK only ever signs provider-labelled
//! data whatever the server asks. The server verifies every posted quote (signature under
//! the announced AK, that extraData, PCR digest, event-log replay) before any requester
//! sees it.

use serde::{Deserialize, Serialize};

use super::attest::PcrBank;
use super::common::Id;
use super::{Validate, MAX_ATTEST, MAX_EVENT_LOG, MAX_PUBLIC, MAX_SIGNATURE};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::PcrValues;

/// `POST` path of the host's announcement ([`HostHelloRequest`] → [`HostHelloResponse`]).
pub const HOST_HELLO_PATH: &str = "/v1/provider/host/hello";
/// `POST` path of the host's long poll ([`HostNextRequest`] → [`HostJob`] or `204`).
pub const HOST_NEXT_PATH: &str = "/v1/provider/host/next";
/// `POST` path of a finished quote ([`HostQuotePost`] → `204`).
pub const HOST_RESULT_PATH: &str = "/v1/provider/host/quote";

/// The host announces itself; a new hello replaces the previous session (a restarted host
/// agent has a new AK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostHelloRequest {
    /// The AK the host quotes with (TPMT_PUBLIC, no size prefix).
    pub ak_pub: Base64Bytes,
    /// The host's UEFI event log, sent with every answer; absent when the host serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Base64Bytes>,
}

impl Validate for HostHelloRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        if let Some(log) = &self.event_log {
            log.non_empty("event_log", MAX_EVENT_LOG)?;
        }
        Ok(())
    }
}

/// The session the host names in its polls and posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostHelloResponse {
    /// Opaque session id.
    pub session_id: Id,
    /// Longest the server holds a poll open, in seconds (the host's read timeout must be
    /// longer).
    pub poll_secs: u32,
}

impl Validate for HostHelloResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// The host asks for the next batch to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNextRequest {
    /// From [`HostHelloResponse`].
    pub session_id: Id,
}

impl Validate for HostNextRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// A batch to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostJob {
    /// Names the job in [`HostQuotePost`].
    pub job_id: u64,
    /// The batch's Merkle root (32 bytes); the quote's extraData is
    /// [`crate::provider::host_extra_data`] of it.
    pub root: Base64Bytes,
}

impl HostJob {
    /// The root, exactly 32 bytes.
    pub fn root(&self) -> Result<[u8; 32], ProtoError> {
        let r = self.root.exact("root", 32)?;
        <[u8; 32]>::try_from(r).map_err(|_| ProtoError::Length {
            field: "root",
            len: r.len(),
            expected: 32,
        })
    }
}

impl Validate for HostJob {
    fn validate(&self) -> Result<(), ProtoError> {
        self.root().map(drop)
    }
}

/// The host's quote for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostQuotePost {
    /// From [`HostHelloResponse`].
    pub session_id: Id,
    /// From [`HostJob`].
    pub job_id: u64,
    /// TPMS_ATTEST exactly as signed.
    pub quote: Base64Bytes,
    /// The marshalled TPMT_SIGNATURE over `quote`.
    pub signature: Base64Bytes,
    /// The quoted PCR values, by bank.
    pub pcrs: Vec<PcrBank>,
}

impl HostQuotePost {
    /// The reported PCR values as typed digests.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        super::attest::bank_values(&self.pcrs)
    }
}

impl Validate for HostQuotePost {
    fn validate(&self) -> Result<(), ProtoError> {
        self.quote.non_empty("quote", MAX_ATTEST)?;
        self.signature.non_empty("signature", MAX_SIGNATURE)?;
        super::attest::validate_banks(&self.pcrs)
    }
}
