//! Pending policy changes: a machine asks, with its own TPM, that its policy also allow the
//! boot an update prepared ([`crate::predict`]); an operator approves or rejects.
//!
//! The machine authenticates with the AK the role activated for it: a TPM2_Quote whose
//! qualifyingData is [`ProposedChange::digest`]. The AK is a restricted signing key, so the
//! TPM only signs structures it made itself; a quote over the change's digest is therefore a
//! signature of the change by that TPM, and nobody without it can make one. A submission never
//! changes a policy: it waits until an operator approves it (`unlockctl policy approve`), and
//! even then the role only appends the submitted digests to allowlists the policy already
//! has ([`crate::policy::widen`]).
//!
//! There is no nonce: a replayed submission is the same change (same digest, same id), which
//! the role already holds; it adds nothing and cannot undo a decision.

use serde::{Deserialize, Serialize};

use super::attest::{bank_values, validate_banks, PcrBank};
use super::common::AgentId;
#[cfg(feature = "policy")]
use super::PolicyRef;
use super::{Validate, MAX_ATTEST, MAX_PUBLIC, MAX_SIGNATURE};
#[cfg(feature = "policy")]
use crate::policy::PolicyDiff;
use crate::predict::{Predicted, Prediction};
use crate::proto::{Base64Bytes, ProtoError};
use crate::wire::{Digest, HashAlg, PcrValues};

/// The agent route (per role, no credentials but the quote): `POST` a
/// [`PendingSubmitRequest`].
pub const PENDING_PATH: &str = "/v1/policy/pending";
/// The admin routes: `GET` lists ([`PendingList`]); `POST /{id}/decide`
/// ([`PendingDecisionRequest`]).
pub const ADMIN_PENDING_PATH: &str = "/admin/v1/pending";

/// Most banks in one change.
pub const MAX_BANKS: usize = 4;
/// Most digests in one allowlist of one bank.
pub const MAX_DIGESTS: usize = 8;
/// Longest command line, bytes.
pub const MAX_CMDLINE: usize = 4096;
/// Longest note, bytes.
pub const MAX_NOTE: usize = 256;
/// Most image signatures in one change (shim, grub or systemd-boot, the kernel, spares).
pub const MAX_IMAGE_SIGNATURES: usize = 6;
/// Largest image signature, bytes (real ones are 1.5-10 KiB).
pub const MAX_IMAGE_SIGNATURE: usize = 16 * 1024;

/// What one boot measures in one bank, as the machine predicted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// The bank.
    pub bank: HashAlg,
    /// PCR 4 application digests (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_applications: Vec<String>,
    /// grub's kernel file digests (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<String>,
    /// initrd digests (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initrds: Vec<String>,
    /// The command line as measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// PCR 9 after the boot (EFI-stub paths), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr9: Option<String>,
}

/// The change a machine asks for. Its canonical form is its JSON encoding by this type
/// (fields in declaration order, no whitespace), which both sides compute from the typed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposedChange {
    /// The machine (it signs with this agent's activated AK).
    pub agent_id: AgentId,
    /// For the operator: what was installed (`kernel-install add 6.1.0-58-amd64`).
    pub note: String,
    /// The boot to allow, one entry per bank.
    pub allow: Vec<Allowance>,
    /// The Authenticode signatures of the boot applications asked for (each the PKCS#7
    /// bytes of a `WIN_CERTIFICATE` from an image's certificate table, never the image), for
    /// a policy's `auto_approve` rule. Self-authenticating: the role verifies each against
    /// the policy's trusted signers; they are quoted with the rest only because they are
    /// part of the change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Base64Bytes>,
}

fn hex_list(field: &'static str, alg: HashAlg, v: &[String]) -> Result<(), ProtoError> {
    if v.len() > MAX_DIGESTS {
        return Err(ProtoError::TooLarge {
            field,
            len: v.len(),
            max: MAX_DIGESTS,
        });
    }
    for s in v {
        digest(field, alg, s)?;
    }
    Ok(())
}

fn digest(field: &'static str, alg: HashAlg, s: &str) -> Result<Digest, ProtoError> {
    if s.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(ProtoError::Invalid {
            field,
            reason: "not lowercase hex",
        });
    }
    Digest::from_hex(alg, s).ok_or(ProtoError::Invalid {
        field,
        reason: "not a hex digest of the bank's size",
    })
}

impl Validate for ProposedChange {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.note.len() > MAX_NOTE {
            return Err(ProtoError::TooLarge {
                field: "change.note",
                len: self.note.len(),
                max: MAX_NOTE,
            });
        }
        if self.note.chars().any(char::is_control) {
            return Err(ProtoError::Invalid {
                field: "change.note",
                reason: "control characters",
            });
        }
        if self.signatures.len() > MAX_IMAGE_SIGNATURES {
            return Err(ProtoError::TooLarge {
                field: "change.signatures",
                len: self.signatures.len(),
                max: MAX_IMAGE_SIGNATURES,
            });
        }
        for s in &self.signatures {
            s.non_empty("change.signatures", MAX_IMAGE_SIGNATURE)?;
        }
        if self.allow.is_empty() || self.allow.len() > MAX_BANKS {
            return Err(ProtoError::Invalid {
                field: "change.allow",
                reason: "must name 1 to 4 banks",
            });
        }
        for (i, a) in self.allow.iter().enumerate() {
            if self.allow.iter().take(i).any(|b| b.bank == a.bank) {
                return Err(ProtoError::Invalid {
                    field: "change.allow",
                    reason: "a bank appears twice",
                });
            }
            hex_list(
                "change.allow.boot_applications",
                a.bank,
                &a.boot_applications,
            )?;
            hex_list("change.allow.kernels", a.bank, &a.kernels)?;
            hex_list("change.allow.initrds", a.bank, &a.initrds)?;
            if let Some(c) = &a.cmdline {
                if c.len() > MAX_CMDLINE {
                    return Err(ProtoError::TooLarge {
                        field: "change.allow.cmdline",
                        len: c.len(),
                        max: MAX_CMDLINE,
                    });
                }
                if c.chars().any(char::is_control) {
                    return Err(ProtoError::Invalid {
                        field: "change.allow.cmdline",
                        reason: "control characters",
                    });
                }
            }
            if let Some(p) = &a.pcr9 {
                digest("change.allow.pcr9", a.bank, p)?;
            }
        }
        Ok(())
    }
}

impl ProposedChange {
    /// The change for `predictions` (one per bank), with the images' `signatures`.
    pub fn from_predictions(
        agent_id: AgentId,
        note: String,
        predictions: &[Prediction],
        signatures: Vec<Vec<u8>>,
    ) -> Self {
        let hexes = |v: &[Predicted]| v.iter().map(|p| p.digest.to_hex()).collect();
        Self {
            agent_id,
            note,
            signatures: signatures.into_iter().map(Base64Bytes::new).collect(),
            allow: predictions
                .iter()
                .map(|p| Allowance {
                    bank: p.alg,
                    boot_applications: hexes(&p.boot_applications),
                    kernels: hexes(&p.kernels),
                    initrds: hexes(&p.initrds),
                    cmdline: p.cmdline.clone(),
                    pcr9: p.pcr9.map(|d| d.to_hex()),
                })
                .collect(),
        }
    }

    /// The predictions it asks for (validated first).
    pub fn predictions(&self) -> Result<Vec<Prediction>, ProtoError> {
        self.validate()?;
        let list = |field, alg, v: &[String]| -> Result<Vec<Predicted>, ProtoError> {
            v.iter()
                .map(|s| {
                    Ok(Predicted {
                        what: "submitted".into(),
                        digest: digest(field, alg, s)?,
                    })
                })
                .collect()
        };
        self.allow
            .iter()
            .map(|a| {
                Ok(Prediction {
                    alg: a.bank,
                    boot_applications: list(
                        "change.allow.boot_applications",
                        a.bank,
                        &a.boot_applications,
                    )?,
                    kernels: list("change.allow.kernels", a.bank, &a.kernels)?,
                    initrds: list("change.allow.initrds", a.bank, &a.initrds)?,
                    cmdline: a.cmdline.clone(),
                    pcr9: a
                        .pcr9
                        .as_deref()
                        .map(|p| digest("change.allow.pcr9", a.bank, p))
                        .transpose()?,
                    // v1 carries no PCR 11 value: a machine's request can add a UKI's
                    // digests to the lists above, only an operator's `policy allow` a
                    // pinned PCR 11.
                    pcr11_events: Vec::new(),
                    pcr11: None,
                })
            })
            .collect()
    }

    /// The quote's qualifyingData for this change: SHA-256 of a domain label and the
    /// canonical JSON. Also the change's id (hex) on every role.
    pub fn digest(&self) -> Result<[u8; 32], ProtoError> {
        let json = serde_json::to_vec(self).map_err(|e| ProtoError::Encode {
            message: e.to_string(),
        })?;
        let d = HashAlg::Sha256.hash_parts(&[b"unlock/v1 pending policy change\0", &json]);
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(d.as_bytes()) {
            *o = *b;
        }
        Ok(out)
    }
}

/// The machine's submission: the change and a quote over its digest by the agent's AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingSubmitRequest {
    /// The change.
    pub change: ProposedChange,
    /// The name of the AK that quoted (activated for `change.agent_id` on this role).
    pub ak_name: Base64Bytes,
    /// TPMS_ATTEST as signed; its extraData is `change.digest()`.
    pub quote: Base64Bytes,
    /// TPMT_SIGNATURE over `quote`.
    pub signature: Base64Bytes,
    /// The PCR values the quote covers (any selection; they are not judged).
    pub pcrs: Vec<PcrBank>,
}

impl PendingSubmitRequest {
    /// The quoted PCR values.
    pub fn pcr_values(&self) -> Result<PcrValues, ProtoError> {
        bank_values(&self.pcrs)
    }
}

impl Validate for PendingSubmitRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.change.validate()?;
        self.ak_name.non_empty("ak_name", MAX_PUBLIC)?;
        self.quote.non_empty("quote", MAX_ATTEST)?;
        self.signature.non_empty("signature", MAX_SIGNATURE)?;
        validate_banks(&self.pcrs)
    }
}

/// Where a change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// Waiting for an operator.
    Pending,
    /// Approved: the policy version in `result` allows it.
    Approved,
    /// Rejected.
    Rejected,
}

impl PendingState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// The role's answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingSubmitResponse {
    /// The change's id: hex of [`ProposedChange::digest`], the same on every role.
    pub id: String,
    /// Its state (a resubmission of a decided change gets the decision).
    pub state: PendingState,
}

impl Validate for PendingSubmitResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

#[cfg(feature = "policy")]
/// One change, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingChangeInfo {
    /// Id (hex SHA-256 of the change).
    pub id: String,
    /// The change as submitted.
    pub change: ProposedChange,
    /// Unix seconds.
    pub submitted_at: i64,
    /// State.
    pub state: PendingState,
    /// The version the agent is on now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// What approving it now would change in the latest version of that policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<PolicyDiff>,
    /// Why it cannot be approved as it stands (an inline policy, no rule to add to, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Unix seconds of the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// The version an approval produced (or found already allowing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<PolicyRef>,
    /// Who decided: `operator`, or `auto: signed by <subject>` (the policy's
    /// `auto_approve` rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// For a change still pending: why the policy's `auto_approve` rule did not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_auto_approved: Option<String>,
}

#[cfg(feature = "policy")]
/// `GET /admin/v1/pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingList {
    /// Newest first.
    pub changes: Vec<PendingChangeInfo>,
}

#[cfg(feature = "policy")]
impl Validate for PendingList {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

#[cfg(feature = "policy")]
impl Validate for PendingChangeInfo {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// `POST /admin/v1/pending/{id}/decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingDecisionRequest {
    /// Approve (true) or reject (false).
    pub approve: bool,
    /// With approval: move every enrollment of the policy to the new version, not only
    /// the machine that asked.
    #[serde(default)]
    pub fleet: bool,
}

impl Validate for PendingDecisionRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(signatures: Vec<Vec<u8>>) -> ProposedChange {
        ProposedChange::from_predictions(
            AgentId::of_ek(b"ek"),
            "n".into(),
            &[Prediction {
                alg: HashAlg::Sha256,
                boot_applications: vec![Predicted {
                    what: "kernel".into(),
                    digest: HashAlg::Sha256.hash(b"k"),
                }],
                kernels: Vec::new(),
                initrds: Vec::new(),
                cmdline: None,
                pcr9: None,
                pcr11_events: Vec::new(),
                pcr11: None,
            }],
            signatures,
        )
    }

    #[test]
    fn signatures_are_bounded_and_absent_ones_keep_the_old_encoding() {
        let plain = change(Vec::new());
        let json = serde_json::to_string(&plain).unwrap();
        // A change without signatures encodes (and so digests) as before the field existed.
        assert!(!json.contains("signatures"), "{json}");
        let signed = change(vec![vec![0x30; 100]]);
        assert!(signed.validate().is_ok());
        assert_ne!(signed.digest().unwrap(), plain.digest().unwrap());
        let too_many = change(vec![vec![0x30; 10]; MAX_IMAGE_SIGNATURES + 1]);
        assert!(matches!(
            too_many.validate(),
            Err(ProtoError::TooLarge {
                field: "change.signatures",
                ..
            })
        ));
        for bad in [Vec::new(), vec![0x30; MAX_IMAGE_SIGNATURE + 1]] {
            assert!(change(vec![bad]).validate().is_err());
        }
    }
}
