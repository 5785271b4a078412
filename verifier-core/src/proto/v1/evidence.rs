//! Captured evidence (`initrd-agent evidence --out FILE`): a snapshot of a machine's
//! measured state for offline policy work (`unlockctl policy learn` and `policy check`).
//!
//! Nothing in it is signed: it is what an operator learns from and tests against, never
//! what a role trusts. The one layout is defined here so that the agent that writes it and
//! the CLI that reads it cannot drift apart.

use serde::{Deserialize, Serialize};

use super::attest::{ImaLog, PcrBank};
use super::common::{validate_selection, AgentId, PcrSelection};
use super::{Validate, MAX_EK_CERT, MAX_EVENT_LOG, MAX_IMA_LOG, MAX_PUBLIC};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::{ClockInfo, PcrValues};

/// Identifies the JSON layout of [`CapturedEvidence`].
pub const EVIDENCE_FORMAT: &str = "initrd-agent-evidence/v1";

/// The captured evidence (JSON; binary fields base64 as in the protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedEvidence {
    /// Always [`EVIDENCE_FORMAT`].
    pub format: String,
    /// The agent id (SHA-256 of the EK's TPMT_PUBLIC).
    pub agent_id: AgentId,
    /// The EK template (`ecc` or `rsa`).
    pub ek: String,
    /// The EK's TPMT_PUBLIC.
    pub ek_pub: Base64Bytes,
    /// The EK certificate (DER), if the TPM holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_cert: Option<Base64Bytes>,
    /// A fresh AK's TPMT_PUBLIC (AKs are per boot; this one is for reference only).
    pub ak_pub: Base64Bytes,
    /// Every PCR (0-23) of every active bank.
    pub pcrs: Vec<PcrBank>,
    /// The UEFI event log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Base64Bytes>,
    /// The IMA list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_log: Option<ImaLog>,
    /// The TPM's clockInfo at capture time, when the capturing tool read it (lets `learn`
    /// record resetCount for the clock rules, and `check` evaluate them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_info: Option<CapturedClock>,
}

/// clockInfo as captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedClock {
    /// Milliseconds since the TPM was last cleared.
    pub clock: u64,
    /// TPM Reset count (reboots).
    pub reset_count: u32,
    /// TPM Restart count (resumes in this boot).
    pub restart_count: u32,
    /// Whether the clock is known not to have been rolled back.
    pub safe: bool,
}

impl From<CapturedClock> for ClockInfo {
    fn from(c: CapturedClock) -> Self {
        ClockInfo {
            clock: c.clock,
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            safe: c.safe,
        }
    }
}

impl From<ClockInfo> for CapturedClock {
    fn from(c: ClockInfo) -> Self {
        CapturedClock {
            clock: c.clock,
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            safe: c.safe,
        }
    }
}

impl CapturedEvidence {
    /// The captured PCR values as typed digests.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        super::attest::bank_values(&self.pcrs)
    }
}

impl Validate for CapturedEvidence {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.format != EVIDENCE_FORMAT {
            return Err(ProtoError::Invalid {
                field: "format",
                reason: "must be \"initrd-agent-evidence/v1\"",
            });
        }
        self.ek_pub.non_empty("ek_pub", MAX_PUBLIC)?;
        self.ak_pub.at_most("ak_pub", MAX_PUBLIC)?;
        if let Some(c) = &self.ek_cert {
            c.non_empty("ek_cert", MAX_EK_CERT)?;
        }
        let banks: Vec<PcrSelection> = self
            .pcrs
            .iter()
            .map(|b| PcrSelection {
                hash: b.hash,
                pcrs: b.values.iter().map(|v| v.index).collect(),
            })
            .collect();
        validate_selection(&banks, "pcrs", "pcrs[].values")?;
        self.pcr_values()?;
        if let Some(log) = &self.event_log {
            log.at_most("event_log", MAX_EVENT_LOG)?;
        }
        if let Some(ima) = &self.ima_log {
            ima.data.at_most("ima_log.data", MAX_IMA_LOG)?;
        }
        Ok(())
    }
}
