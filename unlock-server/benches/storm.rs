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
//! In the same run, the same storm shape (one thread per client, one barrier) drives N
//! `clevis decrypt` style key recoveries against Debian's Tang (`storm/tang.rs`), and the
//! bench prints our full boots/s as a ratio to Tang's recoveries/s. Tang needs the `tang`,
//! `jose` and `socat` packages (scripts/install-deps.sh); `UNLOCK_STORM_TANG=0` skips it.
//! The Tang clients do no client-side crypto while our agents do theirs on the same cores,
//! so the ratio leans in Tang's favour.
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

#[path = "storm/tang.rs"]
mod tang;

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
        let f = proc_stat(self.child.id());
        let utime: f64 = f[11].parse().unwrap();
        let stime: f64 = f[12].parse().unwrap();
        (utime + stime) / ticks_per_sec
    }

    /// The server's peak resident memory (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn url(&self, role: Role, p: &str) -> String {
        format!("{}/{}{p}", self.base, role.as_str())
    }
}

/// The fields of /proc/<pid>/stat after the command name: `[0]` is the state, `[11]`
/// utime, `[12]` stime, `[13]` cutime, `[14]` cstime.
fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
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

/// Runs `op` with retries on transport failures (whole operation, backoff capped at 1 s,
/// like the real agent); the time from the start signal to success and the retries needed.
fn with_retries(
    start: Instant,
    mut op: impl FnMut() -> Result<(), Failure>,
) -> Result<(Duration, u32), String> {
    let mut backoff = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        match op() {
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

/// What one storm measured.
struct Outcome {
    /// Time from the start signal to each success, sorted.
    lat: Vec<Duration>,
    /// Successes that needed a retry.
    retried: usize,
    failures: Vec<String>,
    /// Server CPU seconds over the storm.
    cpu: f64,
}

impl Outcome {
    fn last(&self) -> Duration {
        self.lat.last().copied().unwrap_or_default()
    }

    fn per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.last().as_secs_f64()
    }

    /// Fails the bench on any failed operation: errors never count as throughput.
    fn assert_ok(&self, n: usize, what: &str) {
        assert!(
            self.failures.is_empty() && self.lat.len() == n,
            "{} of {n} {what} failed; first: {}",
            self.failures.len(),
            self.failures.first().map_or("?", String::as_str)
        );
    }

    /// `ops`: what was measured, plural; `op`: one of them.
    fn print(&self, n: usize, ops: &str, op: &str) {
        println!("  last one done after: {:.2} s", self.last().as_secs_f64());
        println!("  {ops}/s: {:.0}", self.per_sec());
        println!(
            "  time from the start signal: p50 {:.2} s, p99 {:.2} s",
            percentile(&self.lat, 0.5).as_secs_f64(),
            percentile(&self.lat, 0.99).as_secs_f64()
        );
        println!(
            "  {ops} that needed a retry (connection failed): {}",
            self.retried
        );
        println!(
            "  server CPU per {op}: {:.2} ms ({:.1} s CPU in all)",
            self.cpu * 1e3 / n as f64,
            self.cpu
        );
    }
}

/// One thread per item (small stacks), all released by one barrier: the whole fleet starts
/// within the time it takes the threads to wake. `cpu` is sampled just before the start
/// signal and after every thread has finished.
fn storm<T: Send>(
    items: Vec<T>,
    cpu: impl Fn() -> f64,
    op: impl Fn(&mut T, Instant) -> Result<(Duration, u32), String> + Sync,
) -> Outcome {
    let n = items.len();
    let barrier = Barrier::new(n + 1);
    let results = Mutex::new(Vec::with_capacity(n));
    let failures = Mutex::new(Vec::new());
    let start = Mutex::new(None::<Instant>);
    let cpu0 = std::thread::scope(|s| {
        for mut item in items {
            let (barrier, results, failures, start, op) =
                (&barrier, &results, &failures, &start, &op);
            std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(s, move || {
                    barrier.wait();
                    let t0 = start.lock().unwrap().unwrap();
                    match op(&mut item, t0) {
                        Ok(r) => results.lock().unwrap().push(r),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                })
                .unwrap();
        }
        let cpu0 = cpu();
        *start.lock().unwrap() = Some(Instant::now());
        barrier.wait();
        // The scope joins every thread before returning.
        cpu0
    });
    let results: Vec<(Duration, u32)> = results.into_inner().unwrap();
    let cpu = cpu() - cpu0;
    let mut lat: Vec<Duration> = results.iter().map(|r| r.0).collect();
    lat.sort();
    Outcome {
        lat,
        retried: results.iter().filter(|r| r.1 > 0).count(),
        failures: failures.into_inner().unwrap(),
        cpu,
    }
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
    let ours = storm(
        agents,
        || server.cpu_secs(ticks),
        |agent, t0| with_retries(t0, || boot(&server, agent)),
    );
    ours.assert_ok(n, "boots");
    let peak_mib = server.peak_rss_mib();
    drop(server);
    let floor = crypto_floor();

    let tang = tang_storm(n, ticks);

    println!();
    println!(
        "Boot storm: {n} simulated agents started at once, one replica on SQLite, \
         {cores} cores shared by the server and the agents (client crypto included)."
    );
    ours.print(n, "full boots", "boot");
    println!(
        "  server crypto floor per boot (one thread, same run): {:.2} ms ({floor:.0} boots/s) -> CPU/floor {:.1}x",
        1e3 / floor,
        ours.cpu * floor / n as f64
    );
    println!("  server peak memory (VmHWM): {peak_mib:.0} MiB");
    match tang {
        Some(tang) => {
            println!(
                "Tang (Debian tangd, one process per connection via socat), same run: {n} \
                 clevis-decrypt style key recoveries started at once, no attestation."
            );
            tang.print(n, "recoveries", "recovery");
            println!(
                "  ratio ours/Tang: throughput {:.3} (full boots/s / recoveries/s), \
                 server CPU per operation {:.2}x",
                ours.per_sec() / tang.per_sec(),
                ours.cpu / tang.cpu.max(f64::MIN_POSITIVE)
            );
        }
        None => println!("  Tang comparison skipped (UNLOCK_STORM_TANG=0)."),
    }
    println!();
}

/// The same storm shape against Tang, unless `UNLOCK_STORM_TANG=0`.
fn tang_storm(n: usize, ticks: f64) -> Option<Outcome> {
    if std::env::var("UNLOCK_STORM_TANG").is_ok_and(|v| v == "0") {
        return None;
    }
    println!("storm bench: starting Tang (tangd behind socat) and checking its answers");
    let tang = tang::Tang::start();
    tang.check();
    tang.wait_idle();
    println!("storm bench: {n} Tang key recoveries start at once");
    let out = storm(
        (0..n).collect(),
        // A tangd's CPU is counted once socat has reaped it, which may follow its answer.
        || {
            tang.wait_idle();
            tang.cpu_secs(ticks)
        },
        |i, t0| with_retries(t0, || tang.recover(*i)),
    );
    out.assert_ok(n, "Tang recoveries");
    Some(out)
}
