//! Harness for end-to-end tests: the real `unlock-server` (HTTPS on 127.0.0.1), the real
//! `unlockctl` and `initrd-agent` binaries, one swtpm per test, and a protocol driver that
//! plays the agent step by step so a test can tamper with exactly one thing in transit.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use initrd_agent::tpm::{Ak, Ek, EkKind, Tpm};
use verifier_core::keysplit::NkPrivate;
use verifier_core::merkle::{quote_extra_data, MerkleTree};
use verifier_core::proto::v1::{
    self, activation_proof, ActivateRequest, ActivateResponse, AgentId, AttestRequest,
    ChallengeRequest, ChallengeResponse, ErrorResponse, InclusionProof, NkPublic, RegisterRequest,
    RegisterResponse,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{HashAlg, PcrSelection};

#[path = "../../../initrd-agent/tests/common/mod.rs"]
pub mod swtpm;

pub mod pg;

pub mod raw;

pub use swtpm::Swtpm;

/// A running unlock-server with its own state directory.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    args: Vec<String>,
    opts: Opts,
}

/// How the server process is started, beyond its flags.
#[derive(Default, Clone)]
pub struct Opts {
    /// `[limits]` and other config-file text (written to `<dir>/config.toml`).
    pub config: Option<String>,
    /// Log at info level into this file (`<dir>/server.log`) instead of errors to stderr.
    pub log_file: bool,
    /// Run under this descriptor limit (soft and hard, via prlimit).
    pub nofile: Option<u64>,
}

impl Server {
    /// Starts the server (both roles, HTTPS with a generated self-signed certificate).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, Opts::default())
    }

    /// Starts the server with a config file, a log file or a descriptor limit.
    pub fn start_with(extra: &[&str], opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server {
            child: None,
            dir,
            url: String::new(),
            args,
            opts,
        };
        s.spawn();
        s
    }

    /// The server's log (with `Opts::log_file`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `host:port` of the listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }

    /// Registrations answered with MakeCredential, both roles together (from `/metrics`).
    pub fn registrations(&self) -> u64 {
        let text = self.metrics();
        ["verifier", "tenant"]
            .iter()
            .map(|r| {
                raw::metric(
                    &text,
                    &format!("unlock_registrations_total{{role=\"{r}\"}}"),
                )
            })
            .sum()
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> String {
        self.http()
            .get(format!("{}/metrics", self.url))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    }

    /// Another replica of `of`: its own process and state directory, but the same master
    /// keys, admin token and TLS identity (what a fleet's replicas share), and `extra` (the
    /// same `--database`).
    pub fn start_replica(of: &Server, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        for f in [
            "verifier.key",
            "tenant.key",
            "admin.token",
            "tls.crt",
            "tls.key",
        ] {
            std::fs::copy(of.state().join(f), dir.path().join("state").join(f)).unwrap();
        }
        let mut s = Server {
            child: None,
            dir,
            url: String::new(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            opts: Opts::default(),
        };
        s.spawn();
        s
    }

    /// The process id (for kill -9 from a test).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let bin = env!("CARGO_BIN_EXE_unlock-server");
        let mut cmd = match self.opts.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        if let Some(text) = &self.opts.config {
            let f = self.dir.path().join("config.toml");
            std::fs::write(&f, text).unwrap();
            cmd.arg("--config").arg(f);
        }
        let stderr = if self.opts.log_file {
            cmd.env("UNLOCK_LOG", "info");
            Stdio::from(std::fs::File::create(self.log_path()).unwrap())
        } else {
            cmd.env("UNLOCK_LOG", "error");
            Stdio::inherit()
        };
        let mut child = cmd
            .arg("--state-dir")
            .arg(self.state())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn unlock-server");
        let line = first_line(&mut child, Duration::from_secs(20), "unlock-server");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        self.url = url;
        self.child = Some(child);
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn ca(&self) -> PathBuf {
        self.state().join("tls.crt")
    }
    pub fn token_file(&self) -> PathBuf {
        self.state().join("admin.token")
    }

    /// kill -9, as a crash or power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts again on the same state (the port changes).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `unlockctl` against this server.
    pub fn unlockctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_unlockctl"))
            .args(args)
            .env("UNLOCK_SERVER", &self.url)
            .env("UNLOCK_CA", self.ca())
            .env("UNLOCK_TOKEN_FILE", self.token_file())
            .output()
            .unwrap()
    }

    /// An HTTPS client trusting this server's certificate.
    pub fn http(&self) -> ureq::Agent {
        unlock_server_http(&self.ca())
    }

    /// The admin view of `agent_id` in both roles (`unlockctl status --json`).
    pub fn status(&self, agent_id: &str) -> serde_json::Value {
        let out = self.unlockctl(&["status", agent_id, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Releases recorded by a role for the session with `reset_count` (0 when none).
    pub fn releases(&self, agent_id: &str, role: &str) -> Vec<(u64, u64, String)> {
        let st = self.status(agent_id);
        st[role]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["reset_count"].as_u64().unwrap(),
                    s["releases"].as_u64().unwrap(),
                    s["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn unlock_server_http(ca: &Path) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let pem = std::fs::read(ca).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// POSTs `body`; returns the status and the body.
pub fn post(http: &ureq::Agent, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let resp = http
        .post(url)
        .content_type("application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_vec().unwrap())
}

/// The error code of a refusal body.
pub fn code(body: &[u8]) -> String {
    let e: ErrorResponse = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not an ErrorResponse: {}", String::from_utf8_lossy(body)));
    serde_json::to_value(e.code)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The first stdout line of `child` (spawned with a piped stdout), which our binaries use
/// to say they are ready (listening, connected); fails the test after `within`.
pub fn first_line(child: &mut Child, within: Duration, what: &str) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what} printed no first line within {within:?}"))
}

/// The shared test data (`UNLOCK_TESTDATA`, else `../shared/testdata` beside the project);
/// a missing directory fails the test loudly rather than skipping it.
pub fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("README.md").is_file(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

/// Set to an `initrd-agent` binary to test that one instead of building the workspace's:
/// `make test` runs the swtpm end-to-end suites again with the static initramfs agent.
pub const AGENT_BIN_VAR: &str = "UNLOCK_AGENT_BIN";

/// The `initrd-agent` binary of this workspace, built (or brought up to date) once per test
/// process in the same target directory and profile, so a stale binary is never tested; or
/// the binary [`AGENT_BIN_VAR`] names.
pub fn agent_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os(AGENT_BIN_VAR) {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.is_file(),
                    "{AGENT_BIN_VAR}={} is not a file",
                    bin.display()
                );
                eprintln!("testing the agent at {}", bin.display());
                return bin;
            }
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let bin = profile_dir.join("initrd-agent");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "initrd-agent",
                "--bin",
                "initrd-agent",
            ])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
            if profile_dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap();
            assert!(status.success(), "building initrd-agent failed");
            assert!(
                bin.is_file(),
                "{} not found after building it",
                bin.display()
            );
            bin
        })
        .clone()
}

/// One machine: its swtpm, and files for the agent (config, empty kernel command line).
pub struct Machine {
    pub tpm: Option<Swtpm>,
    pub dir: tempfile::TempDir,
    pub ek: &'static str,
}

impl Machine {
    pub fn new() -> Self {
        swtpm::quiet_tss();
        Machine {
            tpm: Some(Swtpm::start()),
            dir: tempfile::tempdir().unwrap(),
            ek: "ecc",
        }
    }

    pub fn with_tpm(tpm: Swtpm, ek: &'static str) -> Self {
        swtpm::quiet_tss();
        Machine {
            tpm: Some(tpm),
            dir: tempfile::tempdir().unwrap(),
            ek,
        }
    }

    pub fn tcti(&self) -> String {
        self.tpm.as_ref().unwrap().tcti()
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("run/cryptsetup-keys.d/root.key")
    }

    /// Reboot: a TPM Reset (new resetCount, PCRs cleared).
    pub fn reboot(&mut self) {
        let t = self.tpm.take().unwrap();
        self.tpm = Some(t.restart());
        let _ = std::fs::remove_file(self.key_file());
    }

    pub fn config(&self, server: &Server, event_log: Option<&Path>) -> PathBuf {
        let verifier = format!("{}/verifier", server.url);
        let tenant = format!("{}/tenant", server.url);
        self.config_split(&verifier, &tenant, &server.ca(), event_log)
    }

    /// Agent configuration with explicit role URLs (split-trust deployments).
    pub fn config_split(
        &self,
        verifier: &str,
        tenant: &str,
        ca: &Path,
        event_log: Option<&Path>,
    ) -> PathBuf {
        let missing = self.dir.path().join("missing");
        let cfg = format!(
            "verifier_url = \"{verifier}\"\ntenant_url = \"{tenant}\"\nca_bundle = \"{ca}\"\ntcti = \"{tcti}\"\nek = \"{ek}\"\nkey_file = \"{key}\"\ntimeout_secs = 30\nevent_log = \"{log}\"\nima_log = \"{missing}\"\n",
            ca = ca.display(),
            tcti = self.tcti(),
            ek = self.ek,
            key = self.key_file().display(),
            log = event_log.unwrap_or(&missing).display(),
            missing = missing.display(),
        );
        let p = self.dir.path().join("agent.toml");
        std::fs::write(&p, cfg).unwrap();
        std::fs::write(self.dir.path().join("cmdline"), "").unwrap();
        p
    }

    /// Runs `initrd-agent [args]` (verbose unlock by default) against `server`.
    pub fn agent(&self, server: &Server, event_log: Option<&Path>, args: &[&str]) -> Output {
        let cfg = self.config(server, event_log);
        self.agent_with(&cfg, args)
    }

    /// Runs `initrd-agent --config cfg [args]`.
    pub fn agent_with(&self, cfg: &Path, args: &[&str]) -> Output {
        self.agent_bin_with(&agent_bin(), cfg, args)
    }

    /// Runs the agent binary `bin` with `--config cfg [args]` (benchmarks comparing builds).
    pub fn agent_bin_with(&self, bin: &Path, cfg: &Path, args: &[&str]) -> Output {
        Command::new(bin)
            .arg("--config")
            .arg(cfg)
            .arg("--cmdline-file")
            .arg(self.dir.path().join("cmdline"))
            .args(args)
            .env("TSS2_LOG", "all+NONE")
            .output()
            .unwrap()
    }

    /// `initrd-agent ek --out`: the EK public area file and the agent id.
    pub fn export_ek(&self, server: &Server) -> (PathBuf, String) {
        let out_file = self.dir.path().join("ek.pub");
        let out = self.agent(server, None, &["ek", "--out", out_file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "ek: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ek = std::fs::read(&out_file).unwrap();
        (out_file, AgentId::of_ek(&ek).as_str().to_owned())
    }

    /// Enrolls this machine with `policy` (JSON text); returns agent id and payload.
    pub fn enroll(&self, server: &Server, policy: &str, extra: &[&str]) -> (String, Vec<u8>) {
        let (ek, agent_id) = self.export_ek(server);
        let payload: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let pf = self.dir.path().join("payload");
        std::fs::write(&pf, &payload).unwrap();
        let pol = self.dir.path().join("policy.json");
        std::fs::write(&pol, policy).unwrap();
        let mut args = vec![
            "enroll",
            "--ek-pub",
            ek.to_str().unwrap(),
            "--payload",
            pf.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = server.unlockctl(&args);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (agent_id, payload)
    }

    /// Enrolls this machine under the named policy `name` (already created); returns the
    /// agent id.
    pub fn enroll_named(&self, server: &Server, name: &str) -> String {
        let (ek, agent_id) = self.export_ek(server);
        let pf = self.dir.path().join("payload");
        std::fs::write(&pf, [0x5a; 64]).unwrap();
        let out = server.unlockctl(&[
            "enroll",
            "--ek-pub",
            ek.to_str().unwrap(),
            "--payload",
            pf.to_str().unwrap(),
            "--policy-name",
            name,
        ]);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent_id
    }

    /// A policy pinning sha256 PCRs 0-7 to their current values.
    pub fn policy_now(&self, release_pcr: bool) -> String {
        let mut tpm = Tpm::open(&self.tcti()).unwrap();
        let sel = PcrSelection::new(vec![verifier_core::wire::BankSelection::new(
            HashAlg::Sha256,
            &[0, 1, 2, 3, 4, 5, 6, 7],
        )
        .unwrap()])
        .unwrap();
        let vals = tpm.read_pcrs(&sel).unwrap();
        let rules: Vec<String> = (0..8u8)
            .map(|i| {
                format!(
                    r#"{{"bank":"sha256","index":{i},"allowed":["{}"]}}"#,
                    vals.get(HashAlg::Sha256, i).unwrap()
                )
            })
            .collect();
        format!(
            r#"{{"version":1,"pcrs":[{}]{}}}"#,
            rules.join(","),
            if release_pcr {
                ""
            } else {
                r#","release_pcr":null"#
            }
        )
    }
}

/// The agent's side of protocol v1, step by step, so tests can tamper in transit.
pub struct Driver {
    pub tpm: Tpm,
    pub ek: Ek,
    pub ak: Ak,
    pub agent_id: AgentId,
    pub http: ureq::Agent,
    pub url: String,
}

impl Driver {
    /// Opens the TPM, creates EK and AK, registers and activates with both roles.
    pub fn new(m: &Machine, server: &Server) -> Self {
        let mut d = Self::unregistered(m, server);
        for role in ["verifier", "tenant"] {
            let reg = d.register(role);
            d.activate(role, &reg);
        }
        d
    }

    /// EK and AK, nothing sent yet.
    pub fn unregistered(m: &Machine, server: &Server) -> Self {
        let mut tpm = Tpm::open(&m.tcti()).unwrap();
        let kind = if m.ek == "rsa" {
            EkKind::Rsa2048
        } else {
            EkKind::EccP256
        };
        let ek = tpm.create_ek(kind).unwrap();
        let ak = tpm.create_ak(&ek).unwrap();
        let agent_id = AgentId::of_ek(ek.public());
        Driver {
            tpm,
            ek,
            ak,
            agent_id,
            http: server.http(),
            url: server.url.clone(),
        }
    }

    /// The machine's own AK (derived in the endorsement hierarchy, persistent, pinned by an
    /// earlier agent run), nothing sent yet.
    pub fn registered(m: &Machine, server: &Server) -> Self {
        let mut d = Self::unregistered(m, server);
        let (ak, _) = d.tpm.primary_ak().unwrap();
        let child = std::mem::replace(&mut d.ak, ak);
        d.tpm.flush_ak(child).unwrap();
        d
    }

    /// Unloads the driver's keys (swtpm has three transient slots and no resource manager,
    /// and the agent needs them).
    pub fn release(self) {
        let Driver {
            mut tpm, ek, ak, ..
        } = self;
        tpm.flush_ak(ak).unwrap();
        tpm.flush_ek(ek).unwrap();
    }

    /// Registers with `role`; the raw status and body.
    pub fn try_register(&self, role: &str) -> (u16, Vec<u8>) {
        let req = RegisterRequest {
            ek_pub: Base64Bytes::new(self.ek.public().to_vec()),
            ek_cert: None,
            ek_chain: Vec::new(),
            ak_pub: Base64Bytes::new(self.ak.public().to_vec()),
        };
        post(
            &self.http,
            &self.url(role, v1::path::REGISTER),
            &v1::encode(&req).unwrap(),
        )
    }

    pub fn url(&self, role: &str, path: &str) -> String {
        format!("{}/{role}{path}", self.url)
    }

    pub fn register(&mut self, role: &str) -> RegisterResponse {
        let req = RegisterRequest {
            ek_pub: Base64Bytes::new(self.ek.public().to_vec()),
            ek_cert: None,
            ek_chain: Vec::new(),
            ak_pub: Base64Bytes::new(self.ak.public().to_vec()),
        };
        let (st, body) = post(
            &self.http,
            &self.url(role, v1::path::REGISTER),
            &v1::encode(&req).unwrap(),
        );
        assert_eq!(st, 200, "register: {}", String::from_utf8_lossy(&body));
        v1::decode(&body).unwrap()
    }

    pub fn activate(&mut self, role: &str, reg: &RegisterResponse) {
        let secret = self
            .tpm
            .activate_credential_contents(
                &self.ak,
                &self.ek,
                reg.credential_blob.as_bytes(),
                reg.encrypted_secret.as_bytes(),
            )
            .unwrap();
        let req = ActivateRequest {
            registration_id: reg.registration_id.clone(),
            proof: Base64Bytes::new(activation_proof(&secret, &reg.registration_id).to_vec()),
        };
        let (st, body) = post(
            &self.http,
            &self.url(role, v1::path::ACTIVATE),
            &v1::encode(&req).unwrap(),
        );
        assert_eq!(st, 200, "activate: {}", String::from_utf8_lossy(&body));
        let r: ActivateResponse = v1::decode(&body).unwrap();
        assert_eq!(r.agent_id, self.agent_id);
    }

    /// Asks `role` for a challenge; the raw status and body.
    pub fn try_challenge(&self, role: &str) -> (u16, Vec<u8>) {
        let req = ChallengeRequest {
            agent_id: self.agent_id.clone(),
            ak_name: Base64Bytes::new(self.ak.name().to_vec()),
        };
        post(
            &self.http,
            &self.url(role, v1::path::CHALLENGE),
            &v1::encode(&req).unwrap(),
        )
    }

    pub fn challenge(&self, role: &str) -> ChallengeResponse {
        let (st, body) = self.try_challenge(role);
        assert_eq!(st, 200, "challenge: {}", String::from_utf8_lossy(&body));
        v1::decode(&body).unwrap()
    }

    /// One quote over the challenges' nonces (tree in the given order) and `nk`; one attest
    /// request per challenge.
    pub fn attest_requests(
        &mut self,
        challenges: &[&ChallengeResponse],
        nk: &NkPrivate,
        event_log: Option<&[u8]>,
    ) -> Vec<AttestRequest> {
        let nonces: Vec<[u8; 32]> = challenges.iter().map(|c| c.nonce().unwrap()).collect();
        let tree = MerkleTree::new(&nonces).unwrap();
        let nk_pub = nk.public().as_bytes().to_vec();
        let extra = quote_extra_data(&tree.root(), &nk_pub);
        let sels: Vec<&[v1::PcrSelection]> = challenges
            .iter()
            .map(|c| c.pcr_selection.as_slice())
            .collect();
        let selection = initrd_agent::flow::select::union(&sels).unwrap();
        let q = self
            .tpm
            .quote_with_pcrs(&self.ak, &extra, &selection)
            .unwrap();
        let banks = initrd_agent::flow::select::pcr_banks(&selection, &q.pcrs);
        challenges
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = tree.proof(i).unwrap();
                AttestRequest {
                    challenge_id: c.challenge_id.clone(),
                    quote: Base64Bytes::new(q.quote.attest.clone()),
                    signature: Base64Bytes::new(q.quote.signature.clone()),
                    pcrs: banks.clone(),
                    event_log: event_log.map(|l| Base64Bytes::new(l.to_vec())),
                    ima_log: None,
                    nk_pub: NkPublic::from_keysplit(&nk.public()),
                    inclusion: InclusionProof::from_merkle(&p),
                    answer: None,
                }
            })
            .collect()
    }

    /// POSTs an attest request to `role`.
    pub fn attest(&self, role: &str, req: &AttestRequest) -> (u16, Vec<u8>) {
        post(
            &self.http,
            &self.url(role, v1::path::ATTEST),
            &v1::encode(req).unwrap(),
        )
    }
}

/// A command's stdout then stderr, for assertions and failure messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`text`] of a command that must have succeeded (the failure message is its output).
pub fn ok(o: &std::process::Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "{t}");
    t
}

/// The newest kernel in `/boot` (Debian's are signed by its Secure Boot key); the tests that
/// use it need `linux-image-amd64`, which `scripts/install-deps.sh` installs.
pub fn kernel() -> PathBuf {
    let mut k: Vec<_> = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("/vmlinuz-"))
        .collect();
    k.sort();
    k.pop()
        .expect("no /boot/vmlinuz-*: install linux-image-amd64")
}
