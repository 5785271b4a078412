//! Named, versioned policies in process (simulated agent against both `RoleService`s): an
//! enrollment is pinned to the version it was given; a new version that would accept a
//! changed machine does not, until an operator applies it (and sees the diff first).

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
use verifier_core::policy::Effect;
use verifier_core::proto::v1::{
    self, AttestResponse, ErrorCode, Id, PolicyApplyRequest, PolicyCreateRequest, PolicyRef,
    PolicyUpdateRequest, Role,
};
use verifier_core::sim::{enroll_requests, SimAgent};

const PAYLOAD: &[u8] = b"the LUKS key";

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

fn attest(agent: &mut SimAgent, roles: &[RoleService]) -> Result<Vec<AttestResponse>, ApiError> {
    let now = unix_now();
    for svc in roles {
        let reg = svc.register(&agent.register_request(), now).unwrap();
        let act = agent.activate_request(&reg).unwrap();
        svc.activate(&act, now).unwrap();
    }
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
                .map(|a| v1::decode::<AttestResponse>(&a).unwrap())
        })
        .collect()
}

fn fleet() -> Id {
    Id::try_from("fleet".to_owned()).unwrap()
}

#[test]
fn new_versions_never_reach_enrolled_machines_until_applied() {
    let mut agent = SimAgent::new().unwrap();
    let roles = [role(Role::Verifier), role(Role::Tenant)];
    let v1_doc = agent.learn_policy();
    for svc in &roles {
        let info = svc
            .create_policy(
                &PolicyCreateRequest {
                    name: fleet(),
                    document: v1_doc.clone(),
                },
                unix_now(),
            )
            .unwrap();
        assert_eq!(info.policy.version, 1);
        assert!(info.diff_from_previous.is_none());
        // A second create of the same name is refused.
        let again = svc.create_policy(
            &PolicyCreateRequest {
                name: fleet(),
                document: v1_doc.clone(),
            },
            unix_now(),
        );
        assert!(again.unwrap_err().message.contains("already exists"));
    }
    let mut reqs = enroll_requests(
        &agent.agent_id(),
        agent.tpm().ek_pub_bytes(),
        &v1_doc,
        PAYLOAD,
        5,
    )
    .unwrap();
    for (svc, (_, req)) in roles.iter().zip(reqs.iter_mut()) {
        req.policy_ref = Some(PolicyRef {
            name: fleet(),
            version: 1,
        });
        let info = svc.enroll(req, unix_now()).unwrap();
        assert_eq!(info.policy_ref.as_ref().unwrap().version, 1);
    }
    assert!(attest(&mut agent, &roles).is_ok());

    // The machine changes (another boot loader in PCR 4): version 1 refuses it.
    agent.reboot().unwrap();
    agent.tpm_mut().measure(4, b"another boot loader").unwrap();
    let err = attest(&mut agent, &roles).unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyDenied, "{err}");

    // Version 2 allows it too. Adding it shows the widening and the pinned enrollment...
    let mut v2_doc = v1_doc.clone();
    let pcr4 = v2_doc.pcrs.iter_mut().find(|r| r.index == 4).unwrap();
    pcr4.allowed.push(agent.tpm().pcr(4).unwrap().to_hex());
    for svc in &roles {
        let info = svc
            .update_policy(
                "fleet",
                &PolicyUpdateRequest {
                    document: v2_doc.clone(),
                },
                unix_now(),
            )
            .unwrap();
        assert_eq!(info.policy.version, 2);
        let diff = info.diff_from_previous.unwrap();
        assert!(
            diff.changes.iter().any(|c| c.effect == Effect::Widens),
            "{diff}"
        );
        assert_eq!(info.pinned_elsewhere.len(), 1);
        assert_eq!(info.pinned_elsewhere[0].version, 1);
    }
    // ...and changes nothing for the enrolled machine.
    let err = attest(&mut agent, &roles).unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyDenied, "{err}");

    // A dry run shows the change for that machine and still changes nothing.
    let agent_id = agent.agent_id();
    let apply = |dry_run| PolicyApplyRequest {
        version: 2,
        agents: vec![agent_id.clone()],
        all: false,
        dry_run,
    };
    for svc in &roles {
        let preview = svc.apply_policy("fleet", &apply(true), unix_now()).unwrap();
        assert_eq!(preview.moved.len(), 1);
        assert_eq!(preview.moved[0].from.as_ref().unwrap().version, 1);
        assert!(preview.moved[0].diff.may_widen());
    }
    assert!(attest(&mut agent, &roles).is_err());

    // Applied: the machine is evaluated against version 2.
    for svc in &roles {
        let done = svc
            .apply_policy("fleet", &apply(false), unix_now())
            .unwrap();
        assert_eq!(done.moved.len(), 1);
        let info = svc.show(agent_id.as_str()).unwrap();
        assert_eq!(info.policy_ref.unwrap().version, 2);
        assert_eq!(info.policy, v2_doc);
        // Applying again moves nothing.
        assert!(svc
            .apply_policy("fleet", &apply(false), unix_now())
            .unwrap()
            .moved
            .is_empty());
    }
    assert!(attest(&mut agent, &roles).is_ok());

    let list = roles[0].list_policies().unwrap();
    assert_eq!(list.policies.len(), 1);
    assert_eq!(list.policies[0].latest_version, 2);
    assert_eq!(list.policies[0].enrollments, 1);
    assert_eq!(list.policies[0].behind, 0);
    let d = roles[0].diff_policy("fleet", 1, None).unwrap();
    assert_eq!(d.to.version, 2);
    assert!(d.diff.may_widen());
}

#[test]
fn enrollment_must_match_the_named_version() {
    let agent = SimAgent::new().unwrap();
    let svc = role(Role::Verifier);
    let doc = agent.learn_policy();
    svc.create_policy(
        &PolicyCreateRequest {
            name: fleet(),
            document: doc.clone(),
        },
        unix_now(),
    )
    .unwrap();
    let mut other = doc.clone();
    other.require_event_log = true;
    let reqs = enroll_requests(
        &agent.agent_id(),
        agent.tpm().ek_pub_bytes(),
        &other,
        PAYLOAD,
        1,
    )
    .unwrap();
    let mut req = reqs[0].1.clone();
    req.policy_ref = Some(PolicyRef {
        name: fleet(),
        version: 1,
    });
    let err = svc.enroll(&req, unix_now()).unwrap_err();
    assert!(err.message.contains("is not fleet v1"), "{err}");
    req.policy_ref = Some(PolicyRef {
        name: fleet(),
        version: 7,
    });
    let err = svc.enroll(&req, unix_now()).unwrap_err();
    assert!(err.message.contains("no policy fleet v7"), "{err}");
    // Updating to the same document is refused (it would be a version without a change).
    let err = svc
        .update_policy("fleet", &PolicyUpdateRequest { document: doc }, unix_now())
        .unwrap_err();
    assert!(err.message.contains("already this document"), "{err}");
}

#[test]
fn the_server_never_builds_claims_from_unverified_captures() {
    // Offline claims (`Claims::unverified_from_capture`, `UnverifiedCapture`, and a
    // confidential VM's `CheckedAzureCapture`, genuine but not fresh) are for
    // `unlockctl policy learn|check` only; the roles evaluate `ValidatedEvidence` alone.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("cli") && !p.ends_with("bin") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    !text.contains("unverified_from_capture")
                        && !text.contains("UnverifiedCapture")
                        && !text.contains("CheckedAzureCapture"),
                    "{} uses offline claims",
                    p.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} server files checked");
}
