//! Provider mode throughput: `cargo bench -p initrd-agent --bench provider`.
//!
//! Two providers, each on its own swtpm as the host TPM, in this process: one batching
//! (window 50 ms, max batch 1000) and one quoting once per request (max batch 1, the same
//! engine and HTTP server). For 1, 10, 100 and 1000 concurrent requesters (each a thread with
//! a keep-alive connection, posting fresh nonces in a closed loop) it prints quotes taken,
//! requests answered per second, p50/p99 latency, the bound window + 2 quote times (the
//! quote time measured in this run) and the CPU per request of the requesters, the
//! provider's threads and swtpm; then the batched/unbatched ratio at 1000. Then the same
//! with a simulated hardware TPM (20 ms slept per quote).
//!
//! The requesters speak HTTP/1.1 with a few lines on `std::net` instead of ureq: ureq's
//! per-request work cost as much CPU as the provider's on the same two cores, which the
//! requesters (other machines in reality) would not take from the provider. Every answer is
//! decoded and verified with `validate_host_quote` (signature, binding to the requester's
//! own nonce through its proof, PCRs) after the timed part; one wrong answer fails the bench.
//! `PROVIDER_BENCH_CPU=1` prints the CPU per thread name for each row.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use initrd_agent::provider::{
    parse_selection, start, BatchConfig, Batcher, HostQuote, HostQuoter, ProviderConfig, Running,
    Service, TpmQuoter,
};
use initrd_agent::tpm::EkKind;
use verifier_core::proto::v1::{
    self, HostQuoteRequest, HostQuoteResponse, HOST_AK_PATH, HOST_QUOTE_PATH,
};
use verifier_core::provider::{validate_host_quote, HostAnswer, HostTrust};
use verifier_core::quote::AkPublic;
use verifier_core::wire::{HashAlg, Public, Signature};

const WINDOW: Duration = Duration::from_millis(50);

/// A provider on `tpm`; each quote additionally takes `extra` (to stand in for a hardware
/// TPM, whose quotes take 200-700 ms against swtpm's few ms).
fn provider(tpm: &common::Swtpm, batch: BatchConfig, extra: Duration) -> Running {
    if extra.is_zero() {
        return start(&ProviderConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch,
            max_connections: 8192,
            tcti: tpm.tcti(),
            ek: EkKind::EccP256,
            selection: parse_selection("sha256:0-7").unwrap(),
            event_log: None,
        })
        .unwrap();
    }
    let tcti = tpm.tcti();
    let batcher = Batcher::spawn(batch, move || {
        TpmQuoter::open(
            &tcti,
            EkKind::EccP256,
            parse_selection("sha256:0-7").unwrap(),
        )
        .map(|inner| Slow { inner, extra })
    })
    .unwrap();
    let name = Public::parse(batcher.ak_public()).unwrap().name();
    let service = Arc::new(Service::new(batcher, &name, None, 8192));
    let addr = service
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap();
    Running { addr, service }
}

struct Slow {
    inner: TpmQuoter,
    extra: Duration,
}

impl HostQuoter for Slow {
    type Error = initrd_agent::tpm::TpmError;
    fn quote(&mut self, root: &[u8; 32]) -> Result<HostQuote, Self::Error> {
        std::thread::sleep(self.extra);
        self.inner.quote(root)
    }
    fn ak_public(&self) -> Vec<u8> {
        self.inner.ak_public()
    }
}

/// A requester's keep-alive connection: a plain HTTP/1.1 client on `std::net` (ureq's
/// per-request work cost about as much CPU as the provider's, on the same two cores).
struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads one response: status and body.
    fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        self.stream.write_all(request).unwrap();
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf).unwrap() {
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                let status = resp.code.unwrap();
                if self.buf.len() >= head + len {
                    assert_eq!(self.buf.len(), head + len, "one response per request");
                    return (status, self.buf[head..].to_vec());
                }
            }
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "provider closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn post_request(body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {HOST_QUOTE_PATH} HTTP/1.1\r\nHost: provider\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

struct Outcome {
    /// CPU (ns) per thread kind during the timed part: requesters, provider, swtpm.
    cpu: [u64; 3],
    requests: usize,
    wall: Duration,
    quotes: u64,
    p50: Duration,
    p99: Duration,
}

/// `c` requesters, `r` requests each; returns the figures and verifies every answer.
fn load(p: &Running, ak: &AkPublic, c: usize, r: usize, salt: u64) -> Outcome {
    let addr = p.addr;
    let get_ak = format!("GET {HOST_AK_PATH} HTTP/1.1\r\nHost: provider\r\n\r\n").into_bytes();
    let before = p.service.batcher().stats().quotes;
    let barrier = Arc::new(Barrier::new(c + 1));
    let done = Arc::new(Barrier::new(c + 1));
    let release = Arc::new(Barrier::new(c + 1));
    let handles: Vec<_> = (0..c)
        .map(|i| {
            let (get_ak, barrier, done, release) = (
                get_ak.clone(),
                Arc::clone(&barrier),
                Arc::clone(&done),
                Arc::clone(&release),
            );
            std::thread::Builder::new()
                .name("requester".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut out = Vec::with_capacity(r);
                    let mut conn = Conn::open(addr);
                    // Open the keep-alive connection first, as a verifier pool would hold
                    // one: the figures are of the quote exchange, not of TCP setup.
                    assert_eq!(conn.call(&get_ak).0, 200);
                    barrier.wait();
                    for k in 0..r {
                        let seed = format!("{salt} {i} {k}");
                        let nonce = HashAlg::Sha256.hash(seed.as_bytes());
                        let nonce: [u8; 32] = nonce.as_bytes().try_into().unwrap();
                        let body = v1::encode(&HostQuoteRequest {
                            nonce: nonce.as_slice().into(),
                        })
                        .unwrap();
                        let req = post_request(&body);
                        let t = Instant::now();
                        let (status, bytes) = conn.call(&req);
                        let took = t.elapsed();
                        assert_eq!(status, 200);
                        out.push((nonce, bytes, took));
                    }
                    done.wait();
                    release.wait();
                    out
                })
                .unwrap()
        })
        .collect();
    let cpu0 = cpu::snapshot();
    barrier.wait();
    let t0 = Instant::now();
    done.wait();
    let wall = t0.elapsed();
    let cpu1 = cpu::snapshot();
    release.wait();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    if std::env::var_os("PROVIDER_BENCH_CPU").is_some() {
        println!("  cpu c={c}: {}", cpu::diff(&cpu0, &cpu1));
    }
    let cpu = cpu::split(&cpu0, &cpu1);
    let quotes = p.service.batcher().stats().quotes - before;

    for (nonce, bytes, _) in &results {
        let resp: HostQuoteResponse = v1::decode(bytes).unwrap();
        let sig = Signature::parse(resp.signature.as_bytes()).unwrap();
        validate_host_quote(
            HostTrust { ak, nonce },
            HostAnswer {
                attest: resp.quote.as_bytes(),
                signature: &sig,
                pcrs: &resp.pcr_values().unwrap(),
                proof: &resp.inclusion.to_merkle().unwrap(),
                event_log: None,
            },
        )
        .unwrap();
    }
    let mut lat: Vec<Duration> = results.iter().map(|(_, _, l)| *l).collect();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Outcome {
        cpu,
        requests: results.len(),
        wall,
        quotes,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// The engine alone (no HTTP, no JSON): `c` threads calling `submit` directly, to separate
/// batching latency from this machine's HTTP cost. Every answer is verified.
fn engine_load(p: &Running, ak: &AkPublic, c: usize, r: usize, salt: u64) -> Outcome {
    let before = p.service.batcher().stats().quotes;
    let barrier = Arc::new(Barrier::new(c + 1));
    let handles: Vec<_> = (0..c)
        .map(|i| {
            let (service, barrier) = (Arc::clone(&p.service), Arc::clone(&barrier));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    (0..r)
                        .map(|k| {
                            let seed = format!("engine {salt} {i} {k}");
                            let nonce: [u8; 32] = HashAlg::Sha256
                                .hash(seed.as_bytes())
                                .as_bytes()
                                .try_into()
                                .unwrap();
                            let t = Instant::now();
                            let a = service.batcher().submit(nonce).unwrap();
                            (nonce, a, t.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = t0.elapsed();
    let quotes = p.service.batcher().stats().quotes - before;
    for (nonce, a, _) in &results {
        let q = &a.quote.quote;
        validate_host_quote(
            HostTrust { ak, nonce },
            HostAnswer {
                attest: &q.attest,
                signature: &Signature::parse(&q.signature).unwrap(),
                pcrs: &q.pcrs,
                proof: &a.proof,
                event_log: None,
            },
        )
        .unwrap();
    }
    let mut lat: Vec<Duration> = results.iter().map(|(_, _, l)| *l).collect();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Outcome {
        cpu: [0; 3],
        requests: results.len(),
        wall,
        quotes,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

mod cpu {
    //! CPU time per thread name (from /proc/self/task/*/schedstat, in ns) and of swtpm.
    use std::collections::BTreeMap;
    pub type Snap = BTreeMap<String, u64>;
    fn comm(stat: &str) -> Option<(String, u32)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        Some((stat[open + 1..close].to_owned(), f[1].parse().ok()?))
    }
    fn ns(dir: &std::path::Path) -> Option<u64> {
        std::fs::read_to_string(dir.join("schedstat"))
            .ok()?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }
    pub fn snapshot() -> Snap {
        let mut m = Snap::new();
        let me = std::process::id();
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            if let (Ok(s), Some(t)) = (
                std::fs::read_to_string(e.path().join("stat")),
                ns(&e.path()),
            ) {
                if let Some((c, _)) = comm(&s) {
                    *m.entry(c).or_default() += t;
                }
            }
        }
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("stat")) {
                if let (Some((c, ppid)), Some(t)) = (comm(&s), ns(&e.path())) {
                    if ppid == me {
                        *m.entry(c).or_default() += t;
                    }
                }
            }
        }
        m
    }
    /// CPU ns of the requesters, the provider's threads and swtpm between `a` and `b`.
    pub fn split(a: &Snap, b: &Snap) -> [u64; 3] {
        let d = |pred: &dyn Fn(&str) -> bool| -> u64 {
            b.iter()
                .filter(|(k, _)| pred(k))
                .map(|(k, v)| v.saturating_sub(a.get(k).copied().unwrap_or(0)))
                .sum()
        };
        [
            d(&|k| k == "requester"),
            d(&|k| matches!(k, "provider-conn" | "provider-quoter" | "provider-accept")),
            d(&|k| k == "swtpm"),
        ]
    }

    pub fn diff(a: &Snap, b: &Snap) -> String {
        let mut out = String::new();
        for (k, v) in b {
            let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            if d > 0 {
                out += &format!("{k} {:.1} ms  ", d as f64 / 1e6);
            }
        }
        out
    }
}

fn ak_of(p: &Running) -> AkPublic {
    AkPublic::try_from(Public::parse(p.service.batcher().ak_public()).unwrap()).unwrap()
}

fn rate(o: &Outcome) -> f64 {
    o.requests as f64 / o.wall.as_secs_f64()
}

fn print(mode: &str, c: usize, o: &Outcome, bound: Duration) {
    let per = |ns: u64| ns as f64 / 1e3 / o.requests as f64;
    println!(
        "{mode:<9} {c:>5} {:>8} {:>7} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>7.1} {:>7.1}",
        o.requests,
        o.quotes,
        rate(o),
        o.p50.as_secs_f64() * 1e3,
        o.p99.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3,
        per(o.cpu[0]),
        per(o.cpu[1]),
        per(o.cpu[2]),
    );
}

fn main() {
    if common::skip() {
        return;
    }
    common::quiet_tss();
    // swtpm as it is, then with 20 ms added per quote (still 10x faster than hardware).
    scenario(
        Duration::ZERO,
        &[(1, 20, 20), (10, 20, 10), (100, 10, 2), (1000, 5, 1)],
    );
    scenario(
        Duration::from_millis(20),
        &[(1, 10, 10), (100, 5, 1), (1000, 3, 1)],
    );
}

fn scenario(extra: Duration, plan: &[(usize, usize, usize)]) {
    let (tpm_b, tpm_u) = (common::Swtpm::start(), common::Swtpm::start());
    let batched = provider(
        &tpm_b,
        BatchConfig {
            window: WINDOW,
            max_batch: 1000,
            max_pending: 100_000,
        },
        extra,
    );
    let unbatched = provider(&tpm_u, BatchConfig::unbatched(), extra);
    let (ak_b, ak_u) = (ak_of(&batched), ak_of(&unbatched));

    // One quote's time in this run (engine alone, one requester: the TPM round trip, the
    // quoter's own check of the quote, tree and hand-over), for the latency bound.
    let quote_time = engine_load(&unbatched, &ak_u, 1, 20, 0).p50;
    let bound = WINDOW + 2 * quote_time;

    println!();
    println!(
        "provider bench: {}, ECDSA P-256 AK, PCRs sha256:0-7, window {} ms, max batch 1000; \
         one quote {:.1} ms (measured), bound = window + 2 quotes = {:.1} ms; load {}",
        if extra.is_zero() {
            "swtpm host TPM".to_owned()
        } else {
            format!(
                "SIMULATED hardware TPM latency: swtpm + {} ms slept per quote",
                extra.as_millis()
            )
        },
        WINDOW.as_millis(),
        quote_time.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "{:<9} {:>5} {:>8} {:>7} {:>9} {:>8} {:>8} {:>8} {:>23}",
        "mode",
        "reqrs",
        "requests",
        "quotes",
        "req/s",
        "p50 ms",
        "p99 ms",
        "bound",
        "CPU us/req: reqr prov swtpm"
    );
    let mut at_1000 = None;
    for (i, &(c, rb, ru)) in plan.iter().enumerate() {
        let b = load(&batched, &ak_b, c, rb, 1000 + i as u64);
        print("batched", c, &b, bound);
        let u = load(&unbatched, &ak_u, c, ru, 2000 + i as u64);
        print("unbatched", c, &u, bound);
        if c == 1000 {
            at_1000 = Some((b, u));
        }
    }
    let e = engine_load(&batched, &ak_b, 1000, 3, 3000);
    print("engine", 1000, &e, bound);
    let (b, u) = at_1000.unwrap();
    println!(
        "at 1000 requesters: batched/unbatched = {:.1}x requests/s (goal >= 50x), {:.0} requests \
         per quote; batched p99 {:.1} ms vs bound {:.1} ms (goal: under); engine alone (no \
         HTTP) p99 {:.1} ms",
        rate(&b) / rate(&u),
        b.requests as f64 / b.quotes.max(1) as f64,
        b.p99.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3,
        e.p99.as_secs_f64() * 1e3,
    );
}
