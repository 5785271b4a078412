//! The boot path with the AK enrolled once: the first boot registers and activates, and
//! keeps the EK and AK in the TPM; later boots read them back and go straight to the
//! challenges. Real server over HTTPS, real agent on swtpm. Each refusal test forges exactly
//! one thing: an AK from another hierarchy of the same TPM, a key planted at the AK handle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use initrd_agent::tpm::{AkHierarchy, Tpm};
use support::{code, Driver, Machine, Server};
use verifier_core::keysplit::NkPrivate;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the agent (verbose) and checks it unlocked with the enrolled payload.
fn unlocks(m: &Machine, server: &Server, payload: &[u8]) -> String {
    let out = m.agent(server, None, &["--verbose"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    err
}

#[test]
fn later_boots_read_the_keys_back_and_skip_registration() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let first = unlocks(&m, &server, &payload);
    assert!(first.contains("step register"), "{first}");
    assert_eq!(server.registrations(), 2);
    for _ in 0..2 {
        m.reboot();
        let later = unlocks(&m, &server, &payload);
        for step in ["step ek", "step register", "step activate"] {
            assert!(!later.contains(step), "{step} in a later boot:\n{later}");
        }
        // ReadPublic of the AK (once: public area and name together) and of the EK (once: its
        // name is the agent id), Quote, PCR_Read (9 PCRs: two reads of at most 8),
        // GetCapability (active banks), PCR_Extend.
        let n: u32 = later
            .lines()
            .find_map(|l| l.strip_prefix("initrd-agent: note: tpm commands "))
            .unwrap_or_else(|| panic!("no command count:\n{later}"))
            .parse()
            .unwrap();
        assert!(n <= 7, "{n} TPM commands in a later boot:\n{later}");
        eprintln!("TPM commands in a later boot: {n}");
        assert_eq!(server.registrations(), 2, "{later}");
    }
}

#[test]
fn an_evicted_ak_handle_is_derived_again_without_registration() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    unlocks(&m, &server, &payload);
    m.reboot();
    assert!(Tpm::open(&m.tcti()).unwrap().evict_persistent_ak().unwrap());
    let err = unlocks(&m, &server, &payload);
    // The same template from the same endorsement seed: the same, already pinned, AK.
    assert!(!err.contains("step register"), "{err}");
    assert_eq!(server.registrations(), 2);
}

#[test]
fn a_key_planted_at_the_ak_handle_is_replaced_by_the_derived_ak() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    unlocks(&m, &server, &payload);
    let derived_name = {
        let mut tpm = Tpm::open(&m.tcti()).unwrap();
        let ak = tpm.create_primary_ak(AkHierarchy::Endorsement).unwrap();
        let name = ak.name().to_vec();
        tpm.flush_ak(ak).unwrap();
        // Someone with root in an earlier boot puts another key with the AK's attributes
        // at the handle (an owner-hierarchy primary of the same TPM).
        let planted = tpm.create_primary_ak(AkHierarchy::Owner).unwrap();
        tpm.persist_ak(&planted).unwrap();
        tpm.flush_ak(planted).unwrap();
        name
    };
    m.reboot();
    let err = unlocks(&m, &server, &payload);
    assert!(err.contains("registering"), "{err}");
    let (back, persistent) = Tpm::open(&m.tcti()).unwrap().primary_ak().unwrap();
    assert!(persistent);
    assert_eq!(back.name(), derived_name.as_slice());
}

#[test]
fn an_owner_hierarchy_ak_activated_with_the_real_ek_is_refused() {
    // One machine per case: the first AK a machine activates is its pinned AK.
    for (hierarchy, expect) in [
        (AkHierarchy::Owner, Some("ak_not_acceptable")),
        (AkHierarchy::Endorsement, None),
    ] {
        let m = Machine::new();
        let server = Server::start(TOFU);
        let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &[]);
        let mut d = Driver::unregistered(&m, &server);
        // swtpm has three transient slots and no resource manager: unload as we go.
        let ak = d.tpm.create_primary_ak(hierarchy).unwrap();
        let child = std::mem::replace(&mut d.ak, ak);
        d.tpm.flush_ak(child).unwrap();
        // MakeCredential binds names, not hierarchies: activation with the EK succeeds.
        for role in ["verifier", "tenant"] {
            let reg = d.register(role);
            d.activate(role, &reg);
        }
        let ch = d.challenge("verifier");
        let nk = NkPrivate::generate().unwrap();
        let req = d.attest_requests(&[&ch], &nk, None).remove(0);
        let (status, body) = d.attest("verifier", &req);
        let released = server.releases(&agent_id, "verifier").len();
        match expect {
            Some(c) => {
                assert_eq!((status, code(&body).as_str()), (403, c), "{hierarchy:?}");
                assert_eq!(released, 0);
            }
            None => {
                assert_eq!(
                    status,
                    200,
                    "{hierarchy:?}: {}",
                    String::from_utf8_lossy(&body)
                );
                assert_eq!(released, 1);
            }
        }
    }
}

/// Write transactions of `role`'s database so far (SQLite group commit: every write the
/// role makes goes through it).
fn db_writes(server: &Server, role: &str) -> u64 {
    support::raw::metric(
        &server.metrics(),
        &format!("unlock_db_requests_total{{role=\"{role}\"}}"),
    )
}

const NO_PURGE: &[&str] = &["--allow-ek-without-cert", "--purge-interval-secs", "0"];

#[test]
fn a_later_boot_costs_one_database_write_per_role_and_challenges_none() {
    let mut m = Machine::new();
    let server = Server::start(NO_PURGE);
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    unlocks(&m, &server, &payload);
    m.reboot();
    let before = [db_writes(&server, "verifier"), db_writes(&server, "tenant")];
    // Challenges alone: nothing written, however many a stranger asks for.
    let d = Driver::registered(&m, &server);
    for _ in 0..20 {
        d.challenge("verifier");
        d.challenge("tenant");
    }
    assert_eq!(
        [db_writes(&server, "verifier"), db_writes(&server, "tenant")],
        before,
        "challenges wrote to the database"
    );
    d.release();
    let err = unlocks(&m, &server, &payload);
    let after = [db_writes(&server, "verifier"), db_writes(&server, "tenant")];
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [1, 1],
        "durable writes of one boot, per role:\n{err}"
    );
}

#[test]
fn forged_or_expired_challenges_are_refused_without_a_database_write() {
    let m = Machine::new();
    let server = Server::start(&[
        "--allow-ek-without-cert",
        "--purge-interval-secs",
        "0",
        "--challenge-ttl-secs",
        "1",
    ]);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &[]);
    let mut d = Driver::new(&m, &server);
    let writes = db_writes(&server, "verifier");
    let nk = NkPrivate::generate().unwrap();
    // Forged: every character position of a real ticket altered in turn (a sample of them:
    // first, middle, last) and a made-up id.
    let ch = d.challenge("verifier");
    let id = ch.challenge_id.as_str().to_owned();
    let mut forged_ids: Vec<String> = [0, id.len() / 2, id.len() - 2]
        .iter()
        .map(|&i| {
            let mut b = id.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        })
        .collect();
    forged_ids.push("0123456789abcdef0123456789abcdef".into());
    for forged in &forged_ids {
        let mut ch = ch.clone();
        ch.challenge_id = verifier_core::proto::v1::Id::try_from(forged.clone()).unwrap();
        let req = d.attest_requests(&[&ch], &nk, None).remove(0);
        let (status, body) = d.attest("verifier", &req);
        assert_eq!(
            (status, code(&body).as_str()),
            (404, "unknown_challenge"),
            "{forged}"
        );
    }
    // Expired: a real ticket, used after its lifetime.
    let ch = d.challenge("verifier");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let (status, body) = d.attest("verifier", &req);
    assert_eq!((status, code(&body).as_str()), (403, "challenge_expired"));
    assert_eq!(db_writes(&server, "verifier"), writes, "a refusal wrote");
    assert!(server.releases(&agent_id, "verifier").is_empty());
}

#[test]
fn a_different_ak_than_the_pinned_one_is_refused_until_an_operator_unpins() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(false), &["--max-attestations", "3"]);
    unlocks(&m, &server, &payload);
    m.reboot();
    // Another AK of the same TPM (a child of the real EK, in the endorsement hierarchy,
    // activatable): refused at registration, before any MakeCredential.
    let d = Driver::unregistered(&m, &server);
    for role in ["verifier", "tenant"] {
        let (status, body) = d.try_register(role);
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "ak_not_pinned"),
            "{role}"
        );
    }
    // swtpm serves one connection at a time: the driver lets go of the TPM for the agent.
    d.release();
    // The machine's own boot is unaffected.
    unlocks(&m, &server, &payload);
    // The operator unpins: another AK may now register and is pinned in its turn, and the
    // machine's derived AK is the one refused.
    let out = server.unlockctl(&["unpin-ak", &agent_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Driver::unregistered(&m, &server);
    for role in ["verifier", "tenant"] {
        let reg = d.register(role);
        d.activate(role, &reg);
    }
    d.release();
    m.reboot();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ak_not_pinned"), "{}", stderr(&out));
}

#[test]
fn a_previous_boots_quote_is_refused_in_the_next_boot() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(false), &["--max-attestations", "3"]);
    unlocks(&m, &server, &payload);
    // Boot 2: someone records the agent's attestation (quote, proof, NK) ...
    m.reboot();
    let mut d = Driver::registered(&m, &server);
    let nk = NkPrivate::generate().unwrap();
    let ch = d.challenge("verifier");
    let recorded = d.attest_requests(&[&ch], &nk, None).remove(0);
    assert_eq!(d.attest("verifier", &recorded).0, 200);
    d.release();
    // ... and presents it in boot 3, for a fresh challenge of that boot.
    m.reboot();
    let d = Driver::registered(&m, &server);
    let fresh = d.challenge("verifier");
    let mut replay = recorded.clone();
    replay.challenge_id = fresh.challenge_id.clone();
    let (status, body) = d.attest("verifier", &replay);
    assert_eq!((status, code(&body).as_str()), (403, "binding_mismatch"));
    d.release();
    // Sessions: boot 1 (the agent) and boot 2 (the recorded attestation); none for boot 3.
    let sessions = server.releases(&agent_id, "verifier");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
}
