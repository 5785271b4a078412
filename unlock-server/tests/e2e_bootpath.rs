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
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &["--max-attestations", "3"]);
    for (hierarchy, expect) in [
        (AkHierarchy::Owner, Some("ak_not_acceptable")),
        (AkHierarchy::Endorsement, None),
    ] {
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
        match expect {
            Some(c) => assert_eq!((status, code(&body).as_str()), (403, c), "{hierarchy:?}"),
            None => assert_eq!(
                status,
                200,
                "{hierarchy:?}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
        let Driver {
            mut tpm, ek, ak, ..
        } = d;
        tpm.flush_ak(ak).unwrap();
        tpm.flush_ek(ek).unwrap();
    }
    // Only the endorsement-hierarchy AK released.
    let s = server.releases(&agent_id, "verifier");
    assert_eq!(s.iter().map(|x| x.1).sum::<u64>(), 1, "{s:?}");
}
