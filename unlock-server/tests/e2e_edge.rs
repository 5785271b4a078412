//! Strangers against the real server (HTTPS on 127.0.0.1): each test spends one resource a
//! stranger can reach — a machine's failure budget, connections, time, descriptors, memory
//! — from another source address (127.0.0.2), while a real agent on swtpm (from 127.0.0.1)
//! still unlocks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::raw::{closed_by_server, cpu_ticks, metric, rss_kib, stranger, Raw};
use support::{code, Driver, Machine, Opts, Server};
use verifier_core::keysplit::NkPrivate;
use verifier_core::proto::v1::{self, ActivateRequest, ChallengeRequest, RegisterRequest};
use verifier_core::proto::Base64Bytes;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn with_limits(limits: &str) -> Opts {
    Opts {
        config: Some(format!("[limits]\n{limits}\n")),
        ..Opts::default()
    }
}

/// The real agent unlocks now, and gets the enrolled payload.
fn agent_unlocks(m: &Machine, server: &Server, payload: &[u8]) {
    let out = m.agent(server, None, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

/// What a stranger who knows a machine's public EK (and the name of an AK it once activated)
/// can send: registrations of a self-made AK, wrong activation proofs, challenges and
/// forged attestations. Returns the statuses seen.
fn lockout_attempts(server: &Server, raw: &Raw, victim: &Machine, rounds: usize) -> Vec<u16> {
    let (ek_file, agent_id) = victim.export_ek(server);
    let ek = std::fs::read(ek_file).unwrap();
    // The stranger's AK: a genuine restricted key, but from another TPM.
    let other = Machine::new();
    let mut theirs = Driver::unregistered(&other, server);
    // The name of the AK the victim activated (at its first boot: the caller booted it).
    let old_ak = {
        let d = Driver::registered(victim, server);
        let name = d.ak.name().to_vec();
        d.release();
        name
    };
    let mut seen = Vec::new();
    for _ in 0..rounds {
        for role in ["verifier", "tenant"] {
            let reg = RegisterRequest {
                ek_pub: Base64Bytes::new(ek.clone()),
                ek_cert: None,
                ek_chain: Vec::new(),
                ak_pub: Base64Bytes::new(theirs.ak.public().to_vec()),
            };
            let (st, body) = raw.post_from(
                stranger(),
                &format!("/{role}{}", v1::path::REGISTER),
                &v1::encode(&reg).unwrap(),
            );
            seen.push(st);
            if st == 200 {
                let reg: v1::RegisterResponse = v1::decode(&body).unwrap();
                let act = ActivateRequest {
                    registration_id: reg.registration_id,
                    proof: Base64Bytes::new(vec![0x42; 32]),
                };
                let (st, body) = raw.post_from(
                    stranger(),
                    &format!("/{role}{}", v1::path::ACTIVATE),
                    &v1::encode(&act).unwrap(),
                );
                assert_ne!(st, 200, "a wrong proof activated: {body:?}");
                seen.push(st);
            }
            let ch = ChallengeRequest {
                agent_id: v1::AgentId::try_from(agent_id.clone()).unwrap(),
                ak_name: Base64Bytes::new(old_ak.clone()),
            };
            let (st, body) = raw.post_from(
                stranger(),
                &format!("/{role}{}", v1::path::CHALLENGE),
                &v1::encode(&ch).unwrap(),
            );
            seen.push(st);
            if st == 200 {
                // A forged attestation for the victim's challenge: the quote is not signed
                // by the victim's AK.
                let ch: v1::ChallengeResponse = v1::decode(&body).unwrap();
                let nk = NkPrivate::generate().unwrap();
                let req = theirs.attest_requests(&[&ch], &nk, None).remove(0);
                let (st, _) = raw.post_from(
                    stranger(),
                    &format!("/{role}{}", v1::path::ATTEST),
                    &v1::encode(&req).unwrap(),
                );
                assert_ne!(st, 200);
                seen.push(st);
            }
        }
    }
    seen
}

#[test]
fn strangers_failures_never_count_against_the_machine() {
    // A budget large enough that every forged request reaches the roles' own checks.
    let server = Server::start_with(
        TOFU,
        with_limits("source_failure_burst = 100000\nglobal_failure_burst = 100000"),
    );
    let mut m = Machine::new();
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    agent_unlocks(&m, &server, &payload);
    m.reboot();
    let raw = Raw::new(&server);
    let seen = lockout_attempts(&server, &raw, &m, 50);
    assert!(!seen.contains(&429), "the stranger was throttled: {seen:?}");
    // 50 rounds x 2 roles of: registration of another AK (refused: the machine's AK is
    // pinned, so no MakeCredential and no activation to try), challenge, forged attest.
    assert_eq!(seen.len(), 300, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == 403).count(), 200, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == 200).count(), 100, "{seen:?}");
    // Nothing the stranger sent was written to the machine's attempt log (each refusal is a
    // log line and a charge to the stranger's address), and the machine unlocks at once.
    let st = server.status(&agent_id);
    for role in ["verifier", "tenant"] {
        let attempts = st[role]["attempts"].as_array().unwrap();
        // The first boot's release only.
        assert_eq!(attempts.len(), 1, "{st}");
        assert_eq!(attempts[0]["released"], true, "{st}");
    }
    agent_unlocks(&m, &server, &payload);
}

#[test]
fn a_failing_source_is_throttled_and_the_machine_still_unlocks() {
    let server = Server::start(TOFU);
    let mut m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    agent_unlocks(&m, &server, &payload);
    m.reboot();
    let raw = Raw::new(&server);
    let started = Instant::now();
    let seen = lockout_attempts(&server, &raw, &m, 50);
    let secs = started.elapsed().as_secs();
    // The default budget: 20 forged failures per source, one back per second. Failures that
    // got through are at most that; everything after is refused before any work.
    let failed = seen.iter().filter(|s| **s == 403).count() as u64;
    assert!(
        failed <= 20 + secs + 1,
        "{failed} failures in {secs} s: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&429), "{seen:?}");
    let throttled = seen.iter().filter(|s| **s == 429).count() as u64;
    let text = server.metrics();
    assert!(metric(&text, "unlock_throttled_total") >= throttled);
    agent_unlocks(&m, &server, &payload);
}

#[test]
fn a_reserialized_body_sent_first_gets_the_same_answer_as_the_original() {
    let server = Server::start(TOFU);
    let m = Machine::new();
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &[]);
    let mut d = Driver::new(&m, &server);
    let nk = NkPrivate::generate().unwrap();
    let (cv, ct) = (d.challenge("verifier"), d.challenge("tenant"));
    let reqs = d.attest_requests(&[&cv, &ct], &nk, None);
    for (role, req) in ["verifier", "tenant"].into_iter().zip(&reqs) {
        let original = v1::encode(req).unwrap();
        // Keys reordered (serde_json's map is sorted), pretty-printed, an explicit null.
        let mut value: serde_json::Value = serde_json::from_slice(&original).unwrap();
        value["event_log"] = serde_json::Value::Null;
        let copy = serde_json::to_vec_pretty(&value).unwrap();
        assert_ne!(copy, original);
        let url = d.url(role, v1::path::ATTEST);
        let (st1, first) = support::post(&d.http, &url, &copy);
        assert_eq!(st1, 200, "{}", String::from_utf8_lossy(&first));
        let (st2, second) = support::post(&d.http, &url, &original);
        assert_eq!((st2, &second), (200, &first));
        // Different evidence on that challenge is still a reuse.
        let other_nk = NkPrivate::generate().unwrap();
        let ch = if role == "verifier" { &cv } else { &ct };
        let other = d.attest_requests(&[ch], &other_nk, None).remove(0);
        let (st, body) = d.attest(role, &other);
        assert_eq!((st, code(&body).as_str()), (403, "challenge_used"));
        let s = server.releases(&agent_id, role);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1, 1, "one release counted");
    }
}

#[test]
fn slow_and_idle_connections_are_closed_while_the_agent_unlocks() {
    let server = Server::start_with(
        TOFU,
        with_limits(
            "header_timeout_secs = 3\nidle_timeout_secs = 3\nbody_window_secs = 2\nmin_body_rate = 4096",
        ),
    );
    let m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let raw = Raw::new(&server);
    let path = format!("/verifier{}", v1::path::ATTEST);
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = raw.tls_from(stranger()).unwrap();
        match i % 3 {
            // Half a request head.
            0 => s
                .write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .unwrap(),
            // A whole head and the first bytes of a 100 kB body.
            1 => {
                s.write_all(
                    format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{{")
                        .as_bytes(),
                )
                .unwrap();
            }
            // A finished request, then an idle keep-alive connection.
            _ => {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut b = [0u8; 512];
                let n = std::io::Read::read(&mut s, &mut b).unwrap();
                assert!(b[..n].starts_with(b"HTTP/1.1 200"));
            }
        }
        s.flush().unwrap();
        held.push(s);
    }
    let started = Instant::now();
    assert!(metric(&server.metrics(), "unlock_connections_open") >= 300);
    // The honest agent, while all of that is held.
    agent_unlocks(&m, &server, &payload);
    // Every held connection is closed by the server within its timeout (3 s, plus the
    // watchdog's 1 s tick and some slack for a loaded CI machine).
    let within = Duration::from_secs(12);
    for (i, s) in held.iter_mut().enumerate() {
        let left = within
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(10));
        let sock = s.sock.try_clone().unwrap();
        assert!(
            closed_by_server(s, |d| sock.set_read_timeout(Some(d)).unwrap(), left),
            "connection {i} (kind {}) still open after {:?}",
            i % 3,
            started.elapsed()
        );
    }
    let text = server.metrics();
    for phase in ["header", "idle", "body"] {
        let n = metric(
            &text,
            &format!("unlock_connections_timed_out_total{{phase=\"{phase}\"}}"),
        );
        assert!(n >= 90, "{phase}: {n} timed out\n{text}");
    }
}

#[test]
fn descriptor_exhaustion_is_survived_without_spinning_or_flooding_the_log() {
    // 256 descriptors, and a cap deliberately above what they can hold, so that accept()
    // itself fails with EMFILE.
    let server = Server::start_with(
        TOFU,
        Opts {
            config: Some(
                "[limits]\nmax_connections = 5000\nmax_connections_per_source = 5000\nreserved_descriptors = 0\nheader_timeout_secs = 4\n"
                    .into(),
            ),
            log_file: true,
            nofile: Some(256),
        },
    );
    let m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let pid = server.pid().unwrap();
    let raw = Raw::new(&server);
    // Plain TCP connections that never say anything: twice the descriptors the server has.
    let held: Vec<_> = (0..512)
        .map(|_| raw.tcp_from(stranger()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let ticks_before = cpu_ticks(pid);
    let measured = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = cpu_ticks(pid) - ticks_before;
    let secs = measured.elapsed().as_secs_f64();
    // Clock ticks are 1/100 s: a spinning accept loop would use ~300 here.
    assert!(
        (ticks as f64) < 0.25 * 100.0 * secs,
        "{ticks} ticks of CPU in {secs:.1} s while descriptors were exhausted"
    );
    drop(held);
    // The agent unlocks once the stranger's connections are gone (or timed out).
    agent_unlocks(&m, &server, &payload);
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(accept_lines >= 1, "EMFILE was never hit:\n{log}");
    assert!(
        accept_lines <= 3 && log.len() < 64 * 1024,
        "{accept_lines} accept lines, {} bytes of log",
        log.len()
    );
    let text = server.metrics();
    assert!(metric(&text, "unlock_accept_errors_total") >= 1);
}

#[test]
fn large_and_fragmented_uploads_keep_memory_bounded_and_it_comes_back() {
    // 32 MiB of bodies in flight at most; a slow rate allowed so nothing times out.
    let server = Server::start_with(
        TOFU,
        with_limits(
            "max_inflight_body_bytes = 33554432\nmax_body_bytes_per_source = 33554432\nbody_window_secs = 60\nmin_body_rate = 1\nheader_timeout_secs = 60\nidle_timeout_secs = 60",
        ),
    );
    let m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let pid = server.pid().unwrap();
    let raw = Raw::new(&server);
    let baseline = rss_kib(pid);
    let path = format!("/verifier{}", v1::path::ATTEST);
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n");
    let mut held = Vec::new();
    // 200 bodies of 4 MiB, each stopped 1 MiB in: 200 MiB offered against a 32 MiB budget.
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..200 {
        let mut s = raw.tls_from(stranger()).unwrap();
        s.sock
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for _ in 0..16 {
            if s.write_all(&chunk).is_err() {
                break; // refused with server_busy and closed
            }
        }
        let _ = s.flush();
        held.push(s);
    }
    // 20 bodies sent as 1-byte TLS records, 8 KiB each.
    for _ in 0..20 {
        let mut s = raw.tls_from(stranger()).unwrap();
        s.sock
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for _ in 0..8192 {
            if s.write_all(b" ").is_err() {
                break;
            }
        }
        let _ = s.flush();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let peak = rss_kib(pid);
    let text = server.metrics();
    let inflight = metric(&text, "unlock_request_body_bytes_in_flight");
    assert!(inflight <= 32 << 20, "{inflight} body bytes in flight");
    assert!(
        metric(
            &text,
            "unlock_request_bodies_refused_total{reason=\"budget\"}"
        ) >= 1
    );
    // The budget, twice over for buffer growth, plus per-connection buffers.
    let bound = baseline + 2 * 32 * 1024 + 64 * 1024;
    assert!(
        peak < bound,
        "RSS {peak} KiB under attack (baseline {baseline} KiB, bound {bound} KiB)"
    );
    // Meanwhile the honest agent unlocks (its bodies fit in what is left, or it retries
    // server_busy until they do).
    drop(held);
    agent_unlocks(&m, &server, &payload);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    assert!(
        after < baseline + 48 * 1024,
        "RSS {after} KiB after the connections closed (baseline {baseline} KiB, peak {peak} KiB)"
    );
    assert_eq!(
        metric(&server.metrics(), "unlock_request_body_bytes_in_flight"),
        0
    );
    eprintln!("rss KiB: baseline {baseline}, under attack {peak}, after {after}");
}

#[test]
fn one_role_down_mid_attest_does_not_burn_the_boot() {
    // The verifier releases; the tenant's answer never arrives (down, or the answer was
    // lost) and its challenge expires. The same agent process (same NK) starts a new round
    // with both roles: the verifier answers again, re-sealed and not counted, the tenant
    // releases, and the bound (one release per boot) holds on both.
    // Expiry is in whole seconds: a 1 s lifetime can end a few milliseconds after the
    // challenge (at the next second), so a loaded machine gets 3 s and the wait is 4.1 s.
    let server = Server::start(&["--allow-ek-without-cert", "--challenge-ttl-secs", "3"]);
    let m = Machine::new();
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(false), &[]);
    let mut d = Driver::new(&m, &server);
    let nk = NkPrivate::generate().unwrap();
    let (cv, ct) = (d.challenge("verifier"), d.challenge("tenant"));
    let first = d.attest_requests(&[&cv, &ct], &nk, None);
    let (st, _) = d.attest("verifier", &first[0]);
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(4100));
    let (st, body) = d.attest("tenant", &first[1]);
    assert_eq!((st, code(&body).as_str()), (403, "challenge_expired"));

    let (cv, ct) = (d.challenge("verifier"), d.challenge("tenant"));
    let second = d.attest_requests(&[&cv, &ct], &nk, None);
    let mut halves = Vec::new();
    for (role, (req, ch)) in ["verifier", "tenant"]
        .into_iter()
        .zip(second.iter().zip([&cv, &ct]))
    {
        let (st, body) = d.attest(role, req);
        assert_eq!(st, 200, "{role}: {}", String::from_utf8_lossy(&body));
        let a: v1::AttestResponse = v1::decode(&body).unwrap();
        let share = nk
            .open_share(
                &a.sealed_half.to_keysplit().unwrap(),
                role,
                ch.challenge_id.as_str().as_bytes(),
            )
            .unwrap();
        halves.push((share, a.payload));
    }
    let k_b = verifier_core::keysplit::combine(&halves[1].0, &halves[0].0);
    let ct = verifier_core::keysplit::PayloadCiphertext::from_bytes(
        halves[0].1.as_ref().unwrap().as_bytes(),
    )
    .unwrap();
    let key = verifier_core::keysplit::decrypt_payload(&k_b, &agent_id, &ct).unwrap();
    assert_eq!(key.as_slice(), payload.as_slice());
    for role in ["verifier", "tenant"] {
        let s = server.releases(&agent_id, role);
        assert_eq!(
            (s.len(), s[0].1, s[0].2.as_str()),
            (1, 1, "terminated"),
            "{role}"
        );
    }
    // Another agent process (another NK) in this boot gets nothing.
    let other = NkPrivate::generate().unwrap();
    let cv = d.challenge("verifier");
    let req = d.attest_requests(&[&cv], &other, None).remove(0);
    let (st, body) = d.attest("verifier", &req);
    assert_eq!((st, code(&body).as_str()), (403, "session_terminated"));
}

#[test]
fn connection_caps_and_the_handshake_timeout_hold_while_the_agent_unlocks() {
    // 40 connections in all, 20 per source, 2 s for a TLS handshake.
    let server = Server::start_with(
        TOFU,
        with_limits(
            "max_connections = 40\nmax_connections_per_source = 20\nreserved_descriptors = 0\nhandshake_timeout_secs = 2",
        ),
    );
    let m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let raw = Raw::new(&server);
    // The stranger opens 30 plain TCP connections and never says hello: 20 are admitted,
    // the other 10 are closed at accept.
    let held: Vec<_> = (0..30).map(|_| raw.tcp_from(stranger()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let text = server.metrics();
    assert_eq!(
        metric(
            &text,
            "unlock_connections_rejected_total{limit=\"per_source\"}"
        ),
        10,
        "{text}"
    );
    // The honest agent (another source) unlocks while they are held.
    agent_unlocks(&m, &server, &payload);
    // The 20 silent connections are closed by the handshake timeout.
    std::thread::sleep(Duration::from_secs(3));
    let text = server.metrics();
    assert!(
        metric(
            &text,
            "unlock_connections_timed_out_total{phase=\"handshake\"}"
        ) >= 20,
        "{text}"
    );
    drop(held);
    // Three more sources fill the total cap: what comes beyond it is closed at accept.
    let more: Vec<_> = [3u8, 4, 5]
        .iter()
        .flat_map(|&last| {
            let raw = &raw;
            (0..15).map(move |_| raw.tcp_from(std::net::IpAddr::from([127, 0, 0, last])))
        })
        .collect::<Result<_, _>>()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The cap is full (so /metrics itself is read once they are gone).
    drop(more);
    std::thread::sleep(Duration::from_millis(500));
    let text = server.metrics();
    assert!(
        metric(&text, "unlock_connections_rejected_total{limit=\"total\"}") >= 5,
        "{text}"
    );
}

#[test]
fn a_source_holds_only_its_share_of_body_memory_while_the_agent_unlocks() {
    // Default limits (8 MiB of bodies per source, 64 MiB in all), except a longer rate
    // window so the stalled bodies are held for the whole test.
    let server = Server::start_with(TOFU, with_limits("body_window_secs = 60"));
    let m = Machine::new();
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let raw = Raw::new(&server);
    let path = format!("/verifier{}", v1::path::ATTEST);
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n");
    let chunk = vec![b' '; 64 * 1024];
    // Three bodies of 3 MiB each, stalled: the third runs into the 8 MiB share.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = raw.tls_from(stranger()).unwrap();
        s.sock
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for _ in 0..48 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = s.flush();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let text = server.metrics();
    assert!(
        metric(
            &text,
            "unlock_request_bodies_refused_total{reason=\"budget\"}"
        ) >= 1
    );
    assert!(
        metric(&text, "unlock_request_body_bytes_in_flight") <= 8 << 20,
        "{text}"
    );
    // The honest agent's bodies come from another source: it unlocks meanwhile.
    agent_unlocks(&m, &server, &payload);
    drop(held);
}

#[test]
fn agent_routes_other_than_attest_take_at_most_64_kib() {
    let server = Server::start(TOFU);
    let raw = Raw::new(&server);
    let send = |path: &str, body: &str| {
        let mut s = raw.tls_from(stranger()).unwrap();
        let head = format!(
            "POST /verifier{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            70 * 1024
        );
        s.write_all(head.as_bytes()).unwrap();
        // The body may be refused before it is read: the server then closes.
        let _ = s.write_all(body.as_bytes());
        let _ = s.flush();
        support::raw::read_answer(&mut s)
    };
    for p in [v1::path::REGISTER, v1::path::ACTIVATE, v1::path::CHALLENGE] {
        // Refused from the declared length, before a byte of the body is read.
        let (status, body) = send(p, "");
        assert_eq!(
            (status, code(&body).as_str()),
            (413, "payload_too_large"),
            "{p}"
        );
    }
    // The attest route takes that much (it carries the event log): read, then refused as
    // not JSON.
    let (status, body) = send(v1::path::ATTEST, &" ".repeat(70 * 1024));
    assert_eq!((status, code(&body).as_str()), (400, "malformed_request"));
}
