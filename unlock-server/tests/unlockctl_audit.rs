//! `unlockctl audit` against a real server and a real agent on swtpm: every decision of a
//! boot is in each role's chain, the chain verifies from the operator's side, one machine's
//! story reads in order, and a record altered in the database afterwards is reported where
//! it was altered (exit 1), as is a chain rewritten past a head recorded earlier.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{text, Machine, Server};

const TOFU: &[&str] = &["--allow-ek-without-cert", "--purge-interval-secs", "0"];

#[test]
fn a_boot_is_audited_and_tampering_is_found() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    m.reboot();
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    let out = server.unlockctl(&["revoke", &agent_id]);
    assert!(out.status.success(), "{}", text(&out));

    // Intact, with a head per role.
    let out = server.unlockctl(&["audit", "verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for role in report.as_array().unwrap() {
        assert_eq!(role["intact"], true, "{report}");
        // enroll, ak_activated, release, release, state (revoke).
        assert_eq!(role["records"], 5, "{report}");
    }
    let verifier_head = format!(
        "{}:{}",
        report[0]["head_seq"],
        report[0]["head_hash"].as_str().unwrap()
    );

    // One machine's story, both roles, in time order.
    let out = server.unlockctl(&["audit", "show", &agent_id, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["record"]["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "release").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("enroll"),
        "{kinds:?}"
    );

    // Export: JSON lines, one per record.
    let out = server.unlockctl(&["audit", "export", "--role", "tenant"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);

    // Someone with the database edits the verifier's record of the second release.
    let db = rusqlite::Connection::open(server.state().join("verifier.db")).unwrap();
    let n = db
        .execute(
            "UPDATE audit SET detail = replace(detail, '\"reset_count\":2', '\"reset_count\":9') WHERE kind = 'release' AND seq = 4",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    let out = server.unlockctl(&["audit", "verify"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("verifier: BROKEN") && t.contains("record 4"),
        "{t}"
    );
    assert!(t.contains("tenant: intact"), "{t}");

    // Rewriting the whole chain after the edit (fresh hashes from record 4 on) passes the
    // chain check alone, but not against a head recorded before.
    let rows: Vec<(i64, i64, String, Option<String>, String, String)> = db
        .prepare("SELECT seq, at, kind, agent_id, actor, detail FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = verifier_core::audit::GENESIS;
    for (seq, at, kind, agent, actor, detail) in rows {
        let h = verifier_core::audit::record_hash(
            &prev,
            seq,
            at,
            &kind,
            agent.as_deref(),
            &actor,
            &detail,
        );
        db.execute(
            "UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            rusqlite::params![seq, prev.to_vec(), h.to_vec()],
        )
        .unwrap();
        prev = h;
    }
    let out = server.unlockctl(&["audit", "verify", "--role", "verifier"]);
    assert!(
        out.status.success(),
        "a consistent rewrite passes the chain alone: {}",
        text(&out)
    );
    let out = server.unlockctl(&[
        "audit",
        "verify",
        "--role",
        "verifier",
        "--expect",
        &verifier_head,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not pass through the expected head"),
        "{}",
        text(&out)
    );
}
