//! The policy document: what operators write, store and diff (JSON, schema version 1).
//!
//! Schema version 1 grew by optional sections (`measured_boot`, `ima`, `clock`, and
//! `initial` on a PCR rule) rather than by a version 2: every document written for the first
//! engine is still valid and means the same, and a build that predates a section refuses a
//! document that uses it (`deny_unknown_fields`: "unknown field `measured_boot`") instead of
//! silently ignoring a rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DEFAULT_RELEASE_PCR;

/// The policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Schema version; must be [`super::POLICY_VERSION`].
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
    /// Reference state of the measured boot, checked on the decoded event log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_boot: Option<MeasuredBootDocument>,
    /// IMA allowlist (for an initramfs that runs IMA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima: Option<ImaDocument>,
    /// Rules on the quote's clockInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockDocument>,
    /// A fresh quote of the host this machine runs on, from the host's provider, must pass
    /// these rules before anything is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostDocument>,
    /// Rules on a confidential VM's SEV-SNP report. Evidence that carries an SNP report is
    /// always held to at least the defaults of this section (debug and migration agent
    /// refused), present or not; evidence without one fails a present section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpDocument>,
    /// What a machine's own request (`initrd-agent request-allow`) may add to this policy
    /// without an operator. Absent: every request waits for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve: Option<AutoApproveDocument>,
    /// A Rego module evaluated over the same claims as a second evaluator: both the native
    /// rules above and the module must accept. Compiled when the policy is checked (a bad
    /// module is refused at `policy create`), bounded in size and evaluation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<RegoDocument>,
}

/// Largest Rego module a policy may carry.
pub const MAX_REGO_BYTES: usize = 256 * 1024;

/// A Rego module in a policy. The query is fixed by the contract (see
/// `policy::rego`): `package unlock`, `allow` must be `true`, the set `deny` empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegoDocument {
    /// The module's source text (at most [`MAX_REGO_BYTES`]).
    pub module: String,
}

/// Rules for approving a machine's pending change without an operator
/// ([`crate::policy::auto_approval`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveDocument {
    /// Certificates (base64 of the DER) trusted to sign boot applications: a change that
    /// only adds `measured_boot.boot_applications` digests, each covered by an Authenticode
    /// signature that verifies and chains to one of these (a CA such as Debian's Secure Boot
    /// CA, or a signing certificate itself), is approved as submitted.
    #[serde(default)]
    pub boot_applications_signed_by: Vec<String>,
}

impl Default for PolicyDocument {
    /// The smallest useful policy: only the release-PCR rule.
    fn default() -> Self {
        Self {
            version: super::POLICY_VERSION,
            pcrs: Vec::new(),
            release_pcr: default_release(),
            require_event_log: false,
            allow_event_digest_mismatch: false,
            require_clock_safe: false,
            measured_boot: None,
            ima: None,
            clock: None,
            host: None,
            snp: None,
            auto_approve: None,
            rego: None,
        }
    }
}

/// Rules on the SEV-SNP attestation report of a confidential VM.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpDocument {
    /// Allowed launch measurements (96 hex digits each); any one matches. Absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Vec<String>>,
    /// Minimum REPORTED_TCB, each component compared on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<TcbDocument>,
    /// Accept a guest policy that lets the host debug the guest (never in production: the
    /// host can then read the guest's memory, and so the released key).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_debug: bool,
    /// Accept a guest policy that allows a migration agent (which can export the guest).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_migration_agent: bool,
    /// Refuse a guest policy that allows SMT (sibling-thread side channels).
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_no_smt: bool,
    /// Highest VMPL the report may come from (0 is the most privileged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vmpl: Option<u32>,
    /// Lowest guest SVN (ID block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_guest_svn: Option<u32>,
    /// Azure CVMs: the HCL must state that Secure Boot is enabled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_azure_secure_boot: bool,
}

/// A minimum TCB version (security patch levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbDocument {
    /// Boot loader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub microcode: u8,
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
    #[serde(default)]
    pub allowed: Vec<String>,
    /// The PCR must still hold its value after TPM2_Startup (all zeros; all `ff` for PCRs
    /// 17-22): nothing was measured into it in this boot. May stand alone or beside `allowed`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub initial: bool,
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

/// Measured-boot reference state, evaluated on the decoded UEFI event log.
///
/// Only events of PCRs in `pcrs` are looked at, and each of those PCRs must be quoted and
/// equal to the log's replay: an event in a PCR the quote does not cover proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredBootDocument {
    /// The bank whose event digests the rules name (default `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
    /// PCRs the check covers (quoted, explained by the log). Default: the PCRs the rules
    /// below read (7 for Secure Boot and keys, 4 for boot applications, 8 and 9 for grub's
    /// kernel, initrd and command line, 11 and 12 for a UKI). Leave out PCRs that change at
    /// run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<Vec<u8>>,
    /// The SecureBoot variable (PCR 7) must be 1.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_secure_boot: bool,
    /// Allowed PK entries: every entry of the measured PK must be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<Vec<String>>,
    /// Allowed KEK entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek: Option<Vec<String>>,
    /// Allowed db entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<Vec<String>>,
    /// What the revocation list must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbx: Option<DbxDocument>,
    /// Allowed Secure Boot authorities: every `EV_EFI_VARIABLE_AUTHORITY` event in PCR 7
    /// (the db certificate, shim vendor certificate or MOK that verified a boot application)
    /// must name one of these entries (same notation as `db`), and at least one must be
    /// measured. Follows what Secure Boot verified instead of exact hashes, so a newly
    /// signed shim, grub or kernel passes without a policy change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorities: Option<Vec<String>>,
    /// Allowed digests (in `bank`) of EFI boot applications (PCR 4: shim, grub,
    /// systemd-boot, a UKI, a kernel started as an EFI application).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_applications: Option<Vec<String>>,
    /// Allowed kernel digests: grub's kernel file (PCR 9) or a UKI's `.linux` section
    /// (PCR 11). At least one kernel measurement must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<String>>,
    /// Allowed initrd digests: grub's initrd files (PCR 9) or a UKI's `.initrd` (PCR 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrds: Option<Vec<String>>,
    /// Kernel command-line rules: every measured command line (grub `kernel_cmdline` in
    /// PCR 8, systemd-boot/stub UTF-16 in PCR 8 or 12) must match one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cmdline: Option<Vec<CmdlineRuleDocument>>,
}

/// dbx requirements: revocations must not be rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbxDocument {
    /// Entries that must be present (same notation as `db`).
    #[serde(default)]
    pub required: Vec<String>,
    /// Fewest entries dbx may hold (a stand-in for its version, which UEFI does not record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_entries: Option<u32>,
}

/// A kernel command-line rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CmdlineRuleDocument {
    /// The whole command line, byte for byte.
    Exact(String),
    /// A regular expression (Rust `regex` syntax) that must match the whole command line.
    Regex(String),
}

/// IMA allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImaDocument {
    /// Bank whose PCR 10 the quote must cover (default `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
    /// Path → allowed file digests (`sha256:<hex>`, `sha1:<hex>`, ...).
    #[serde(default)]
    pub allowed: BTreeMap<String, Vec<String>>,
    /// Regular expressions; an entry whose path matches one is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Accept violation entries (file changed while measured; their fields are unbound).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_violations: bool,
}

/// Rules on the quote's clockInfo.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockDocument {
    /// clockInfo.safe must be yes (same as the top-level `require_clock_safe`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_safe: bool,
    /// resetCount when the machine was enrolled (from the learned evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_count_at_enrollment: Option<u32>,
    /// Most reboots (resetCount increments) allowed since `reset_count_at_enrollment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reboots: Option<u32>,
    /// Most resumes (restartCount) allowed within one boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
}

/// The host requirement: a quote of the host's TPM, fresh for this attestation, signed by a
/// pinned host AK, whose state passes the same kinds of rules as the machine's own.
///
/// The role that evaluates the policy asks the provider itself, with its own nonce, after the
/// machine's own evidence passed and before it releases anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDocument {
    /// Base URL of the host's provider (`http://10.0.0.1:8450`); the role posts to
    /// `<provider>/v1/provider/quote`. Plain `http` is fine: the answer is authenticated by
    /// the pinned AK's signature over the role's own nonce.
    pub provider: String,
    /// The host AK's public area (TPMT_PUBLIC), base64: the `ak_pub` that
    /// `GET /v1/provider/ak` answers. Answers are verified with this key only.
    pub ak_pub: String,
    /// The AK's name in hex (nameAlg || digest, what the provider prints at start). When set,
    /// it must be the name of `ak_pub`: a guard against pinning the wrong key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_name: Option<String>,
    /// Allowed values of the host's PCRs (same rules as the top-level `pcrs`). They must be
    /// in the provider's quoted selection (`--pcrs`, default sha256:0-7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcrs: Vec<PcrRuleDocument>,
    /// Refuse unless the provider sent the host's UEFI event log.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_event_log: bool,
    /// Accept host event logs where an event's digest does not match its data.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_event_digest_mismatch: bool,
    /// Refuse host quotes whose clockInfo.safe is false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_clock_safe: bool,
    /// Measured-boot reference state of the host, checked on its event log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_boot: Option<MeasuredBootDocument>,
    /// How long to wait for the provider, in milliseconds (default 5000, at most 60000).
    /// The provider batches requests for its window plus up to two quote times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn default_release() -> Option<ReleasePcrDocument> {
    Some(ReleasePcrDocument {
        bank: "sha256".into(),
        index: DEFAULT_RELEASE_PCR,
    })
}

fn is_false(b: &bool) -> bool {
    !*b
}
