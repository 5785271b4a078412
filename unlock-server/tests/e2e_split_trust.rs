//! Split trust: the verifier and tenant roles as two separate `unlock-server` processes with
//! separate databases and master keys. The agent takes ONE quote over both roles' nonces
//! (a Merkle root); each role checks it independently and releases its half. Neither
//! process's files alone can produce the disk key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use support::{code, Driver, Machine, Server};
use unlock_server::store::Store;
use verifier_core::keysplit::NkPrivate;
use verifier_core::keysplit::{
    combine, decrypt_payload, wrap_context, BootKey, MasterKey, PayloadCiphertext, Share,
};

const TOFU: &str = "--allow-ek-without-cert";

fn master_key(server: &Server, role: &str) -> MasterKey {
    let hex_text = std::fs::read_to_string(server.state().join(format!("{role}.key"))).unwrap();
    MasterKey::from_slice(&hex::decode(hex_text.trim()).unwrap()).unwrap()
}

/// Everything one role's files yield: its unwrapped half and, for the verifier, the
/// payload ciphertext.
fn loot(server: &Server, role: &str, agent_id: &str) -> (Share, Option<Vec<u8>>) {
    let store = Store::open(&server.state().join(format!("{role}.db"))).unwrap();
    let e = store.enrollment(agent_id).unwrap().unwrap();
    let share = master_key(server, role)
        .unwrap_share(&e.share_wrapped, &wrap_context(role, agent_id))
        .unwrap();
    (share, e.payload_ct)
}

#[test]
fn two_processes_one_quote_each_role_releases_its_half() {
    let m = Machine::new();
    let v = Server::start(&[TOFU, "--role", "verifier"]);
    let t = Server::start(&[TOFU, "--role", "tenant"]);
    let bundle = m.dir.path().join("ca.pem");
    std::fs::write(
        &bundle,
        [
            std::fs::read(v.ca()).unwrap(),
            std::fs::read(t.ca()).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let (vu, tu) = (format!("{}/verifier", v.url), format!("{}/tenant", t.url));

    // Each process serves only its role.
    assert!(!v.state().join("tenant.db").exists());
    assert!(!t.state().join("verifier.db").exists());

    let (ek, agent_id) = m.export_ek(&v);
    let payload: Vec<u8> = (0..48u8).collect();
    let pf = m.dir.path().join("payload");
    std::fs::write(&pf, &payload).unwrap();
    let policy = m.dir.path().join("policy.json");
    std::fs::write(&policy, m.policy_now(true)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unlockctl"))
        .args(["enroll", "--ek-pub", ek.to_str().unwrap()])
        .args([
            "--payload",
            pf.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ])
        .args(["--verifier", &vu, "--tenant", &tu])
        .arg("--token-file")
        .arg(v.token_file())
        .arg("--tenant-token-file")
        .arg(t.token_file())
        .arg("--ca")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = m.config_split(&vu, &tu, &bundle, None);
    let out = m.agent_with(&cfg, &["--verbose"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    // Each process recorded its own release of this boot.
    for (server, role) in [(&v, "verifier"), (&t, "tenant")] {
        let store = Store::open(&server.state().join(format!("{role}.db"))).unwrap();
        let sessions = store.sessions(&agent_id).unwrap();
        assert_eq!(sessions.len(), 1, "{role}");
        assert_eq!(sessions[0].releases, 1, "{role}");
    }

    // Neither role's database and master key alone yields the payload.
    let (vshare, ct) = loot(&v, "verifier", &agent_id);
    let ct = PayloadCiphertext::from_bytes(&ct.expect("verifier keeps the ciphertext")).unwrap();
    let as_key = |s: &Share| combine(s, &Share::from_bytes([0; 32]));
    assert!(decrypt_payload(&as_key(&vshare), &agent_id, &ct).is_err());
    let (tshare, tenant_ct) = loot(&t, "tenant", &agent_id);
    assert!(tenant_ct.is_none(), "the tenant never sees the ciphertext");
    assert!(decrypt_payload(&as_key(&tshare), &agent_id, &ct).is_err());
    // A role's master key does not open the other role's rows.
    let other = Store::open(&t.state().join("tenant.db")).unwrap();
    let row = other.enrollment(&agent_id).unwrap().unwrap();
    assert!(master_key(&v, "verifier")
        .unwrap_share(&row.share_wrapped, &wrap_context("tenant", &agent_id))
        .is_err());
    // Both together do (the method above is sound).
    let k: BootKey = combine(&tshare, &vshare);
    assert_eq!(&*decrypt_payload(&k, &agent_id, &ct).unwrap(), &payload[..]);
}

#[test]
fn tenant_nonce_missing_from_the_root_refused() {
    let m = Machine::new();
    let server = Server::start(&[TOFU]);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let mut d = Driver::new(&m, &server);
    let (vch, tch) = (d.challenge("verifier"), d.challenge("tenant"));
    // The quote's tree holds only the verifier's nonce; the tenant is shown that proof.
    let nk = NkPrivate::generate().unwrap();
    let mut req = d.attest_requests(&[&vch], &nk, None).remove(0);
    req.challenge_id = tch.challenge_id.clone();
    let (st, body) = d.attest("tenant", &req);
    assert_eq!((st, code(&body).as_str()), (403, "binding_mismatch"));
    assert!(server.releases(&agent_id, "tenant").is_empty());
}
