//! Auto-enrollment (`[[auto_enroll]]` rules, issue 16) end to end: the real server, the
//! real agent (`initrd-agent deposit`), swtpm TPMs with EK certificates from test CAs.
//!
//! Admission: an `ek_ca` rule admits a TPM whose EK certificate chains to the rule's CA and
//! refuses one from another CA; without rules an unknown EK is `not_enrolled` as always;
//! TOFU only when a rule names it (`--allow-ek-without-cert` does not imply it). Deposit
//! forgeries (another AK, another admission's nonce, a replay, a second deposit, the wrong
//! role) are refused; a flood of self-made EKs is bounded by the budgets while an enrolled
//! machine keeps unlocking.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use support::{code, post, Driver, Machine, Opts, Server, Swtpm};
use verifier_core::keysplit::enroll_material;
use verifier_core::proto::v1::{
    self, Deposit, DepositNonceRequest, DepositNonceResponse, DepositRequest, Role,
    DEPOSIT_NONCE_PATH, DEPOSIT_PATH,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{BankSelection, HashAlg, PcrSelection};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A server whose config file holds `config` (top-level keys, then `[[auto_enroll]]`).
fn server(config: &str, extra: &[&str]) -> Server {
    Server::start_with(
        extra,
        Opts {
            config: Some(config.to_owned()),
            log_file: true,
            ..Opts::default()
        },
    )
}

/// An `ek_ca` rule named `name` with its CA file.
fn ek_ca_rule(name: &str, ca: &Path) -> String {
    format!(
        "[[auto_enroll]]\nname = \"{name}\"\nmode = \"ek_ca\"\nca = [\"{}\"]\npolicy = \"fleet\"\n",
        ca.display()
    )
}

/// A `tofu` rule.
fn tofu_rule(name: &str, per_hour: u32) -> String {
    format!("[[auto_enroll]]\nname = \"{name}\"\nmode = \"tofu\"\npolicy = \"fleet\"\nmax_per_hour = {per_hour}\n")
}

/// The named policy "fleet" on both roles: this machine's PCRs now.
fn create_fleet_policy(server: &Server, m: &Machine) {
    let pf = m.dir.path().join("fleet.json");
    std::fs::write(&pf, m.policy_now(true)).unwrap();
    ok(&server.unlockctl(&["policy", "create", "fleet", "--file", pf.to_str().unwrap()]));
}

/// A provisioned TPM (RSA EK with a certificate from a fresh CA) and that CA's PEM file.
fn provisioned(dir: &Path, name: &str) -> (Swtpm, PathBuf) {
    let (tpm, root, issuer) = Swtpm::start_provisioned(false);
    let ca = dir.join(format!("{name}.pem"));
    std::fs::write(&ca, [root, issuer].concat()).unwrap();
    (tpm, ca)
}

fn payload_file(m: &Machine) -> (PathBuf, Vec<u8>) {
    let payload: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
    let pf = m.dir.path().join("disk.key");
    std::fs::write(&pf, &payload).unwrap();
    (pf, payload)
}

fn deposit(m: &Machine, server: &Server, pf: &Path) -> std::process::Output {
    m.agent(
        server,
        None,
        &["deposit", "--payload", pf.to_str().unwrap()],
    )
}

fn audit_kinds(server: &Server) -> String {
    ["verifier", "tenant"]
        .iter()
        .map(|r| ok(&server.unlockctl(&["audit", "export", "--role", r])))
        .collect()
}

#[test]
fn ek_ca_rule_admits_its_ca_deposit_arms_and_machine_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let (tpm, ca) = provisioned(dir.path(), "rack");
    let server = server(&ek_ca_rule("rack", &ca), &[]);
    let m = Machine::with_tpm(tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (pf, payload) = payload_file(&m);

    let out = deposit(&m, &server, &pf);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("verifier: enrolled, admitted by rule rack (ek_ca: CA subject sha256:"),
        "{err}"
    );
    assert!(
        err.contains("tenant: enrolled, admitted by rule rack (ek_ca"),
        "{err}"
    );

    // `unlockctl list` says how it was admitted; the audit trail has the admission and the
    // enrollment, by the agent.
    let list = ok(&server.unlockctl(&["list"]));
    assert!(
        list.contains("rule rack (ek_ca: CA subject sha256:"),
        "{list}"
    );
    assert!(list.contains("armed"), "{list}");
    ok(&server.unlockctl(&["audit", "verify"]));
    let audit = audit_kinds(&server);
    assert_eq!(audit.matches("\"auto_admit\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"auto_enroll\"").count(), 2, "{audit}");
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        log.contains("auto-enrolled: deposit made, enrollment armed"),
        "{log}"
    );

    // The machine unlocks with the key it deposited.
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);

    // A second deposit (a new K_b the machine would like to swap in) is refused, and the
    // enrollment is unchanged: the next boot still gets the first payload.
    let (pf2, _) = {
        let p = m.dir.path().join("other.key");
        std::fs::write(&p, b"another key entirely").unwrap();
        (p, ())
    };
    let out = deposit(&m, &server, &pf2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not_awaiting_deposit"),
        "{}",
        stderr(&out)
    );
    let mut m = m;
    m.reboot();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

#[test]
fn ek_ca_rule_refuses_a_tpm_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_rack_tpm, rack_ca) = provisioned(dir.path(), "rack");
    let (other_tpm, _other_ca) = provisioned(dir.path(), "other");
    let server = server(&ek_ca_rule("rack", &rack_ca), &[]);
    let m = Machine::with_tpm(other_tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (pf, _) = payload_file(&m);

    let out = deposit(&m, &server, &pf);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ek_cert_untrusted"), "{err}");
    assert!(err.contains("rule rack"), "{err}");
    // Refused before anything was written or any MakeCredential made.
    assert_eq!(server.registrations(), 0);
    let list = ok(&server.unlockctl(&["list"]));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(!audit_kinds(&server).contains("auto_admit"));
}

#[test]
fn ek_ca_rule_with_a_tpm_model_constraint_refuses_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (tpm, ca) = provisioned(dir.path(), "rack");
    let rule = ek_ca_rule("rack", &ca) + "tpm_model = \"not-this-model\"\n";
    let server = server(&rule, &[]);
    let m = Machine::with_tpm(tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (pf, _) = payload_file(&m);
    let out = deposit(&m, &server, &pf);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ek_cert_untrusted"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not-this-model"), "{}", stderr(&out));
    assert_eq!(server.registrations(), 0);
}

#[test]
fn auto_enroll_off_refuses_an_unknown_ek_even_from_a_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (tpm, ca) = provisioned(dir.path(), "rack");
    // The CA is trusted for enrolled machines' certificates, but no rule admits anyone.
    let server = Server::start(&["--ek-ca", ca.to_str().unwrap()]);
    let m = Machine::with_tpm(tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (pf, _) = payload_file(&m);
    let out = deposit(&m, &server, &pf);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not_enrolled"), "{}", stderr(&out));
    assert_eq!(server.registrations(), 0);
    // Nor can anyone deposit for it.
    let (st, body) = post(
        &server.http(),
        &format!("{}/verifier{DEPOSIT_NONCE_PATH}", server.url),
        &v1::encode(&DepositNonceRequest {
            agent_id: v1::AgentId::try_from("ab".repeat(32)).unwrap(),
        })
        .unwrap(),
    );
    assert_eq!((st, code(&body).as_str()), (409, "not_awaiting_deposit"));
}

#[test]
fn tofu_only_when_a_rule_names_it() {
    // An EK without a certificate: an ek_ca rule does not admit it, and the server-wide
    // --allow-ek-without-cert (for enrolled machines) does not make it TOFU.
    let dir = tempfile::tempdir().unwrap();
    let (_tpm, ca) = provisioned(dir.path(), "rack");
    let strict = server(&ek_ca_rule("rack", &ca), &["--allow-ek-without-cert"]);
    let m = Machine::new();
    create_fleet_policy(&strict, &m);
    let (pf, payload) = payload_file(&m);
    let out = deposit(&m, &strict, &pf);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not_enrolled"), "{}", stderr(&out));
    assert_eq!(strict.registrations(), 0);

    // A rule that names TOFU admits it, says so, and the machine unlocks.
    let tofu = server(&tofu_rule("anyone", 60), &[]);
    create_fleet_policy(&tofu, &m);
    let out = deposit(&m, &tofu, &pf);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("admitted by rule anyone (tofu: any EK)"),
        "{}",
        stderr(&out)
    );
    let list = ok(&tofu.unlockctl(&["list"]));
    assert!(list.contains("rule anyone (tofu: any EK)"), "{list}");
    let out = m.agent(&tofu, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

/// The admission's nonce for `role`.
fn nonce(d: &Driver, role: &str) -> Vec<u8> {
    let (st, body) = post(
        &d.http,
        &d.url(role, DEPOSIT_NONCE_PATH),
        &v1::encode(&DepositNonceRequest {
            agent_id: d.agent_id.clone(),
        })
        .unwrap(),
    );
    assert_eq!(st, 200, "nonce: {}", String::from_utf8_lossy(&body));
    let r: DepositNonceResponse = v1::decode(&body).unwrap();
    r.nonce.into_vec()
}

/// `deposit` quoted by the driver's AK (or `signer`) over `nonce`, claiming the driver's AK.
fn quoted(
    d: &mut Driver,
    deposit: Deposit,
    nonce: &[u8],
    signer: Option<&initrd_agent::tpm::Ak>,
) -> DepositRequest {
    let digest = deposit.digest(nonce).unwrap();
    let selection = BankSelection::new(HashAlg::Sha256, &[0])
        .and_then(|b| PcrSelection::new(vec![b]))
        .unwrap();
    let ak = signer.unwrap_or(&d.ak);
    let q = d.tpm.quote_with_pcrs(ak, &digest, &selection).unwrap();
    DepositRequest {
        deposit,
        ak_name: Base64Bytes::new(d.ak.name().to_vec()),
        quote: Base64Bytes::new(q.quote.attest),
        signature: Base64Bytes::new(q.quote.signature),
        pcrs: initrd_agent::flow::pcr_banks(&selection, &q.pcrs),
    }
}

fn send(d: &Driver, role: &str, req: &DepositRequest) -> (u16, String) {
    let (st, body) = post(
        &d.http,
        &d.url(role, DEPOSIT_PATH),
        &v1::encode(req).unwrap(),
    );
    (
        st,
        if st == 200 {
            String::new()
        } else {
            code(&body)
        },
    )
}

fn deposits(d: &Driver) -> (Deposit, Deposit) {
    let mat = enroll_material(d.agent_id.as_str(), b"a disk key").unwrap();
    (
        Deposit {
            agent_id: d.agent_id.clone(),
            role: Role::Verifier,
            share: Base64Bytes::new(mat.v.expose_secret().to_vec()),
            payload_ct: Some(Base64Bytes::new(mat.payload_ct.as_bytes().to_vec())),
        },
        Deposit {
            agent_id: d.agent_id.clone(),
            role: Role::Tenant,
            share: Base64Bytes::new(mat.u.expose_secret().to_vec()),
            payload_ct: None,
        },
    )
}

#[test]
fn forged_deposits_are_refused() {
    let m = Machine::new();
    let server = server(&tofu_rule("anyone", 60), &[]);
    create_fleet_policy(&server, &m);
    // Admitted and activated with both roles (the driver's AK is pinned).
    let mut d = Driver::new(&m, &server);
    let (vd, td) = deposits(&d);
    let vn = nonce(&d, "verifier");

    // Quoted by another AK of the same TPM, claiming the pinned one.
    let other = d.tpm.create_ak(&d.ek).unwrap();
    let forged = quoted(&mut d, vd.clone(), &vn, Some(&other));
    d.tpm.flush_ak(other).unwrap();
    assert_eq!(send(&d, "verifier", &forged), (403, "quote_invalid".into()));

    // Quoted over another nonce (a deposit made for an earlier admission).
    let stale = quoted(&mut d, vd.clone(), &[7u8; 32], None);
    assert_eq!(send(&d, "verifier", &stale), (403, "quote_invalid".into()));

    // The verifier's deposit sent to the tenant role.
    let genuine = quoted(&mut d, vd.clone(), &vn, None);
    assert_eq!(send(&d, "tenant", &genuine).1, "malformed_request");

    // A deposit altered after it was quoted (the share swapped).
    let mut altered = genuine.clone();
    altered.deposit.share = Base64Bytes::new(vec![0x42; 32]);
    assert_eq!(
        send(&d, "verifier", &altered),
        (403, "quote_invalid".into())
    );

    // The genuine deposit is accepted once; its replay and any second deposit are refused.
    assert_eq!(send(&d, "verifier", &genuine), (200, String::new()));
    assert_eq!(
        send(&d, "verifier", &genuine),
        (409, "not_awaiting_deposit".into())
    );
    let second = quoted(&mut d, vd, &vn, None);
    assert_eq!(
        send(&d, "verifier", &second),
        (409, "not_awaiting_deposit".into())
    );

    let tn = nonce(&d, "tenant");
    let tenant_genuine = quoted(&mut d, td, &tn, None);
    assert_eq!(send(&d, "tenant", &tenant_genuine), (200, String::new()));

    // Deleted by an operator and admitted again: the first admission's deposit (a replay
    // of the genuine request) does not fit the new admission's nonce.
    let id = d.agent_id.as_str().to_owned();
    ok(&server.unlockctl(&["delete", &id]));
    let reg = d.register("verifier");
    d.activate("verifier", &reg);
    let new_nonce = nonce(&d, "verifier");
    assert_ne!(new_nonce, vn);
    assert_eq!(
        send(&d, "verifier", &genuine),
        (403, "quote_invalid".into())
    );
    d.release();
}

#[test]
fn flood_of_self_made_eks_is_bounded_and_enrolled_machine_still_unlocks() {
    // An honest machine, enrolled by an operator.
    let m = Machine::new();
    let config = "auto_enroll_max_waiting = 4\n".to_owned() + &tofu_rule("anyone", 6);
    let server = server(&config, &["--allow-ek-without-cert"]);
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    create_fleet_policy(&server, &m);

    // Strangers register 12 self-made (software) EKs against the TOFU rule.
    let http = server.http();
    let mut admitted = 0;
    let mut limited = 0;
    for _ in 0..12 {
        let sim = verifier_core::sim::SimAgent::new().unwrap();
        let (st, body) = post(
            &http,
            &format!("{}/verifier{}", server.url, v1::path::REGISTER),
            &v1::encode(&sim.register_request()).unwrap(),
        );
        match st {
            200 => admitted += 1,
            429 => {
                assert_eq!(code(&body), "rate_limited");
                limited += 1;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    // At most max_waiting admissions wait for a deposit at once.
    assert_eq!((admitted, limited), (4, 8));
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        log.contains("auto-enrollment refused: budget spent"),
        "{log}"
    );

    // The enrolled machine unlocks through it all.
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

#[test]
fn rule_rate_budget_per_hour_bounds_admissions() {
    let config = "auto_enroll_max_waiting = 100\n".to_owned() + &tofu_rule("anyone", 3);
    let server = server(&config, &[]);
    let m = Machine::new();
    create_fleet_policy(&server, &m);
    let http = server.http();
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            let sim = verifier_core::sim::SimAgent::new().unwrap();
            post(
                &http,
                &format!("{}/tenant{}", server.url, v1::path::REGISTER),
                &v1::encode(&sim.register_request()).unwrap(),
            )
            .0
        })
        .collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
}

#[test]
fn ek_ca_flood_without_chaining_certificates_writes_nothing() {
    // Self-made EKs with no certificate, and the honest TPM's genuine certificate presented
    // for a stranger's EK: refused by the rule's check, nothing admitted.
    let dir = tempfile::tempdir().unwrap();
    let (tpm, ca) = provisioned(dir.path(), "rack");
    let server = server(&ek_ca_rule("rack", &ca), &[]);
    let m = Machine::with_tpm(tpm, "rsa");
    let cert = {
        let mut t = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
        t.read_ek_cert(initrd_agent::tpm::EkKind::Rsa2048)
            .unwrap()
            .unwrap()
    };
    let http = server.http();
    for i in 0..6 {
        let sim = verifier_core::sim::SimAgent::new().unwrap();
        let mut req = sim.register_request();
        if i % 2 == 1 {
            req.ek_cert = Some(Base64Bytes::new(cert.clone()));
        }
        let (st, body) = post(
            &http,
            &format!("{}/verifier{}", server.url, v1::path::REGISTER),
            &v1::encode(&req).unwrap(),
        );
        assert!(st == 404 || st == 403 || st == 429, "{st}");
        let c = code(&body);
        assert!(
            ["not_enrolled", "ek_cert_untrusted", "rate_limited"].contains(&c.as_str()),
            "{c}"
        );
    }
    assert_eq!(server.registrations(), 0);
    assert!(!audit_kinds(&server).contains("auto_admit"));
}

fn luks_image(m: &Machine) -> (PathBuf, PathBuf) {
    let img = m.dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let pass = m.dir.path().join("pass");
    std::fs::write(&pass, b"correct horse battery staple").unwrap();
    let st = std::process::Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&pass)
        .arg(&img)
        .status()
        .expect("cryptsetup is required (apt-get install cryptsetup-bin)");
    assert!(st.success());
    (img, pass)
}

/// Key slots in use (LUKS2 `luksDump`: lines `  N: luks2` under `Keyslots:`).
fn key_slots(img: &Path) -> usize {
    let out = std::process::Command::new("cryptsetup")
        .arg("luksDump")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let slots = text.split("Keyslots:").nth(1).unwrap_or("");
    let slots = slots.split("Tokens:").next().unwrap_or("");
    slots
        .lines()
        .filter(|l| l.trim_end().ends_with(": luks2"))
        .count()
}

/// `unlockctl bind --auto-enroll` with no admin token (the token file does not exist).
fn bind_auto(m: &Machine, server: &Server, img: &Path, existing: &Path) -> std::process::Output {
    let cfg = m.config(server, None);
    std::process::Command::new(env!("CARGO_BIN_EXE_unlockctl"))
        .args(["bind", "--auto-enroll", "--device"])
        .arg(img)
        .arg("--existing-key-file")
        .arg(existing)
        .arg("--agent")
        .arg(support::agent_bin())
        .arg("--agent-config")
        .arg(&cfg)
        .arg("--agent-cmdline-file")
        .arg(m.dir.path().join("cmdline"))
        .args([
            "--cryptsetup-arg=--pbkdf=pbkdf2",
            "--cryptsetup-arg=--pbkdf-force-iterations=1000",
        ])
        .arg("--token-file")
        .arg(m.dir.path().join("no-such-admin.token"))
        .output()
        .unwrap()
}

#[test]
fn bind_auto_enroll_adds_a_slot_that_the_agent_unlocks_without_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (tpm, ca) = provisioned(dir.path(), "rack");
    let server = server(&ek_ca_rule("rack", &ca), &[]);
    let m = Machine::with_tpm(tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (img, pass) = luks_image(&m);
    assert_eq!(key_slots(&img), 1);
    let out = bind_auto(&m, &server, &img, &pass);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("admitted by rule rack (ek_ca"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_slots(&img), 2);
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The released key opens the image; the old passphrase still does.
    for key in [m.key_file(), pass] {
        let st = std::process::Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&key)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "{} does not open the image", key.display());
    }
}

#[test]
fn bind_auto_enroll_refused_removes_the_new_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (_rack_tpm, rack_ca) = provisioned(dir.path(), "rack");
    let (other_tpm, _) = provisioned(dir.path(), "other");
    let server = server(&ek_ca_rule("rack", &rack_ca), &[]);
    let m = Machine::with_tpm(other_tpm, "rsa");
    create_fleet_policy(&server, &m);
    let (img, pass) = luks_image(&m);
    let out = bind_auto(&m, &server, &img, &pass);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ek_cert_untrusted"), "{err}");
    assert!(err.contains("the new key slot was removed again"), "{err}");
    assert_eq!(key_slots(&img), 1);
}
