//! Boot storm: N simulated agents (`UNLOCK_STORM_N`, default 2000) all start a full boot at
//! the same instant against one unlock-server replica on SQLite (the real binary, HTTPS on
//! loopback), as after a power cut of a whole rack. Reports the time until the last agent is
//! unlocked, full boots/s, per-boot p50/p99, and the server's CPU per boot (from
//! /proc/<pid>/stat) next to the server's crypto floor per boot measured in the same run.
//!
//! A boot is what `benches/attest.rs` does (register + activate with both roles, a challenge
//! from each, one quote, attest to both, open the halves, decrypt), on a fresh TLS
//! connection. Like the real agent, a boot whose connection fails is retried (whole boot,
//! backoff capped at 1 s); refusals are not retried and fail the bench.
//!
//! No comparison with Tang: tang is not installed on the machine this was written on.
//!
//! `cargo bench -p unlock-server --bench storm`; `UNLOCK_STORM_N=300` for a quick run.

// Bench code: a failed unwrap is a broken benchmark setup, which should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use verifier_core::evidence::{self, Expected, Submitted};
use verifier_core::keysplit::{seal_share, MasterKey, Share};
use verifier_core::makecred::make_credential;
use verifier_core::proto::v1::{
    self, path, ActivateResponse, AttestResponse, ChallengeResponse, EnrollmentInfo, Id,
    RegisterResponse, Role, Validate,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::sim::{enroll_requests, SimAgent};
use verifier_core::wire::{HashAlg, Signature};

const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef (a 64-byte LUKS key file!!!!!)";
const ROLES: [Role; 2] = [Role::Verifier, Role::Tenant];
/// Whole-boot attempts per agent (connection failures only).
const ATTEMPTS: u32 = 8;

/// The server under test, killed on drop.
struct Server {
    child: Child,
    base: String,
    cert_der: Vec<u8>,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_unlock-server"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--allow-ek-without-cert"])
            .arg("--state-dir")
            .arg(&state)
            .env("UNLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting unlock-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .unwrap_or_else(|| panic!("unexpected first line from unlock-server: {line:?}"))
            .to_owned();
        let cert_pem = std::fs::read(state.join("tls.crt")).unwrap();
        let cert_der = ureq::tls::Certificate::from_pem(&cert_pem)
            .unwrap()
            .der()
            .to_vec();
        let token = std::fs::read_to_string(state.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child,
            base: format!("https://localhost:{port}"),
            cert_der,
            token,
            _dir: dir,
        }
    }

    /// A new client: its first request makes a fresh TLS handshake.
    fn client(&self) -> ureq::Agent {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[
                ureq::tls::Certificate::from_der(&self.cert_der).to_owned(),
            ]))
            .unversioned_rustls_crypto_provider(provider)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    }

    /// CPU seconds (user + system) the server process has used.
    fn cpu_secs(&self, ticks_per_sec: f64) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f[11].parse().unwrap();
        let stime: f64 = f[12].parse().unwrap();
        (utime + stime) / ticks_per_sec
    }

    fn url(&self, role: Role, p: &str) -> String {
        format!("{}/{}{p}", self.base, role.as_str())
    }
}

/// A failed step: transport (retried, like the real agent) or an answer (fatal).
enum Failure {
    Transport(String),
    Answer(String),
}

fn post<Req: Serialize + Validate, Resp: DeserializeOwned + Validate>(
    client: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    req: &Req,
) -> Result<Resp, Failure> {
    let body = v1::encode(req).map_err(|e| Failure::Answer(e.to_string()))?;
    let mut r = client.post(url).content_type("application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = r
        .send(&body[..])
        .map_err(|e| Failure::Transport(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .read_to_vec()
        .map_err(|e| Failure::Transport(format!("{url}: {e}")))?;
    if status.is_server_error() {
        return Err(Failure::Transport(format!("{url}: {status}")));
    }
    if !status.is_success() {
        return Err(Failure::Answer(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    v1::decode(&bytes).map_err(|e| Failure::Answer(format!("{url}: {e}")))
}

/// One full boot over a fresh connection.
fn boot(server: &Server, agent: &mut SimAgent) -> Result<(), Failure> {
    let client = server.client();
    let e = |e: verifier_core::sim::SimError| Failure::Answer(e.to_string());
    let reg_req = agent.register_request();
    for role in ROLES {
        let reg: RegisterResponse =
            post(&client, &server.url(role, path::REGISTER), None, &reg_req)?;
        let act = agent.activate_request(&reg).map_err(e)?;
        let ok: ActivateResponse = post(&client, &server.url(role, path::ACTIVATE), None, &act)?;
        agent.check_activation(&ok).map_err(e)?;
    }
    let ch_req = agent.challenge_request();
    let mut challenges: Vec<ChallengeResponse> = Vec::with_capacity(2);
    for role in ROLES {
        challenges.push(post(
            &client,
            &server.url(role, path::CHALLENGE),
            None,
            &ch_req,
        )?);
    }
    let reqs = agent.attest_requests(&challenges).map_err(e)?;
    let mut answers: Vec<AttestResponse> = Vec::with_capacity(2);
    for (role, req) in ROLES.iter().zip(&reqs) {
        answers.push(post(&client, &server.url(*role, path::ATTEST), None, req)?);
    }
    let payload = agent.finish(&answers).map_err(e)?;
    if payload.as_slice() != PAYLOAD {
        return Err(Failure::Answer("payload differs".into()));
    }
    agent.extend_release_pcr().map_err(e)
}

/// Boots with retries on transport failures; the time from the start signal to unlocked.
fn boot_with_retries(
    server: &Server,
    agent: &mut SimAgent,
    start: Instant,
) -> Result<(Duration, u32), String> {
    let mut backoff = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        match boot(server, agent) {
            Ok(()) => return Ok((start.elapsed(), attempt - 1)),
            Err(Failure::Answer(e)) => return Err(e),
            Err(Failure::Transport(e)) if attempt == ATTEMPTS => return Err(e),
            Err(Failure::Transport(_)) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    Err("unreachable".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Operations per second of `f` on this thread (median of 5 runs).
fn ops_per_sec(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(60) {
            break;
        }
        batch *= 2;
    }
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch * 4 {
                f();
            }
            (batch * 4) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

/// The server's unavoidable crypto for one boot, both roles (MakeCredential, validation,
/// share unwrap, HPKE seal), in boots/s on one thread.
fn crypto_floor() -> f64 {
    let mut agent = SimAgent::new().unwrap();
    let challenges: Vec<ChallengeResponse> = ROLES
        .iter()
        .enumerate()
        .map(|(i, &role)| ChallengeResponse {
            challenge_id: Id::try_from(format!("c{i}")).unwrap(),
            nonce: Base64Bytes::new(vec![i as u8 + 1; 32]),
            pcr_selection: vec![v1::PcrSelection {
                hash: HashAlg::Sha256,
                pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 15],
            }],
            hash_alg: HashAlg::Sha256,
            expires_at: 0,
            role,
        })
        .collect();
    let reqs = agent.attest_requests(&challenges).unwrap();
    let req = &reqs[0];
    let nonce = challenges[0].nonce().unwrap();
    let ak = agent.ak().ak().clone();
    let ek = agent.tpm().ek_public().clone();
    let ak_name = ak.name().to_vec();
    let nk = req.nk_pub.to_keysplit().unwrap();
    let master = MasterKey::generate().unwrap();
    let wrapped = master
        .wrap_share(&Share::from_bytes([9; 32]), b"ctx")
        .unwrap();
    ops_per_sec(|| {
        for role in ROLES {
            make_credential(&ek, &ak_name, &[7; 32]).unwrap();
            let sig = Signature::parse(req.signature.as_bytes()).unwrap();
            let pcrs = req.pcr_values().unwrap();
            let proof = req.inclusion.to_merkle().unwrap();
            evidence::validate(
                Expected {
                    ak: &ak,
                    nonce: &nonce,
                },
                Submitted {
                    attest: req.quote.as_bytes(),
                    signature: &sig,
                    pcrs: &pcrs,
                    nk_pub: nk.as_bytes(),
                    proof: &proof,
                    event_log: None,
                    ima_log: None,
                },
            )
            .unwrap();
            let s = master.unwrap_share(&wrapped, b"ctx").unwrap();
            seal_share(&nk, role.as_str(), b"c0", &s).unwrap();
        }
    })
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() {
    let n: usize = std::env::var("UNLOCK_STORM_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks = clock_ticks();

    println!("storm bench: starting unlock-server (HTTPS, SQLite, one replica)");
    let server = Server::start();
    let admin = server.client();
    println!("storm bench: enrolling {n} simulated agents");
    let policy = SimAgent::new().unwrap().learn_policy();
    let mut agents = Vec::with_capacity(n);
    for _ in 0..n {
        let agent = SimAgent::new().unwrap();
        // A bound above one, so a boot retried after a lost connection is not refused.
        let reqs = enroll_requests(
            &agent.agent_id(),
            agent.tpm().ek_pub_bytes(),
            &policy,
            PAYLOAD,
            8,
        )
        .unwrap();
        for (role, req) in &reqs {
            let _: EnrollmentInfo = post(
                &admin,
                &server.url(*role, v1::admin_path::ENROLLMENTS),
                Some(&server.token),
                req,
            )
            .unwrap_or_else(|_| panic!("enrollment failed"));
        }
        agents.push(agent);
    }

    println!("storm bench: {n} agents start at once");
    let barrier = Barrier::new(n + 1);
    let results = Mutex::new(Vec::with_capacity(n));
    let failures = Mutex::new(Vec::new());
    let start = Mutex::new(None::<Instant>);
    let cpu0 = std::thread::scope(|s| {
        for mut agent in agents {
            let (server, barrier, results, failures, start) =
                (&server, &barrier, &results, &failures, &start);
            std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(s, move || {
                    barrier.wait();
                    let t0 = start.lock().unwrap().unwrap();
                    match boot_with_retries(server, &mut agent, t0) {
                        Ok(r) => results.lock().unwrap().push(r),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                })
                .unwrap();
        }
        let cpu0 = server.cpu_secs(ticks);
        *start.lock().unwrap() = Some(Instant::now());
        barrier.wait();
        // The scope joins every agent before returning.
        cpu0
    });
    let mut results = results.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let cpu = server.cpu_secs(ticks) - cpu0;
    assert!(
        failures.is_empty(),
        "{} of {n} boots failed; first: {}",
        failures.len(),
        failures[0]
    );
    let last = results.iter().map(|r| r.0).max().unwrap_or_default();
    let retried = results.iter().filter(|r| r.1 > 0).count();
    results.sort();
    let lat: Vec<Duration> = results.iter().map(|r| r.0).collect();
    let floor = crypto_floor();

    println!();
    println!(
        "Boot storm: {n} simulated agents started at once, one replica on SQLite, \
         {cores} cores shared by the server and the agents (client crypto included)."
    );
    println!("  last agent unlocked after: {:.2} s", last.as_secs_f64());
    println!("  full boots/s: {:.0}", n as f64 / last.as_secs_f64());
    println!(
        "  time to unlock from the start signal: p50 {:.2} s, p99 {:.2} s",
        percentile(&lat, 0.5).as_secs_f64(),
        percentile(&lat, 0.99).as_secs_f64()
    );
    println!("  boots that needed a retry (connection failed): {retried}");
    println!(
        "  server CPU per boot: {:.2} ms ({:.1} s CPU in all)",
        cpu * 1e3 / n as f64,
        cpu
    );
    println!(
        "  server crypto floor per boot (one thread, same run): {:.2} ms ({floor:.0} boots/s) -> CPU/floor {:.1}x",
        1e3 / floor,
        cpu * floor / n as f64
    );
    println!("  no Tang comparison: tang is not installed here.");
    println!();
}
