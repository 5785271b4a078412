//! The agent's own time from start to key written, split by step, against swtpm and the
//! real server over HTTPS on 127.0.0.1 (`cargo bench -p unlock-server --bench agent_steps`).
//!
//! Each iteration is a fresh boot (swtpm power cycle: new resetCount, PCRs reset) of one
//! enrolled machine; the figures are the agent's `step <name> <ms> ms` lines.

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
use std::time::Instant;

use support::{Machine, Server};

fn main() {
    let boots: usize = std::env::var("UNLOCK_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut m = Machine::new();
    let server = Server::start(&["--allow-ek-without-cert"]);
    m.enroll(&server, &m.policy_now(true), &[]);
    let mut steps: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..boots {
        m.reboot();
        let t = Instant::now();
        let out = m.agent(&server, None, &["--verbose"]);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        for line in text.lines() {
            // initrd-agent: step <name> <ms> ms
            let mut w = line.split_whitespace();
            if let (Some("initrd-agent:"), Some("step"), Some(name), Some(ms)) =
                (w.next(), w.next(), w.next(), w.next())
            {
                if let Ok(ms) = ms.parse::<u64>() {
                    if !order.iter().any(|o| o == name) {
                        order.push(name.to_owned());
                    }
                    steps.entry(name.to_owned()).or_default().push(ms);
                }
            }
        }
    }
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    };
    println!("agent against swtpm + unlock-server (HTTPS, both roles), {boots} boots");
    println!("{:<12} {:>8} {:>8}", "step", "p50 ms", "p90 ms");
    let mut total50 = 0;
    for name in &order {
        let v = steps.get_mut(name).unwrap();
        let p50 = pct(v, 0.5);
        total50 += p50;
        println!("{:<12} {:>8} {:>8}", name, p50, pct(v, 0.9));
    }
    println!("{:<12} {:>8}", "sum of p50", total50);
    wall.sort_by(f64::total_cmp);
    println!(
        "process wall time (exec to exit): p50 {:.0} ms, p90 {:.0} ms",
        wall[wall.len() / 2],
        wall[(wall.len() * 9) / 10]
    );
}
