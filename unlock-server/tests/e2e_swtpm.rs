//! The release flow end to end: real `unlock-server` over HTTPS on 127.0.0.1, real
//! `unlockctl`, real `initrd-agent` on swtpm. Each refusal test forges exactly one thing and
//! checks both the reason and that nothing was released.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use support::{code, post, Driver, Machine, Server, Swtpm};
use verifier_core::keysplit::NkPrivate;
use verifier_core::proto::v1::{self, AttestResponse};
use verifier_core::proto::Base64Bytes;

const TOFU: &[&str] = &["--allow-ek-without-cert"];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn enrolled_agent_unlocks_and_payload_matches() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let out = m.agent(&server, None, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("initrd-agent: unlocked"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    for role in ["verifier", "tenant"] {
        let s = server.releases(&agent_id, role);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].1, s[0].2.as_str()), (1, "terminated"));
    }
}

#[test]
fn pcr_changed_after_enrollment_refused() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    {
        let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
        tpm.extend(
            7,
            &[verifier_core::wire::HashAlg::Sha256.hash(b"other bootloader")],
        )
        .unwrap();
    }
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("policy_denied"), "{}", stderr(&out));
    assert!(stderr(&out).contains("pcr sha256:7"), "{}", stderr(&out));
    assert!(!m.key_file().exists());
    assert!(server.releases(&agent_id, "verifier").is_empty());
}

#[test]
fn second_attest_in_same_boot_refused_then_next_boot_unlocks() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    std::fs::remove_file(m.key_file()).unwrap();
    // Same boot: the release PCR was extended, so the TPM cannot produce a passing quote.
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("release_pcr"), "{}", stderr(&out));
    // Next boot: a new session.
    m.reboot();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    assert_eq!(server.releases(&agent_id, "verifier").len(), 2);
}

#[test]
fn terminated_session_refused_by_the_server_itself() {
    // Without the release-PCR rule, only the server's count stops a second release.
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &[]);
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("session_terminated"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.releases(&agent_id, "verifier")[0].1, 1);
}

#[test]
fn max_boots_terminates_the_agent_for_good() {
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &["--max-boots", "1"]);
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    m.reboot();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("agent_terminated"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.status(&agent_id)["verifier"]["state"], "terminated");
}

#[test]
fn reset_count_lower_than_a_terminated_session_refused() {
    // A TPM state restored from an old copy (a cloned or rolled-back VM) boots with a
    // resetCount behind the sessions the server has seen.
    let mut m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    let (dir, state) = m.tpm.take().unwrap().stop();
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(&state, snapshot.path());
    m.tpm = Some(Swtpm::resume(dir, state.clone()));
    for _ in 0..2 {
        m.reboot();
        assert_eq!(m.agent(&server, None, &[]).status.code(), Some(0));
    }
    let (dir, state) = m.tpm.take().unwrap().stop();
    copy_dir(snapshot.path(), &state);
    m.tpm = Some(Swtpm::resume(dir, state));
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reset_count_regressed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.releases(&agent_id, "verifier").len(), 3);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn tpm_not_enrolled_refused() {
    let m = Machine::new();
    let other = Machine::new();
    let server = Server::start(TOFU);
    m.enroll(&server, &m.policy_now(true), &[]);
    let out = other.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not_enrolled"), "{}", stderr(&out));
}

#[test]
fn ek_certificate_from_untrusted_ca_refused() {
    let (tpm_a, _, _) = Swtpm::start_provisioned(false);
    let (_tpm_b, root_b, issuer_b) = Swtpm::start_provisioned(false);
    let dir = tempfile::tempdir().unwrap();
    let ca_b = dir.path().join("ca-b.pem");
    std::fs::write(&ca_b, [root_b, issuer_b].concat()).unwrap();
    // The server trusts only B's CA; A's EK certificate was issued by A's CA.
    let server = Server::start(&["--ek-ca", ca_b.to_str().unwrap()]);
    let m = Machine::with_tpm(tpm_a, "rsa");
    m.enroll(&server, &m.policy_now(true), &[]);
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ek_cert_untrusted"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ek_certificate_from_trusted_ca_unlocks() {
    let (tpm, root, issuer) = Swtpm::start_provisioned(false);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, [root, issuer].concat()).unwrap();
    let server = Server::start(&["--ek-ca", ca.to_str().unwrap()]);
    let m = Machine::with_tpm(tpm, "rsa");
    let (_, payload) = m.enroll(&server, &m.policy_now(true), &[]);
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

/// Replays one of the shared real event logs into the swtpm (as firmware would have), so
/// the log and the TPM agree; returns the log.
fn replay_real_log_into(m: &Machine) -> Vec<u8> {
    let dir = std::env::var("UNLOCK_TESTDATA").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata").to_owned()
    });
    let log = std::fs::read(format!(
        "{dir}/eventlog/go-tpm-tools/ubuntu-2104-no-secure-boot.bin"
    ))
    .expect("shared test data (set UNLOCK_TESTDATA)");
    let parsed = verifier_core::eventlog::EventLog::parse(&log).unwrap();
    assert_eq!(parsed.startup_locality(), None);
    let mut tpm = initrd_agent::tpm::Tpm::open(&m.tcti()).unwrap();
    let banks = tpm.active_banks().unwrap();
    for e in parsed.events().iter().filter(|e| e.is_extended()) {
        let digests: Vec<_> = e
            .digests()
            .as_slice()
            .iter()
            .filter(|d| banks.contains(&d.alg()))
            .copied()
            .collect();
        tpm.extend(e.pcr(), &digests).unwrap();
    }
    log
}

#[test]
fn event_log_edited_refused_genuine_log_unlocks() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let log = replay_real_log_into(&m);
    let policy = m.policy_now(true).replacen(
        "{\"version\":1,",
        "{\"version\":1,\"require_event_log\":true,",
        1,
    );
    let (agent_id, payload) = m.enroll(&server, &policy, &[]);

    // Edit the SHA-256 digest of the last PCR 4 event (the boot loader).
    let parsed = verifier_core::eventlog::EventLog::parse(&log).unwrap();
    let ev = parsed
        .events()
        .iter()
        .rev()
        .find(|e| e.pcr() == 4 && e.is_extended())
        .unwrap();
    let d = ev
        .digests()
        .get(verifier_core::wire::HashAlg::Sha256)
        .unwrap()
        .as_bytes()
        .to_vec();
    let pos = ev.offset()
        + log[ev.offset()..]
            .windows(32)
            .position(|w| w == d.as_slice())
            .unwrap();
    let mut edited = log.clone();
    edited[pos] ^= 1;
    let edited_path = m.dir.path().join("edited.bin");
    std::fs::write(&edited_path, &edited).unwrap();
    let out = m.agent(&server, Some(&edited_path), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("event_log_mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(server.releases(&agent_id, "verifier").is_empty());

    // Without a log, a policy that requires one refuses.
    let out = m.agent(&server, None, &[]);
    assert!(
        stderr(&out).contains("require_event_log"),
        "{}",
        stderr(&out)
    );

    let good = m.dir.path().join("log.bin");
    std::fs::write(&good, &log).unwrap();
    let out = m.agent(&server, Some(&good), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
}

#[test]
fn nk_swapped_in_transit_refused_and_nothing_consumed() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let mut d = Driver::new(&m, &server);
    let (v, t) = (d.challenge("verifier"), d.challenge("tenant"));
    let nk = NkPrivate::generate().unwrap();
    let reqs = d.attest_requests(&[&v, &t], &nk, None);
    let mut forged = reqs[0].clone();
    let attacker = NkPrivate::generate().unwrap();
    forged.nk_pub.key = Base64Bytes::new(attacker.public().as_bytes().to_vec());
    let (st, body) = d.attest("verifier", &forged);
    assert_eq!((st, code(&body).as_str()), (403, "binding_mismatch"));
    assert!(server.releases(&agent_id, "verifier").is_empty());
    // The genuine request still releases: the forgery consumed nothing.
    let (st, body) = d.attest("verifier", &reqs[0]);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let resp: AttestResponse = v1::decode(&body).unwrap();
    let share = nk.open_share(
        &resp.sealed_half.to_keysplit().unwrap(),
        "verifier",
        reqs[0].challenge_id.as_str().as_bytes(),
    );
    assert!(share.is_ok());
    assert!(attacker
        .open_share(
            &resp.sealed_half.to_keysplit().unwrap(),
            "verifier",
            reqs[0].challenge_id.as_str().as_bytes()
        )
        .is_err());
}

#[test]
fn replayed_quote_from_an_earlier_challenge_refused() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    m.enroll(&server, &m.policy_now(false), &["--max-attestations", "3"]);
    let mut d = Driver::new(&m, &server);
    let nk = NkPrivate::generate().unwrap();
    let first = d.challenge("verifier");
    let reqs = d.attest_requests(&[&first], &nk, None);
    assert_eq!(d.attest("verifier", &reqs[0]).0, 200);
    // The old quote, proof and NK presented for a fresh challenge.
    let second = d.challenge("verifier");
    let mut replay = reqs[0].clone();
    replay.challenge_id = second.challenge_id.clone();
    let (st, body) = d.attest("verifier", &replay);
    assert_eq!((st, code(&body).as_str()), (403, "binding_mismatch"));
}

#[test]
fn reused_nonce_refused_identical_retry_answered_once() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &["--max-attestations", "3"]);
    let mut d = Driver::new(&m, &server);
    let nk = NkPrivate::generate().unwrap();
    let ch = d.challenge("verifier");
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let (st1, b1) = d.attest("verifier", &req);
    assert_eq!(st1, 200);
    // The response was "lost": the identical body gets the identical answer, counted once.
    let (st2, b2) = d.attest("verifier", &req);
    assert_eq!((st2, &b2), (200, &b1));
    assert_eq!(server.releases(&agent_id, "verifier")[0].1, 1);
    // A new quote on the same nonce is a reuse.
    let nk2 = NkPrivate::generate().unwrap();
    let again = d.attest_requests(&[&ch], &nk2, None).remove(0);
    let (st, body) = d.attest("verifier", &again);
    assert_eq!((st, code(&body).as_str()), (403, "challenge_used"));
    assert_eq!(server.releases(&agent_id, "verifier")[0].1, 1);
}

#[test]
fn expired_nonce_refused() {
    let m = Machine::new();
    let server = Server::start(&["--allow-ek-without-cert", "--challenge-ttl-secs", "1"]);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let mut d = Driver::new(&m, &server);
    let ch = d.challenge("verifier");
    std::thread::sleep(Duration::from_millis(2100));
    let nk = NkPrivate::generate().unwrap();
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let (st, body) = d.attest("verifier", &req);
    assert_eq!((st, code(&body).as_str()), (403, "challenge_expired"));
    assert!(server.releases(&agent_id, "verifier").is_empty());
}

#[test]
fn quote_from_a_second_tpm_refused() {
    let m = Machine::new();
    let other = Machine::new();
    let server = Server::start(TOFU);
    m.enroll(&server, &m.policy_now(true), &[]);
    let d = Driver::new(&m, &server);
    let ch = d.challenge("verifier");
    // Another TPM quotes over the right nonce and NK with its own AK.
    let mut thief = Driver::unregistered(&other, &server);
    let nk = NkPrivate::generate().unwrap();
    let req = thief.attest_requests(&[&ch], &nk, None).remove(0);
    let (st, body) = d.attest("verifier", &req);
    assert_eq!((st, code(&body).as_str()), (403, "quote_invalid"));
}

#[test]
fn ak_not_activated_refused() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    m.enroll(&server, &m.policy_now(true), &[]);
    let mut d = Driver::unregistered(&m, &server);
    let _ = d.register("verifier"); // MakeCredential answered, never activated
    let (st, body) = d.try_challenge("verifier");
    assert_eq!((st, code(&body).as_str()), (404, "unknown_agent"));
}

#[test]
fn fifty_parallel_attests_of_one_boot_release_exactly_once() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (agent_id, _) = m.enroll(&server, &m.policy_now(true), &[]);
    let mut d = Driver::new(&m, &server);
    // Fifty agent processes of one boot (fifty NKs): one release. (The same NK would be
    // the same process asking again: answered, not counted; see e2e_edge.)
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            let nk = NkPrivate::generate().unwrap();
            let ch = d.challenge("verifier");
            v1::encode(&d.attest_requests(&[&ch], &nk, None).remove(0)).unwrap()
        })
        .collect();
    let url = d.url("verifier", v1::path::ATTEST);
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let http = server.http();
            let url = url.clone();
            std::thread::spawn(move || post(&http, &url, &b))
        })
        .collect();
    let results: Vec<(u16, Vec<u8>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let released = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(released, 1);
    for (s, b) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*s, code(b).as_str()), (403, "session_terminated"));
    }
    let sessions = server.releases(&agent_id, "verifier");
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].1, sessions[0].2.as_str()), (1, "terminated"));
}

#[test]
fn kill9_between_enrollment_and_attestation_then_agent_unlocks() {
    let m = Machine::new();
    let mut server = Server::start(TOFU);
    let (_, payload) = m.enroll(&server, &m.policy_now(false), &[]);
    server.restart();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(m.key_file()).unwrap(), payload);
    // A TERMINATED session stays TERMINATED across a crash.
    server.restart();
    let out = m.agent(&server, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("session_terminated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn admin_calls_without_token_refused() {
    let server = Server::start(TOFU);
    let http = server.http();
    let url = format!("{}/verifier/admin/v1/enrollments", server.url);
    let r = http.get(&url).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(&url)
        .header("Authorization", "Bearer 00")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let r = http
        .get(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, body) = post(&http, &url, b"{}");
    assert_eq!((st, code(&body).as_str()), (401, "unauthorized"));
}

#[test]
fn malformed_and_oversize_requests_get_4xx_and_server_keeps_serving() {
    let server = Server::start(&["--allow-ek-without-cert", "--max-body-bytes", "4096"]);
    let http = server.http();
    let attest = format!("{}/verifier/v1/attest", server.url);
    for bad in [&b"{"[..], b"[]", b"{\"challenge_id\":1}", b"\xff\xfe", b""] {
        let (st, body) = post(&http, &attest, bad);
        assert_eq!((st, code(&body).as_str()), (400, "malformed_request"));
    }
    // Over the limit, but small enough to sit in the socket buffers while the server answers.
    let huge = vec![b' '; 10_000];
    let (st, body) = post(&http, &attest, &huge);
    assert_eq!((st, code(&body).as_str()), (413, "payload_too_large"));
    let r = http.get(&format!("{}/healthz", server.url)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn luks_image(m: &Machine) -> (std::path::PathBuf, std::path::PathBuf) {
    let img = m.dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let pass = m.dir.path().join("pass");
    std::fs::write(&pass, b"correct horse battery staple").unwrap();
    let st = std::process::Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&pass)
        .arg(&img)
        .status()
        .expect("cryptsetup is required (apt-get install cryptsetup-bin)");
    assert!(st.success());
    (img, pass)
}

fn bind_args<'a>(
    m: &'a Machine,
    server: &Server,
    img: &'a std::path::Path,
    existing: &'a std::path::Path,
) -> Vec<String> {
    let cfg = m.config(server, None);
    let policy = m.dir.path().join("bind-policy.json");
    std::fs::write(&policy, m.policy_now(true)).unwrap();
    [
        "bind",
        "--device",
        img.to_str().unwrap(),
        "--existing-key-file",
        existing.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--agent",
        support::agent_bin().to_str().unwrap(),
        "--agent-config",
        cfg.to_str().unwrap(),
        "--agent-cmdline-file",
        m.dir.path().join("cmdline").to_str().unwrap(),
        "--cryptsetup-arg=--pbkdf=pbkdf2",
        "--cryptsetup-arg=--pbkdf-force-iterations=1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn bind_adds_a_key_slot_that_the_agent_unlocks() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (img, pass) = luks_image(&m);
    let args = bind_args(&m, &server, &img, &pass);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = server.unlockctl(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // The AK was registered and pinned at enrollment (both roles): the first boot goes
    // straight to the challenges.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AK registered and pinned"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(server.registrations(), 2);
    let out = m.agent(&server, None, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("step register"), "{}", stderr(&out));
    assert_eq!(server.registrations(), 2);
    // The released key opens the LUKS image (a new key slot), the old passphrase still does.
    for key in [m.key_file(), pass] {
        let st = std::process::Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&key)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "{} does not open the image", key.display());
    }
}

#[test]
fn bind_with_a_wrong_existing_key_rolls_back_the_enrollment() {
    let m = Machine::new();
    let server = Server::start(TOFU);
    let (img, _) = luks_image(&m);
    let wrong = m.dir.path().join("wrong");
    std::fs::write(&wrong, b"not the passphrase").unwrap();
    let args = bind_args(&m, &server, &img, &wrong);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = server.unlockctl(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    let list = server.unlockctl(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["verifier"].as_array().unwrap().len(), 0);
    assert_eq!(v["tenant"].as_array().unwrap().len(), 0);
}
