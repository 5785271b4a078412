//! Failure actions: a webhook receiver (a small HTTP server in this test) is told of each
//! TERMINATED session, refusal and revocation exactly once, across an outage of the receiver
//! and a kill -9 and restart of the server, and every request's signature verifies with the
//! shared secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Machine, Opts, Server};

/// One received delivery: (delivery id, event, signature header, body).
type Received = (String, String, String, Vec<u8>);

struct Receiver {
    port: u16,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (u, r, g) = (up.clone(), refused.clone(), got.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut headers = HashMap::new();
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = if u.load(Ordering::SeqCst) {
                    g.lock().unwrap().push((
                        headers
                            .get("x-unlock-delivery")
                            .cloned()
                            .unwrap_or_default(),
                        headers.get("x-unlock-event").cloned().unwrap_or_default(),
                        headers
                            .get("x-unlock-signature")
                            .cloned()
                            .unwrap_or_default(),
                        body,
                    ));
                    "200 OK"
                } else {
                    r.fetch_add(1, Ordering::SeqCst);
                    "503 Service Unavailable"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Receiver {
            port,
            up,
            refused,
            got,
        }
    }
}

#[test]
fn each_event_is_delivered_once_across_an_outage_and_a_restart_signed() {
    let rx = Receiver::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("webhook.secret");
    let config = format!(
        "[webhook]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 2\n",
        rx.port,
        secret_file.display()
    );
    let mut server = Server::start_with(
        &["--allow-ek-without-cert", "--purge-interval-secs", "0"],
        Opts {
            config: Some(config),
            ..Opts::default()
        },
    );
    // Events: a TERMINATED session (good machine, 1 release per boot), a refusal (a machine
    // whose policy pins PCR 0 to a value it does not have), a revocation; on both roles.
    let good = Machine::new();
    let (good_id, _) = good.enroll(&server, &good.policy_now(true), &[]);
    assert_eq!(good.agent(&server, None, &[]).status.code(), Some(0));
    let bad = Machine::new();
    let wrong = format!(
        r#"{{"version":1,"pcrs":[{{"bank":"sha256","index":0,"allowed":["{}"]}}]}}"#,
        "11".repeat(32)
    );
    bad.enroll(&server, &wrong, &[]);
    let out = bad.agent(&server, None, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.unlockctl(&["revoke", &good_id]).status.success());

    // The receiver is down: the server retries; then it is killed and restarted.
    let t = Instant::now();
    while rx.refused.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rx.refused.load(Ordering::SeqCst) >= 2,
        "no delivery attempt while down"
    );
    server.restart();
    rx.up.store(true, Ordering::SeqCst);

    let want = 6; // (terminated, refusal, revoked) x (verifier, tenant)
    let t = Instant::now();
    // The killed process's lease (2 x timeout + 5 s = 9 s) lapses first.
    while rx.got.lock().unwrap().len() < want && t.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A little longer: nothing more may come.
    std::thread::sleep(Duration::from_secs(3));
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        want,
        "{:?}",
        got.iter().map(|g| (&g.0, &g.1)).collect::<Vec<_>>()
    );
    let mut ids: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), want, "a delivery came twice: {ids:?}");
    let mut events: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "refusal",
            "refusal",
            "revoked",
            "revoked",
            "terminated",
            "terminated"
        ]
    );
    // Signatures: HMAC-SHA256 of the body under the secret the server created.
    let secret = hex::decode(std::fs::read_to_string(&secret_file).unwrap().trim()).unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    for (id, _, sig, body) in &got {
        let hex_sig = sig
            .strip_prefix("sha256=")
            .unwrap_or_else(|| panic!("{id}: {sig}"));
        aws_lc_rs::hmac::verify(&key, body, &hex::decode(hex_sig).unwrap())
            .unwrap_or_else(|_| panic!("{id}: signature does not verify"));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["delivery"], id.as_str());
    }
    // A forged body with a reused signature would not verify.
    let (_, _, sig, body) = &got[0];
    let mut forged = body.clone();
    forged[0] ^= 1;
    let hex_sig = sig.strip_prefix("sha256=").unwrap();
    assert!(aws_lc_rs::hmac::verify(&key, &forged, &hex::decode(hex_sig).unwrap()).is_err());
}
