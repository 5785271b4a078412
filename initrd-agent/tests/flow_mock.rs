//! The agent binary end to end against swtpm and a mock of the two roles (tests/mock): the
//! exact CLI, console lines and exit codes the dracut unit and the VM tests rely on, retries,
//! the lost-answer retry with identical evidence, refusals, and answers the agent must not
//! accept.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod mock;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{quiet_tss, skip, Swtpm};
use initrd_agent::tpm::{EkKind, Tpm, RELEASE_EVENT};
use mock::{Faults, MockServer};
use verifier_core::proto::v1::{AgentId, ErrorCode, Role};
use verifier_core::wire::{BankSelection, Digest, HashAlg, PcrSelection};

const PAYLOAD: &[u8] = b"luks key: 0123456789abcdef0123456789abcdef";

fn agent_id_of(sw: &Swtpm) -> String {
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ek = tpm.create_ek(EkKind::EccP256).unwrap();
    let id = AgentId::of_ek(ek.public()).to_string();
    tpm.flush_ek(ek).unwrap();
    id
}

fn release_pcr(sw: &Swtpm) -> Digest {
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let sel = PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[15]).unwrap()]).unwrap();
    *tpm.read_pcrs(&sel)
        .unwrap()
        .get(HashAlg::Sha256, 15)
        .unwrap()
}

struct Outcome {
    code: i32,
    stderr: String,
}

struct Env {
    sw: Swtpm,
    dir: tempfile::TempDir,
    key_file: PathBuf,
}

impl Env {
    fn new() -> Option<Self> {
        if skip() {
            return None;
        }
        quiet_tss();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("run/cryptsetup-keys.d/root.key");
        Some(Self {
            sw: Swtpm::start(),
            dir,
            key_file,
        })
    }

    fn run(&self, base: &str, extra_toml: &str, cmdline: &str) -> Outcome {
        self.run_cmd(base, extra_toml, cmdline, &["--verbose"])
    }

    /// Runs the binary with the config and command line of [`Env::run`] and `args` after
    /// them (a subcommand, `--verbose`).
    fn run_cmd(&self, base: &str, extra_toml: &str, cmdline: &str, args: &[&str]) -> Outcome {
        let cfg = self.dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "verifier_url = \"{base}/verifier\"\ntenant_url = \"{base}/tenant\"\n\
                 tcti = \"{}\"\nkey_file = \"{}\"\ninsecure_http = true\n\
                 event_log = \"/nonexistent/el\"\nima_log = \"/nonexistent/ima\"\n{extra_toml}",
                self.sw.tcti(),
                self.key_file.display()
            ),
        )
        .unwrap();
        let cl = self.dir.path().join("cmdline");
        std::fs::write(&cl, format!("BOOT_IMAGE=/vmlinuz quiet {cmdline}\n")).unwrap();
        let mut all = vec!["--config", path(&cfg), "--cmdline-file", path(&cl)];
        all.extend_from_slice(args);
        run_binary(&all)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run_binary(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_initrd-agent"))
        .args(args)
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The final status line (the last line starting with "initrd-agent: " that is no step).
fn status(o: &Outcome) -> &str {
    o.stderr
        .lines()
        .rfind(|l| l.starts_with("initrd-agent: ") && !l.starts_with("initrd-agent: step "))
        .unwrap_or_else(|| panic!("no status line in {:?}", o.stderr))
}

fn steps(o: &Outcome) -> Vec<(String, u64)> {
    o.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("initrd-agent: step "))
        .map(|rest| {
            let parts: Vec<&str> = rest.split(' ').collect();
            assert_eq!(parts.len(), 3, "{rest:?}");
            assert_eq!(parts[2], "ms");
            (parts[0].to_owned(), parts[1].parse().unwrap())
        })
        .collect()
}

#[test]
fn unlocks_end_to_end_then_the_same_boot_is_refused() {
    let Some(env) = Env::new() else { return };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, Faults::default());
    assert_eq!(release_pcr(&env.sw), Digest::zero(HashAlg::Sha256));

    let o = env.run(&server.base, "", "");
    eprintln!("{}", o.stderr);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = status(&o);
    assert!(
        line.starts_with(&format!(
            "initrd-agent: unlocked (key written to {} in ",
            env.key_file.display()
        )) && line.ends_with(" s)"),
        "{line}"
    );
    let names: Vec<String> = steps(&o).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "tpm",
            "ek",
            "register",
            "activate",
            "challenge",
            "quote",
            "logs",
            "attest",
            "decrypt",
            "extend",
            "write"
        ]
    );
    assert_eq!(std::fs::read(&env.key_file).unwrap(), PAYLOAD);
    let mode = std::fs::metadata(&env.key_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    assert_eq!(
        (server.releases("verifier"), server.releases("tenant")),
        (1, 1)
    );
    assert_ne!(release_pcr(&env.sw), Digest::zero(HashAlg::Sha256));

    // A second attempt in the same boot: genuine evidence, but the release PCR shows that a
    // key was released, so the policy refuses.
    std::fs::remove_file(&env.key_file).unwrap();
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: refused by verifier: policy_denied: "),
        "{}",
        o.stderr
    );
    assert!(!env.key_file.exists());
    // The second run read the EK and AK back from the TPM: no derivation, no registration.
    let names: Vec<String> = steps(&o).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["tpm", "challenge", "quote", "logs"], "{}", o.stderr);
}

/// The release PCR's value after one extend with the release event (what both a release
/// and the latch leave behind).
fn released_value() -> Digest {
    let mut data = Digest::zero(HashAlg::Sha256).as_bytes().to_vec();
    data.extend(HashAlg::Sha256.hash(RELEASE_EVENT).as_bytes());
    HashAlg::Sha256.hash(&data)
}

#[test]
fn the_release_pcr_is_extended_before_the_key_file_is_written() {
    let Some(env) = Env::new() else { return };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, Faults::default());
    // PCR 17 is not extendable from locality 0: the extend fails after both halves were
    // released and the key decrypted. No key file may exist afterwards, nor in between
    // (the extend comes first, so there is nothing to withdraw).
    let o = env.run(&server.base, "release_pcr = 17\n", "");
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        status(&o).starts_with(
            "initrd-agent: error: extending the release PCR failed, key not written: "
        ),
        "{}",
        o.stderr
    );
    let names: Vec<String> = steps(&o).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("decrypt"),
        "{names:?}"
    );
    assert!(!env.key_file.exists());
    assert!(
        !env.key_file.parent().unwrap().exists(),
        "nothing was written"
    );
}

#[test]
fn latch_extends_the_release_pcr_whatever_the_agent_did_and_the_boot_is_refused_later() {
    let Some(env) = Env::new() else { return };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, Faults::default());
    // rd.unlock=0 skips the agent, never the latch; the latch needs no server URL.
    let o = env.run_cmd("http://127.0.0.1:9", "", "rd.unlock=0", &["latch"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        status(&o),
        "initrd-agent: latch: release PCR 15 extended",
        "{}",
        o.stderr
    );
    // Exactly the extend a release makes.
    assert_eq!(release_pcr(&env.sw), released_value());

    // Later in the same boot: genuine evidence, but the door is closed.
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: refused by "),
        "{}",
        o.stderr
    );
    assert!(status(&o).contains("policy_denied"), "{}", o.stderr);
    assert!(!env.key_file.exists());
    assert_eq!(
        (server.releases("verifier"), server.releases("tenant")),
        (0, 0)
    );

    // A latch that cannot reach the TPM fails (exit 3) and says so: the dracut unit then
    // stops the boot rather than switch root with the door open.
    let o = env.run_cmd(
        "http://127.0.0.1:9",
        "",
        "rd.unlock.tcti=swtpm:host=127.0.0.1,port=1",
        &["latch"],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: latch: error: cannot open the TPM"),
        "{}",
        o.stderr
    );
}

#[test]
fn outages_are_retried_and_a_lost_attest_answer_is_retried_with_identical_evidence() {
    let Some(env) = Env::new() else { return };
    let mut faults = Faults::default();
    faults
        .unavailable
        .insert("/tenant/v1/attest/challenge".into(), 2);
    faults.unavailable.insert("/verifier/v1/register".into(), 1);
    faults.drop_attest_answer = Some(Role::Tenant);
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);

    let o = env.run(&server.base, "retries = 3\n", "");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read(&env.key_file).unwrap(), PAYLOAD);

    let reqs = server.requests();
    let count = |p: &str| reqs.iter().filter(|(path, _)| path == p).count();
    assert_eq!(count("/tenant/v1/attest/challenge"), 3);
    assert_eq!(count("/verifier/v1/register"), 2);
    let attests: Vec<&Vec<u8>> = reqs
        .iter()
        .filter(|(p, _)| p == "/tenant/v1/attest")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(attests.len(), 2, "the lost answer was retried once");
    assert_eq!(
        attests[0], attests[1],
        "the retry resends byte-identical evidence"
    );
    assert_eq!(server.releases("tenant"), 1, "and is not a second release");
}

#[test]
fn a_refusal_is_exit_1_never_retried_and_leaves_no_key() {
    let Some(env) = Env::new() else { return };
    let faults = Faults {
        refuse_attest: Some((Role::Tenant, ErrorCode::PolicyDenied)),
        ..Faults::default()
    };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 1, "{}", o.stderr);
    // The console line names the request, and the server saw that id.
    let line = status(&o);
    let id = line
        .strip_prefix(
            "initrd-agent: refused by tenant: policy_denied: injected refusal (request id ",
        )
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        server
            .request_ids()
            .contains(&("/tenant/v1/attest".to_owned(), id.to_owned())),
        "{id} not among {:?}",
        server.request_ids()
    );
    let attests = server
        .requests()
        .iter()
        .filter(|(p, _)| p == "/tenant/v1/attest")
        .count();
    assert_eq!(attests, 1, "a 4xx is not retried");
    assert!(!env.key_file.exists());
    assert_eq!(release_pcr(&env.sw), Digest::zero(HashAlg::Sha256));
}

#[test]
fn a_half_sealed_for_the_other_role_is_refused() {
    let Some(env) = Env::new() else { return };
    let faults = Faults {
        seal_as_other_role: Some(Role::Tenant),
        ..Faults::default()
    };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: bad answer from tenant: sealed half does not open"),
        "{}",
        o.stderr
    );
    assert!(!env.key_file.exists());
}

#[test]
fn a_server_that_stays_down_is_exit_2_within_the_budget() {
    let Some(env) = Env::new() else { return };
    let mut faults = Faults::default();
    faults
        .unavailable
        .insert("/verifier/v1/register".into(), 100);
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);
    let t = std::time::Instant::now();
    let o = env.run(&server.base, "retries = 2\n", "");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: server unreachable: verifier: ")
            && status(&o).contains("HTTP 503 internal: injected outage (after 3 attempts)"),
        "{}",
        o.stderr
    );
    assert!(t.elapsed().as_secs() < 10);

    // Nobody listening, and a 2 s budget from the kernel command line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let t = std::time::Instant::now();
    let o = env.run(&base, "retries = 10\n", "rd.unlock.timeout=2");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        status(&o).starts_with("initrd-agent: server unreachable: "),
        "{}",
        o.stderr
    );
    assert!(t.elapsed().as_secs() < 6, "{:?}", t.elapsed());
}

#[test]
fn skip_and_config_errors() {
    let Some(env) = Env::new() else { return };
    let o = env.run("http://127.0.0.1:9", "", "rd.unlock=0");
    assert_eq!(o.code, 0);
    assert_eq!(status(&o), "initrd-agent: skipped (rd.unlock=0)");

    let o = env.run("http://127.0.0.1:9", "", "rd.unlock.timeout=soon");
    assert_eq!(o.code, 3);
    assert!(
        status(&o).starts_with("initrd-agent: error: kernel command line rd.unlock.timeout="),
        "{}",
        o.stderr
    );

    // A TPM that is not there is a local error.
    let o = env.run(
        "http://127.0.0.1:9",
        "",
        "rd.unlock.tcti=swtpm:host=127.0.0.1,port=1",
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(status(&o).contains("cannot open the TPM"), "{}", o.stderr);

    // https without a CA bundle is a local error, reported before any TPM work.
    let o = env.run(
        "http://127.0.0.1:9",
        "ca_bundle = \"/nonexistent/ca.pem\"\n",
        "rd.unlock.server=https://127.0.0.1:9",
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(status(&o).contains("cannot read CA bundle"), "{}", o.stderr);
}

#[test]
fn https_trusts_the_configured_ca_only() {
    let Some(env) = Env::new() else { return };
    let (ca, chain, key) = mock::make_pki(env.dir.path(), "good");
    let (other_ca, _, _) = mock::make_pki(env.dir.path(), "other");
    let server = MockServer::start_tls(
        &agent_id_of(&env.sw),
        PAYLOAD,
        Faults::default(),
        &chain,
        &key,
    );
    assert!(server.base.starts_with("https://"));

    // A bundle holding only another CA: the handshake fails, nothing is retried, and the
    // agent reports the server as unreachable (the passphrase prompt takes over).
    let other = env.dir.path().join("other-ca.pem");
    std::fs::write(&other, &other_ca).unwrap();
    let o = env.run(
        &server.base,
        &format!("ca_bundle = \"{}\"\n", other.display()),
        "rd.unlock.insecure=0",
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(status(&o).contains("TLS failed"), "{}", o.stderr);
    assert_eq!(
        server.requests().len(),
        0,
        "no request went to an untrusted server"
    );

    let good = env.dir.path().join("ca.pem");
    std::fs::write(&good, &ca).unwrap();
    let o = env.run(
        &server.base,
        &format!("ca_bundle = \"{}\"\n", good.display()),
        "rd.unlock.insecure=0",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read(&env.key_file).unwrap(), PAYLOAD);

    // A file without certificates is a local error.
    let empty = env.dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let o = env.run(
        &server.base,
        &format!("ca_bundle = \"{}\"\n", empty.display()),
        "rd.unlock.insecure=0",
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(status(&o).contains("holds no CERTIFICATE"), "{}", o.stderr);
}

#[test]
fn evidence_subcommand_writes_json() {
    let Some(env) = Env::new() else { return };
    let out = env.dir.path().join("evidence.json");
    let cl = env.dir.path().join("cmdline");
    std::fs::write(&cl, format!("rd.unlock.tcti={}", env.sw.tcti())).unwrap();
    let o = run_binary(&[
        "--config",
        "/nonexistent/config.toml",
        "--cmdline-file",
        path(&cl),
        "evidence",
        "--out",
        path(&out),
    ]);
    // An explicit --config that does not exist is an error ...
    assert_eq!(o.code, 3, "{}", o.stderr);
    // ... the default one may be absent.
    let o = run_binary(&["--cmdline-file", path(&cl), "evidence", "--out", path(&out)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let ev: initrd_agent::evidence::CapturedEvidence =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(ev.agent_id.to_string(), agent_id_of(&env.sw));
    assert!(ev.pcrs.iter().any(|b| b.hash == HashAlg::Sha256));
    assert!(ev.pcrs.iter().all(|b| b.values.len() == 24));

    // `ek --out` writes the TPMT_PUBLIC whose hash is the agent id.
    let ek = env.dir.path().join("ek.pub");
    let o = run_binary(&["--cmdline-file", path(&cl), "ek", "--out", path(&ek)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let public = std::fs::read(&ek).unwrap();
    verifier_core::wire::Public::parse(&public).unwrap();
    let id = AgentId::of_ek(&public).to_string();
    assert_eq!(id, agent_id_of(&env.sw));
    assert!(
        status(&o).ends_with(&format!("(agent id {id})")),
        "{}",
        o.stderr
    );
}

fn attests_of(server: &MockServer, role: &str) -> usize {
    let path = format!("/{role}/v1/attest");
    server.requests().iter().filter(|(p, _)| *p == path).count()
}

#[test]
fn an_expired_challenge_gets_a_new_round_for_that_role_only() {
    let Some(env) = Env::new() else { return };
    let faults = Faults {
        expire_attest: Some((Role::Tenant, 1)),
        ..Faults::default()
    };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read(&env.key_file).unwrap(), PAYLOAD);
    assert!(
        o.stderr
            .contains("tenant: challenge_expired: injected expiry; asking again"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("(round 2)"), "{}", o.stderr);
    // The verifier, which answered, was not asked again; the tenant twice; one release each.
    assert_eq!(
        (
            attests_of(&server, "verifier"),
            attests_of(&server, "tenant")
        ),
        (1, 2)
    );
    assert_eq!(
        (server.releases("verifier"), server.releases("tenant")),
        (1, 1)
    );
}

#[test]
fn rounds_are_bounded() {
    let Some(env) = Env::new() else { return };
    let faults = Faults {
        expire_attest: Some((Role::Tenant, 100)),
        ..Faults::default()
    };
    let server = MockServer::start(&agent_id_of(&env.sw), PAYLOAD, faults);
    let o = env.run(&server.base, "", "");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(!env.key_file.exists());
    assert_eq!(attests_of(&server, "tenant"), 3);
    assert_eq!(server.releases("tenant"), 0);
}
