//! The policy document: first-engine documents stay valid, broken documents are refused with
//! the line and field, and every section round-trips.

use verifier_core::policy::{diff, Effect, Policy, PolicyError};

fn err(json: &str) -> String {
    match Policy::from_json(json) {
        Ok(_) => String::from("(accepted)"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn first_engine_documents_stay_valid() {
    let p = Policy::from_json(
        r#"{"version":1,"pcrs":[{"bank":"sha256","index":7,"allowed":["00000000000000000000000000000000000000000000000000000000000000aa"]}],"release_pcr":{"bank":"sha256","index":15},"require_event_log":true,"allow_event_digest_mismatch":false,"require_clock_safe":false}"#,
    )
    .unwrap();
    // Serialized without any of the new sections: an older build still reads it.
    let json = serde_json::to_string(p.document()).unwrap();
    assert!(
        !json.contains("measured_boot") && !json.contains("initial"),
        "{json}"
    );
}

#[test]
fn full_document_round_trips() {
    let text = include_str!("../../docs/policy-example.json");
    let p = Policy::from_json(text).unwrap();
    let again = Policy::from_json(&serde_json::to_string(p.document()).unwrap()).unwrap();
    assert_eq!(p, again);
    let sel: Vec<(String, Vec<u8>)> = p
        .selection()
        .banks()
        .iter()
        .map(|b| (b.hash().name().to_owned(), b.indexes().collect()))
        .collect();
    assert_eq!(sel, [("sha256".to_owned(), vec![0, 4, 7, 8, 9, 10, 15])]);
}

#[test]
fn broken_documents_name_line_and_field() {
    let e = err("{\"version\":1,\n\"measured_boot\":{\n\"require_secureboot\":true}}");
    assert!(
        e.contains("line 3") && e.contains("measured_boot") && e.contains("require_secureboot"),
        "{e}"
    );
    let e = err(r#"{"version":1,"measured_boot":{"kernels":["abc"]}}"#);
    assert!(
        e.contains("measured_boot.kernels[0]") && e.contains("32-byte hex sha256"),
        "{e}"
    );
    let e = err(r#"{"version":1,"measured_boot":{"bank":"sha384","kernels":["00"]}}"#);
    assert!(e.contains("48-byte hex sha384"), "{e}");
    let e = err(r#"{"version":1,"measured_boot":{"db":["x509:zz"]}}"#);
    assert!(e.contains("measured_boot.db[0]"), "{e}");
    let e = err(r#"{"version":1,"measured_boot":{"kernel_cmdline":[{"regex":"("}]}}"#);
    assert!(
        e.contains("measured_boot.kernel_cmdline[0].regex") && e.contains("regular expression"),
        "{e}"
    );
    let e = err(r#"{"version":1,"measured_boot":{"kernel_cmdline":[{"glob":"*"}]}}"#);
    assert!(e.contains("kernel_cmdline[0]") && e.contains("glob"), "{e}");
    let e = err(r#"{"version":1,"measured_boot":{"kernel_cmdline":[]}}"#);
    assert!(
        e.contains("measured_boot.kernel_cmdline") && e.contains("empty"),
        "{e}"
    );
    let e = err(r#"{"version":1,"measured_boot":{"pcrs":[4],"require_secure_boot":true}}"#);
    assert!(e.contains("measured_boot.pcrs") && e.contains("[7]"), "{e}");
    let e = err(r#"{"version":1,"measured_boot":{"pcrs":[30]}}"#);
    assert!(e.contains("measured_boot.pcrs[0]"), "{e}");
    let e = err(r#"{"version":1,"ima":{"allowed":{"/init":["sha1:00"]}}}"#);
    assert!(
        e.contains("ima.allowed[\"/init\"][0]") && e.contains("20 bytes"),
        "{e}"
    );
    let e = err(r#"{"version":1,"ima":{"excludes":["[a"]}}"#);
    assert!(e.contains("ima.excludes[0]"), "{e}");
    let e = err(r#"{"version":1,"clock":{"max_reboots":3}}"#);
    assert!(
        e.contains("clock.max_reboots") && e.contains("reset_count_at_enrollment"),
        "{e}"
    );
    let e = err(r#"{"version":1,"pcrs":[{"bank":"sha256","index":7}]}"#);
    assert!(
        e.contains("pcrs[0].allowed") && e.contains("initial"),
        "{e}"
    );
    assert!(Policy::from_json(
        r#"{"version":1,"pcrs":[{"bank":"sha256","index":7,"initial":true}]}"#
    )
    .is_ok());
    assert!(matches!(
        Policy::from_json(r#"{"version":3}"#),
        Err(PolicyError::Version { found: 3 })
    ));
}

#[test]
fn diff_of_the_example_against_a_looser_copy() {
    let text = include_str!("../../docs/policy-example.json");
    let a = Policy::from_json(text).unwrap().document().clone();
    let mut b = a.clone();
    let mb = b.measured_boot.as_mut().unwrap();
    mb.kernels.as_mut().unwrap().push("ff".repeat(32));
    mb.require_secure_boot = false;
    let d = diff(&a, &b);
    assert_eq!(d.changes.len(), 2, "{d}");
    assert!(d.changes.iter().all(|c| c.effect == Effect::Widens), "{d}");
    assert!(d.to_string().contains("measured_boot.kernels"), "{d}");
}
