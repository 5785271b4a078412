//! A fleet: three `unlock-server` replicas over HTTPS on one PostgreSQL (a throwaway cluster),
//! driven by simulated agents (`verifier_core::sim`: real TPM-format quotes, software keys).
//!
//! - exactly-N: 500 concurrent attests over 100 agents' boot sessions (max_attestations 1
//!   for half of them, 2 for the other half), each challenge fetched from one replica and
//!   answered to another: every agent gets exactly its bound of releases per role, as the
//!   clients count and as the database records.
//! - crash: kill -9 a replica and restart PostgreSQL in the middle of a load run; afterwards
//!   no session is above its bound, no enrollment is lost, and every agent unlocks in a new
//!   boot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use support::pg::PgCluster;
use support::{code, unlock_server_http, Server};
use verifier_core::proto::v1::{
    self, admin_path, path, ActivateResponse, AttestResponse, ChallengeResponse, RegisterResponse,
    Role,
};
use verifier_core::sim::{enroll_requests, SimAgent};

const PAYLOAD: &[u8] = b"fleet test payload (a LUKS key file)";
const ROLES: [Role; 2] = [Role::Verifier, Role::Tenant];

/// POSTs `body`; a transport failure (a replica gone) is an `Err`, not a panic.
fn post(http: &ureq::Agent, url: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let resp = http
        .post(url)
        .content_type("application/json")
        .send(body)
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

struct Fleet {
    replicas: Vec<Server>,
    token: String,
    http: ureq::Agent,
}

impl Fleet {
    fn start(db_url: &str, n: usize) -> Self {
        let args = ["--database", db_url, "--allow-ek-without-cert"];
        let first = Server::start(&args);
        let mut replicas = vec![first];
        for _ in 1..n {
            let r = Server::start_replica(&replicas[0], &args);
            replicas.push(r);
        }
        let token = std::fs::read_to_string(replicas[0].token_file())
            .unwrap()
            .trim()
            .to_owned();
        let http = unlock_server_http(&replicas[0].ca());
        Fleet {
            replicas,
            token,
            http,
        }
    }

    fn url(&self, replica: usize, role: Role, p: &str) -> String {
        let r = &self.replicas[replica % self.replicas.len()];
        format!("{}/{}{p}", r.url, role.as_str())
    }

    fn enroll(&self, agent: &SimAgent, max_attestations: u32, replica: usize) {
        let reqs = enroll_requests(
            &agent.agent_id(),
            agent.tpm().ek_pub_bytes(),
            &agent.learn_policy(),
            PAYLOAD,
            max_attestations,
        )
        .unwrap();
        for (role, req) in &reqs {
            let resp = self
                .http
                .post(self.url(replica, *role, admin_path::ENROLLMENTS))
                .header("authorization", format!("Bearer {}", self.token))
                .content_type("application/json")
                .send(&v1::encode(req).unwrap()[..])
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "enroll");
        }
    }

    /// Register with one replica, activate with the next: registrar state is shared.
    fn register(&self, http: &ureq::Agent, agent: &SimAgent, replica: usize) -> Result<(), String> {
        for role in ROLES {
            let (st, body) = post(
                http,
                &self.url(replica, role, path::REGISTER),
                &v1::encode(&agent.register_request()).unwrap(),
            )?;
            if st != 200 {
                return Err(format!("register: {st} {}", String::from_utf8_lossy(&body)));
            }
            let reg: RegisterResponse = v1::decode(&body).unwrap();
            let act = agent.activate_request(&reg).unwrap();
            let (st, body) = post(
                http,
                &self.url(replica + 1, role, path::ACTIVATE),
                &v1::encode(&act).unwrap(),
            )?;
            if st != 200 {
                return Err(format!("activate: {st} {}", String::from_utf8_lossy(&body)));
            }
            agent
                .check_activation(&v1::decode::<ActivateResponse>(&body).unwrap())
                .unwrap();
        }
        Ok(())
    }

    /// Challenges from `replica`; the attest bodies (verifier, tenant) for them.
    fn prepare(
        &self,
        http: &ureq::Agent,
        agent: &mut SimAgent,
        replica: usize,
    ) -> Result<[Vec<u8>; 2], String> {
        let mut challenges: Vec<ChallengeResponse> = Vec::new();
        for role in ROLES {
            let (st, body) = post(
                http,
                &self.url(replica, role, path::CHALLENGE),
                &v1::encode(&agent.challenge_request()).unwrap(),
            )?;
            if st != 200 {
                return Err(format!(
                    "challenge: {st} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            challenges.push(v1::decode(&body).unwrap());
        }
        let reqs = agent.attest_requests(&challenges).unwrap();
        Ok([v1::encode(&reqs[0]).unwrap(), v1::encode(&reqs[1]).unwrap()])
    }
}

/// The whole audit chain of `schema`, checked: one unbroken chain however many replicas
/// appended to it.
fn audit_chain(pg: &PgCluster, schema: &str) -> Vec<verifier_core::audit::AuditRecord> {
    let store = unlock_server::store::Store::open_postgres(&pg.url(), schema).unwrap();
    let mut all: Vec<verifier_core::audit::AuditRecord> = Vec::new();
    loop {
        let after = all.last().map_or(0, |r| r.seq);
        let (page, _, _) = store.audit_page(after, 1000, None).unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    verifier_core::audit::verify_chain(&all, 1, verifier_core::audit::GENESIS)
        .unwrap_or_else(|e| panic!("{schema}: {e}"));
    all
}

/// `(agent_id, releases)` of every session of `schema`, and the released attempts per agent.
fn db_releases(pg: &PgCluster, schema: &str) -> (HashMap<String, Vec<i64>>, HashMap<String, i64>) {
    let mut c = pg.client();
    let mut sessions: HashMap<String, Vec<i64>> = HashMap::new();
    for row in c
        .query(
            &format!("SELECT agent_id, releases FROM {schema}.sessions"),
            &[],
        )
        .unwrap()
    {
        sessions.entry(row.get(0)).or_default().push(row.get(1));
    }
    let mut attempts = HashMap::new();
    for row in c
        .query(
            &format!(
                "SELECT agent_id, COUNT(*) FROM {schema}.attempts WHERE result = 'released'
                 GROUP BY agent_id"
            ),
            &[],
        )
        .unwrap()
    {
        attempts.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    (sessions, attempts)
}

#[test]
fn three_replicas_release_exactly_the_bound_under_500_concurrent_attests() {
    let Some(pg) = PgCluster::start() else { return };
    let fleet = Fleet::start(&pg.url(), 3);
    for r in &fleet.replicas {
        let resp = fleet.http.get(format!("{}/readyz", r.url)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "readyz");
    }
    const AGENTS: usize = 100;
    const TRIES: usize = 5;
    let mut agents: Vec<(SimAgent, u32)> = (0..AGENTS)
        .map(|i| (SimAgent::new().unwrap(), if i % 2 == 0 { 1 } else { 2 }))
        .collect();
    for (i, (agent, max)) in agents.iter().enumerate() {
        fleet.enroll(agent, *max, i);
        fleet.register(&fleet.http, agent, i).unwrap();
    }
    // Five quotes per boot session, each over challenges from a different replica.
    let mut jobs = Vec::new();
    for (i, (agent, max)) in agents.iter_mut().enumerate() {
        for k in 0..TRIES {
            let bodies = fleet.prepare(&fleet.http, agent, i + k).unwrap();
            jobs.push((agent.agent_id().as_str().to_owned(), *max, i + k, bodies));
        }
    }
    assert_eq!(jobs.len(), 500);
    let released: Mutex<HashMap<(String, &str), u32>> = Mutex::new(HashMap::new());
    let start = Arc::new(Barrier::new(jobs.len()));
    let fleet_ref = &fleet;
    std::thread::scope(|s| {
        for (agent_id, max, replica, bodies) in &jobs {
            let start = start.clone();
            let released = &released;
            s.spawn(move || {
                let http = unlock_server_http(&fleet_ref.replicas[0].ca());
                start.wait();
                for (j, role) in ROLES.iter().enumerate() {
                    // Answered to other replicas than the one that issued the challenge.
                    let url = fleet_ref.url(replica + 1 + j, *role, path::ATTEST);
                    let (st, body) = post(&http, &url, &bodies[j]).unwrap();
                    match st {
                        200 => {
                            let a: AttestResponse = v1::decode(&body).unwrap();
                            assert!(a.session.releases <= *max, "{a:?}");
                            *released
                                .lock()
                                .unwrap()
                                .entry((agent_id.clone(), role.as_str()))
                                .or_default() += 1;
                        }
                        403 => assert_eq!(code(&body), "session_terminated"),
                        _ => panic!("{url}: {st} {}", String::from_utf8_lossy(&body)),
                    }
                }
            });
        }
    });
    let released = released.into_inner().unwrap();
    for (agent, max) in &agents {
        for role in ROLES {
            let id = agent.agent_id().as_str().to_owned();
            assert_eq!(
                released.get(&(id.clone(), role.as_str())).copied(),
                Some(*max),
                "clients: {} releases for {id}",
                role.as_str()
            );
        }
    }
    for schema in ["verifier", "tenant"] {
        let (sessions, attempts) = db_releases(&pg, schema);
        assert_eq!(sessions.len(), AGENTS, "{schema}");
        for (agent, max) in &agents {
            let id = agent.agent_id().as_str().to_owned();
            assert_eq!(sessions[&id], vec![i64::from(*max)], "{schema} {id}");
            assert_eq!(attempts[&id], i64::from(*max), "{schema} {id}");
        }
        // Three replicas appended concurrently: one chain, a record per release.
        let chain = audit_chain(&pg, schema);
        let releases = chain.iter().filter(|r| r.kind == "release").count();
        let bound: usize = agents.iter().map(|(_, m)| *m as usize).sum();
        assert_eq!(releases, bound, "{schema}");
    }
}

/// One full boot with retries: register, challenges, attest, unlock. Errors (a replica or
/// the database gone) are retried on the next replica with a fresh challenge; an identical
/// retry of a lost answer would get the stored answer, but a fresh challenge is what an
/// agent whose server vanished does.
fn boot_with_retries(fleet: &Fleet, agent: &mut SimAgent, first: usize, live: &[usize]) -> bool {
    let http = unlock_server_http(&fleet.replicas[0].ca());
    for attempt in 0..40 {
        let r = live[(first + attempt) % live.len()];
        let result = (|| -> Result<bool, String> {
            fleet.register(&http, agent, r)?;
            let bodies = fleet.prepare(&http, agent, r)?;
            let mut answers = Vec::new();
            for (j, role) in ROLES.iter().enumerate() {
                let (st, body) = post(&http, &fleet.url(r, *role, path::ATTEST), &bodies[j])?;
                match st {
                    200 => answers.push(v1::decode::<AttestResponse>(&body).unwrap()),
                    403 if code(&body) == "session_terminated" => return Ok(false),
                    _ => return Err(format!("{st} {}", String::from_utf8_lossy(&body))),
                }
            }
            assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
            Ok(true)
        })();
        match result {
            Ok(done) => return done,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    false
}

#[test]
fn replica_kill9_and_postgres_restart_mid_load_keep_the_bound_and_every_enrollment() {
    let Some(mut pg) = PgCluster::start() else {
        return;
    };
    let fleet = Fleet::start(&pg.url(), 3);
    const AGENTS: usize = 60;
    let agents: Vec<Mutex<SimAgent>> = (0..AGENTS)
        .map(|i| {
            let a = SimAgent::new().unwrap();
            fleet.enroll(&a, 1, i);
            Mutex::new(a)
        })
        .collect();
    std::thread::scope(|s| {
        let fleet = &fleet;
        for (i, a) in agents.iter().enumerate() {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis((i as u64 % 20) * 40));
                let mut agent = a.lock().unwrap();
                // The outcome is not asserted: the crash may cost this boot its release.
                let _ = boot_with_retries(fleet, &mut agent, i, &[0, 1, 2]);
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let pid = fleet.replicas[1].pid().unwrap();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        pg.kill();
        // While the database is down, replicas say they are not ready.
        let resp = fleet
            .http
            .get(format!("{}/readyz", fleet.replicas[0].url))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503, "readyz without a database");
        pg.restart();
    });
    // Nothing above the bound, in either role.
    for schema in ["verifier", "tenant"] {
        let (sessions, _) = db_releases(&pg, schema);
        for (id, rel) in &sessions {
            assert!(rel.iter().all(|r| *r <= 1), "{schema} {id}: {rel:?}");
        }
        let n: i64 = pg
            .client()
            .query_one(&format!("SELECT COUNT(*) FROM {schema}.enrollments"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, AGENTS as i64, "{schema}: enrollments lost");
        // A replica killed mid-write and the database restarted leave no gap: the chain is
        // whole and every counted release has its record (they commit together).
        let chain = audit_chain(&pg, schema);
        let records = chain.iter().filter(|r| r.kind == "release").count();
        let counted: i64 = sessions.values().flatten().sum();
        assert_eq!(records as i64, counted, "{schema}");
    }
    // Every agent unlocks in a new boot, on the surviving replicas.
    for (i, a) in agents.iter().enumerate() {
        let mut agent = a.lock().unwrap();
        agent.reboot().unwrap();
        assert!(
            boot_with_retries(&fleet, &mut agent, i, &[0, 2]),
            "agent {i} did not unlock after the crash"
        );
    }
}
