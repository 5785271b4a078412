//! A guest's policy that requires a fresh host quote, end to end: the real `unlock-server`,
//! `unlockctl` and `initrd-agent` (the guest, on its swtpm), and a real
//! `initrd-agent provider` on another swtpm as the host, its PCRs extended from a real UEFI
//! event log that it serves. Each refusal test breaks exactly one thing about the host and
//! checks the reason, that nothing was released, and (where it matters) that the machine can
//! still unlock once the host is right.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use initrd_agent::tpm::Tpm;
use support::{agent_bin, testdata, Machine, Server, Swtpm};
use verifier_core::eventlog::EventLog;
use verifier_core::proto::v1::{
    self, HostAkResponse, HostQuoteRequest, HOST_AK_PATH, HOST_QUOTE_PATH,
};
use verifier_core::wire::HashAlg;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A host: its swtpm, booted from a real event log, and its provider process.
struct Host {
    tpm: Swtpm,
    log: PathBuf,
    provider: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
}

impl Host {
    /// A host TPM whose PCRs were extended with every event of a real UEFI log, and a
    /// provider serving it (a fresh AK, as the provider makes at each start).
    fn start() -> Self {
        let log = testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin");
        let bytes = std::fs::read(&log).expect("testdata eventlog/go-tpm-tools/rhel8-uefi.bin");
        let tpm = Swtpm::start();
        {
            let parsed = EventLog::parse(&bytes).unwrap();
            let mut t = Tpm::open(&tpm.tcti()).unwrap();
            for e in parsed.events().iter().filter(|e| e.is_extended()) {
                t.extend(e.pcr(), e.digests().as_slice()).unwrap();
            }
        }
        let mut h = Host {
            tpm,
            log,
            provider: None,
            url: String::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        let cmdline = self.dir.path().join("cmdline");
        std::fs::write(&cmdline, "").unwrap();
        let config = self.dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "tcti = \"{}\"\nevent_log = \"{}\"\n",
                self.tpm.tcti(),
                self.log.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .arg("--cmdline-file")
            .arg(&cmdline)
            .args(["provider", "--listen", "127.0.0.1:0", "--window-ms", "10"])
            .env("TSS2_LOG", "all+NONE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let line = support::first_line(&mut child, Duration::from_secs(60), "provider");
        self.url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        self.provider = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.provider.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: the provider still accepts connections (the kernel does) but
    /// answers nothing, like a hung host.
    fn signal(&self, sig: &str) {
        let pid = self.provider.as_ref().unwrap().id().to_string();
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success());
    }

    /// What an operator does to pin the AK: `GET /v1/provider/ak` (the `ak_pub` field as
    /// it is on the wire, and the name in hex as the provider prints it).
    fn ak(&self) -> (String, String) {
        let mut resp = http()
            .get(format!("{}{HOST_AK_PATH}", self.url))
            .call()
            .unwrap();
        let body = resp.body_mut().read_to_vec().unwrap();
        let ak: HostAkResponse = v1::decode(&body).unwrap();
        let json = serde_json::to_value(&ak).unwrap();
        (
            json["ak_pub"].as_str().unwrap().to_owned(),
            hex::encode(ak.ak_name.as_bytes()),
        )
    }

    /// The host's sha256 PCR `i` (read from the log's replay, as an operator would learn it).
    fn pcr(&self, i: u8) -> String {
        let bytes = std::fs::read(&self.log).unwrap();
        let parsed = EventLog::parse(&bytes).unwrap();
        parsed.replay().get(HashAlg::Sha256, i).unwrap().to_hex()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// The machine's own policy (its PCRs now, release PCR) plus `host`.
fn policy(m: &Machine, host: serde_json::Value) -> String {
    let mut p: serde_json::Value = serde_json::from_str(&m.policy_now(true)).unwrap();
    p["host"] = host;
    p.to_string()
}

/// A host section pinning `pinned`'s AK, asking `url`, with rules on PCRs 0 and 7 (the
/// host's real values unless `pcr0` overrides PCR 0).
fn host_section(
    url: &str,
    pinned: &Host,
    pcr0: Option<&str>,
    timeout_ms: u64,
) -> serde_json::Value {
    let (ak_pub, ak_name) = pinned.ak();
    let pcr0 = pcr0.map_or_else(|| pinned.pcr(0), str::to_owned);
    serde_json::json!({
        "provider": url,
        "ak_pub": ak_pub,
        "ak_name": ak_name,
        "pcrs": [
            {"bank": "sha256", "index": 0, "allowed": [pcr0]},
            {"bank": "sha256", "index": 7, "allowed": [pinned.pcr(7)]}
        ],
        "require_event_log": true,
        "timeout_ms": timeout_ms
    })
}

fn metrics(server: &Server) -> String {
    let mut resp = server
        .http()
        .get(format!("{}/metrics", server.url))
        .call()
        .unwrap();
    String::from_utf8(resp.body_mut().read_to_vec().unwrap()).unwrap()
}

/// The agent was refused with `code` by both roles (each checks its own copy of the policy
/// against the host), and nothing was released.
fn assert_refused(
    out: &std::process::Output,
    m: &Machine,
    server: &Server,
    agent_id: &str,
    code: &str,
) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(code), "{}", stderr(out));
    assert!(!m.key_file().exists());
    for role in ["verifier", "tenant"] {
        assert!(
            server.releases(agent_id, role).is_empty(),
            "{role} released despite {code}"
        );
    }
    let text = metrics(server);
    let label = format!("result=\"refused\",reason=\"{code}\"");
    assert!(text.contains(&label), "{text}");
}

#[test]
fn host_meeting_its_policy_lets_the_machine_unlock() {
    let host = Host::start();
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(
        &server,
        &policy(&m, host_section(&host.url, &host, None, 10_000)),
        &[],
    );
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    for role in ["verifier", "tenant"] {
        let s = server.releases(&agent_id, role);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].1, s[0].2.as_str()), (1, "terminated"));
    }
}

#[test]
fn host_pcr_not_allowed_is_refused() {
    let host = Host::start();
    let m = Machine::new();
    let server = Server::start(TOFU);
    let wrong = "11".repeat(32);
    let (agent_id, _) = m.enroll(
        &server,
        &policy(&m, host_section(&host.url, &host, Some(&wrong), 10_000)),
        &[],
    );
    let out = m.agent(&server, None, &[]);
    assert_refused(&out, &m, &server, &agent_id, "host_policy_denied");
    assert!(
        stderr(&out).contains("host.pcr sha256:0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn quote_by_another_ak_is_refused() {
    // The policy pins host A's AK, but the provider it names is host B (another TPM; the
    // same would happen after A's provider restarted with a new AK).
    let a = Host::start();
    let b = Host::start();
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(
        &server,
        &policy(&m, host_section(&b.url, &a, None, 10_000)),
        &[],
    );
    let out = m.agent(&server, None, &[]);
    assert_refused(&out, &m, &server, &agent_id, "host_quote_invalid");
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
}

#[test]
fn provider_down_is_refused_and_the_release_is_kept_for_later() {
    let host = Host::start();
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(
        &server,
        &policy(&m, host_section(&host.url, &host, None, 1_000)),
        &[],
    );
    // Hung: connections are accepted but nothing answers within the policy's timeout.
    host.signal("-STOP");
    let out = m.agent(&server, None, &[]);
    host.signal("-CONT");
    assert_refused(&out, &m, &server, &agent_id, "host_unreachable");
    // Back up: the same boot unlocks, the refused attempt consumed no release.
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    for role in ["verifier", "tenant"] {
        let s = server.releases(&agent_id, role);
        assert_eq!((s[0].1, s[0].2.as_str()), (1, "terminated"), "{role}");
    }
}

#[test]
fn provider_not_running_is_refused() {
    let mut host = Host::start();
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(
        &server,
        &policy(&m, host_section(&host.url, &host, None, 5_000)),
        &[],
    );
    host.stop();
    let out = m.agent(&server, None, &[]);
    assert_refused(&out, &m, &server, &agent_id, "host_unreachable");
}

#[test]
fn replayed_host_answer_is_refused() {
    // A provider that answers every request with one answer it captured earlier: a valid
    // quote by the pinned AK, over a nonce that is not the role's.
    let host = Host::start();
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).unwrap();
    let req = v1::encode(&HostQuoteRequest {
        nonce: nonce.as_slice().into(),
    })
    .unwrap();
    let mut resp = http()
        .post(format!("{}{HOST_QUOTE_PATH}", host.url))
        .content_type("application/json")
        .send(&req[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let captured = resp.body_mut().read_to_vec().unwrap();
    let replayer = replaying_server(captured);

    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(
        &server,
        &policy(&m, host_section(&replayer, &host, None, 5_000)),
        &[],
    );
    let out = m.agent(&server, None, &[]);
    assert_refused(&out, &m, &server, &agent_id, "host_quote_invalid");
    assert!(stderr(&out).contains("extraData"), "{}", stderr(&out));
}

/// A tiny HTTP/1.1 server answering every request with `body` (status 200), one request
/// per connection. Returns its base URL.
fn replaying_server(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                // Read the head and the (small) body; the request's content is ignored.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            });
        }
    });
    format!("http://{addr}")
}
