//! The `host` section: what the host a machine runs on must prove, with a fresh quote from
//! its provider, before the machine gets its key.
//!
//! The host's rules are the machine's rules (`pcrs`, `require_event_log`,
//! `allow_event_digest_mismatch`, `require_clock_safe`, `measured_boot`): the section is
//! compiled into a policy of its own and evaluated by the same engine on claims built from a
//! [`VerifiedHostQuote`], so there is one implementation of each rule. What only the host has
//! is the trust input (the pinned AK), where to ask (the provider URL) and how long to wait.
//! Asking is I/O and belongs to the server; this module decides.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::document::{HostDocument, PolicyDocument};
use super::{Claims, Evaluator, Policy, PolicyError, Report, Verdict, POLICY_VERSION};
use crate::provider::VerifiedHostQuote;
use crate::quote::AkPublic;
use crate::wire::Public;

/// How long a role waits for the provider when the policy does not say.
pub const DEFAULT_HOST_TIMEOUT_MS: u64 = 5_000;

/// The longest wait a policy may ask for: the wait holds an attest request (and a worker
/// thread) open, so a policy must not be able to stall the server without bound.
pub const MAX_HOST_TIMEOUT_MS: u64 = 60_000;

/// Longest provider URL accepted.
const MAX_URL_LEN: usize = 2048;

/// The compiled `host` section: where to ask, whom to believe, and the rules.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    provider: String,
    ak: AkPublic,
    timeout: Duration,
    rules: Policy,
}

impl HostPolicy {
    /// The provider's base URL, without a trailing `/`.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The URL a role posts its `HostQuoteRequest` to.
    pub fn quote_url(&self) -> String {
        format!("{}{}", self.provider, crate::proto::v1::HOST_QUOTE_PATH)
    }

    /// The pinned host AK: the only key a host quote is verified with.
    pub fn ak(&self) -> &AkPublic {
        &self.ak
    }

    /// How long to wait for the provider's answer, connection included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every failed host rule (empty: the host is acceptable). Rule names carry a `host.`
    /// prefix (`host.pcr sha256:0`) so a refusal says whose state failed.
    pub fn evaluate(&self, quote: &VerifiedHostQuote<'_>) -> Verdict {
        let mut verdict = self.rules.evaluate_claims(&claims(quote));
        for f in &mut verdict.failures {
            f.rule = format!("host.{}", f.rule);
        }
        // The host's items are not the machine's: nothing of them is retired by its boots.
        verdict.used.clear();
        verdict
    }

    /// Every host rule's verdict, passed ones included.
    pub fn check(&self, quote: &VerifiedHostQuote<'_>) -> Report {
        let mut report = self.rules.check(&claims(quote));
        for o in &mut report.outcomes {
            o.rule = format!("host.{}", o.rule);
        }
        report.used.clear();
        report
    }
}

/// The host's claims: exactly what [`crate::provider::validate_host_quote`] verified (the
/// quoted PCRs and clock, and the event log that replayed to them). Hosts send no IMA list.
fn claims<'q>(quote: &'q VerifiedHostQuote<'_>) -> Claims<'q> {
    Claims::from_validated(
        quote.quote().pcrs(),
        quote.quote().clock_info(),
        quote.event_log(),
        None,
    )
}

fn invalid(field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: format!("host.{field}"),
        reason: reason.into(),
    }
}

pub(super) fn compile(doc: &HostDocument) -> Result<HostPolicy, PolicyError> {
    let provider = provider_url(&doc.provider)?;
    let ak = pinned_ak(doc)?;
    let timeout_ms = doc.timeout_ms.unwrap_or(DEFAULT_HOST_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_HOST_TIMEOUT_MS {
        return Err(invalid(
            "timeout_ms",
            format!("{timeout_ms} is not 1-{MAX_HOST_TIMEOUT_MS} milliseconds"),
        ));
    }
    // The host's rules as a policy of their own: no release PCR (the host releases
    // nothing) and no nested host.
    let inner = PolicyDocument {
        version: POLICY_VERSION,
        pcrs: doc.pcrs.clone(),
        release_pcr: None,
        require_event_log: doc.require_event_log,
        allow_event_digest_mismatch: doc.allow_event_digest_mismatch,
        require_clock_safe: doc.require_clock_safe,
        measured_boot: doc.measured_boot.clone(),
        ima: None,
        clock: None,
        host: None,
        snp: None,
        auto_approve: None,
        rego: None,
    };
    let rules = Policy::from_document(inner).map_err(|e| match e {
        PolicyError::Invalid { field, reason } => invalid(&field, reason),
        other => other,
    })?;
    Ok(HostPolicy {
        provider,
        ak,
        timeout: Duration::from_millis(timeout_ms),
        rules,
    })
}

/// `http://` or `https://`, a host, optionally a port and a path prefix; no userinfo, query
/// or fragment (the role appends the API path).
fn provider_url(url: &str) -> Result<String, PolicyError> {
    let field = "provider";
    if url.len() > MAX_URL_LEN {
        return Err(invalid(field, format!("longer than {MAX_URL_LEN} bytes")));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid(field, "must start with http:// or https://"))?;
    if rest
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
    {
        return Err(invalid(
            field,
            "must not contain whitespace, `?`, `#`, `@` or `\\` (no query, fragment or credentials)",
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid(field, "has no host name"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn pinned_ak(doc: &HostDocument) -> Result<AkPublic, PolicyError> {
    let bytes = STANDARD.decode(doc.ak_pub.as_bytes()).map_err(|_| {
        invalid(
            "ak_pub",
            "not standard base64 (use the `ak_pub` that GET /v1/provider/ak answers)",
        )
    })?;
    let public =
        Public::parse(&bytes).map_err(|e| invalid("ak_pub", format!("not a TPMT_PUBLIC: {e}")))?;
    let ak = AkPublic::try_from(public)
        .map_err(|e| invalid("ak_pub", format!("not usable as an AK: {e}")))?;
    if let Some(name) = &doc.ak_name {
        let pinned =
            hex::decode(name).map_err(|_| invalid("ak_name", "not hex (nameAlg || digest)"))?;
        if pinned != ak.name() {
            return Err(invalid(
                "ak_name",
                format!(
                    "is not the name of ak_pub (whose name is {}): the wrong key was pinned",
                    hex::encode(ak.name())
                ),
            ));
        }
    }
    Ok(ak)
}
