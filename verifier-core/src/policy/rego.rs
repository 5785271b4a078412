//! Rego as a second evaluator over the same [`Claims`] (feature `rego`), so operators coming
//! from Trustee or OPA can keep their policies. The interpreter is Microsoft's `regorus`.
//!
//! Contract of a Rego policy: `package unlock`, a boolean rule `allow`, and optionally a set
//! `deny` of messages. Evidence is accepted only when `allow` is `true` and `deny` is empty
//! (an undefined `allow` refuses: fail closed). The input document is [`input_json`] of the
//! claims: `source`, `pcrs` (`{"sha256": {"0": "<hex>", ...}}`), `clock`
//! (`reset_count`, `restart_count`, `safe`; absent for captures without a quote), `snp`
//! (the SEV-SNP claims as [`crate::attester::SnpClaims`] serializes them, absent without a
//! report), `event_log` and `ima` (`true` when a log replayed to the PCRs).
//!
//! Validation stays apart: the claims are what the verifiers produced, the same ones the
//! native rules see. Rego code is the operator's and runs without I/O (regorus's optional
//! extensions such as HTTP are not compiled in).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::{json, Map, Value as Json};

use super::{ClaimsSource, Evaluator, RuleFailure, Verdict};
use crate::policy::Claims;
use crate::wire::HashAlg;

pub use super::document::MAX_REGO_BYTES;

/// The package a Rego policy declares.
pub const PACKAGE: &str = "unlock";

/// Longest one evaluation (and the load-time probe) may run: a module that loops longer is
/// stopped by regorus's execution timer and refuses (`rego.error`). Real policies take
/// microseconds; the limit keeps a pathological one from holding a worker thread.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_millis(250);

/// Builtins refused in a module: they allocate their whole result from a number before the
/// time limit can stop them (`numbers.range(0, 1e12)` would exhaust memory at once).
const REFUSED_BUILTINS: &[&str] = &["numbers.range", "numbers.range_step"];

/// Compiled modules kept, by SHA-256 of their text (so each policy version is compiled
/// once per process); the cache is cleared when full.
const CACHE_ENTRIES: usize = 64;

type Cache = Mutex<HashMap<Vec<u8>, Arc<RegoPolicy>>>;

/// The compiled policy for `module`, from the cache or compiled now (see [`RegoPolicy::new`]).
pub fn compiled(module: &str) -> Result<Arc<RegoPolicy>, RegoError> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = HashAlg::Sha256.hash(module.as_bytes()).as_bytes().to_vec();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(hit);
    }
    let policy = Arc::new(RegoPolicy::new("policy.rego", module)?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(key, policy.clone());
    }
    Ok(policy)
}

/// Why a Rego policy cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegoError {
    /// Larger than [`MAX_REGO_BYTES`].
    #[error("Rego policy of {0} bytes exceeds {MAX_REGO_BYTES}")]
    TooLarge(usize),
    /// The source does not parse, or is not `package unlock` with an `allow` rule.
    #[error("Rego policy: {0}")]
    Invalid(String),
}

/// A parsed Rego policy.
#[derive(Clone)]
pub struct RegoPolicy {
    engine: regorus::Engine,
    has_deny: bool,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("has_deny", &self.has_deny)
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Parses `source` (named `path` in messages) and checks the contract: `package unlock`
    /// and an `allow` rule.
    pub fn new(path: &str, source: &str) -> Result<Self, RegoError> {
        if source.len() > MAX_REGO_BYTES {
            return Err(RegoError::TooLarge(source.len()));
        }
        if let Some(b) = REFUSED_BUILTINS.iter().find(|b| source.contains(*b)) {
            return Err(RegoError::Invalid(format!(
                "`{b}` is refused: it allocates its whole result before the evaluation time \
                 limit can stop it"
            )));
        }
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: EVAL_TIME_LIMIT,
            check_interval: NonZeroU32::MIN,
        });
        let package = engine
            .add_policy(path.to_owned(), source.to_owned())
            .map_err(|e| RegoError::Invalid(e.to_string()))?;
        if package != format!("data.{PACKAGE}") {
            return Err(RegoError::Invalid(format!(
                "the package is {package:?}, expected `package {PACKAGE}`"
            )));
        }
        let mut probe = engine.clone();
        probe
            .eval_rule(format!("data.{PACKAGE}.allow"))
            .map_err(|e| RegoError::Invalid(format!("no usable `allow` rule: {e}")))?;
        let has_deny = engine
            .clone()
            .eval_rule(format!("data.{PACKAGE}.deny"))
            .is_ok();
        Ok(Self { engine, has_deny })
    }
}

/// The input document the Rego policy sees (see the module docs).
pub fn input_json(claims: &Claims<'_>) -> Json {
    let mut pcrs = Map::new();
    for alg in claims.pcrs().banks() {
        let bank: Map<String, Json> = claims
            .pcrs()
            .bank(alg)
            .map(|(i, d)| (i.to_string(), Json::String(d.to_string())))
            .collect();
        pcrs.insert(alg.name().to_owned(), Json::Object(bank));
    }
    let mut input = Map::new();
    input.insert(
        "source".into(),
        Json::String(
            match claims.source() {
                ClaimsSource::VerifiedQuote => "verified_quote",
                ClaimsSource::UnverifiedCapture => "unverified_capture",
                ClaimsSource::CapturedTee => "captured_tee",
            }
            .into(),
        ),
    );
    input.insert("pcrs".into(), Json::Object(pcrs));
    if let Some(c) = claims.clock() {
        input.insert(
            "clock".into(),
            json!({"reset_count": c.reset_count, "restart_count": c.restart_count, "safe": c.safe}),
        );
    }
    if let Some(snp) = claims.snp() {
        input.insert(
            "snp".into(),
            serde_json::to_value(snp).unwrap_or(Json::Null),
        );
    }
    input.insert("event_log".into(), Json::Bool(claims.event_log().is_some()));
    input.insert("ima".into(), Json::Bool(claims.ima().is_some()));
    Json::Object(input)
}

impl Evaluator for RegoPolicy {
    /// `allow` must be `true` (`rego.allow`) and `deny` empty (`rego.deny`, one failure per
    /// message). An evaluation error refuses (`rego.error`).
    fn evaluate_claims(&self, claims: &Claims<'_>) -> Verdict {
        let mut failures = Vec::new();
        let fail = |rule: &str, reason: String| RuleFailure {
            rule: rule.to_owned(),
            reason,
        };
        let mut engine = self.engine.clone();
        let input = input_json(claims).to_string();
        if let Err(e) = engine.set_input_json(&input) {
            failures.push(fail("rego.error", e.to_string()));
            return Verdict {
                failures,
                used: Vec::new(),
            };
        }
        match engine.eval_rule(format!("data.{PACKAGE}.allow")) {
            Ok(v) if v == regorus::Value::from(true) => {}
            Ok(regorus::Value::Undefined) => failures.push(fail(
                "rego.allow",
                "undefined for this evidence (no `allow` body held)".into(),
            )),
            Ok(v) => failures.push(fail("rego.allow", format!("is {v}, not true"))),
            Err(e) => failures.push(fail("rego.error", e.to_string())),
        }
        if self.has_deny {
            match engine.eval_rule(format!("data.{PACKAGE}.deny")) {
                Ok(regorus::Value::Undefined) => {}
                Ok(v) => match v.as_set() {
                    Ok(set) => {
                        for m in set.iter() {
                            let text = m
                                .as_string()
                                .map(|s| s.to_string())
                                .unwrap_or_else(|_| m.to_string());
                            failures.push(fail("rego.deny", text));
                        }
                    }
                    Err(_) => failures.push(fail("rego.deny", format!("{v} is not a set"))),
                },
                Err(e) => failures.push(fail("rego.error", e.to_string())),
            }
        }
        Verdict {
            failures,
            used: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attester::amd::AmdRoots;
    use crate::attester::capture::CheckedAzureCapture;
    use std::time::{Duration, UNIX_EPOCH};

    /// The real Azure SEV-SNP vTPM capture of the shared test data (see
    /// `attester/tests.rs` for its provenance), checked.
    fn capture() -> CheckedAzureCapture {
        let dir = std::env::var("UNLOCK_TESTDATA").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata").to_owned()
        });
        let json =
            std::fs::read(format!("{dir}/quote/trustee-az-snp-vtpm/evidence-v1.json")).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_811_808_000);
        CheckedAzureCapture::check(&json, &AmdRoots::shipped().unwrap(), now).unwrap()
    }

    fn policy(body: &str) -> RegoPolicy {
        RegoPolicy::new("test.rego", &format!("package unlock\n\n{body}")).unwrap()
    }

    /// The same claims the native rules see: a Rego policy pinning the real measurement and
    /// TCB accepts; raising the TCB floor, another measurement, or a `deny` that holds
    /// refuses, each reported; an undefined `allow` refuses (fail closed).
    #[test]
    fn rego_decides_on_the_real_snp_claims() {
        let cap = capture();
        let claims = Claims::unverified_from_capture_azure(&cap);
        let input = input_json(&claims);
        let m = input["snp"]["measurement"].as_str().unwrap().to_owned();
        let tcb = input["snp"]["reported_tcb"]["snp"].as_u64().unwrap();
        assert_eq!(input["source"], "captured_tee");
        assert!(input["pcrs"]["sha256"]["0"].is_string());
        let rules = |m: &str, min: u64| {
            format!(
                "default allow := false\n\
                 allow if {{\n  input.snp.measurement == \"{m}\"\n  input.snp.reported_tcb.snp >= {min}\n  not input.snp.debug_allowed\n}}\n\
                 deny contains \"migration agent allowed\" if input.snp.migration_agent_allowed\n"
            )
        };
        assert!(policy(&rules(&m, tcb)).evaluate_claims(&claims).accepted());
        let v = policy(&rules(&m, tcb + 1)).evaluate_claims(&claims);
        assert_eq!(v.failures.len(), 1, "{v}");
        assert_eq!(v.failures[0].rule, "rego.allow");
        assert!(!policy(&rules(&"ab".repeat(48), tcb))
            .evaluate_claims(&claims)
            .accepted());
        let v = policy(&format!(
            "{}deny contains \"vmpl is {{input.snp.vmpl}}\" if input.snp.vmpl == 0\n",
            rules(&m, tcb)
        ))
        .evaluate_claims(&claims);
        assert_eq!(v.failures.len(), 1, "{v}");
        assert_eq!(v.failures[0].rule, "rego.deny");
        // `allow` defined only for other evidence: undefined here, refused.
        let v = policy("allow if input.source == \"verified_quote\"\n").evaluate_claims(&claims);
        assert_eq!(v.failures[0].rule, "rego.allow");
    }

    #[test]
    fn the_contract_is_checked_at_load() {
        assert!(RegoPolicy::new("p.rego", "package other\nallow := true\n").is_err());
        assert!(RegoPolicy::new("p.rego", "package unlock\nx := 1\n").is_err());
        assert!(RegoPolicy::new("p.rego", "package unlock\nallow if {\n").is_err());
        assert!(RegoPolicy::new("p.rego", &"#".repeat(MAX_REGO_BYTES + 1)).is_err());
        assert!(RegoPolicy::new("p.rego", "package unlock\nallow := true\n").is_ok());
    }

    /// Recursion is refused at load; a loop over the input is stopped by the time limit
    /// (refused as `rego.error`), and so is one that needs no input (at load).
    #[test]
    fn pathological_modules_are_refused_or_bounded() {
        assert!(RegoPolicy::new("p.rego", "package unlock\na if b\nb if a\nallow if a\n").is_err());
        let e = RegoPolicy::new(
            "p.rego",
            "package unlock\nallow if count(numbers.range(0, 1000000000000)) > 0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("numbers.range"), "{e}");
        let nested = |over: &str| {
            let loops: Vec<String> = "abcdefgh"
                .chars()
                .map(|v| format!("some {v} in {over}"))
                .collect();
            format!(
                "package unlock\nxs := [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\n\
                 allow if count([1 | {}]) > 0\n",
                loops.join("; ")
            )
        };
        let t = std::time::Instant::now();
        assert!(RegoPolicy::new("p.rego", &nested("xs")).is_err());
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let p = RegoPolicy::new("p.rego", &nested("input.xs")).unwrap();
        let mut engine = p.engine.clone();
        engine
            .set_input_json(&json!({"xs": (0..16).collect::<Vec<u32>>()}).to_string())
            .unwrap();
        let t = std::time::Instant::now();
        assert!(engine.eval_rule(format!("data.{PACKAGE}.allow")).is_err());
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    /// A policy document's module is evaluated beside the native rules; both must accept.
    #[test]
    fn a_documents_module_joins_the_native_verdict() {
        let cap = capture();
        let claims = Claims::unverified_from_capture_azure(&cap);
        let doc = |module: &str| {
            crate::policy::Policy::from_json(
                &json!({"version": 1, "release_pcr": null, "rego": {"module": module}}).to_string(),
            )
        };
        let ok = doc("package unlock\nallow := true\n").unwrap();
        assert!(ok.evaluate_claims(&claims).accepted());
        let v = doc("package unlock\nallow := true\ndeny contains \"no\" if true\n")
            .unwrap()
            .evaluate_claims(&claims);
        assert_eq!(v.to_string(), "rego.deny: no");
        let e = doc("package unlock\nallow if {\n").unwrap_err();
        assert!(
            e.to_string().starts_with("policy field rego.module:"),
            "{e}"
        );
        // Compiled once per module text.
        let a = compiled("package unlock\nallow := true\n").unwrap();
        let b = compiled("package unlock\nallow := true\n").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
