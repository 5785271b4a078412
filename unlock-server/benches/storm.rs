//! Boot storm: N simulated agents (`UNLOCK_STORM_N`, default 2000) all start a full boot at
//! the same instant, as after a power cut of a whole rack, against each configuration of
//! `UNLOCK_STORM_CONFIGS` (default `sqlite1,sqlite2,pg1,pg2`: one or two replicas of the
//! real binary, HTTPS on loopback, on SQLite or PostgreSQL; `storm/fleet.rs`), each on its
//! own fresh database with its own enrollment. Reports per configuration the time until the
//! last agent is unlocked, full boots/s, per-boot p50/p99, the server CPU per boot summed
//! over the replica processes (from /proc/<pid>/stat) next to the server's crypto floor per
//! boot measured in the same run, and each replica's peak memory.
//!
//! Two boot shapes, each configuration runs both (`UNLOCK_STORM_SHAPES`, default `v1,v2`),
//! each on its own fresh fleet:
//! - `v1`, the first boot (and every boot before the AK was pinned): register + activate
//!   with both roles, a challenge from each, one quote, attest to both, open the halves,
//!   decrypt: 8 requests.
//! - `v2`, every later boot: the AK was registered and pinned before the storm (at the
//!   agents' first boot), so a boot is a challenge from each role, one quote, attest to
//!   both, open, decrypt: 4 requests and, on the server, one durable write per role.
//!
//! Each boot runs on a fresh TLS connection; with two replicas each request goes to the next
//! replica in turn. Like the real agent, a boot whose connection fails or that gets a 5xx is
//! retried (whole boot, backoff capped at 1 s); refusals are not retried and fail the bench.
//!
//! In the same run, the same storm shape (one thread per client, one barrier) drives N
//! `clevis decrypt` style key recoveries against Debian's Tang (`storm/tang.rs`), and the
//! bench prints each configuration's boots/s as a ratio to Tang's recoveries/s. Tang needs
//! the `tang`, `jose` and `socat` packages (scripts/install-deps.sh); `UNLOCK_STORM_TANG=0`
//! skips it. PostgreSQL needs the `postgresql` package; `UNLOCK_SKIP_POSTGRES=1` skips the
//! `pg` configurations. The Tang clients do no client-side crypto while our agents do
//! theirs on the same cores, so the ratio leans in Tang's favour.
//!
//! `cargo bench -p unlock-server --bench storm`; `UNLOCK_STORM_N=300
//! UNLOCK_STORM_CONFIGS=sqlite1` for a quick run.

// Bench code: a failed unwrap is a broken benchmark setup, which should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

#[path = "storm/fleet.rs"]
mod fleet;
#[path = "storm/floor.rs"]
mod floor;
#[path = "storm/harness.rs"]
mod harness;
#[path = "../tests/support/pg.rs"]
mod pg;
#[path = "storm/tang.rs"]
mod tang;

use std::sync::Mutex;

use fleet::{Fleet, Setup};
use harness::{post, storm, with_retries, Failure, Outcome};
use verifier_core::policy::PolicyDocument;
use verifier_core::proto::v1::{
    self, path, ActivateResponse, AttestResponse, ChallengeResponse, EnrollmentInfo,
    RegisterResponse, Role,
};
use verifier_core::sim::{enroll_requests, SimAgent};

const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef (a 64-byte LUKS key file!!!!!)";
const ROLES: [Role; 2] = [Role::Verifier, Role::Tenant];
/// Client threads enrolling (and creating the simulated agents) before a storm.
const ENROLLERS: usize = 4;

/// The boot shapes (see the file's head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Registration in the boot.
    V1,
    /// The AK registered and pinned before: challenges and attests only.
    V2,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// Register + activate with both roles.
fn register(
    fleet: &Fleet,
    client: &ureq::Agent,
    agent: &mut SimAgent,
    first: bool,
) -> Result<(), Failure> {
    let e = |e: verifier_core::sim::SimError| Failure::Answer(e.to_string());
    let reg_req = agent.register_request();
    for role in ROLES {
        let url = |p| {
            if first {
                fleet.first_url(role, p)
            } else {
                fleet.url(role, p)
            }
        };
        let reg: RegisterResponse = post(client, &url(path::REGISTER), None, &reg_req)?;
        let act = agent.activate_request(&reg).map_err(e)?;
        let ok: ActivateResponse = post(client, &url(path::ACTIVATE), None, &act)?;
        agent.check_activation(&ok).map_err(e)?;
    }
    Ok(())
}

/// One boot of `shape` over a fresh connection (one per replica it reaches).
fn boot(fleet: &Fleet, agent: &mut SimAgent, shape: Shape) -> Result<(), Failure> {
    let client = fleet.client();
    let e = |e: verifier_core::sim::SimError| Failure::Answer(e.to_string());
    if shape == Shape::V1 {
        register(fleet, &client, agent, false)?;
    }
    let ch_req = agent.challenge_request();
    let mut challenges: Vec<ChallengeResponse> = Vec::with_capacity(2);
    for role in ROLES {
        challenges.push(post(
            &client,
            &fleet.url(role, path::CHALLENGE),
            None,
            &ch_req,
        )?);
    }
    let reqs = agent.attest_requests(&challenges).map_err(e)?;
    let mut answers: Vec<AttestResponse> = Vec::with_capacity(2);
    for (role, req) in ROLES.iter().zip(&reqs) {
        answers.push(post(&client, &fleet.url(*role, path::ATTEST), None, req)?);
    }
    let payload = agent.finish(&answers).map_err(e)?;
    if payload.as_slice() != PAYLOAD {
        return Err(Failure::Answer("payload differs".into()));
    }
    agent.extend_release_pcr().map_err(e)
}

/// `n` fresh simulated agents, each enrolled with both roles (through the first replica),
/// and for `Shape::V2` registered too (their AK pinned, as after a first boot).
fn enroll(fleet: &Fleet, n: usize, policy: &PolicyDocument, shape: Shape) -> Vec<SimAgent> {
    let agents = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for w in 0..ENROLLERS {
            let agents = &agents;
            s.spawn(move || {
                let admin = fleet.client();
                for _ in (w..n).step_by(ENROLLERS) {
                    let mut agent = SimAgent::new().unwrap();
                    // A bound above one, so a boot retried after a lost connection is not
                    // refused.
                    let reqs = enroll_requests(
                        &agent.agent_id(),
                        agent.tpm().ek_pub_bytes(),
                        policy,
                        PAYLOAD,
                        8,
                    )
                    .unwrap();
                    for (role, req) in &reqs {
                        let _: EnrollmentInfo = post(
                            &admin,
                            &fleet.first_url(*role, v1::admin_path::ENROLLMENTS),
                            Some(&fleet.token),
                            req,
                        )
                        .unwrap_or_else(|e| {
                            let (Failure::Answer(e) | Failure::Transport(e)) = e;
                            panic!("enrollment failed: {e}")
                        });
                    }
                    if shape == Shape::V2 {
                        register(fleet, &admin, &mut agent, true).unwrap_or_else(|e| {
                            let (Failure::Answer(e) | Failure::Transport(e)) = e;
                            panic!("registration failed: {e}")
                        });
                    }
                    agents.lock().unwrap().push(agent);
                }
            });
        }
    });
    agents.into_inner().unwrap()
}

/// What one configuration measured.
struct Run {
    setup: Setup,
    shape: Shape,
    out: Outcome,
    /// PostgreSQL's CPU seconds over the storm (`None` on SQLite).
    db_cpu: Option<f64>,
    peak_mib: Vec<f64>,
}

/// Starts `setup` on a fresh database, enrolls `n` agents and boots them all at once;
/// `None` when the configuration is skipped (PostgreSQL with `UNLOCK_SKIP_POSTGRES=1`).
fn run(setup: Setup, shape: Shape, n: usize, ticks: f64) -> Option<Run> {
    println!(
        "storm bench [{}/{}]: starting {}",
        setup.name,
        shape.name(),
        setup.describe()
    );
    let Some(fleet) = Fleet::start(setup) else {
        println!("storm bench [{}]: skipped", setup.name);
        return None;
    };
    println!(
        "storm bench [{}]: enrolling {n} simulated agents",
        setup.name
    );
    let policy = SimAgent::new().unwrap().learn_policy();
    let agents = enroll(&fleet, n, &policy, shape);
    println!("storm bench [{}]: {n} agents start at once", setup.name);
    let db0 = fleet.db_cpu_secs(ticks);
    let out = storm(
        agents,
        || fleet.cpu_secs(ticks),
        |agent, t0| with_retries(t0, || boot(&fleet, agent, shape)),
    );
    out.assert_ok(n, "boots");
    out.print("full boots", "boot");
    let db_cpu = fleet.db_cpu_secs(ticks).zip(db0).map(|(b, a)| b - a);
    if let Some(db) = db_cpu {
        println!(
            "  PostgreSQL CPU per boot {:.2} ms ({db:.1} s in all)",
            db * 1e3 / n as f64
        );
    }
    Some(Run {
        setup,
        shape,
        out,
        db_cpu,
        peak_mib: fleet.peak_rss_mib(),
    })
}

/// The configurations named in `UNLOCK_STORM_CONFIGS` (all four by default).
fn setups() -> Vec<Setup> {
    let Ok(list) = std::env::var("UNLOCK_STORM_CONFIGS") else {
        return Setup::ALL.to_vec();
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            Setup::ALL
                .into_iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| {
                    panic!(
                        "UNLOCK_STORM_CONFIGS: unknown configuration {name:?}; known: \
                         sqlite1, sqlite2, pg1, pg2"
                    )
                })
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("UNLOCK_STORM_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks = harness::clock_ticks();

    let shapes = shapes();
    let runs: Vec<Run> = setups()
        .into_iter()
        .flat_map(|s| shapes.iter().map(move |&shape| (s, shape)))
        .filter_map(|(s, shape)| run(s, shape, n, ticks))
        .collect();
    let floors = [
        (Shape::V1, floor::crypto_floor(true)),
        (Shape::V2, floor::crypto_floor(false)),
    ];
    let tang = tang_storm(n, ticks);
    print_summary(n, cores, &floors, &runs, tang.as_ref());
}

/// The shapes named in `UNLOCK_STORM_SHAPES` (both by default).
fn shapes() -> Vec<Shape> {
    let Ok(list) = std::env::var("UNLOCK_STORM_SHAPES") else {
        return vec![Shape::V1, Shape::V2];
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "v1" => Shape::V1,
            "v2" => Shape::V2,
            other => panic!("UNLOCK_STORM_SHAPES: unknown shape {other:?}; known: v1, v2"),
        })
        .collect()
}

fn print_summary(
    n: usize,
    cores: usize,
    floors: &[(Shape, f64)],
    runs: &[Run],
    tang: Option<&Outcome>,
) {
    let floor_of = |shape: Shape| {
        floors
            .iter()
            .find(|(s, _)| *s == shape)
            .map_or(f64::NAN, |(_, f)| *f)
    };
    println!();
    println!(
        "Boot storm: {n} simulated agents started at once, {cores} cores shared by the \
         servers and the agents (client crypto included); requests spread over replicas in \
         turn; server CPU summed over replicas (PG ms/op: the PostgreSQL cluster's own CPU, \
         not in CPU ms/op; SQLite runs inside the replicas)."
    );
    for &(shape, floor) in floors {
        println!(
            "  server crypto floor per {} boot (one thread, same run): {:.2} ms ({floor:.0} boots/s)",
            shape.name(),
            1e3 / floor
        );
    }
    println!(
        "  {:<10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>10} {:>9} {:>8} {:>13} {:>9}",
        "config",
        "last s",
        "boots/s",
        "p50 s",
        "p99 s",
        "retried",
        "CPU ms/op",
        "CPU/floor",
        "PG ms/op",
        "peak MiB/rep",
        "ours/Tang"
    );
    for r in runs {
        let ratio = tang.map_or("-".to_owned(), |t| {
            format!("{:.3}", r.out.per_sec() / t.per_sec())
        });
        let peak: Vec<String> = r.peak_mib.iter().map(|m| format!("{m:.0}")).collect();
        let db = r
            .db_cpu
            .map_or("-".to_owned(), |c| format!("{:.2}", c * 1e3 / n as f64));
        row(
            &format!("{}/{}", r.setup.name, r.shape.name()),
            &r.out,
            &format!("{:.1}x", r.out.cpu_ms() * floor_of(r.shape) / 1e3),
            &db,
            &peak.join("+"),
            &ratio,
        );
    }
    match tang {
        Some(t) => {
            row("tang", t, "-", "-", "-", "1");
            println!(
                "  tang: Debian tangd, one process per connection via socat, {n} clevis-decrypt \
                 style key recoveries (no attestation), same storm shape."
            );
        }
        None => println!("  Tang comparison skipped (UNLOCK_STORM_TANG=0)."),
    }
    println!();
}

fn row(name: &str, o: &Outcome, vs_floor: &str, db: &str, peak: &str, ratio: &str) {
    println!(
        "  {name:<10} {:>8.2} {:>8.0} {:>7.2} {:>7.2} {:>7} {:>10.2} {vs_floor:>9} {db:>8} {peak:>13} {ratio:>9}",
        o.last().as_secs_f64(),
        o.per_sec(),
        o.p(0.5).as_secs_f64(),
        o.p(0.99).as_secs_f64(),
        o.retried,
        o.cpu_ms(),
    );
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
    out.print("recoveries", "recovery");
    Some(out)
}
