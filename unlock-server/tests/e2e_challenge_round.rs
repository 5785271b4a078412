//! End-to-end: the challenge round on the wire (evidence kind `test-challenge-round`)
//! through the real server, its real database and a swtpm.
//!
//! What is real and what is a test: the server, its tickets, its database, the swtpm's EK,
//! AK (MakeCredential), quotes and the release are the product. The attester that answers
//! the verifier-made parameters is the protocol's TEST attester ([`verifier_core::round`]):
//! the server seals a per-challenge secret to its X25519 key (given to the server with the
//! test-only `--test-attester-key`) and accepts only an HMAC under that secret over THIS
//! challenge's nonce and the quote sent. No real attester needing a round (IBM Secure
//! Execution) is built: no public sample evidence exists to test one against.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{code, post, Driver, Machine, Server};
use verifier_core::keysplit::NkPrivate;
use verifier_core::proto::v1::{self, AttestRequest, ChallengeResponse, MAX_CHALLENGE_ANSWER};
use verifier_core::proto::Base64Bytes;
use verifier_core::round::{self, RoundError, PARAMS_VERSION};

const KIND: &[&str] = &["--evidence", "test-challenge-round"];

/// A server that accepts the test kind, and the test attester's key.
fn server() -> (Server, NkPrivate) {
    let attester = NkPrivate::generate().unwrap();
    let key = hex::encode(attester.public().as_bytes());
    let server = Server::start(&["--allow-ek-without-cert", "--test-attester-key", &key]);
    (server, attester)
}

/// A machine enrolled for the test kind, registered and activated with both roles.
fn machine(server: &Server) -> (Machine, String, Driver) {
    let m = Machine::new();
    let (agent_id, _) = m.enroll(server, &m.policy_now(false), KIND);
    let d = Driver::new(&m, server);
    (m, agent_id, d)
}

fn params(ch: &ChallengeResponse) -> &[u8] {
    ch.params
        .as_ref()
        .expect("the challenge carries params")
        .as_bytes()
}

/// The attester's answer to `ch` for the quote in `req`.
fn answer(attester: &NkPrivate, ch: &ChallengeResponse, req: &AttestRequest) -> Vec<u8> {
    round::answer(
        attester,
        params(ch),
        &ch.nonce().unwrap(),
        req.quote.as_bytes(),
    )
    .unwrap()
    .to_vec()
}

fn with_answer(req: &AttestRequest, answer: Option<Vec<u8>>) -> AttestRequest {
    let mut r = req.clone();
    r.answer = answer.map(Base64Bytes::new);
    r
}

fn refused(d: &Driver, role: &str, req: &AttestRequest) -> (u16, String) {
    let (st, body) = d.attest(role, req);
    (st, code(&body))
}

#[test]
fn the_round_unlocks_and_answers_not_made_for_this_challenge_are_refused() {
    let (server, attester) = server();
    let (_m, agent_id, mut d) = machine(&server);
    let ch = d.challenge("verifier");
    assert_eq!(params(&ch)[0], PARAMS_VERSION);
    let nk = NkPrivate::generate().unwrap();
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);

    // No answer although the kind needs one.
    assert_eq!(
        refused(&d, "verifier", &req),
        (403, "challenge_answer_missing".into())
    );
    // An answer made for another challenge of the same machine (its own params and nonce).
    let other = d.challenge("verifier");
    assert_ne!(params(&other), params(&ch));
    let for_other = answer(&attester, &other, &req);
    assert_eq!(
        refused(&d, "verifier", &with_answer(&req, Some(for_other))),
        (403, "challenge_answer_invalid".into())
    );
    // The other challenge's params presented with this challenge's nonce do not open (the
    // nonce is the seal's AAD), and altered params do not open at all.
    assert!(matches!(
        round::answer(&attester, params(&other), &ch.nonce().unwrap(), b"q"),
        Err(RoundError::Params(_))
    ));
    let mut altered = params(&ch).to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(round::answer(&attester, &altered, &ch.nonce().unwrap(), b"q").is_err());
    // Another attester's key cannot answer them.
    let stranger = NkPrivate::generate().unwrap();
    assert!(round::answer(&stranger, params(&ch), &ch.nonce().unwrap(), b"q").is_err());
    // The right secret over another quote.
    let for_other_quote = round::answer(
        &attester,
        params(&ch),
        &ch.nonce().unwrap(),
        b"another quote",
    )
    .unwrap()
    .to_vec();
    assert_eq!(
        refused(&d, "verifier", &with_answer(&req, Some(for_other_quote))),
        (403, "challenge_answer_invalid".into())
    );
    // Bounded: a wrong length is refused, an oversized answer does not decode.
    assert_eq!(
        refused(&d, "verifier", &with_answer(&req, Some(vec![7; 33]))),
        (403, "challenge_answer_invalid".into())
    );
    // (Sent as raw JSON: the protocol's encoder refuses to build it.)
    let oversized = with_answer(&req, Some(vec![7; MAX_CHALLENGE_ANSWER + 1]));
    assert!(v1::encode(&oversized).is_err());
    let (st, body) = post(
        &d.http,
        &d.url("verifier", v1::path::ATTEST),
        &serde_json::to_vec(&oversized).unwrap(),
    );
    assert_eq!((st, code(&body).as_str()), (400, "malformed_request"));
    assert!(server.releases(&agent_id, "verifier").is_empty());

    // The honest answer unlocks with both roles.
    let t = d.challenge("tenant");
    let nk = NkPrivate::generate().unwrap();
    let ch2 = d.challenge("verifier");
    let reqs = d.attest_requests(&[&ch2, &t], &nk, None);
    for (role, c, r) in [("verifier", &ch2, &reqs[0]), ("tenant", &t, &reqs[1])] {
        let honest = with_answer(r, Some(answer(&attester, c, r)));
        let (st, body) = d.attest(role, &honest);
        assert_eq!(st, 200, "{role}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(server.releases(&agent_id, "verifier").len(), 1);
    assert_eq!(server.releases(&agent_id, "tenant").len(), 1);

    // The accepted answer replayed on a later challenge (with that challenge's quote).
    let old = answer(&attester, &ch2, &reqs[0]);
    let ch3 = d.challenge("verifier");
    let req3 = d.attest_requests(&[&ch3], &nk, None).remove(0);
    assert_eq!(
        refused(&d, "verifier", &with_answer(&req3, Some(old))),
        (403, "challenge_answer_invalid".into())
    );
    d.release();
}

#[test]
fn the_test_kind_is_refused_by_a_server_without_the_test_flag() {
    let server = Server::start(&["--allow-ek-without-cert"]);
    let m = Machine::new();
    let (ek, _) = m.export_ek(&server);
    let payload = server.dir.path().join("payload");
    std::fs::write(&payload, [1u8; 32]).unwrap();
    let policy = server.dir.path().join("p.json");
    std::fs::write(&policy, r#"{"version":1,"release_pcr":null}"#).unwrap();
    let out = server.unlockctl(&[
        "enroll",
        "--ek-pub",
        ek.to_str().unwrap(),
        "--payload",
        payload.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--evidence",
        "test-challenge-round",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("evidence_kind_disabled"), "{err}");
    assert!(err.contains("--test-attester-key"), "{err}");
}

#[test]
fn a_tpm_enrollment_on_a_test_server_gets_no_params() {
    let (server, _attester) = server();
    let m = Machine::new();
    let (agent_id, _) = m.enroll(&server, &m.policy_now(false), &[]);
    let mut d = Driver::new(&m, &server);
    let ch = d.challenge("verifier");
    assert!(ch.params.is_none());
    let nk = NkPrivate::generate().unwrap();
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let (st, body) = d.attest("verifier", &req);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.releases(&agent_id, "verifier").len(), 1);
    d.release();
}

fn db_writes(server: &Server, role: &str) -> u64 {
    support::raw::metric(
        &server.metrics(),
        &format!("unlock_db_requests_total{{role=\"{role}\"}}"),
    )
}

#[test]
fn a_strangers_many_challenges_store_nothing_and_the_machine_unlocks() {
    let (server, attester) = server();
    let (_m, agent_id, mut d) = machine(&server);
    let before = db_writes(&server, "verifier");
    // A stranger who knows the agent id and the (public) AK name opens 300 challenges:
    // each carries params, none is stored.
    let body = v1::encode(&v1::ChallengeRequest {
        agent_id: d.agent_id.clone(),
        ak_name: Base64Bytes::new(d.ak.name().to_vec()),
    })
    .unwrap();
    let http = server.http();
    let url = d.url("verifier", v1::path::CHALLENGE);
    for _ in 0..300 {
        let (st, b) = post(&http, &url, &body);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(db_writes(&server, "verifier"), before);
    let ch = d.challenge("verifier");
    let nk = NkPrivate::generate().unwrap();
    let req = d.attest_requests(&[&ch], &nk, None).remove(0);
    let honest = with_answer(&req, Some(answer(&attester, &ch, &req)));
    let (st, b) = d.attest("verifier", &honest);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(server.releases(&agent_id, "verifier").len(), 1);
    d.release();
}
