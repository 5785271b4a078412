//! The agent's own time from start to key written, split by step, against swtpm and the
//! real server over HTTPS on 127.0.0.1 (`cargo bench -p unlock-server --bench agent_steps`).
//!
//! Each iteration is a fresh boot (swtpm power cycle: new resetCount, PCRs reset) of one
//! enrolled machine; the figures are the agent's `step <name> <ms> ms` lines. Two modes in
//! the same run: the baseline evicts the kept EK and AK before every boot (so every boot
//! derives both and registers with both roles, as every v1 boot did), then the v2 path
//! (both read back from the TPM, straight to the challenges); the last line is the ratio.
//!
//! `UNLOCK_BENCH_AGENTS=label=/path/agent,label2=/path/agent2` also runs the v2 boots with
//! each of those binaries (e.g. the dynamic tss-esapi agent of an older commit and the static
//! one), on the same machine and server, alternating boot by boot, and prints each one's
//! exec-to-exit p50 against the first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "bench code: a failed unwrap is a failed run; percentile indexes are in range"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use support::{Machine, Server};

/// One mode's figures: per-step times and the process wall time.
#[derive(Default)]
struct Figures {
    steps: BTreeMap<String, Vec<u64>>,
    order: Vec<String>,
    wall: Vec<f64>,
    registrations: u64,
}

fn pct<T: Copy + PartialOrd>(v: &mut [T], p: f64) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `boots` boots of `m`; with `forget`, the TPM's kept EK and AK are evicted before each
/// boot, so every boot derives them and registers (what every boot did before the AK was
/// enrolled once).
fn run(m: &mut Machine, server: &Server, boots: usize, forget: bool) -> Figures {
    let mut f = Figures::default();
    let before = server.registrations();
    for _ in 0..boots {
        boot(m, server, forget, None, &mut f);
    }
    f.registrations = server.registrations() - before;
    f
}

/// One boot of `m` with the workspace agent or `bin`, its figures added to `f`.
fn boot(m: &mut Machine, server: &Server, forget: bool, bin: Option<&Path>, f: &mut Figures) {
    m.reboot();
    if forget {
        let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
        tpm.evict_persistent_ak().unwrap();
        tpm.evict_persistent_ek(initrd_agent::tpm::EkKind::EccP256)
            .unwrap();
    }
    let t = Instant::now();
    let out = match bin {
        None => m.agent(server, None, &["--verbose"]),
        Some(bin) => m.agent_bin_with(bin, &m.config(server, None), &["--verbose"]),
    };
    f.wall.push(t.elapsed().as_secs_f64() * 1000.0);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in text.lines() {
        // initrd-agent: step <name> <ms> ms
        let mut w = line.split_whitespace();
        if let (Some("initrd-agent:"), Some("step"), Some(name), Some(ms)) =
            (w.next(), w.next(), w.next(), w.next())
        {
            if let Ok(ms) = ms.parse::<u64>() {
                if !f.order.iter().any(|o| o == name) {
                    f.order.push(name.to_owned());
                }
                f.steps.entry(name.to_owned()).or_default().push(ms);
            }
        }
    }
}

fn report(label: &str, f: &mut Figures, boots: usize) -> f64 {
    println!(
        "\n{label} ({boots} boots; {} registrations)",
        f.registrations
    );
    println!("{:<12} {:>8} {:>8}", "step", "p50 ms", "p90 ms");
    let mut total50 = 0;
    for name in &f.order {
        let v = f.steps.get_mut(name).unwrap();
        let p50 = pct(v, 0.5);
        total50 += p50;
        println!("{:<12} {:>8} {:>8}", name, p50, pct(v, 0.9));
    }
    println!("{:<12} {:>8}", "sum of p50", total50);
    let p50 = pct(&mut f.wall, 0.5);
    println!(
        "process wall time (exec to exit): p50 {:.0} ms, p90 {:.0} ms",
        p50,
        pct(&mut f.wall, 0.9)
    );
    p50
}

fn main() {
    let boots: usize = std::env::var("UNLOCK_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut m = Machine::new();
    let server = Server::start(&["--allow-ek-without-cert"]);
    m.enroll(&server, &m.policy_now(true), &[]);
    println!("agent against swtpm + unlock-server (HTTPS, both roles)");
    // Baseline and new path in the same run, on the same machine and server.
    let mut baseline = run(&mut m, &server, boots, true);
    let mut kept = run(&mut m, &server, boots, false);
    let b = report(
        "baseline: keys derived and registered every boot (the v1 boot path)",
        &mut baseline,
        boots,
    );
    let k = report(
        "v2: EK and AK read back from the TPM, no registration",
        &mut kept,
        boots,
    );
    println!("\nwall time p50, v2 / baseline: {:.2}", k / b);
    compare_agents(&mut m, &server, boots);
}

/// The v2 boot with each binary of `UNLOCK_BENCH_AGENTS`, alternating boot by boot.
fn compare_agents(m: &mut Machine, server: &Server, boots: usize) {
    let Ok(spec) = std::env::var("UNLOCK_BENCH_AGENTS") else {
        return;
    };
    let agents: Vec<(String, PathBuf)> = spec
        .split(',')
        .filter_map(|a| a.split_once('='))
        .map(|(l, p)| (l.to_owned(), PathBuf::from(p)))
        .collect();
    let mut figures: Vec<Figures> = agents.iter().map(|_| Figures::default()).collect();
    let before = server.registrations();
    for _ in 0..boots {
        for ((_, bin), f) in agents.iter().zip(figures.iter_mut()) {
            boot(m, server, false, Some(bin), f);
        }
    }
    println!(
        "\n{} registrations during the comparison (0: every build read back the same AK)",
        server.registrations() - before
    );
    let mut p50s = Vec::new();
    for ((label, bin), f) in agents.iter().zip(figures.iter_mut()) {
        let label = format!("v2 with {label} ({})", bin.display());
        p50s.push(report(&label, f, boots));
    }
    for ((label, _), p) in agents.iter().zip(&p50s).skip(1) {
        println!(
            "exec-to-exit p50, {label} / {}: {:.2}",
            agents[0].0,
            p / p50s[0]
        );
    }
}
