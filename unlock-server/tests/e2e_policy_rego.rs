//! End-to-end: Rego in an enrollment's policy, evaluated by the roles at unlock over the
//! same claims as `unlockctl policy check --rego`, through the real server, its database and
//! a swtpm. Both the native rules and the module must accept; a refusal names which.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Driver, Machine, Server};
use verifier_core::keysplit::NkPrivate;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `native` (a policy document) with `module` as its Rego section.
fn with_rego(native: &str, module: &str) -> String {
    let mut v: Value = serde_json::from_str(native).unwrap();
    v["rego"] = json!({ "module": module });
    v.to_string()
}

/// `unlockctl policy create NAME` with `doc`; the command's output.
fn create(server: &Server, name: &str, doc: &str) -> std::process::Output {
    let f = server.dir.path().join(format!("{name}.json"));
    std::fs::write(&f, doc).unwrap();
    server.unlockctl(&["policy", "create", name, "--file", f.to_str().unwrap()])
}

/// A fresh machine enrolled under the named policy `name` holding `doc`; the status and
/// body of its attestation with the verifier role.
fn attest_under(server: &Server, name: &str, doc: impl Fn(&Machine) -> String) -> (u16, Value) {
    let m = Machine::new();
    let out = create(server, name, &doc(&m));
    assert!(out.status.success(), "policy create: {}", stderr(&out));
    m.enroll_named(server, name);
    let mut d = Driver::new(&m, server);
    let ch = d.challenge("verifier");
    let nk = NkPrivate::generate().unwrap();
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let (st, body) = d.attest("verifier", &req);
    d.release();
    (st, serde_json::from_slice(&body).unwrap())
}

const ALLOW_QUOTED: &str = "package unlock\n\
    default allow := false\n\
    allow if {\n  input.source == \"verified_quote\"\n  input.clock.safe\n}\n";

#[test]
fn rego_in_the_policy_decides_at_unlock_beside_the_native_rules() {
    let server = Server::start(TOFU);

    // Both accept: unlocks.
    let (st, body) = attest_under(&server, "both-accept", |m| {
        with_rego(&m.policy_now(false), ALLOW_QUOTED)
    });
    assert_eq!(st, 200, "{body}");

    // Rego's `deny` holds: refused with its message and the rule named.
    // (swtpm's PCR 0 is all zeros: no firmware measured into it.)
    let deny = format!(
        "{ALLOW_QUOTED}deny contains msg if {{\n  input.pcrs.sha256[\"0\"] == \"{}\"\n  msg := \"PCR 0 is not the golden firmware\"\n}}\n",
        "00".repeat(32)
    );
    let (st, body) = attest_under(&server, "rego-deny", |m| {
        with_rego(&m.policy_now(false), &deny)
    });
    assert_eq!((st, body["code"].as_str()), (403, Some("policy_denied")));
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("rego.deny: PCR 0 is not the golden firmware"),
        "{msg}"
    );
    assert!(!msg.contains("pcr sha256"), "native rules passed: {msg}");

    // Native passes, Rego's `allow` does not hold.
    let (st, body) = attest_under(&server, "rego-refuses", |m| {
        with_rego(
            &m.policy_now(false),
            "package unlock\nallow if input.source == \"captured_tee\"\n",
        )
    });
    assert_eq!((st, body["code"].as_str()), (403, Some("policy_denied")));
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("rego.allow"), "{msg}");

    // Native refuses (PCR 0 pinned to another value), Rego accepts.
    let (st, body) = attest_under(&server, "native-refuses", |m| {
        let mut v: Value = serde_json::from_str(&m.policy_now(false)).unwrap();
        v["pcrs"][0]["allowed"] = json!(["11".repeat(32)]);
        with_rego(&v.to_string(), "package unlock\nallow := true\n")
    });
    assert_eq!((st, body["code"].as_str()), (403, Some("policy_denied")));
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("pcr sha256:0"), "{msg}");
    assert!(!msg.contains("rego"), "Rego accepted: {msg}");
}

#[test]
fn malformed_and_unbounded_modules_are_refused_at_policy_create() {
    let server = Server::start(TOFU);
    let native = r#"{"version":1,"release_pcr":null}"#;
    for (name, module, why) in [
        ("syntax", "package unlock\nallow if {\n", "rego.module"),
        ("package", "package other\nallow := true\n", "expected `package unlock`"),
        ("no-allow", "package unlock\nx := 1\n", "allow"),
        (
            "recursion",
            "package unlock\na if b\nb if a\nallow if a\n",
            "rego.module",
        ),
        (
            "range",
            "package unlock\nallow if count(numbers.range(0, 1000000000000)) > 0\n",
            "numbers.range",
        ),
        // Any spelling of `numbers.range` is refused by the engine (it would reserve the
        // whole range at once and abort the server), here reached by the create-time probe.
        (
            "range-bracketed",
            "package unlock\nallow if count(numbers[\"range\"](0, 4000000000)) > 0\n",
            "is refused",
        ),
        (
            "range-spaced",
            "package unlock\nallow if count(numbers[ \"range_step\" ](0, 4000000000, 1)) > 0\n",
            "is refused",
        ),
        // The probe carries a representative input: an input-guarded call is reached.
        (
            "range-input-guarded",
            "package unlock\nallow if {\n  input.source == \"verified_quote\"\n  \
             count(numbers[\"range\"](0, 4000000000)) > 0\n}\n",
            "is refused",
        ),
        (
            "sprintf-width",
            "package unlock\nallow if sprintf(concat(\"\", [\"%\", \"4000000000\", \"d\"]), [1]) != \"\"\n",
            "exceeds 256",
        ),
        (
            "constant-loop",
            "package unlock\nxs := [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\n\
             allow if count([1 | some a in xs; some b in xs; some c in xs; some d in xs; some e in xs; some f in xs; some g in xs]) > 0\n",
            "rego.module",
        ),
    ] {
        let t = Instant::now();
        let out = create(&server, name, &with_rego(native, module));
        assert!(!out.status.success(), "{name}: accepted");
        let err = stderr(&out);
        assert!(err.contains(why), "{name}: {err}");
        assert!(t.elapsed() < Duration::from_secs(30), "{name}: {:?}", t.elapsed());
    }
    let out = create(
        &server,
        "too-large",
        &with_rego(
            native,
            &format!("package unlock\nallow := true\n#{}", "x".repeat(256 * 1024)),
        ),
    );
    assert!(!out.status.success());
    // The server survived every refusal above and still accepts a sane module.
    let out = create(
        &server,
        "sane",
        &with_rego(native, "package unlock\nallow := true\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The PCR values of the create-time probe's dummy input; a real machine's differ.
const PROBE: &str = verifier_core::policy::rego::PROBE_DIGEST;

#[test]
fn a_pathological_module_is_bounded_while_an_honest_machine_unlocks() {
    let server = Server::start(TOFU);
    // Loops over the machine's own PCRs, nine deep, billions of steps at unlock; the
    // create-time probe's dummy PCR 0 skips the loop. The time limit stops it.
    let spin = &format!("package unlock\n\
        allow if count([1 | input.pcrs.sha256[\"0\"] != \"{PROBE}\"; \
        some a, _ in input.pcrs.sha256; some b, _ in input.pcrs.sha256; \
        some c, _ in input.pcrs.sha256; some d, _ in input.pcrs.sha256; some e, _ in input.pcrs.sha256; \
        some f, _ in input.pcrs.sha256; some g, _ in input.pcrs.sha256; some h, _ in input.pcrs.sha256; \
        some i, _ in input.pcrs.sha256]) > 0\n");
    // The pathological unlock and an honest machine's unlock at the same time.
    let t = Instant::now();
    let ((st, body), (honest_st, honest_body)) = std::thread::scope(|s| {
        let spin =
            s.spawn(|| attest_under(&server, "spin", |m| with_rego(&m.policy_now(false), spin)));
        let honest = attest_under(&server, "sane", |m| {
            with_rego(&m.policy_now(false), ALLOW_QUOTED)
        });
        (spin.join().unwrap(), honest)
    });
    assert_eq!(honest_st, 200, "{honest_body}");
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("policy_denied")),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("rego.error"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // `numbers["range"]` behind a condition the probe's dummy input does not meet: accepted
    // at create, refused by the engine at unlock (not allocated), and the server answers.
    let guarded = &format!(
        "package unlock\nallow if {{\n  input.pcrs.sha256[\"0\"] != \"{PROBE}\"\n  \
         count(numbers[\"range\"](0, 4000000000)) > 0\n}}\n"
    );
    let (st, body) = attest_under(&server, "range", |m| {
        with_rego(&m.policy_now(false), guarded)
    });
    assert_eq!(st, 403, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("rego.error") && msg.contains("is refused"),
        "{msg}"
    );
}
