//! A machine asks for its own policy change (`POST /v1/policy/pending`), in process: a
//! simulated agent against the verifier and tenant `RoleService`s. The change is authenticated
//! by a quote of the agent's activated AK over the change's digest, and it never widens the
//! policy by itself: until an operator approves, the updated boot is refused; after, it
//! unlocks, and the previous boot configuration still does.
//!
//! From the attacker's side: a change quoted by another AK, a valid quote carried with a
//! different change, an AK the role never activated, and a flood of changes past the cap are
//! each refused, and none leaves a row.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use unlock_server::error::ApiError;
use unlock_server::role::{unix_now, RoleService, RoleSettings, MAX_PENDING_PER_AGENT};
use unlock_server::store::Store;
use verifier_core::ekcert::TrustStore;
use verifier_core::keysplit::MasterKey;
use verifier_core::policy::PolicyDocument;
use verifier_core::proto::v1::{
    self, Allowance, AttestResponse, ErrorCode, Id, PcrBank, PcrValue, PendingDecisionRequest,
    PendingState, PendingSubmitRequest, PolicyCreateRequest, PolicyRef, ProposedChange, Role,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::quote::software::SoftwareAk;
use verifier_core::sim::{enroll_requests, SimAgent};
use verifier_core::wire::{BankSelection, ClockInfo, HashAlg, PcrSelection, PcrValues};

const PAYLOAD: &[u8] = b"the LUKS key of the simulated machine";
/// The PCR the "initramfs" is measured into (the EFI stub's PCR 9).
const PCR: u8 = 9;

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

/// Both roles with `agent` enrolled under the named policy `fleet` v1 = `policy`.
fn enrolled(agent: &SimAgent, policy: &PolicyDocument) -> [RoleService; 2] {
    let roles = [role(Role::Verifier), role(Role::Tenant)];
    let name = Id::try_from("fleet".to_owned()).unwrap();
    let mut reqs = enroll_requests(
        &agent.agent_id(),
        agent.tpm().ek_pub_bytes(),
        policy,
        PAYLOAD,
        10,
    )
    .unwrap();
    for (svc, (_, req)) in roles.iter().zip(&mut reqs) {
        svc.create_policy(
            &PolicyCreateRequest {
                name: name.clone(),
                document: policy.clone(),
            },
            unix_now(),
        )
        .unwrap();
        req.policy_ref = Some(PolicyRef {
            name: name.clone(),
            version: 1,
        });
        svc.enroll(req, unix_now()).unwrap();
    }
    roles
}

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

/// A boot whose PCR 9 shows `initrd` (and the firmware PCRs as always).
fn boot(agent: &mut SimAgent, initrd: &[u8]) {
    agent.reboot().unwrap();
    agent.tpm_mut().measure(PCR, initrd).unwrap();
}

/// The change that allows PCR 9's current value.
fn change(agent: &SimAgent, note: &str) -> ProposedChange {
    ProposedChange {
        agent_id: agent.agent_id(),
        note: note.into(),
        allow: vec![Allowance {
            bank: HashAlg::Sha256,
            boot_applications: Vec::new(),
            kernels: Vec::new(),
            initrds: Vec::new(),
            cmdline: None,
            pcr9: Some(agent.tpm().pcr(PCR).unwrap().to_hex()),
        }],
        signatures: Vec::new(),
    }
}

/// `change` quoted (qualifyingData = `quoted`'s digest) by `ak`, with `ak_name` claimed.
fn submission(
    agent: &SimAgent,
    ak: &SoftwareAk,
    ak_name: &[u8],
    change: &ProposedChange,
    quoted: &ProposedChange,
) -> PendingSubmitRequest {
    let selection =
        PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[PCR]).unwrap()]).unwrap();
    let value = *agent.tpm().pcr(PCR).unwrap();
    let mut pcrs = PcrValues::new();
    pcrs.insert(PCR, value);
    let clock = ClockInfo {
        clock: 1,
        reset_count: 1,
        restart_count: 0,
        safe: true,
    };
    let (attest, sig) = ak
        .quote(&quoted.digest().unwrap(), &selection, &pcrs, clock, 1)
        .unwrap();
    PendingSubmitRequest {
        change: change.clone(),
        ak_name: Base64Bytes::from(ak_name),
        quote: Base64Bytes::new(attest),
        signature: Base64Bytes::new(sig.marshal()),
        pcrs: vec![PcrBank {
            hash: HashAlg::Sha256,
            values: vec![PcrValue {
                index: PCR,
                digest: Base64Bytes::from(value.as_bytes()),
            }],
        }],
    }
}

fn rows(roles: &[RoleService]) -> usize {
    roles[0].list_pending().unwrap().changes.len()
}

#[test]
fn a_machine_cannot_widen_its_own_policy_until_an_operator_approves() {
    let mut agent = SimAgent::new().unwrap();
    agent.tpm_mut().measure(PCR, b"initramfs v1").unwrap();
    let mut policy = agent.learn_policy();
    policy.pcrs.push(verifier_core::policy::PcrRuleDocument {
        bank: "sha256".into(),
        index: PCR,
        allowed: vec![agent.tpm().pcr(PCR).unwrap().to_hex()],
        initial: false,
    });
    let roles = enrolled(&agent, &policy);
    register(&agent, &roles);
    attest(&mut agent, &roles).unwrap();

    // The update: a new initramfs. Refused, naming the PCR.
    boot(&mut agent, b"initramfs v2");
    register(&agent, &roles);
    let err = attest(&mut agent, &roles).unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyDenied, "{err}");
    assert!(err.message.contains("sha256:9"), "{}", err.message);

    let good = change(&agent, "dracut: initramfs v2");
    let ak_name = agent.ak().ak().name().to_vec();
    let now = unix_now();

    // Forged: quoted by another AK (claiming the agent's AK name).
    let stranger = SoftwareAk::generate_ecc_p256().unwrap();
    for svc in &roles {
        let e = svc
            .submit_pending(&submission(&agent, &stranger, &ak_name, &good, &good), now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::QuoteInvalid, "{e}");
    }
    // Forged: the agent's genuine quote of one change, carried with another (a wider one).
    let mut wider = good.clone();
    wider.allow[0].pcr9 = Some("ab".repeat(32));
    let e = roles[0]
        .submit_pending(
            &submission(&agent, agent.ak(), &ak_name, &wider, &good),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::QuoteInvalid, "{e}");
    // Forged: the stranger's own AK, never activated for this agent.
    let e = roles[0]
        .submit_pending(
            &submission(&agent, &stranger, stranger.ak().name(), &good, &good),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownAgent, "{e}");
    assert_eq!(rows(&roles), 0, "a refused submission left a row");

    // Genuine: pending on both roles, the same id; the updated boot is still refused.
    let sub = submission(&agent, agent.ak(), &ak_name, &good, &good);
    let ids: Vec<String> = roles
        .iter()
        .map(|svc| {
            let r = svc.submit_pending(&sub, now).unwrap();
            assert_eq!(r.state, PendingState::Pending);
            r.id
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    // A replay is the same row.
    assert_eq!(roles[0].submit_pending(&sub, now).unwrap().id, ids[0]);
    assert_eq!(rows(&roles), 1);
    let err = attest(&mut agent, &roles).unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::PolicyDenied,
        "pending must not widen: {err}"
    );

    // The operator sees what approval changes for this machine: PCR 9 gains one value.
    let listed = roles[0].list_pending().unwrap();
    let info = &listed.changes[0];
    let diff = info.diff.as_ref().unwrap();
    assert_eq!(diff.changes.len(), 1, "{diff}");
    assert_eq!(diff.changes[0].path, "pcrs[sha256:9].allowed");
    assert!(!diff.changes[0].detail.contains("removed"));

    // Approve on both roles: v2, the agent moved to it; the new boot unlocks.
    for svc in &roles {
        let decided = svc
            .decide_pending(
                &ids[0],
                &PendingDecisionRequest {
                    approve: true,
                    fleet: false,
                },
                unix_now(),
            )
            .unwrap();
        assert_eq!(decided.state, PendingState::Approved);
        assert_eq!(decided.result.as_ref().unwrap().version, 2);
        // Decided once.
        assert!(svc
            .decide_pending(
                &ids[0],
                &PendingDecisionRequest {
                    approve: false,
                    fleet: false
                },
                unix_now()
            )
            .is_err());
    }
    attest(&mut agent, &roles).unwrap();
    // The previous configuration still unlocks.
    boot(&mut agent, b"initramfs v1");
    register(&agent, &roles);
    attest(&mut agent, &roles).unwrap();
}

#[test]
fn rejected_and_capped_changes_never_widen() {
    let mut agent = SimAgent::new().unwrap();
    agent.tpm_mut().measure(PCR, b"initramfs v1").unwrap();
    let mut policy = agent.learn_policy();
    policy.pcrs.push(verifier_core::policy::PcrRuleDocument {
        bank: "sha256".into(),
        index: PCR,
        allowed: vec![agent.tpm().pcr(PCR).unwrap().to_hex()],
        initial: false,
    });
    let roles = enrolled(&agent, &policy);
    boot(&mut agent, b"initramfs v2");
    register(&agent, &roles);
    let ak_name = agent.ak().ak().name().to_vec();
    let now = unix_now();
    let svc = &roles[0];
    // Fill the cap with distinct genuine changes; the next is refused and leaves no row.
    for i in 0..MAX_PENDING_PER_AGENT {
        let c = change(&agent, &format!("change {i}"));
        svc.submit_pending(&submission(&agent, agent.ak(), &ak_name, &c, &c), now)
            .unwrap();
    }
    let c = change(&agent, "one too many");
    let e = svc
        .submit_pending(&submission(&agent, agent.ak(), &ak_name, &c, &c), now)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited, "{e}");
    assert_eq!(rows(&roles), MAX_PENDING_PER_AGENT as usize);
    // Rejecting one: nothing widens, and its replay gets the rejection.
    let first = change(&agent, "change 0");
    let sub = submission(&agent, agent.ak(), &ak_name, &first, &first);
    let id = svc.submit_pending(&sub, now).unwrap().id;
    let r = svc
        .decide_pending(
            &id,
            &PendingDecisionRequest {
                approve: false,
                fleet: false,
            },
            now,
        )
        .unwrap();
    assert_eq!(r.state, PendingState::Rejected);
    assert_eq!(
        svc.submit_pending(&sub, now).unwrap().state,
        PendingState::Rejected
    );
    assert_eq!(svc.show_policy("fleet", None).unwrap().policy.version, 1);
}
