//! `unlock-server --role provider` end to end: the real server (HTTPS), the real
//! `initrd-agent provider --server` on swtpm as the connected host, 200 concurrent
//! requesters verifying their own answers; and the attacker side with the test playing a
//! malicious host agent (quotes over another root, by another key), a wrong token, and no
//! host at all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use initrd_agent::tpm::Tpm;
use support::{code, post, testdata, Server, Swtpm};
use verifier_core::eventlog::EventLog;
use verifier_core::proto::v1::{
    self, HostAkResponse, HostHelloRequest, HostHelloResponse, HostJob, HostNextRequest,
    HostQuotePost, HostQuoteRequest, HostQuoteResponse, HOST_AK_PATH, HOST_HELLO_PATH,
    HOST_NEXT_PATH, HOST_QUOTE_PATH, HOST_RESULT_PATH,
};
use verifier_core::provider::{host_extra_data, validate_host_quote, HostAnswer, HostTrust};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::AkPublic;
use verifier_core::wire::{
    BankSelection, ClockInfo, Digest, HashAlg, PcrSelection, PcrValues, Public, Signature,
};

fn provider_server(extra: &[&str]) -> Server {
    let mut args = vec!["--role", "provider"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn host_token(s: &Server) -> String {
    std::fs::read_to_string(s.state().join("host.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The real host agent, connected out to `server`.
struct HostAgent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host_agent(tpm: &Swtpm, server: &Server, event_log: &std::path::Path) -> HostAgent {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cmdline"), "").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "tcti = \"{}\"\nevent_log = \"{}\"\n",
            tpm.tcti(),
            event_log.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(support::agent_bin())
        .arg("--config")
        .arg(&config)
        .arg("--cmdline-file")
        .arg(dir.path().join("cmdline"))
        .args(["provider", "--server", &server.url, "--token-file"])
        .arg(server.state().join("host.token"))
        .arg("--ca")
        .arg(server.ca())
        .env("TSS2_LOG", "all+NONE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let line = support::first_line(&mut child, Duration::from_secs(60), "host agent");
    assert!(line.contains("provider connected to"), "{line:?}");
    HostAgent { child, _dir: dir }
}

/// Extends the swtpm's PCRs with every event of `log`, as firmware would have.
fn measure_boot(tpm: &Swtpm, log: &[u8]) {
    let parsed = EventLog::parse(log).unwrap();
    let mut t = Tpm::open(&tpm.tcti()).unwrap();
    for e in parsed.events().iter().filter(|e| e.is_extended()) {
        t.extend(e.pcr(), e.digests().as_slice()).unwrap();
    }
}

fn nonce(i: u64, salt: u8) -> [u8; 32] {
    let mut n = [salt; 32];
    n[..8].copy_from_slice(&i.to_be_bytes());
    n[31] = (std::process::id() & 0xff) as u8;
    n
}

fn ask(http: &ureq::Agent, url: &str, nonce: &[u8; 32]) -> (u16, Vec<u8>) {
    let req = HostQuoteRequest {
        nonce: nonce.as_slice().into(),
    };
    post(
        http,
        &format!("{url}{HOST_QUOTE_PATH}"),
        &v1::encode(&req).unwrap(),
    )
}

/// A requester's check of its own answer against the AK it pinned.
fn check(ak: &AkPublic, nonce: &[u8; 32], body: &[u8]) -> HostQuoteResponse {
    let resp: HostQuoteResponse = v1::decode(body).unwrap();
    let sig = Signature::parse(resp.signature.as_bytes()).unwrap();
    let pcrs = resp.pcr_values().unwrap();
    let proof = resp.inclusion.to_merkle().unwrap();
    validate_host_quote(
        HostTrust { ak, nonce },
        HostAnswer {
            attest: resp.quote.as_bytes(),
            signature: &sig,
            pcrs: &pcrs,
            proof: &proof,
            event_log: resp.event_log.as_ref().map(|l| l.as_bytes()),
        },
    )
    .unwrap_or_else(|e| panic!("answer does not verify: {e}"));
    resp
}

#[test]
fn two_hundred_requesters_through_the_server_get_verified_answers_from_few_quotes() {
    if support::swtpm::skip() {
        return;
    }
    support::swtpm::quiet_tss();
    let log_path = testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin");
    let tpm = Swtpm::start();
    measure_boot(&tpm, &std::fs::read(&log_path).unwrap());
    let server = provider_server(&["--provider-window-ms", "300"]);
    let _host = start_host_agent(&tpm, &server, &log_path);

    // Pin the host AK (out of band in real life).
    let http = server.http();
    let mut resp = http
        .get(format!("{}{HOST_AK_PATH}", server.url))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ak: HostAkResponse = v1::decode(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    let public = Public::parse(ak.ak_pub.as_bytes()).unwrap();
    assert_eq!(public.name(), ak.ak_name.as_bytes());
    let pinned = Arc::new(AkPublic::try_from(public).unwrap());

    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n as u64)
        .map(|i| {
            let (http, url) = (server.http(), server.url.clone());
            let (barrier, ak) = (Arc::clone(&barrier), Arc::clone(&pinned));
            std::thread::spawn(move || {
                let nonce = nonce(i, 0xc1);
                // Open the TLS connection first (kept alive), so the burst is the
                // requests, not 200 handshakes on a debug build.
                let warm = http.get(format!("{url}{HOST_AK_PATH}")).call().unwrap();
                assert_eq!(warm.status().as_u16(), 200);
                warm.into_body().read_to_vec().unwrap();
                barrier.wait();
                let (status, body) = ask(&http, &url, &nonce);
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                let resp = check(&ak, &nonce, &body);
                assert!(resp.event_log.is_some());
                resp.quote.into_vec()
            })
        })
        .collect();
    let quotes: HashSet<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // One window holds the burst; allow stragglers on a loaded 2-core machine.
    assert!(
        quotes.len() <= 3,
        "{} host quotes for {n} requesters",
        quotes.len()
    );
}

#[test]
fn without_a_host_agent_requesters_get_503_at_once() {
    let server = provider_server(&[]);
    let http = server.http();
    let t = Instant::now();
    let (status, body) = ask(&http, &server.url, &nonce(1, 0xc2));
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(code(&body), "rate_limited");
    assert!(String::from_utf8_lossy(&body).contains("no host agent"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let resp = http
        .get(format!("{}{HOST_AK_PATH}", server.url))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
}

fn host_post(http: &ureq::Agent, url: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let resp = http
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_vec().unwrap())
}

#[test]
fn host_endpoints_refuse_a_missing_or_wrong_token() {
    let server = provider_server(&[]);
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let hello = v1::encode(&HostHelloRequest {
        ak_pub: ak.public().marshal().into(),
        event_log: None,
    })
    .unwrap();
    let url = format!("{}{HOST_HELLO_PATH}", server.url);
    let mut wrong = host_token(&server);
    wrong.replace_range(..2, if wrong.starts_with("00") { "11" } else { "00" });
    // A fresh client per refusal: the server refuses before reading the body and closes
    // the connection.
    for token in [wrong.as_str(), ""] {
        let (status, body) = host_post(&server.http(), &url, token, &hello);
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        assert_eq!(code(&body), "unauthorized");
    }
    // The admin token is not the host token.
    let admin = std::fs::read_to_string(server.token_file()).unwrap();
    let (status, _) = host_post(&server.http(), &url, admin.trim(), &hello);
    assert_eq!(status, 401);
    for path in [HOST_NEXT_PATH, HOST_RESULT_PATH] {
        let (status, _) = host_post(
            &server.http(),
            &format!("{}{path}", server.url),
            &wrong,
            b"{}",
        );
        assert_eq!(status, 401, "{path}");
    }
    // Nothing connected: requesters still see no host.
    let (status, _) = ask(&server.http(), &server.url, &nonce(2, 0xc3));
    assert_eq!(status, 503);
    // The right token is accepted.
    let (status, body) = host_post(&server.http(), &url, &host_token(&server), &hello);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// The test as a (malicious) host agent: hello with a software AK, then answer jobs.
struct FakeHost {
    http: ureq::Agent,
    url: String,
    token: String,
    session: v1::Id,
}

fn selection() -> PcrSelection {
    PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[0, 7]).unwrap()]).unwrap()
}

fn pcrs() -> PcrValues {
    let mut p = PcrValues::new();
    p.insert(0, Digest::filled(HashAlg::Sha256, 1));
    p.insert(7, Digest::filled(HashAlg::Sha256, 7));
    p
}

impl FakeHost {
    fn hello(server: &Server, ak: &SoftwareAk) -> Self {
        let http = server.http();
        let token = host_token(server);
        let hello = HostHelloRequest {
            ak_pub: ak.public().marshal().into(),
            event_log: None,
        };
        let (status, body) = host_post(
            &http,
            &format!("{}{HOST_HELLO_PATH}", server.url),
            &token,
            &v1::encode(&hello).unwrap(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let h: HostHelloResponse = v1::decode(&body).unwrap();
        FakeHost {
            http,
            url: server.url.clone(),
            token,
            session: h.session_id,
        }
    }

    fn next(&self) -> HostJob {
        self.next_within(Duration::from_secs(600))
            .expect("a job within 600 s")
    }

    /// The next job, if one comes within `within` (each poll is held up to 25 s).
    fn next_within(&self, within: Duration) -> Option<HostJob> {
        let req = HostNextRequest {
            session_id: self.session.clone(),
        };
        let started = Instant::now();
        loop {
            if started.elapsed() > within {
                return None;
            }
            let (status, body) = host_post(
                &self.http,
                &format!("{}{HOST_NEXT_PATH}", self.url),
                &self.token,
                &v1::encode(&req).unwrap(),
            );
            match status {
                200 => return Some(v1::decode(&body).unwrap()),
                204 => continue,
                s => panic!("next: {s} {}", String::from_utf8_lossy(&body)),
            }
        }
    }

    /// Posts a quote by `signer` over `extra_data`; the server's status and error code.
    fn post(&self, job: &HostJob, signer: &SoftwareAk, extra_data: &[u8; 32]) -> (u16, String) {
        let clock = ClockInfo {
            clock: 1,
            reset_count: 1,
            restart_count: 0,
            safe: true,
        };
        let (attest, sig) = signer
            .quote(extra_data, &selection(), &pcrs(), clock, 0)
            .unwrap();
        let post = HostQuotePost {
            session_id: self.session.clone(),
            job_id: job.job_id,
            quote: attest.into(),
            signature: sig.marshal().into(),
            pcrs: HostQuoteResponse::banks_of(&pcrs()),
        };
        let (status, body) = host_post(
            &self.http,
            &format!("{}{HOST_RESULT_PATH}", self.url),
            &self.token,
            &v1::encode(&post).unwrap(),
        );
        let c = if body.is_empty() {
            String::new()
        } else {
            code(&body)
        };
        (status, c)
    }
}

#[test]
fn a_host_quote_over_another_root_or_by_another_key_never_reaches_requesters() {
    let server = provider_server(&["--provider-window-ms", "20"]);
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let other = SoftwareAk::generate_ecc_p256().unwrap();
    let host = FakeHost::hello(&server, &ak);

    let requester = |salt: u8| {
        let (http, url) = (server.http(), server.url.clone());
        let n = nonce(7, salt);
        (n, std::thread::spawn(move || ask(&http, &url, &n)))
    };

    // 1. A quote over another root (a replayed or made-up binding): refused, batch fails.
    let (_, waiting) = requester(0xd1);
    let job = host.next();
    let root = job.root().unwrap();
    let mut wrong_root = root;
    wrong_root[0] ^= 1;
    assert_eq!(
        host.post(&job, &ak, &host_extra_data(&wrong_root)),
        (403, "binding_mismatch".into())
    );
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("verification"));

    // 2. The right binding signed by a key other than the announced AK: refused.
    let (_, waiting) = requester(0xd2);
    let job = host.next();
    let root = job.root().unwrap();
    assert_eq!(
        host.post(&job, &other, &host_extra_data(&root)),
        (403, "quote_invalid".into())
    );
    let (status, _) = waiting.join().unwrap();
    assert_eq!(status, 502);

    // 3. The raw root as extraData (not the provider binding): refused.
    let (_, waiting) = requester(0xd3);
    let job = host.next();
    let root = job.root().unwrap();
    assert_eq!(
        host.post(&job, &ak, &root),
        (403, "binding_mismatch".into())
    );
    assert_eq!(waiting.join().unwrap().0, 502);

    // 4. A stale job id is refused as unknown.
    assert_eq!(
        host.post(&job, &ak, &host_extra_data(&root)),
        (404, "unknown_challenge".into())
    );

    // 5. An honest quote goes through and verifies for the requester.
    let (n, waiting) = requester(0xd4);
    let job = host.next();
    let root = job.root().unwrap();
    assert_eq!(
        host.post(&job, &ak, &host_extra_data(&root)),
        (204, String::new())
    );
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    check(ak.ak(), &n, &body);
}

#[test]
fn a_replaced_host_session_is_refused() {
    let server = provider_server(&[]);
    let first = FakeHost::hello(&server, &SoftwareAk::generate_ecc_p256().unwrap());
    let _second = FakeHost::hello(&server, &SoftwareAk::generate_ecc_p256().unwrap());
    let req = HostNextRequest {
        session_id: first.session.clone(),
    };
    let (status, body) = host_post(
        &first.http,
        &format!("{}{HOST_NEXT_PATH}", first.url),
        &first.token,
        &v1::encode(&req).unwrap(),
    );
    assert_eq!(status, 404);
    assert_eq!(code(&body), "unknown_agent");
}

#[test]
fn one_source_cannot_take_every_waiting_place() {
    // Per source at most 3 requests may wait; the stranger (127.0.0.2) fills its share,
    // its next request is refused at once, and a requester from 127.0.0.1 still gets in
    // and is answered.
    let server = provider_server(&[
        "--provider-window-ms",
        "20",
        "--provider-max-pending-per-source",
        "3",
    ]);
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let host = FakeHost::hello(&server, &ak);
    let raw = Arc::new(support::raw::Raw::new(&server));
    let body = |i: u64| {
        v1::encode(&HostQuoteRequest {
            nonce: nonce(i, 0xee).as_slice().into(),
        })
        .unwrap()
    };
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            let (raw, b) = (raw.clone(), body(i));
            std::thread::spawn(move || raw.post_from(support::raw::stranger(), HOST_QUOTE_PATH, &b))
        })
        .collect();
    // The three are pending (the host answers nothing yet): a fourth is refused at once.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (status, refused) = raw.post_from(support::raw::stranger(), HOST_QUOTE_PATH, &body(99));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((status, code(&refused).as_str()), (503, "rate_limited"));
    assert!(String::from_utf8_lossy(&refused).contains("this address"));

    let honest_nonce = nonce(1, 0x11);
    let (http, url) = (server.http(), server.url.clone());
    let honest = std::thread::spawn(move || ask(&http, &url, &honest_nonce));
    for _ in 0..4 {
        if honest.is_finished() {
            break;
        }
        let Some(job) = host.next_within(Duration::from_secs(1)) else {
            continue;
        };
        let root = job.root().unwrap();
        assert_eq!(
            host.post(&job, &ak, &host_extra_data(&root)),
            (204, String::new())
        );
    }
    let (status, body) = honest.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    check(ak.ak(), &honest_nonce, &body);
    for w in waiting {
        assert_eq!(w.join().unwrap().0, 200);
    }
}
