//! The host check of a policy's `host` section: ask the host's provider for a quote over a
//! nonce this role just drew, and let verifier-core decide
//! ([`verifier_core::provider::check_host_answer`]).
//!
//! Plain `http` to the provider is acceptable. The answer authenticates itself: it must be a
//! quote signed by the host AK pinned in the policy, over a Merkle root that contains this
//! role's fresh nonce. Someone on the network can delay or drop answers (refused as
//! `host_unreachable`, never accepted) but cannot forge one or replay an old one. TLS would
//! only hide the host's PCRs and event log; `https` URLs work too (web PKI roots).
//!
//! Every failure refuses (fail closed), with a code saying what to fix: the provider
//! (`host_unreachable`), the pin or the provider's honesty (`host_quote_invalid`), or the
//! host's state (`host_policy_denied`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use verifier_core::policy::HostPolicy;
use verifier_core::proto::v1::{
    self, ErrorCode, ErrorResponse, HostQuoteRequest, HostQuoteResponse, MAX_EVENT_LOG,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::provider::{check_host_answer, HostAccepted, HostCheckError};

use crate::error::ApiError;

/// Largest answer read from a provider: a base64 event log at its bound plus room for the
/// quote, signature, PCRs and proof. A bigger answer is refused, not buffered.
const MAX_ANSWER: u64 = (MAX_EVENT_LOG as u64) * 4 / 3 + 64 * 1024;

/// Most host checks waiting on providers at once, process-wide. Each holds a thread of the
/// blocking pool (`--blocking-threads`, default 32) for up to the policy's timeout; without
/// a cap a slow or stalled provider would take every thread, and with them every other
/// request of every role. Past the cap a check is refused at once as `host_unreachable`
/// (which consumes nothing and is not counted against the machine) and the agent retries.
const MAX_HOST_CHECKS: usize = 12;

static HOST_CHECKS: AtomicUsize = AtomicUsize::new(0);

/// A slot among [`MAX_HOST_CHECKS`], given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Self> {
        HOST_CHECKS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_HOST_CHECKS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        HOST_CHECKS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One HTTP client for every host check (connection reuse across attestations); timeouts
/// are set per request from the policy.
fn http() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        use ureq::tls::{TlsConfig, TlsProvider};
        ureq::Agent::config_builder()
            .tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .build(),
            )
            .http_status_as_error(false)
            // A redirect is refused like any other non-200 answer: the policy names the
            // provider, nothing in an answer moves it.
            .max_redirects(0)
            .build()
            .new_agent()
    })
}

/// Asks the provider of `policy` for a fresh host quote and checks it. Blocking (it waits
/// up to the policy's timeout): call it only on the blocking pool, as the attest path is.
pub(super) fn check(policy: &HostPolicy) -> Result<HostAccepted, ApiError> {
    let Some(_slot) = Slot::take() else {
        return Err(ApiError::new(
            ErrorCode::HostUnreachable,
            format!(
                "host provider {}: {MAX_HOST_CHECKS} host checks already wait on providers; retry",
                policy.provider()
            ),
        ));
    };
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("RNG failed"))?;
    let bytes = fetch(policy, &nonce)?;
    let answer: HostQuoteResponse = v1::decode(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::HostQuoteInvalid,
            format!(
                "host provider {}: answer does not decode: {e}",
                policy.provider()
            ),
        )
    })?;
    check_host_answer(policy, &nonce, &answer).map_err(|e| {
        let code = match e {
            HostCheckError::Policy(_) => ErrorCode::HostPolicyDenied,
            _ => ErrorCode::HostQuoteInvalid,
        };
        ApiError::new(code, format!("host provider {}: {e}", policy.provider()))
    })
}

/// The raw answer of `POST <provider>/v1/provider/quote`.
fn fetch(policy: &HostPolicy, nonce: &[u8; 32]) -> Result<Vec<u8>, ApiError> {
    let provider = policy.provider();
    let unreachable = |why: String| {
        ApiError::new(
            ErrorCode::HostUnreachable,
            format!("host provider {provider}: {why}"),
        )
    };
    let body = v1::encode(&HostQuoteRequest {
        nonce: Base64Bytes::new(nonce.to_vec()),
    })
    .map_err(ApiError::internal)?;
    let resp = http()
        .post(&policy.quote_url())
        .config()
        .timeout_global(Some(policy.timeout()))
        .build()
        .content_type("application/json")
        .send(&body[..])
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let read = resp
        .into_body()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec();
    let bytes = match read {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            return Err(ApiError::new(
                ErrorCode::HostQuoteInvalid,
                format!("host provider {provider}: answer larger than {MAX_ANSWER} bytes"),
            ))
        }
        Err(e) => return Err(unreachable(format!("answer could not be read: {e}"))),
    };
    if status != ureq::http::StatusCode::OK {
        let why = match v1::decode::<ErrorResponse>(&bytes) {
            Ok(e) => format!(
                "HTTP {} ({}: {})",
                status.as_u16(),
                serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                e.message
            ),
            Err(_) => format!("HTTP {}", status.as_u16()),
        };
        return Err(unreachable(why));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_checks_beyond_the_cap_are_refused_and_slots_come_back() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take)
            .take(MAX_HOST_CHECKS)
            .collect();
        assert_eq!(held.len(), MAX_HOST_CHECKS);
        assert!(Slot::take().is_none(), "a check past the cap got a slot");
        drop(held);
        assert!(Slot::take().is_some(), "slots were not given back");
    }
}
