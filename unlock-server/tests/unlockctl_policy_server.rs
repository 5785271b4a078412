//! `unlockctl policy create | update | show | list | diff | apply` and `enroll --policy-name`
//! against the real server binary over HTTPS (no TPM needed: the EK comes from a simulated
//! TPM). An update never moves an enrollment; `apply` shows the diff, and moves it only
//! with `--yes`.

// Test code: a failed unwrap or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{Machine, Server};
use verifier_core::sim::SimTpm;

fn ok(out: &std::process::Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{t}");
    t
}

#[test]
fn named_policy_lifecycle() {
    let server = Server::start(&["--allow-ek-without-cert"]);
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.json");
    let v2 = dir.path().join("v2.json");
    let pcr7 = "7b".repeat(32);
    std::fs::write(
        &v1,
        format!(r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":7,"allowed":["{pcr7}"]}}]}}"#),
    )
    .unwrap();
    std::fs::write(
        &v2,
        format!(
            r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":7,"allowed":["{pcr7}","{}"]}}]}}"#,
            "7c".repeat(32)
        ),
    )
    .unwrap();
    let p = |f: &std::path::Path| f.to_str().unwrap().to_owned();

    let t = ok(&server.unlockctl(&["policy", "create", "fleet", "--file", &p(&v1)]));
    assert!(
        t.contains("verifier: fleet v1") && t.contains("tenant: fleet v1"),
        "{t}"
    );

    let tpm = SimTpm::new().unwrap();
    let ek = dir.path().join("ek.pub");
    std::fs::write(&ek, tpm.ek_pub_bytes()).unwrap();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"key").unwrap();
    let agent = tpm.agent_id().to_string();
    ok(&server.unlockctl(&[
        "enroll",
        "--ek-pub",
        &p(&ek),
        "--payload",
        &p(&payload),
        "--policy-name",
        "fleet",
    ]));
    let status = server.status(&agent);
    assert_eq!(status["verifier"]["policy_ref"]["version"], 1, "{status}");
    assert_eq!(status["tenant"]["policy_ref"]["name"], "fleet", "{status}");

    // A new version: the diff says it widens, the enrollment stays on v1.
    let t = ok(&server.unlockctl(&["policy", "update", "fleet", "--file", &p(&v2)]));
    assert!(t.contains("fleet v2") && t.contains("WIDENS"), "{t}");
    assert!(t.contains(&format!("{agent} v1")), "{t}");
    assert_eq!(
        server.status(&agent)["verifier"]["policy_ref"]["version"],
        1
    );

    let t = ok(&server.unlockctl(&["policy", "list"]));
    assert!(
        t.contains("fleet")
            && t.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["fleet", "2", "1", "1"]),
        "{t}"
    );
    let t = ok(&server.unlockctl(&["policy", "diff", "fleet", "--from", "1"]));
    assert!(
        t.contains("fleet v1 -> fleet v2") && t.contains("pcrs[sha256:7].allowed"),
        "{t}"
    );
    let t = ok(&server.unlockctl(&["policy", "show", "fleet", "--version", "1"]));
    assert!(
        t.contains("fleet v1") && !t.contains(&"7c".repeat(32)),
        "{t}"
    );

    // apply without --yes only shows.
    let t = ok(&server.unlockctl(&["policy", "apply", "fleet", "--version", "2", "--all"]));
    assert!(
        t.contains("fleet v1 -> fleet v2") && t.contains("dry run"),
        "{t}"
    );
    assert_eq!(
        server.status(&agent)["verifier"]["policy_ref"]["version"],
        1
    );
    let t = ok(&server.unlockctl(&[
        "policy",
        "apply",
        "fleet",
        "--version",
        "2",
        "--agent",
        &agent,
        "--yes",
    ]));
    assert!(
        t.contains("moved 1 enrollment(s) on the verifier role and 1 on the tenant role"),
        "{t}"
    );
    let status = server.status(&agent);
    assert_eq!(status["verifier"]["policy_ref"]["version"], 2, "{status}");
    assert_eq!(status["tenant"]["policy_ref"]["version"], 2, "{status}");

    // Unknown policies are refused with their name.
    let out = server.unlockctl(&["policy", "show", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy nope"));
}

#[test]
fn policy_learned_from_the_agents_evidence_unlocks_that_machine() {
    let m = Machine::new();
    let server = Server::start(&["--allow-ek-without-cert"]);
    let d = m.dir.path();
    let ev = d.join("evidence.json");
    ok(&m.agent(&server, None, &["evidence", "--out", ev.to_str().unwrap()]));
    let pol = d.join("learned.json");
    let t = ok(&server.unlockctl(&[
        "policy",
        "learn",
        "--evidence",
        ev.to_str().unwrap(),
        "--mode",
        "exact",
        "--pcrs",
        "0,1,2,3,4,5,6,7",
        "--out",
        pol.to_str().unwrap(),
    ]));
    assert!(!t.contains("error"), "{t}");
    let t = ok(&server.unlockctl(&[
        "policy",
        "check",
        "--policy",
        pol.to_str().unwrap(),
        "--evidence",
        ev.to_str().unwrap(),
    ]));
    assert!(
        t.contains("pass  pcr sha256:7") && t.contains("verdict: accepted"),
        "{t}"
    );
    ok(&server.unlockctl(&[
        "policy",
        "create",
        "machines",
        "--file",
        pol.to_str().unwrap(),
    ]));
    let (ek, agent_id) = m.export_ek(&server);
    let payload = d.join("payload");
    std::fs::write(&payload, b"the disk key").unwrap();
    ok(&server.unlockctl(&[
        "enroll",
        "--ek-pub",
        ek.to_str().unwrap(),
        "--payload",
        payload.to_str().unwrap(),
        "--policy-name",
        "machines",
    ]));
    assert_eq!(
        server.status(&agent_id)["verifier"]["policy_ref"]["name"],
        "machines"
    );
    let out = m.agent(&server, None, &["--verbose"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(m.key_file()).unwrap(), b"the disk key");
}
