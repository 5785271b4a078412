//! The storm shape shared by our boots and Tang's recoveries: one thread per client released
//! by one barrier, retries on connection failures like the real agent, and what a storm
//! measured (latency from the start signal, retries, server CPU).

use std::process::Command;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use verifier_core::proto::v1::{self, Validate};

/// Whole-operation attempts per client (connection failures and 5xx only).
const ATTEMPTS: u32 = 8;
/// Retry reasons kept for the report.
const REASONS: usize = 3;

/// A failed step: transport or server error (retried, like the real agent) or an answer
/// (fatal).
pub enum Failure {
    Transport(String),
    Answer(String),
}

/// POSTs `req` as JSON; a 5xx is a transport failure (retried), any other non-2xx is fatal.
pub fn post<Req: Serialize + Validate, Resp: DeserializeOwned + Validate>(
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
        return Err(Failure::Transport(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    if !status.is_success() {
        return Err(Failure::Answer(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    v1::decode(&bytes).map_err(|e| Failure::Answer(format!("{url}: {e}")))
}

/// One client's result: time from the start signal to success, and why it was retried.
pub type Done = (Duration, Vec<String>);

/// Runs `op` with retries on transport failures (whole operation, backoff capped at 1 s,
/// like the real agent).
pub fn with_retries(
    start: Instant,
    mut op: impl FnMut() -> Result<(), Failure>,
) -> Result<Done, String> {
    let mut backoff = Duration::from_millis(250);
    let mut retried = Vec::new();
    for attempt in 1..=ATTEMPTS {
        match op() {
            Ok(()) => return Ok((start.elapsed(), retried)),
            Err(Failure::Answer(e)) => return Err(e),
            Err(Failure::Transport(e)) if attempt == ATTEMPTS => return Err(e),
            Err(Failure::Transport(e)) => {
                retried.push(e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    Err("unreachable".into())
}

/// What one storm measured.
pub struct Outcome {
    /// Time from the start signal to each success, sorted.
    pub lat: Vec<Duration>,
    /// Successes that needed a retry.
    pub retried: usize,
    /// A few of the retried errors (5xx bodies, connection errors), for the report.
    pub reasons: Vec<String>,
    pub failures: Vec<String>,
    /// Server CPU seconds over the storm (all processes).
    pub cpu: f64,
}

impl Outcome {
    pub fn last(&self) -> Duration {
        self.lat.last().copied().unwrap_or_default()
    }

    pub fn per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.last().as_secs_f64()
    }

    pub fn p(&self, p: f64) -> Duration {
        percentile(&self.lat, p)
    }

    /// Server CPU per operation, in ms.
    pub fn cpu_ms(&self) -> f64 {
        self.cpu * 1e3 / self.lat.len().max(1) as f64
    }

    /// Fails the bench on any failed operation: errors never count as throughput.
    pub fn assert_ok(&self, n: usize, what: &str) {
        assert!(
            self.failures.is_empty() && self.lat.len() == n,
            "{} of {n} {what} failed; first: {}",
            self.failures.len(),
            self.failures.first().map_or("?", String::as_str)
        );
    }

    /// `ops`: what was measured, plural; `op`: one of them.
    pub fn print(&self, ops: &str, op: &str) {
        println!(
            "  last one done after {:.2} s, {ops}/s {:.0}, p50 {:.2} s, p99 {:.2} s, \
             server CPU per {op} {:.2} ms ({:.1} s in all)",
            self.last().as_secs_f64(),
            self.per_sec(),
            self.p(0.5).as_secs_f64(),
            self.p(0.99).as_secs_f64(),
            self.cpu_ms(),
            self.cpu
        );
        if self.retried > 0 {
            println!(
                "  {ops} that needed a retry (connection failed or 5xx): {}; e.g. {}",
                self.retried,
                self.reasons.join(" | ")
            );
        }
    }
}

/// One thread per item (small stacks), all released by one barrier: the whole fleet starts
/// within the time it takes the threads to wake. `cpu` is sampled just before the start
/// signal and after every thread has finished.
pub fn storm<T: Send>(
    items: Vec<T>,
    cpu: impl Fn() -> f64,
    op: impl Fn(&mut T, Instant) -> Result<Done, String> + Sync,
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
    let results: Vec<Done> = results.into_inner().unwrap();
    let cpu = cpu() - cpu0;
    let mut lat: Vec<Duration> = results.iter().map(|r| r.0).collect();
    lat.sort();
    let mut reasons: Vec<String> = Vec::new();
    for e in results.iter().flat_map(|r| &r.1) {
        if reasons.len() < REASONS && !reasons.contains(e) {
            reasons.push(e.clone());
        }
    }
    Outcome {
        lat,
        retried: results.iter().filter(|r| !r.1.is_empty()).count(),
        reasons,
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

/// The fields of /proc/<pid>/stat after the command name: `[0]` is the state, `[11]`
/// utime, `[12]` stime, `[13]` cutime, `[14]` cstime.
pub fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_secs(pid: u32, ticks_per_sec: f64) -> f64 {
    let f = proc_stat(pid);
    let utime: f64 = f[11].parse().unwrap();
    let stime: f64 = f[12].parse().unwrap();
    (utime + stime) / ticks_per_sec
}

/// The kernel's clock ticks per second, for /proc/<pid>/stat.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The ids of every live process below `pid` (from /proc/<pid>/task/*/children).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// CPU seconds of the processes below this one named `comm`, with the children they have
/// reaped (PostgreSQL's postmaster reaps the backends of closed connections).
pub fn descendants_cpu_secs(comm: &str, ticks_per_sec: f64) -> f64 {
    descendants(std::process::id())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let f: Vec<&str> = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .collect();
            let sum: f64 = f
                .get(11..15)?
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum();
            Some(sum)
        })
        .sum::<f64>()
        / ticks_per_sec
}
