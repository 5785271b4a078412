//! Provider mode end to end: the real `initrd-agent provider` binary on swtpm (PCRs extended
//! from a real UEFI event log, which it serves), 200 concurrent HTTP requesters, each
//! verifying its own answer with verifier-core against the AK it pinned.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::Swtpm;
use initrd_agent::tpm::Tpm;
use verifier_core::eventlog::EventLog;
use verifier_core::proto::v1::{
    self, ErrorCode, ErrorResponse, HostAkResponse, HostQuoteRequest, HostQuoteResponse,
    HOST_AK_PATH, HOST_QUOTE_PATH,
};
use verifier_core::provider::{validate_host_quote, HostAnswer, HostTrust};
use verifier_core::quote::{AkPublic, VerifyError};
use verifier_core::wire::{Public, Signature};

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("README.md").is_file(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

struct Provider {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extends the swtpm's PCRs with every event of `log`, as firmware would have.
fn measure_boot(tpm: &Swtpm, log: &[u8]) {
    let parsed = EventLog::parse(log).unwrap();
    let mut t = Tpm::open(&tpm.tcti()).unwrap();
    for e in parsed.events().iter().filter(|e| e.is_extended()) {
        t.extend(e.pcr(), e.digests().as_slice()).unwrap();
    }
}

fn start_provider(tpm: &Swtpm, event_log: Option<&PathBuf>, extra: &[&str]) -> Provider {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "").unwrap();
    let config = dir.path().join("config.toml");
    let mut toml = format!("tcti = \"{}\"\n", tpm.tcti());
    if let Some(p) = event_log {
        toml.push_str(&format!("event_log = \"{}\"\n", p.display()));
    }
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_initrd-agent"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--cmdline-file")
        .arg(&cmdline)
        .args(["provider", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if event_log.is_none() {
        cmd.arg("--no-event-log");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("provider did not print its address");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    Provider {
        child,
        url,
        _dir: dir,
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let resp = agent
        .post(url)
        .content_type("application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_vec().unwrap())
}

/// What a requester does out of band: fetch the AK once and pin it.
fn pin_ak(p: &Provider) -> AkPublic {
    let mut resp = http()
        .get(format!("{}{HOST_AK_PATH}", p.url))
        .call()
        .unwrap();
    let body = resp.body_mut().read_to_vec().unwrap();
    let ak: HostAkResponse = v1::decode(&body).unwrap();
    let public = Public::parse(ak.ak_pub.as_bytes()).unwrap();
    assert_eq!(public.name(), ak.ak_name.as_bytes());
    AkPublic::try_from(public).unwrap()
}

/// One requester: fresh nonce, post, verify. Returns the quote bytes (to count quotes).
fn request_and_verify(agent: &ureq::Agent, url: &str, ak: &AkPublic, i: u64) -> Vec<u8> {
    let mut nonce = [0u8; 32];
    aws_lc_fill(&mut nonce);
    nonce[..8].copy_from_slice(&i.to_be_bytes());
    let req = HostQuoteRequest {
        nonce: nonce.as_slice().into(),
    };
    let (status, body) = post(agent, url, &v1::encode(&req).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let resp: HostQuoteResponse = v1::decode(&body).unwrap();
    let sig = Signature::parse(resp.signature.as_bytes()).unwrap();
    let pcrs = resp.pcr_values().unwrap();
    let proof = resp.inclusion.to_merkle().unwrap();
    let verified = validate_host_quote(
        HostTrust { ak, nonce: &nonce },
        HostAnswer {
            attest: resp.quote.as_bytes(),
            signature: &sig,
            pcrs: &pcrs,
            proof: &proof,
            event_log: resp.event_log.as_ref().map(|l| l.as_bytes()),
        },
    )
    .unwrap_or_else(|e| panic!("requester {i}: {e}"));
    assert_eq!(
        verified
            .quote()
            .pcrs()
            .bank(verifier_core::wire::HashAlg::Sha256)
            .count(),
        8
    );
    resp.quote.into_vec()
}

fn aws_lc_fill(buf: &mut [u8; 32]) {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Uniqueness is what the test needs; the index prefix guarantees it, the clock varies
    // the rest between runs.
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = verifier_core::wire::HashAlg::Sha256.hash(t.to_string().as_bytes());
    buf.copy_from_slice(d.as_bytes());
}

#[test]
fn two_hundred_concurrent_requesters_get_verified_answers_from_few_quotes() {
    if common::skip() {
        return;
    }
    common::quiet_tss();
    let tpm = Swtpm::start();
    let log_path = testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin");
    measure_boot(&tpm, &std::fs::read(&log_path).unwrap());
    let p = start_provider(
        &tpm,
        Some(&log_path),
        &[
            "--window-ms",
            "300",
            "--max-batch",
            "1000",
            "--pcrs",
            "sha256:0-7",
        ],
    );
    let ak = Arc::new(pin_ak(&p));
    let url = format!("{}{HOST_QUOTE_PATH}", p.url);

    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (ak, url, barrier) = (Arc::clone(&ak), url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let agent = http();
                barrier.wait();
                request_and_verify(&agent, &url, &ak, i as u64)
            })
        })
        .collect();
    let quotes: HashSet<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        quotes.len() <= 3,
        "{} distinct quotes for {n} requesters in one window",
        quotes.len()
    );
}

#[test]
fn provider_refuses_malformed_requests_and_keeps_serving() {
    if common::skip() {
        return;
    }
    common::quiet_tss();
    let tpm = Swtpm::start();
    let p = start_provider(&tpm, None, &["--window-ms", "5"]);
    let ak = pin_ak(&p);
    let url = format!("{}{HOST_QUOTE_PATH}", p.url);
    let agent = http();
    for body in [
        &br#"{"nonce":"AAAA"}"#[..],
        br#"{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","more":1}"#,
        b"not json",
    ] {
        let (status, resp) = post(&agent, &url, body);
        assert_eq!(status, 400);
        let e: ErrorResponse = serde_json::from_slice(&resp).unwrap();
        assert_eq!(e.code, ErrorCode::MalformedRequest);
    }
    let (status, _) = post(&agent, &url, &vec![b' '; 64 * 1024]);
    assert_eq!(status, 413);
    let (status, _) = post(&agent, &format!("{}/v1/nothing", p.url), b"{}");
    assert_eq!(status, 404);
    // Still serving, and a quote still verifies only with the pinned AK.
    let quote = request_and_verify(&http(), &url, &ak, 1);
    assert!(!quote.is_empty());
    let other_tpm = Swtpm::start();
    let other = start_provider(&other_tpm, None, &["--window-ms", "5"]);
    let other_url = format!("{}{HOST_QUOTE_PATH}", other.url);
    let nonce = [9u8; 32];
    let (status, body) = post(
        &http(),
        &other_url,
        &v1::encode(&HostQuoteRequest {
            nonce: nonce.as_slice().into(),
        })
        .unwrap(),
    );
    assert_eq!(status, 200);
    let resp: HostQuoteResponse = v1::decode(&body).unwrap();
    let sig = Signature::parse(resp.signature.as_bytes()).unwrap();
    let err = validate_host_quote(
        HostTrust {
            ak: &ak,
            nonce: &nonce,
        },
        HostAnswer {
            attest: resp.quote.as_bytes(),
            signature: &sig,
            pcrs: &resp.pcr_values().unwrap(),
            proof: &resp.inclusion.to_merkle().unwrap(),
            event_log: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        verifier_core::provider::HostQuoteError::Quote(VerifyError::SignatureInvalid)
    );
}

/// A TCP connection to `url`'s host and port from `src` (std cannot bind before connect).
fn connect_from(src: &str, url: &str) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{src}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

#[test]
fn one_source_cannot_hold_every_connection() {
    if common::skip() {
        return;
    }
    common::quiet_tss();
    use std::io::Read;
    let tpm = Swtpm::start();
    // 16 connections in all: 2 per source.
    let p = start_provider(&tpm, None, &["--max-connections", "16"]);
    let ak = pin_ak(&p);
    // The stranger (127.0.0.2) opens its two and sits on them.
    let held: Vec<_> = (0..2).map(|_| connect_from("127.0.0.2", &p.url)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect_from("127.0.0.2", &p.url);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("too many connections from this address"),
        "{answer}"
    );
    // Another requester is served meanwhile, and its answer verifies.
    let url = format!("{}{HOST_QUOTE_PATH}", p.url);
    request_and_verify(&http(), &url, &ak, 1);
    drop(held);
}
