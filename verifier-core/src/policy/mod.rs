//! Policy: whether a machine whose evidence is genuine may have its key.
//!
//! A policy is data (a versioned JSON document, [`PolicyDocument`]), evaluated only on
//! [`Claims`]: on the server those come from [`ValidatedEvidence::claims`], offline from
//! [`Claims::unverified_from_capture`]. Evaluation reports every failed rule with a reason
//! rather than stopping at the first, because an operator debugging a refused boot needs the
//! whole picture; [`Policy::check`] also reports the rules that passed. Engines sit behind
//! [`Evaluator`] so another (for example an external Rego engine) can be plugged in without
//! touching validation.
//!
//! Sections of a document (all optional but `version`; see `docs/policy.md`):
//! - `pcrs`: allowed values per bank and PCR, or `initial`; `release_pcr` (must be initial).
//! - `measured_boot`: reference state read from the decoded event log (Secure Boot, PK/KEK/db/
//!   dbx, boot applications, kernels, initrds, command lines) over the PCRs it covers.
//! - `ima`: file-digest allowlist with excludes.
//! - `clock`: clockInfo rules (safe, reboots since enrollment, resumes per boot).
//! - `host`: a fresh quote of the host, from its provider, by a pinned AK, passing the same
//!   kinds of rules ([`HostPolicy`]); the server asks, [`HostPolicy::evaluate`] decides.
//! - `snp`: a confidential VM's SEV-SNP report (measurement allowlist, minimum TCB, debug and
//!   migration agent, SMT, VMPL), read from [`Claims::snp`]; evidence carrying a report is
//!   held to the section's defaults even without it.

mod auto_approve;
pub(crate) mod boot;
mod claims;
mod compile;
mod diff;
mod document;
mod eval;
mod host;
mod learn;
#[cfg(feature = "rego")]
pub mod rego;
mod usage;
mod widen;

use std::fmt;

use serde::Serialize;

#[cfg(feature = "ekcert")]
pub use auto_approve::{auto_approval, AutoApproval};
pub use auto_approve::{signer_certificates, MAX_TRUSTED_SIGNERS};
pub use claims::{CaptureError, Claims, ClaimsSource, UnverifiedCapture};
pub use diff::{diff, Change, Effect, PolicyDiff};
pub use document::{
    AutoApproveDocument, ClockDocument, CmdlineRuleDocument, DbxDocument, HostDocument,
    ImaDocument, MeasuredBootDocument, PcrRuleDocument, PolicyDocument, RegoDocument,
    ReleasePcrDocument, SnpDocument, TcbDocument, MAX_REGO_BYTES,
};
pub use host::{HostPolicy, DEFAULT_HOST_TIMEOUT_MS, MAX_HOST_TIMEOUT_MS};
pub use learn::{learn, LearnError, LearnMode, LearnOptions, Learned};
pub use usage::{
    check_only_narrows, retirable_items, retire, BootUse, KeptItem, MachineUse, Matched,
    RetireError, Retirement, UsedItem, MAX_USED_ITEMS,
};
pub use widen::{check_only_allows_more, widen, WidenError, Widened};

use crate::evidence::ValidatedEvidence;
use crate::wire::{HashAlg, PcrSelection};

/// Schema version of the policy document this build understands.
pub const POLICY_VERSION: u32 = 1;

pub use crate::DEFAULT_RELEASE_PCR;

pub use crate::RELEASE_EVENT;

/// Evaluates claims. Implement [`Evaluator::evaluate_claims`]; the server calls
/// [`Evaluator::evaluate`] with validated evidence only.
pub trait Evaluator {
    /// Every failed rule (empty: accepted).
    fn evaluate_claims(&self, claims: &Claims<'_>) -> Verdict;

    /// Evaluates evidence that passed validation.
    fn evaluate(&self, evidence: &ValidatedEvidence<'_>) -> Verdict {
        self.evaluate_claims(&evidence.claims())
    }
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Failed rules, in policy order.
    pub failures: Vec<RuleFailure>,
    /// The allowlist items the evidence matched (PCR values, boot applications, kernels,
    /// initrds, exact command lines), at most [`MAX_USED_ITEMS`]: what the server records
    /// per successful boot so that items no machine uses any more can be retired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used: Vec<Matched>,
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
    /// Which rule (`pcr sha256:7`, `release_pcr sha256:15`, `measured_boot.db`, ...).
    pub rule: String,
    /// Why, for a person.
    pub reason: String,
}

/// One rule's verdict, passed or failed (what `unlockctl policy check` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleOutcome {
    /// Which rule.
    pub rule: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found (for a failure, why it failed).
    pub detail: String,
}

/// Every rule's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// In policy order.
    pub outcomes: Vec<RuleOutcome>,
    /// The allowlist items the evidence matched (as in [`Verdict::used`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used: Vec<Matched>,
}

impl Report {
    /// True when every rule passed.
    pub fn accepted(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }

    /// The failures only.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            used: self.used.clone(),
            failures: self
                .outcomes
                .iter()
                .filter(|o| !o.passed)
                .map(|o| RuleFailure {
                    rule: o.rule.clone(),
                    reason: o.detail.clone(),
                })
                .collect(),
        }
    }
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

/// A checked policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    doc: PolicyDocument,
    rules: compile::Compiled,
    /// Boxed: the host's rules are themselves a `Policy` (without a host).
    host: Option<Box<HostPolicy>>,
    /// The compiled Rego module (shared: compiled once per module text, see
    /// [`rego::compiled`]).
    #[cfg(feature = "rego")]
    rego: Option<std::sync::Arc<rego::RegoPolicy>>,
}

impl PartialEq for Policy {
    /// Two policies are equal when their documents are: the compiled rules are a function of it.
    fn eq(&self, other: &Self) -> bool {
        self.doc == other.doc
    }
}

impl Eq for Policy {}

impl Policy {
    /// Parses and checks a JSON policy document. Errors name the line, column and field.
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
        let rules = compile::compile(&doc)?;
        let host = doc
            .host
            .as_ref()
            .map(host::compile)
            .transpose()?
            .map(Box::new);
        #[cfg(feature = "rego")]
        let rego = doc
            .rego
            .as_ref()
            .map(|r| rego::compiled(&r.module))
            .transpose()
            .map_err(|e| PolicyError::Invalid {
                field: "rego.module".into(),
                reason: e.to_string(),
            })?;
        #[cfg(not(feature = "rego"))]
        if doc.rego.is_some() {
            return Err(PolicyError::Invalid {
                field: "rego".into(),
                reason: "this build has no Rego evaluator (verifier-core feature `rego`)".into(),
            });
        }
        Ok(Self {
            doc,
            rules,
            host,
            #[cfg(feature = "rego")]
            rego,
        })
    }

    /// The compiled Rego module, if the document carries one.
    #[cfg(feature = "rego")]
    pub fn rego(&self) -> Option<&rego::RegoPolicy> {
        self.rego.as_deref()
    }

    /// The document (for storage and display).
    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    /// The host requirement, if the document has a `host` section. Evaluation of the
    /// machine's claims ([`Evaluator`], [`Policy::check`]) does not include it: the caller
    /// must get a fresh host quote and pass it to [`HostPolicy::evaluate`].
    pub fn host(&self) -> Option<&HostPolicy> {
        self.host.as_deref()
    }

    /// The release PCR rule, if enabled.
    pub fn release_pcr(&self) -> Option<(HashAlg, u8)> {
        self.rules.release
    }

    /// The PCRs a quote must cover for this policy to be evaluated: every ruled PCR, the
    /// release PCR, the PCRs the measured-boot check covers and PCR 10 for IMA rules. The
    /// server sends this selection in its challenge.
    pub fn selection(&self) -> PcrSelection {
        self.rules.selection()
    }

    /// Every rule's verdict, passed ones included (for `unlockctl policy check`).
    pub fn check(&self, claims: &Claims<'_>) -> Report {
        let mut sink = eval::Sink::verbose();
        eval::evaluate(self, claims, &mut sink);
        let (outcomes, used) = sink.into_parts();
        Report { outcomes, used }
    }
}

impl Evaluator for Policy {
    /// The native rules, then the Rego module if the document carries one: both must
    /// accept, and the verdict names each failed rule of either (`rego.allow`, `rego.deny`
    /// with the module's message, `rego.error`).
    fn evaluate_claims(&self, claims: &Claims<'_>) -> Verdict {
        let mut sink = eval::Sink::failures_only();
        eval::evaluate(self, claims, &mut sink);
        let (outcomes, used) = sink.into_parts();
        #[allow(unused_mut)]
        let mut failures: Vec<RuleFailure> = outcomes
            .into_iter()
            .map(|o| RuleFailure {
                rule: o.rule,
                reason: o.detail,
            })
            .collect();
        #[cfg(feature = "rego")]
        if let Some(r) = &self.rego {
            failures.extend(r.evaluate_claims(claims).failures);
        }
        Verdict { failures, used }
    }
}
