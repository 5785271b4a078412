//! Old entries expire, end to end on swtpm: a named policy allows two boot configurations
//! (PCR 9 after boot A or boot B); the machine boots B; after N successful boots
//! `unlockctl policy retire` removes A's value (every diff line narrows) and keeps B's, and
//! after it is applied the machine unlocks with B and is refused with A, naming the rule.
//! With fewer than N boots nothing is retired. Refused attestations never count: forged
//! evidence claiming A's value is refused and neither makes A look used nor counts as a
//! boot; a refused second attempt in the same boot is not a boot either.
//!
//! Each boot is a TPM Reset of swtpm (new resetCount, PCRs cleared) and an extend of PCR 9
//! with the configuration's digest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{code, ok, text, Driver, Machine, Server};
use verifier_core::keysplit::NkPrivate;
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{BankSelection, HashAlg, PcrSelection};

const TOFU: &[&str] = &["--allow-ek-without-cert"];
const A: &[u8] = b"kernel A, the one being replaced";
const B: &[u8] = b"kernel B, the update";

/// A boot of configuration `config`: reset, then PCR 9 extended with its digest.
fn boot(m: &mut Machine, config: &[u8]) -> String {
    m.reboot();
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    tpm.extend(9, &[HashAlg::Sha256.hash(config)]).unwrap();
    let sel = PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[9]).unwrap()]).unwrap();
    tpm.read_pcrs(&sel)
        .unwrap()
        .get(HashAlg::Sha256, 9)
        .unwrap()
        .to_hex()
}

fn unlocks(m: &Machine, server: &Server) {
    let out = m.agent(server, None, &[]);
    assert!(text(&out).contains("unlocked"), "{}", text(&out));
}

/// Evidence of this boot (config B) quoted by the machine's AK, with PCR 9 rewritten in
/// transit to A's value: refused, and it must record nothing.
fn forged_claim_of(m: &Machine, server: &Server, pcr9: &[u8]) {
    let mut d = Driver::registered(m, server);
    let ch = d.challenge("verifier");
    let nk = NkPrivate::generate().unwrap();
    let mut req = d.attest_requests(&[&ch], &nk, None).remove(0);
    for bank in &mut req.pcrs {
        for v in bank.values.iter_mut().filter(|v| v.index == 9) {
            v.digest = Base64Bytes::new(pcr9.to_vec());
        }
    }
    let (status, body) = d.attest("verifier", &req);
    assert!(
        status >= 400,
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_ne!(code(&body), "", "{}", String::from_utf8_lossy(&body));
    d.release();
}

fn retire(server: &Server, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["policy", "retire", "fleet", "--after-boots", "3"];
    args.extend_from_slice(extra);
    server.unlockctl(&args)
}

/// `POST /verifier/admin/v1/policies/fleet/retire` with the admin token.
fn retire_api(server: &Server, body: &serde_json::Value) -> (u16, String) {
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let resp = server
        .http()
        .post(format!(
            "{}/verifier/admin/v1/policies/fleet/retire",
            server.url
        ))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .content_type("application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_string().unwrap())
}

fn latest_version(server: &Server) -> String {
    let t = ok(&server.unlockctl(&["policy", "show", "fleet", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    v["policy"]["version"].to_string()
}

#[test]
fn unused_entries_retire_after_n_boots_and_refused_attempts_never_count() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let dir = tempfile::tempdir().unwrap();
    let a = boot(&mut m, A);
    let b = boot(&mut m, B);
    assert_ne!(a, b);

    // A named policy allowing both configurations (PCRs 0-7 as they are, PCR 9: A or B).
    let policy = m.policy_now(true).replacen(
        r#""pcrs":["#,
        &format!(r#""pcrs":[{{"bank":"sha256","index":9,"allowed":["{a}","{b}"]}},"#),
        1,
    );
    let pf = dir.path().join("policy.json");
    std::fs::write(&pf, &policy).unwrap();
    ok(&server.unlockctl(&["policy", "create", "fleet", "--file", pf.to_str().unwrap()]));
    m.enroll_named(&server, "fleet");

    // Boot 1 (B).
    boot(&mut m, B);
    unlocks(&m, &server);
    // Boot 2 (B): first a forged claim of A's value, refused; then the real unlock.
    boot(&mut m, B);
    forged_claim_of(&m, &server, &hex::decode(&a).unwrap());
    unlocks(&m, &server);
    // A second attempt in the same boot is refused (release PCR extended): not a boot.
    let again = m.agent(&server, None, &[]);
    assert!(text(&again).contains("release_pcr"), "{}", text(&again));

    // A boot with only a forged claim (no release) is not a boot.
    boot(&mut m, B);
    forged_claim_of(&m, &server, &hex::decode(&a).unwrap());

    // Two boots of the three required: nothing is retired, and the reason is named.
    let out = retire(&server, &["--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("nothing can be retired"), "{t}");
    assert!(t.contains("has 2 of the 3 successful boot(s)"), "{t}");
    assert_eq!(latest_version(&server), "1");

    // Boot 3 (B): now A is unused in the last three boots, B is used.
    boot(&mut m, B);
    unlocks(&m, &server);
    let t = ok(&retire(&server, &[]));
    let removed = format!("narrows  pcrs[sha256:9].allowed: removed {a}");
    assert!(t.contains(&removed), "{t}");
    assert!(!t.contains(&format!("removed {b}")), "{t}");
    assert!(
        t.contains(&format!("kept (verifier)  pcrs[sha256:9].allowed {b}"))
            && t.contains("used it in its last 3 successful boot(s)"),
        "{t}"
    );
    assert!(!t.contains("WIDENS") && !t.contains("CHANGES"), "{t}");
    assert!(t.contains("dry run: nothing stored"), "{t}");
    assert_eq!(latest_version(&server), "1");
    // The role re-checks named items against its own records: B, which the machine uses,
    // is refused, and so is an item the policy does not have.
    for item in [b.clone(), "ee".repeat(32)] {
        let (status, body) = retire_api(
            &server,
            &serde_json::json!({"after_boots": 3, "items": [
                {"list": "pcrs[sha256:9].allowed", "item": item}
            ]}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("cannot be retired"), "{body}");
    }
    assert_eq!(latest_version(&server), "1");

    let t = ok(&retire(&server, &["--yes", "--apply"]));
    assert!(t.contains("stored fleet v2 (retired 1 item(s))"), "{t}");
    assert!(
        t.contains("moved 1 enrollment(s) on the verifier role and 1 on the tenant role"),
        "{t}"
    );
    assert_eq!(latest_version(&server), "2");
    // Each role's audit trail has the retirement (what was removed, from which version).
    for role in ["verifier", "tenant"] {
        let t = ok(&server.unlockctl(&["audit", "export", "--role", role]));
        let rec = t
            .lines()
            .find(|l| l.contains("\"policy_retire\""))
            .unwrap_or_else(|| panic!("{role}: no policy_retire record: {t}"));
        assert!(rec.contains(&a) && rec.contains("from_version"), "{rec}");
    }
    ok(&server.unlockctl(&["audit", "verify"]));
    let shown = ok(&server.unlockctl(&["policy", "show", "fleet", "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["document"]["pcrs"][0]["allowed"],
        serde_json::json!([b]),
        "{shown}"
    );

    // B still unlocks; A is refused, naming the rule.
    boot(&mut m, B);
    unlocks(&m, &server);
    boot(&mut m, A);
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("policy_denied") && text(&out).contains("pcr sha256:9"),
        "{}",
        text(&out)
    );

    // Nothing more to retire: B is the only value left and it is used.
    let out = retire(&server, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("nothing can be retired"),
        "{}",
        text(&out)
    );
}
