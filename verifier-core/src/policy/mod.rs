//! Policy: whether a machine whose evidence is genuine may have its key.
//!
//! A policy is data (a versioned JSON document), evaluated only on [`ValidatedEvidence`], and
//! it reports every failed rule with a reason rather than stopping at the first, because an
//! operator debugging a refused boot needs the whole picture. Engines sit behind
//! [`Evaluator`] so another (for example an external Rego engine) can be plugged in without
//! touching validation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::evidence::ValidatedEvidence;
use crate::wire::{BankSelection, Digest, HashAlg, PcrSelection, PCR_COUNT};

/// Schema version of the policy document this build understands.
pub const POLICY_VERSION: u32 = 1;

/// The default release PCR: extended by the agent after a release, so the policy's
/// "must be initial" rule refuses any later quote in the same boot.
pub const DEFAULT_RELEASE_PCR: u8 = 15;

/// Evaluates validated evidence.
pub trait Evaluator {
    /// Every failed rule (empty: accepted).
    fn evaluate(&self, evidence: &ValidatedEvidence<'_>) -> Verdict;
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Failed rules, in policy order.
    pub failures: Vec<RuleFailure>,
}

impl Verdict {
    /// True when no rule failed.
    pub fn accepted(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() {
            return f.write_str("accepted");
        }
        for (i, r) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", r.rule, r.reason)?;
        }
        Ok(())
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleFailure {
    /// Which rule (`pcr sha256:7`, `release_pcr`, ...).
    pub rule: String,
    /// Why, for a person.
    pub reason: String,
}

/// A policy document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid JSON for the schema (with line, column and field path).
    #[error("policy: {0}")]
    Syntax(String),
    /// A newer schema version.
    #[error("policy version {found} is not supported (this build reads version {POLICY_VERSION})")]
    Version {
        /// Version in the document.
        found: u32,
    },
    /// A field holds an impossible value.
    #[error("policy field {field}: {reason}")]
    Invalid {
        /// Path of the field (`pcrs[2].allowed[0]`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The policy document (schema version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Schema version; must be [`POLICY_VERSION`].
    pub version: u32,
    /// Allowed PCR values.
    #[serde(default)]
    pub pcrs: Vec<PcrRuleDocument>,
    /// The release PCR, which must still be at its initial (all-zero) value. `null` disables
    /// the rule (not recommended: a second quote in the same boot could then pass).
    #[serde(default = "default_release")]
    pub release_pcr: Option<ReleasePcrDocument>,
    /// Refuse unless the machine sent a UEFI event log.
    #[serde(default)]
    pub require_event_log: bool,
    /// Accept event logs where an event's digest does not match its data.
    #[serde(default)]
    pub allow_event_digest_mismatch: bool,
    /// Refuse quotes whose clockInfo.safe is false.
    #[serde(default)]
    pub require_clock_safe: bool,
}

/// Allowed values of one PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrRuleDocument {
    /// Bank (`sha1`, `sha256`, `sha384`, `sha512`).
    pub bank: String,
    /// PCR index (0-23).
    pub index: u8,
    /// Allowed values, lowercase hex; any one matches.
    pub allowed: Vec<String>,
}

/// The release PCR rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasePcrDocument {
    /// Bank.
    pub bank: String,
    /// PCR index.
    pub index: u8,
}

fn default_release() -> Option<ReleasePcrDocument> {
    Some(ReleasePcrDocument {
        bank: "sha256".into(),
        index: DEFAULT_RELEASE_PCR,
    })
}

/// A checked policy, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    doc: PolicyDocument,
    rules: Vec<(HashAlg, u8, Vec<Digest>)>,
    release: Option<(HashAlg, u8)>,
}

impl Policy {
    /// Parses and checks a JSON policy document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let doc: PolicyDocument = serde_path_to_error::deserialize(de).map_err(|e| {
            PolicyError::Syntax(format!(
                "{} (field `{}`, line {}, column {})",
                e.inner(),
                e.path(),
                e.inner().line(),
                e.inner().column()
            ))
        })?;
        Self::from_document(doc)
    }

    /// Checks a document.
    pub fn from_document(doc: PolicyDocument) -> Result<Self, PolicyError> {
        if doc.version != POLICY_VERSION {
            return Err(PolicyError::Version { found: doc.version });
        }
        let bank = |field: String, name: &str| {
            HashAlg::from_name(name).ok_or(PolicyError::Invalid {
                field,
                reason: format!("unknown bank `{name}` (use sha1, sha256, sha384 or sha512)"),
            })
        };
        let index = |field: String, i: u8| {
            if i < PCR_COUNT {
                Ok(i)
            } else {
                Err(PolicyError::Invalid {
                    field,
                    reason: format!("PCR index {i} is not 0-23"),
                })
            }
        };
        let mut rules = Vec::with_capacity(doc.pcrs.len());
        for (n, r) in doc.pcrs.iter().enumerate() {
            let alg = bank(format!("pcrs[{n}].bank"), &r.bank)?;
            let i = index(format!("pcrs[{n}].index"), r.index)?;
            if r.allowed.is_empty() {
                return Err(PolicyError::Invalid {
                    field: format!("pcrs[{n}].allowed"),
                    reason: "empty list: nothing could match (remove the rule instead)".into(),
                });
            }
            let mut allowed = Vec::with_capacity(r.allowed.len());
            for (k, v) in r.allowed.iter().enumerate() {
                allowed.push(
                    Digest::from_hex(alg, v).ok_or_else(|| PolicyError::Invalid {
                        field: format!("pcrs[{n}].allowed[{k}]"),
                        reason: format!("not a {}-byte hex {alg} digest", alg.size()),
                    })?,
                );
            }
            rules.push((alg, i, allowed));
        }
        let release = match &doc.release_pcr {
            Some(r) => Some((
                bank("release_pcr.bank".into(), &r.bank)?,
                index("release_pcr.index".into(), r.index)?,
            )),
            None => None,
        };
        Ok(Self {
            doc,
            rules,
            release,
        })
    }

    /// The document (for storage and display).
    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    /// The release PCR rule, if enabled.
    pub fn release_pcr(&self) -> Option<(HashAlg, u8)> {
        self.release
    }

    /// The PCRs a quote must cover for this policy to be evaluated: every ruled PCR and the
    /// release PCR. The server sends this selection in its challenge.
    pub fn selection(&self) -> PcrSelection {
        let mut banks: std::collections::BTreeMap<HashAlg, Vec<u8>> = Default::default();
        for (alg, i, _) in &self.rules {
            banks.entry(*alg).or_default().push(*i);
        }
        if let Some((alg, i)) = self.release {
            banks.entry(alg).or_default().push(i);
        }
        let banks: Vec<BankSelection> = banks
            .into_iter()
            .filter_map(|(alg, idx)| BankSelection::new(alg, &idx))
            .collect();
        PcrSelection::new(banks).unwrap_or_default()
    }
}

impl Evaluator for Policy {
    fn evaluate(&self, evidence: &ValidatedEvidence<'_>) -> Verdict {
        let quote = evidence.quote();
        let mut failures = Vec::new();
        for (alg, i, allowed) in &self.rules {
            let rule = format!("pcr {alg}:{i}");
            match quote.pcrs().get(*alg, *i) {
                None => failures.push(RuleFailure {
                    rule,
                    reason: "not covered by the quote".into(),
                }),
                Some(v) if !allowed.contains(v) => failures.push(RuleFailure {
                    rule,
                    reason: format!("value {v} is not one of the {} allowed", allowed.len()),
                }),
                Some(_) => {}
            }
        }
        if let Some((alg, i)) = self.release {
            let rule = format!("release_pcr {alg}:{i}");
            match quote.pcrs().get(alg, i) {
                None => failures.push(RuleFailure {
                    rule,
                    reason: "release PCR not covered by the quote".into(),
                }),
                Some(v) if *v != Digest::zero(alg) => failures.push(RuleFailure {
                    rule,
                    reason: "already extended in this boot (a key was released before)".into(),
                }),
                Some(_) => {}
            }
        }
        if self.doc.require_event_log && evidence.event_log().is_none() {
            failures.push(RuleFailure {
                rule: "require_event_log".into(),
                reason: "no UEFI event log was sent".into(),
            });
        }
        if !self.doc.allow_event_digest_mismatch {
            if let Some(log) = evidence.event_log() {
                for f in log.findings() {
                    if let crate::eventlog::Finding::DigestMismatch {
                        event_index, pcr, ..
                    } = f
                    {
                        failures.push(RuleFailure {
                            rule: "event_digest_mismatch".into(),
                            reason: format!(
                                "event {event_index} (PCR {pcr}) digest does not match its data"
                            ),
                        });
                    }
                }
            }
        }
        if self.doc.require_clock_safe && !quote.safe() {
            failures.push(RuleFailure {
                rule: "require_clock_safe".into(),
                reason: "the TPM clock is not safe (clockInfo.safe = no)".into(),
            });
        }
        Verdict { failures }
    }
}
