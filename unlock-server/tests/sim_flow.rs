//! Protocol v1 end to end in process: a simulated agent (`verifier_core::sim`) against the
//! verifier and tenant `RoleService`s, each over its own in-memory store and master key.
//! Covers the release, the bounded release in one boot (release PCR, then the store's
//! TERMINATED session), a reboot, and a reset counter that went backwards.

// Test code: a failed unwrap or index is a failed test, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use unlock_server::error::ApiError;
use unlock_server::role::{unix_now, RoleService, RoleSettings};
use unlock_server::store::Store;
use verifier_core::ekcert::TrustStore;
use verifier_core::keysplit::MasterKey;
use verifier_core::policy::PolicyDocument;
use verifier_core::proto::v1::{self, AttestResponse, ErrorCode, Role};
use verifier_core::sim::{enroll_requests, SimAgent};

const PAYLOAD: &[u8] = b"the LUKS key of the simulated machine";

fn role(r: Role) -> RoleService {
    RoleService::new(
        r,
        Store::open_in_memory().unwrap(),
        MasterKey::generate().unwrap(),
        RoleSettings {
            ek_trust: Arc::new(TrustStore::new()),
            iak_trust: Arc::new(TrustStore::new()),
            allow_ek_without_cert: true,
            ek_cert_hook: None,
            challenge_ttl_secs: 60,
            registration_ttl_secs: 120,
        },
    )
}

/// Both roles, in leaf order, with `agent` enrolled under `policy`.
fn enrolled(agent: &SimAgent, policy: &PolicyDocument, max_attestations: u32) -> [RoleService; 2] {
    let roles = [role(Role::Verifier), role(Role::Tenant)];
    let reqs = enroll_requests(
        &agent.agent_id(),
        agent.tpm().ek_pub_bytes(),
        policy,
        PAYLOAD,
        max_attestations,
    )
    .unwrap();
    for (svc, (r, req)) in roles.iter().zip(&reqs) {
        assert_eq!(svc.role(), *r);
        svc.enroll(req, unix_now()).unwrap();
    }
    roles
}

/// Registration and activation with every role (each boot, new AK).
fn register(agent: &SimAgent, roles: &[RoleService]) {
    let now = unix_now();
    for svc in roles {
        let reg = svc.register(&agent.register_request(), now).unwrap();
        let act = agent.activate_request(&reg).unwrap();
        agent
            .check_activation(&svc.activate(&act, now).unwrap())
            .unwrap();
    }
}

/// Challenge and attest with every role; the answers, or the first refusal.
fn attest(agent: &mut SimAgent, roles: &[RoleService]) -> Result<Vec<AttestResponse>, ApiError> {
    let now = unix_now();
    let challenges = roles
        .iter()
        .map(|svc| svc.challenge(&agent.challenge_request(), now))
        .collect::<Result<Vec<_>, _>>()?;
    let reqs = agent.attest_requests(&challenges).unwrap();
    roles
        .iter()
        .zip(&reqs)
        .map(|(svc, req)| {
            svc.attest(req, now)
                .map(|answer| v1::decode::<AttestResponse>(&answer).unwrap())
        })
        .collect()
}

fn code(r: Result<Vec<AttestResponse>, ApiError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("attestation was not refused"),
        Err(e) => e.code,
    }
}

#[test]
fn full_flow_releases_the_payload_and_the_release_pcr_refuses_a_second_quote() {
    let mut agent = SimAgent::new().unwrap();
    let roles = enrolled(&agent, &agent.learn_policy(), 1);
    register(&agent, &roles);
    let answers = attest(&mut agent, &roles).unwrap();
    assert_eq!(answers[0].role, Role::Verifier);
    assert!(answers[0].payload.is_some());
    assert!(answers[1].payload.is_none());
    assert!(answers
        .iter()
        .all(|a| a.session.terminated && a.session.releases == 1));
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
    agent.extend_release_pcr().unwrap();

    // A second quote in this boot shows the extended release PCR: policy refuses it.
    let err = attest(&mut agent, &roles).unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyDenied, "{err}");
    assert!(err.message.contains("release_pcr"), "{}", err.message);
}

#[test]
fn without_the_release_pcr_rule_the_store_terminates_the_session() {
    let mut agent = SimAgent::new().unwrap();
    let mut policy = agent.learn_policy();
    policy.release_pcr = None;
    let roles = enrolled(&agent, &policy, 1);
    register(&agent, &roles);
    let answers = attest(&mut agent, &roles).unwrap();
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
    agent.extend_release_pcr().unwrap();

    // Fresh challenges, genuine evidence, policy passes: the session is TERMINATED.
    assert_eq!(
        code(attest(&mut agent, &roles)),
        ErrorCode::SessionTerminated
    );
}

#[test]
fn wrong_pcrs_are_refused_by_policy_and_do_not_consume_the_release() {
    let mut agent = SimAgent::new().unwrap();
    let roles = enrolled(&agent, &agent.learn_policy(), 1);
    register(&agent, &roles);
    agent
        .tpm_mut()
        .measure(4, b"an unexpected bootloader")
        .unwrap();
    assert_eq!(code(attest(&mut agent, &roles)), ErrorCode::PolicyDenied);

    // The next boot measures the expected firmware again and gets its key.
    agent.reboot().unwrap();
    register(&agent, &roles);
    let answers = attest(&mut agent, &roles).unwrap();
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
}

#[test]
fn a_reboot_releases_again_and_a_reset_count_going_backwards_is_refused() {
    let mut agent = SimAgent::new().unwrap();
    let roles = enrolled(&agent, &agent.learn_policy(), 1);
    register(&agent, &roles);
    let answers = attest(&mut agent, &roles).unwrap();
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);
    agent.extend_release_pcr().unwrap();

    agent.reboot().unwrap();
    // The AK survives the reboot (pinned at its first activation): the next boot goes
    // straight to the challenges, without registering again.
    let answers = attest(&mut agent, &roles).unwrap();
    assert_eq!(answers[0].session.reset_count, 2);
    assert_eq!(agent.finish(&answers).unwrap().as_slice(), PAYLOAD);

    // A TPM whose resetCount went back to an earlier, TERMINATED boot...
    agent.reboot().unwrap();
    agent.tpm_mut().set_reset_count(1);
    register(&agent, &roles);
    assert_eq!(
        code(attest(&mut agent, &roles)),
        ErrorCode::SessionTerminated
    );
    // ...or below every boot seen (a cleared TPM) fails closed.
    agent.tpm_mut().set_reset_count(0);
    assert_eq!(
        code(attest(&mut agent, &roles)),
        ErrorCode::ResetCountRegressed
    );
}

#[test]
fn another_machine_cannot_activate_this_machines_registration() {
    let agent = SimAgent::new().unwrap();
    let roles = enrolled(&agent, &agent.learn_policy(), 1);
    let reg = roles[0]
        .register(&agent.register_request(), unix_now())
        .unwrap();
    // Another TPM cannot open the credential made for this EK.
    let other = SimAgent::new().unwrap();
    assert!(other.activate_request(&reg).is_err());
    // A made-up proof is refused by the role.
    let forged = v1::ActivateRequest {
        registration_id: reg.registration_id.clone(),
        proof: vec![0u8; v1::PROOF_LEN].into(),
    };
    let err = roles[0].activate(&forged, unix_now()).unwrap_err();
    assert_eq!(err.code, ErrorCode::ActivationFailed);
}

#[test]
fn consecutive_failures_are_rate_limited_until_a_release() {
    use unlock_server::role::MAX_CONSECUTIVE_FAILURES;
    let mut agent = SimAgent::new().unwrap();
    let roles = enrolled(&agent, &agent.learn_policy(), 1);
    register(&agent, &roles);
    agent
        .tpm_mut()
        .measure(4, b"an unexpected bootloader")
        .unwrap();
    for _ in 0..MAX_CONSECUTIVE_FAILURES {
        assert_eq!(code(attest(&mut agent, &roles)), ErrorCode::PolicyDenied);
    }
    // Genuine evidence from a good boot is still refused while the limit holds.
    assert_eq!(code(attest(&mut agent, &roles)), ErrorCode::RateLimited);
    agent.reboot().unwrap();
    register(&agent, &roles);
    assert_eq!(code(attest(&mut agent, &roles)), ErrorCode::RateLimited);
    // The count lives in the database (every replica sees it); a release or the window ends it.
    assert_eq!(
        roles[0]
            .store()
            .recent_refusals(agent.agent_id().as_str(), 0)
            .unwrap(),
        MAX_CONSECUTIVE_FAILURES
    );
}
