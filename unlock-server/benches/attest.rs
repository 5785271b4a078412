//! End-to-end throughput of the unlock server: the real `unlock-server` binary over HTTPS on
//! loopback, driven by simulated agents (`verifier_core::sim`), at 1, 16 and 256 concurrent
//! agents. Each agent does one full boot: register + activate with both roles, a challenge
//! from each, one quote, attest to both, open the halves and decrypt the payload. Every boot
//! uses a fresh TLS connection (a new client per boot), as a real initrd agent does.
//!
//! Baselines measured in the same run: a bare TLS handshake plus `GET /healthz` on a fresh
//! connection, the verifier-core cost of one validation and of the server's unavoidable
//! crypto per boot, and the simulated agent's own crypto (the load generator shares the
//! machine's cores with the server).
//!
//! `cargo bench -p unlock-server --bench attest`. Set `UNLOCK_BENCH_SCALE=0.1` for a quick
//! smoke run. No framework: timed runs and percentiles.

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use verifier_core::evidence::{self, Expected, Submitted};
use verifier_core::makecred::make_credential;
use verifier_core::proto::v1::{
    self, path, ActivateResponse, AttestResponse, ChallengeResponse, EnrollmentInfo, Id,
    RegisterResponse, Role, Validate,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::sim::{enroll_requests, SimAgent};
use verifier_core::wire::Signature;

/// Concurrency levels and the boots (= agents) run at each.
const LEVELS: [(usize, usize); 3] = [(1, 200), (16, 400), (256, 768)];
/// Fresh-connection `GET /healthz` requests per level.
const HEALTHZ: [usize; 3] = [300, 1500, 1500];
const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef (a 64-byte LUKS key file!!!!!)";
const ROLES: [Role; 2] = [Role::Verifier, Role::Tenant];

// The server's crypto floor, shared with the storm bench.
#[path = "storm/floor.rs"]
mod floor;

use floor::ops_per_sec;

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
            // Request logs at info cost CPU the bench would attribute to the protocol.
            .env("UNLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting unlock-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line from unlock-server: {line:?}; log: {}",
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                )
            })
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
            // The self-signed certificate names localhost, not the IP.
            base: format!("https://localhost:{}", addr.rsplit(':').next().unwrap()),
            cert_der,
            token,
            _dir: dir,
        }
    }

    /// A new HTTPS client trusting only the server's certificate: a new connection pool,
    /// so its first request makes a fresh TLS handshake.
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
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// CPU seconds (user + system) the server process has used.
    fn cpu_secs(&self, ticks_per_sec: f64) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f[11].parse().unwrap();
        let stime: f64 = f[12].parse().unwrap();
        (utime + stime) / ticks_per_sec
    }
}

fn post<Req: Serialize + Validate, Resp: DeserializeOwned + Validate>(
    client: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    req: &Req,
) -> Result<Resp, String> {
    let body = v1::encode(req).map_err(|e| e.to_string())?;
    let mut r = client.post(url).content_type("application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = r.send(&body[..]).map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    v1::decode(&bytes).map_err(|e| format!("{url}: {e}"))
}

fn url(server: &Server, role: Role, p: &str) -> String {
    format!("{}/{}{p}", server.base, role.as_str())
}

/// One full boot of `agent` over a fresh connection.
fn boot(server: &Server, agent: &mut SimAgent) -> Result<(), String> {
    let client = server.client();
    let e = |e: verifier_core::sim::SimError| e.to_string();
    let reg_req = agent.register_request();
    for role in ROLES {
        let reg: RegisterResponse =
            post(&client, &url(server, role, path::REGISTER), None, &reg_req)?;
        let act = agent.activate_request(&reg).map_err(e)?;
        let ok: ActivateResponse = post(&client, &url(server, role, path::ACTIVATE), None, &act)?;
        agent.check_activation(&ok).map_err(e)?;
    }
    let ch_req = agent.challenge_request();
    let mut challenges: Vec<ChallengeResponse> = Vec::with_capacity(2);
    for role in ROLES {
        challenges.push(post(
            &client,
            &url(server, role, path::CHALLENGE),
            None,
            &ch_req,
        )?);
    }
    let reqs = agent.attest_requests(&challenges).map_err(e)?;
    let mut answers: Vec<AttestResponse> = Vec::with_capacity(2);
    for (role, req) in ROLES.iter().zip(&reqs) {
        answers.push(post(&client, &url(server, *role, path::ATTEST), None, req)?);
    }
    let payload = agent.finish(&answers).map_err(e)?;
    if payload.as_slice() != PAYLOAD {
        return Err("payload differs".into());
    }
    agent.extend_release_pcr().map_err(e)
}

/// Runs `items` jobs on `concurrency` threads; wall time, each job's latency, failures.
fn run_level<T: Send>(
    concurrency: usize,
    items: Vec<T>,
    job: impl Fn(&mut T) -> Result<(), String> + Sync,
) -> (Duration, Vec<Duration>, Vec<String>) {
    let items: Vec<Mutex<T>> = items.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(items.len()));
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let mut item = item.lock().unwrap();
                let t = Instant::now();
                let r = job(&mut item);
                let took = t.elapsed();
                match r {
                    Ok(()) => latencies.lock().unwrap().push(took),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            });
        }
    });
    let wall = start.elapsed();
    let mut lat = latencies.into_inner().unwrap();
    lat.sort();
    (wall, lat, failures.into_inner().unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// In-process costs: one role's evidence validation, the server's asymmetric crypto for a
/// whole boot (both roles), and the simulated agent's own crypto for a boot.
fn crypto_baselines() -> (f64, f64, f64) {
    let mut agent = SimAgent::new().unwrap();
    let challenges = floor::challenges();
    let reqs = agent.attest_requests(&challenges).unwrap();
    let req = &reqs[0];
    let nonce = challenges[0].nonce().unwrap();
    let ak = agent.ak().ak().clone();
    let validate = || {
        // What the role does with the body: decode, then validate.
        let sig = Signature::parse(req.signature.as_bytes()).unwrap();
        let pcrs = req.pcr_values().unwrap();
        let proof = req.inclusion.to_merkle().unwrap();
        let nk = req.nk_pub.to_keysplit().unwrap();
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
    };
    let validate_rate = ops_per_sec(validate);

    let server_boot = floor::crypto_floor(true);

    let ek = agent.tpm().ek_public().clone();
    let ak_name = agent.ak().ak().name().to_vec();
    let regs: Vec<RegisterResponse> = ROLES
        .iter()
        .map(|_| {
            let made = make_credential(&ek, &ak_name, &[7; 32]).unwrap();
            RegisterResponse {
                registration_id: Id::try_from("r".to_owned()).unwrap(),
                credential_blob: Base64Bytes::from(&made.credential_blob[2..]),
                encrypted_secret: Base64Bytes::from(&made.encrypted_secret[2..]),
            }
        })
        .collect();
    let agent_boot = ops_per_sec(|| {
        for r in &regs {
            agent.activate_request(r).unwrap();
        }
        agent.attest_requests(&challenges).unwrap();
    });
    (validate_rate, server_boot, agent_boot)
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
    let scale: f64 = std::env::var("UNLOCK_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let scaled = |n: usize| ((n as f64 * scale).ceil() as usize).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks = clock_ticks();

    println!("attest bench: starting unlock-server (HTTPS, self-signed, --allow-ek-without-cert)");
    let server = Server::start();
    let admin = server.client();

    let total: usize = LEVELS.iter().map(|&(_, n)| scaled(n)).sum::<usize>() + 4;
    println!("attest bench: enrolling {total} simulated agents through the admin API");
    let t = Instant::now();
    let mut agents: Vec<SimAgent> = Vec::with_capacity(total);
    let policy = SimAgent::new().unwrap().learn_policy();
    for _ in 0..total {
        let agent = SimAgent::new().unwrap();
        let reqs = enroll_requests(
            &agent.agent_id(),
            agent.tpm().ek_pub_bytes(),
            &policy,
            PAYLOAD,
            1,
        )
        .unwrap();
        for (role, req) in &reqs {
            let _: EnrollmentInfo = post(
                &admin,
                &url(&server, *role, v1::admin_path::ENROLLMENTS),
                Some(&server.token),
                req,
            )
            .unwrap();
        }
        agents.push(agent);
    }
    println!(
        "attest bench: enrolled in {:.1} s ({:.0} enrollments/s, one keep-alive connection)",
        t.elapsed().as_secs_f64(),
        (2 * total) as f64 / t.elapsed().as_secs_f64()
    );

    // Warm-up: first connections, SQLite pages, the blocking pool.
    let warm: Vec<SimAgent> = agents.drain(..4).collect();
    let (_, _, failed) = run_level(4, warm, |a| boot(&server, a));
    assert!(failed.is_empty(), "warm-up boots failed: {failed:?}");

    let mut rows = Vec::new();
    for (&(concurrency, n), &h) in LEVELS.iter().zip(&HEALTHZ) {
        let level: Vec<SimAgent> = agents.drain(..scaled(n)).collect();
        let cpu0 = server.cpu_secs(ticks);
        let (wall, lat, failed) = run_level(concurrency, level, |a| boot(&server, a));
        let cpu = server.cpu_secs(ticks) - cpu0;
        assert!(
            failed.is_empty(),
            "{} of {} boots failed at concurrency {concurrency}; first: {}",
            failed.len(),
            scaled(n),
            failed[0]
        );
        let done = lat.len();
        println!(
            "  {concurrency:>3} concurrent: {done} boots in {:.2} s",
            wall.as_secs_f64()
        );
        let hn = scaled(h);
        let (hwall, hlat, hfailed) = run_level(concurrency, vec![(); hn], |_| {
            let resp = server
                .client()
                .get(format!("{}/healthz", server.base))
                .call()
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(resp.status().to_string())
            }
        });
        assert!(hfailed.is_empty(), "healthz failed: {hfailed:?}");
        rows.push([
            concurrency.to_string(),
            done.to_string(),
            format!("{:.0}/s", done as f64 / wall.as_secs_f64()),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            format!("{:.2} ms", cpu * 1e3 / done as f64),
            format!("{:.0}/s", hlat.len() as f64 / hwall.as_secs_f64()),
            ms(percentile(&hlat, 0.5)),
        ]);
    }

    println!("attest bench: in-process baselines (one thread)");
    let (validate, server_boot, agent_boot) = crypto_baselines();

    let header = [
        "agents",
        "boots",
        "full boots/s",
        "p50",
        "p99",
        "server CPU/boot",
        "TLS+healthz/s",
        "healthz p50",
    ];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(width) {
            s.push_str(&format!(" {c:>w$} |"));
        }
        println!("{s}");
    };
    println!();
    println!(
        "Full attestation = register + activate (both roles) + challenge (both) + one quote + \
         attest (both) + open halves + decrypt payload; new TLS connection per boot, 8 requests."
    );
    println!(
        "{cores} cores shared by the server and the simulated agents (client crypto included)."
    );
    println!();
    line(&header);
    line(&width.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    println!();
    println!("Baselines (single thread, in process):");
    println!(
        "  evidence::validate, one role (decode fields, ECDSA P-256 quote, Merkle, PCR digest): {validate:.0}/s ({:.0} us)",
        1e6 / validate
    );
    println!(
        "  server crypto floor per boot, both roles (MakeCredential ECC + validate + unwrap + HPKE seal, x2): {server_boot:.0} boots/s ({:.0} us)",
        1e6 / server_boot
    );
    println!(
        "  simulated agent crypto per boot (2x ActivateCredential + NK + quote signature): {agent_boot:.0} boots/s ({:.0} us)",
        1e6 / agent_boot
    );
    if let Some(best) = rows
        .iter()
        .filter_map(|r| r[5].trim_end_matches(" ms").parse::<f64>().ok())
        .reduce(f64::min)
    {
        println!(
            "  server CPU per boot / crypto floor: {:.1}x (the rest: TLS handshake, HTTP, JSON, SQLite commits, logging)",
            best * 1e3 / (1e6 / server_boot)
        );
    }
    println!();
}
