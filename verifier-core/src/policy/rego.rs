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
//!
//! Bounds: each evaluation runs under [`EVAL_TIME_LIMIT`]; builtins that allocate their
//! whole result from a number are refused by the engine (`numbers.range(_step)`) and
//! `sprintf` widths are capped ([`MAX_SPRINTF_WIDTH`]). Memory is *not* bounded: regorus
//! 0.14's memory limit needs its `allocator-memory-limits` feature (a C allocator as the
//! process's global allocator, counting the whole process, checked only between steps), which
//! is not compiled in; a chain of doubling builtins can allocate GiBs within the time limit.
//! Modules come only from operators with the admin token.

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

/// Builtins that allocate their whole result from a number before the time limit can stop
/// them (`numbers.range(0, 4e9)` reserves the range at once and aborts the process on
/// allocation failure). They are refused inside the engine, not by reading the source:
/// [`RegoPolicy::new`] registers an extension under each name, and regorus looks an
/// extension up before a builtin by the *resolved* function path, so every spelling
/// (`numbers.range`, `numbers["range"]`, an import alias, `with f as numbers.range`) reaches
/// the refusal. The source check below only gives the plain spelling a clearer message.
const REFUSED_BUILTINS: &[(&str, u8)] = &[("numbers.range", 2), ("numbers.range_step", 3)];

/// Widest `sprintf` field accepted (`%256d`). regorus pads a field with one allocation of
/// its width (up to 4 GiB from `%4000000000d`) and panics on a non-ASCII digit in a width;
/// the `sprintf` extension refuses both before handing the call to the builtin.
pub const MAX_SPRINTF_WIDTH: u64 = 256;

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
        if let Some((b, _)) = REFUSED_BUILTINS.iter().find(|(b, _)| source.contains(*b)) {
            return Err(RegoError::Invalid(format!(
                "`{b}` is refused: it allocates its whole result before the evaluation time \
                 limit can stop it"
            )));
        }
        Self::compile(path, source)
    }

    /// [`Self::new`] without the source check: the engine's own refusals, the contract and
    /// the probe.
    fn compile(path: &str, source: &str) -> Result<Self, RegoError> {
        let mut engine = timed_engine();
        for (name, nargs) in REFUSED_BUILTINS {
            engine
                .add_extension(
                    (*name).to_owned(),
                    *nargs,
                    Box::new(move |_: Vec<regorus::Value>| {
                        anyhow::bail!(
                            "`{name}` is refused: it allocates its whole result before the \
                             evaluation time limit can stop it"
                        )
                    }),
                )
                .map_err(|e| RegoError::Invalid(e.to_string()))?;
        }
        let mut plain = timed_engine();
        plain
            .add_policy(
                "sprintf.rego".into(),
                "package unlock_sprintf\nout := sprintf(input[0], input[1])\n".into(),
            )
            .map_err(|e| RegoError::Invalid(e.to_string()))?;
        engine
            .add_extension(
                "sprintf".into(),
                2,
                Box::new(move |args: Vec<regorus::Value>| bounded_sprintf(&mut plain, args)),
            )
            .map_err(|e| RegoError::Invalid(e.to_string()))?;
        let package = engine
            .add_policy(path.to_owned(), source.to_owned())
            .map_err(|e| RegoError::Invalid(e.to_string()))?;
        if package != format!("data.{PACKAGE}") {
            return Err(RegoError::Invalid(format!(
                "the package is {package:?}, expected `package {PACKAGE}`"
            )));
        }
        // The probe runs once per source with a representative input (every field present,
        // dummy values), so bodies guarded by `input` are exercised too. It is a friendlier
        // early refusal, not the guard: a body guarded by a real digest is never reached
        // here, and the extensions above refuse it at evaluation instead.
        for input in probe_inputs() {
            let mut probe = engine.clone();
            probe
                .set_input_json(&input.to_string())
                .map_err(|e| RegoError::Invalid(e.to_string()))?;
            probe
                .eval_rule(format!("data.{PACKAGE}.allow"))
                .map_err(|e| RegoError::Invalid(format!("no usable `allow` rule: {e}")))?;
        }
        let has_deny = engine
            .clone()
            .eval_rule(format!("data.{PACKAGE}.deny"))
            .is_ok();
        Ok(Self { engine, has_deny })
    }
}

/// An engine whose evaluations stop after [`EVAL_TIME_LIMIT`].
fn timed_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_TIME_LIMIT,
        check_interval: NonZeroU32::MIN,
    });
    engine
}

/// `sprintf` with its field widths checked (see [`MAX_SPRINTF_WIDTH`]), then evaluated by
/// the builtin in `plain`, an engine without extensions. The scan follows regorus's own
/// parse of the format: after `%`, a `%` is literal; a `.` or digit starts a width whose
/// digits run while they are numeric, then one verb character follows.
fn bounded_sprintf(
    plain: &mut regorus::Engine,
    args: Vec<regorus::Value>,
) -> anyhow::Result<regorus::Value> {
    let format = match args.first() {
        Some(regorus::Value::String(f)) => f.clone(),
        _ => anyhow::bail!("sprintf: the format must be a string"),
    };
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some(first) if first == '.' || first.is_numeric() => {
                let mut width: u64 = 0;
                let mut digit = |d: char| -> anyhow::Result<()> {
                    if !d.is_ascii_digit() {
                        anyhow::bail!("sprintf: width digit {d:?} is not an ASCII digit");
                    }
                    width = width
                        .saturating_mul(10)
                        .saturating_add(u64::from(d) - u64::from(b'0'));
                    Ok(())
                };
                if first != '.' {
                    digit(first)?;
                }
                while let Some(d) = chars.next_if(|d| d.is_numeric()) {
                    digit(d)?;
                }
                if width > MAX_SPRINTF_WIDTH {
                    anyhow::bail!("sprintf: width {width} exceeds {MAX_SPRINTF_WIDTH}");
                }
                chars.next();
            }
            _ => {}
        }
    }
    plain.set_input(regorus::Value::from(args));
    plain.eval_rule("data.unlock_sprintf.out".into())
}

/// Every PCR's value in the create-time probe's input: neither a reset value (all zeros or
/// all ones) nor, in practice, an extended one, so the probe never stands for real evidence.
pub const PROBE_DIGEST: &str = "abababababababababababababababababababababababababababababababab";

/// Representative inputs for the create-time probe: one per [`ClaimsSource`], every field
/// the input document can carry present, with dummy values.
fn probe_inputs() -> Vec<Json> {
    let digest = Json::String(PROBE_DIGEST.to_owned());
    let bank: Map<String, Json> = (0..24).map(|i| (i.to_string(), digest.clone())).collect();
    let tcb = json!({"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0});
    let snp = json!({
        "product": "Milan", "measurement": "00".repeat(48), "host_data": "00".repeat(32),
        "report_data": "00".repeat(64), "reported_tcb": tcb, "current_tcb": tcb,
        "committed_tcb": tcb, "launch_tcb": tcb, "policy": 0, "debug_allowed": false,
        "migration_agent_allowed": false, "smt_allowed": false, "smt_enabled": false,
        "vmpl": 0, "guest_svn": 0, "id_key_digest": "00".repeat(48), "azure": null,
    });
    ["verified_quote", "unverified_capture", "captured_tee"]
        .into_iter()
        .map(|source| {
            json!({
                "source": source,
                "pcrs": {"sha256": bank},
                "clock": {"reset_count": 0, "restart_count": 0, "safe": true},
                "snp": snp,
                "event_log": true,
                "ima": true,
            })
        })
        .collect()
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

    /// `numbers.range` is refused by the engine whatever the spelling: a bracketed string
    /// index, spaced out, through `with`, each refused at create (the probe reaches the
    /// extension, which errors instead of allocating).
    #[test]
    fn numbers_range_is_refused_in_any_spelling() {
        for call in [
            "numbers[\"range\"](0, 4000000000)",
            "numbers[ \"range\" ](0, 4000000000)",
            "numbers[\"range_step\"](0, 4000000000, 1)",
        ] {
            let e = RegoPolicy::new(
                "p.rego",
                &format!("package unlock\nallow if count({call}) > 0\n"),
            )
            .unwrap_err();
            assert!(e.to_string().contains("is refused"), "{call}: {e}");
        }
        // `with f as numbers.range` (either spelling): regorus's safety check refuses
        // `numbers` as an unbound variable there, before anything runs.
        for target in ["numbers[\"range\"]", "numbers.range"] {
            let e = RegoPolicy::compile(
                "p.rego",
                &format!(
                    "package unlock\npair(a, b) := [a, b]\n\
                     allow if count(pair(0, 4000000000)) > 0 with pair as {target}\n"
                ),
            )
            .unwrap_err();
            assert!(e.to_string().contains("unsafe"), "{target}: {e}");
        }
        // The engine refuses the call itself, past the source check.
        let e = RegoPolicy::compile(
            "p.rego",
            "package unlock\nallow if count(numbers.range(0, 4000000000)) > 0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("is refused"), "{e}");
    }

    /// The create-time probe carries an input: a call guarded by the evidence source is
    /// reached at create; one guarded by a real measurement is not, and at evaluation the
    /// engine refuses it (`rego.error`) instead of allocating.
    #[test]
    fn input_guarded_ranges_are_refused_at_create_or_at_evaluation() {
        let e = RegoPolicy::new(
            "p.rego",
            "package unlock\nallow if {\n  input.source == \"verified_quote\"\n  \
             count(numbers[\"range\"](0, 4000000000)) > 0\n}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("is refused"), "{e}");
        let cap = capture();
        let claims = Claims::unverified_from_capture_azure(&cap);
        let m = input_json(&claims)["snp"]["measurement"]
            .as_str()
            .unwrap()
            .to_owned();
        let p = policy(&format!(
            "allow if {{\n  input.snp.measurement == \"{m}\"\n  \
             count(numbers[\"range\"](0, 4000000000)) > 0\n}}\n"
        ));
        let t = std::time::Instant::now();
        let v = p.evaluate_claims(&claims);
        assert_eq!(v.failures.len(), 1, "{v}");
        assert_eq!(v.failures[0].rule, "rego.error");
        assert!(v.failures[0].reason.contains("is refused"), "{v}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    /// `sprintf` pads with one allocation of the field width, and regorus panics on a
    /// non-ASCII digit in a width: both refused, whether the format is literal or computed;
    /// ordinary formats still work through the builtin.
    #[test]
    fn sprintf_widths_are_bounded() {
        let p = policy("allow if sprintf(\"%05d-%s-%v\", [42, \"x\", [1]]) == \"00042-x-[1]\"\n");
        let cap = capture();
        let claims = Claims::unverified_from_capture_azure(&cap);
        assert!(p.evaluate_claims(&claims).accepted());
        for format in [
            "\"%4000000000d\"",
            "\"%.99999999999d\"",
            "\"%\u{663}d\"",
            "concat(\"\", [\"%\", \"257\", \"d\"])",
        ] {
            let e = RegoPolicy::new(
                "p.rego",
                &format!("package unlock\nallow if sprintf({format}, [1]) != \"\"\n"),
            )
            .unwrap_err();
            assert!(e.to_string().contains("sprintf"), "{format}: {e}");
        }
        assert!(RegoPolicy::new(
            "p.rego",
            "package unlock\nallow if count(sprintf(\"%256d\", [1])) == 256\n"
        )
        .is_ok());
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
