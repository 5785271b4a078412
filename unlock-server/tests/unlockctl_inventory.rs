//! `unlockctl enroll-inventory` against a real server, machines on swtpm: a fleet's CSV
//! inventory enrolls every good row, reports each bad one with its reason, and a re-run
//! after the fix enrolls only what is missing; an enrolled machine then unlocks with the
//! payload its row named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{Machine, Server};

const TOFU: &[&str] = &["--allow-ek-without-cert"];

#[test]
fn an_inventory_enrolls_good_rows_reports_bad_ones_and_reruns_idempotently() {
    let server = Server::start(TOFU);
    let machines = [Machine::new(), Machine::new()];
    let dir = tempfile::tempdir().unwrap();
    let mut rows = vec!["name,ek_pub,payload,max_attestations".to_owned()];
    let mut ids = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let (ek, agent_id) = m.export_ek(&server);
        std::fs::copy(&ek, dir.path().join(format!("m{i}.ek"))).unwrap();
        std::fs::write(
            dir.path().join(format!("m{i}.key")),
            format!("key of machine {i}"),
        )
        .unwrap();
        rows.push(format!("m{i},m{i}.ek,m{i}.key,2"));
        ids.push(agent_id);
    }
    // Bad rows: a missing EK file, an empty payload, the first machine's EK again.
    std::fs::write(dir.path().join("empty.key"), b"").unwrap();
    rows.push("ghost,missing.ek,m0.key,".into());
    rows.push("blank,m1.ek,empty.key,".into());
    rows.push("twin,m0.ek,m1.key,".into());
    let inventory = dir.path().join("fleet.csv");
    std::fs::write(&inventory, rows.join("\n")).unwrap();

    let out = server.unlockctl(&["enroll-inventory", inventory.to_str().unwrap(), "--json"]);
    assert!(!out.status.success(), "bad rows must fail the run");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary["rows"], 5, "{summary}");
    assert_eq!(summary["enrolled"], 2, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    let reasons: Vec<String> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["result"]["reason"].as_str().map(str::to_owned))
        .collect();
    for want in ["missing.ek", "payload must be", "the same EK as line 2"] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[1/5] m0: enrolled"), "{stderr}");

    // Fixed inventory (the bad rows removed, a third machine added): the two are skipped.
    let third = Machine::new();
    let (ek, third_id) = third.export_ek(&server);
    std::fs::copy(&ek, dir.path().join("m2.ek")).unwrap();
    std::fs::write(dir.path().join("m2.key"), b"key of machine 2").unwrap();
    let fixed = format!("{}\nm2,m2.ek,m2.key,1\n", rows[..3].join("\n"));
    std::fs::write(&inventory, fixed).unwrap();
    let out = server.unlockctl(&["enroll-inventory", inventory.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 rows: 1 enrolled, 2 already enrolled (skipped), 0 failed"),
        "{stdout}"
    );
    for id in ids.iter().chain([&third_id]) {
        let st = server.status(id);
        assert_eq!(st["verifier"]["state"], "armed", "{st}");
        assert_eq!(st["tenant"]["state"], "armed", "{st}");
    }
    assert_eq!(server.status(&ids[0])["verifier"]["max_attestations"], 2);

    // The enrolled machine unlocks with the payload of its row.
    let out = machines[1].agent(&server, None, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(machines[1].key_file()).unwrap(),
        b"key of machine 1"
    );
}

/// A fleet-sized inventory: 1,000 rows (software EKs, enrolled over the real admin API of
/// both roles), each outcome reported on its own line of the summary, the failures with
/// their reasons, and a re-run (from the same inventory as JSON) that enrolls nothing twice.
#[test]
fn a_thousand_machine_inventory_reports_every_outcome() {
    const ROWS: usize = 1000;
    // Bad rows, spread through the file: (row index, what is wrong, reason expected).
    const BAD: [(usize, &str); 4] = [
        (7, "not a TPMT_PUBLIC"),
        (250, "payload must be"),
        (501, "the same EK as line"),
        (998, "cannot read"),
    ];
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.key"), b"").unwrap();
    std::fs::write(dir.path().join("garbage.ek"), b"not an EK at all").unwrap();
    let mut rows = vec!["name,ek_pub,payload".to_owned()];
    let mut good_ids = Vec::new();
    for i in 0..ROWS {
        let tpm = verifier_core::sim::SimTpm::new().unwrap();
        let ek = dir.path().join(format!("m{i}.ek"));
        std::fs::write(&ek, tpm.ek_pub_bytes()).unwrap();
        std::fs::write(dir.path().join(format!("m{i}.key")), format!("key {i}")).unwrap();
        let row = match BAD.iter().find(|(at, _)| *at == i).map(|(_, why)| *why) {
            Some("not a TPMT_PUBLIC") => format!("m{i},garbage.ek,m{i}.key"),
            Some("payload must be") => format!("m{i},m{i}.ek,empty.key"),
            Some("the same EK as line") => format!("m{i},m0.ek,m{i}.key"),
            Some(_) => format!("m{i},gone-{i}.ek,m{i}.key"),
            None => {
                good_ids.push(tpm.agent_id().as_str().to_owned());
                format!("m{i},m{i}.ek,m{i}.key")
            }
        };
        rows.push(row);
    }
    let inventory = dir.path().join("fleet.csv");
    std::fs::write(&inventory, rows.join("\n")).unwrap();

    let out = server.unlockctl(&["enroll-inventory", inventory.to_str().unwrap(), "--json"]);
    assert!(!out.status.success(), "bad rows must fail the run");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary["rows"], ROWS, "{}", summary["failed"]);
    assert_eq!(summary["enrolled"], ROWS - BAD.len());
    assert_eq!(summary["failed"], BAD.len());
    let results = summary["results"].as_array().unwrap();
    assert_eq!(results.len(), ROWS, "one outcome per row");
    for (at, why) in BAD {
        let r = &results[at];
        let reason = r["result"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "row {at}: {r}");
    }
    let enrolled = results
        .iter()
        .filter(|r| r["result"]["reason"].is_null())
        .count();
    assert_eq!(enrolled, ROWS - BAD.len());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("[{ROWS}/{ROWS}]")),
        "progress ends at the last row"
    );
    // Spot checks through the admin API of both roles.
    for id in [
        &good_ids[0],
        &good_ids[good_ids.len() / 2],
        good_ids.last().unwrap(),
    ] {
        let st = server.status(id);
        assert_eq!(st["verifier"]["state"], "armed", "{st}");
        assert_eq!(st["tenant"]["state"], "armed", "{st}");
    }

    // The re-run (bad rows dropped), as the JSON an inventory system exports, enrolls
    // nothing twice.
    let fixed: Vec<serde_json::Value> = (0..ROWS)
        .filter(|i| !BAD.iter().any(|(at, _)| at == i))
        .map(|i| serde_json::json!({"name": format!("m{i}"), "ek_pub": format!("m{i}.ek"), "payload": format!("m{i}.key")}))
        .collect();
    let json_inventory = dir.path().join("fleet.json");
    std::fs::write(&json_inventory, serde_json::to_vec(&fixed).unwrap()).unwrap();
    let out = server.unlockctl(&["enroll-inventory", json_inventory.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{n} rows: 0 enrolled, {n} already enrolled (skipped), 0 failed",
            n = ROWS - BAD.len()
        )),
        "{stdout}"
    );
}
