use std::sync::Arc;

use super::*;

const AGENT: &str = "aa00";

fn enrolled(max_attestations: u32, max_boots: Option<u32>) -> Store {
    let s = Store::open_in_memory().unwrap();
    s.enroll(
        &NewEnrollment {
            agent_id: AGENT.into(),
            ek_pub: vec![1, 2, 3],
            policy: "{}".into(),
            max_attestations,
            max_boots,
            share_wrapped: vec![9; 48],
            payload_ct: Some(vec![7; 40]),
        },
        0,
    )
    .unwrap();
    s
}

fn challenge(s: &Store, id: &str, expires_at: i64) {
    s.insert_challenge(&NewChallenge {
        challenge_id: id.into(),
        agent_id: AGENT.into(),
        ak_name: vec![0, 11],
        nonce: [5; 32],
        expires_at,
    })
    .unwrap();
}

fn attest(s: &Store, id: &str, reset_count: u32, evidence: u8) -> ReleaseDecision {
    let h = [evidence; 32];
    s.release(
        &ReleaseRequest {
            challenge_id: id,
            agent_id: AGENT,
            reset_count,
            evidence_hash: &h,
            now: 10,
        },
        |_, _| Ok(format!("sealed-{id}").into_bytes()),
    )
    .unwrap()
}

#[test]
fn releases_once_then_session_terminated() {
    let s = enrolled(1, None);
    challenge(&s, "c1", 100);
    challenge(&s, "c2", 100);
    assert!(matches!(
        attest(&s, "c1", 4, 1),
        ReleaseDecision::Released {
            releases: 1,
            session_terminated: true,
            ..
        }
    ));
    assert_eq!(
        attest(&s, "c2", 4, 2),
        ReleaseDecision::Refused(Refusal::SessionTerminated { reset_count: 4 })
    );
    let sessions = s.sessions(AGENT).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state, SessionState::Terminated);
}

#[test]
fn bounded_release_counts_to_max_attestations() {
    let s = enrolled(2, None);
    for id in ["c1", "c2", "c3"] {
        challenge(&s, id, 100);
    }
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Released {
            releases: 1,
            session_terminated: false,
            ..
        }
    ));
    assert!(matches!(
        attest(&s, "c2", 1, 2),
        ReleaseDecision::Released {
            releases: 2,
            session_terminated: true,
            ..
        }
    ));
    assert!(matches!(
        attest(&s, "c3", 1, 3),
        ReleaseDecision::Refused(Refusal::SessionTerminated { .. })
    ));
}

#[test]
fn identical_retry_gets_same_answer_without_counting() {
    let s = enrolled(1, None);
    challenge(&s, "c1", 100);
    let first = attest(&s, "c1", 1, 1);
    let ReleaseDecision::Released { response, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Retried { response }
    );
    // Different evidence on the same challenge is a replay.
    assert_eq!(
        attest(&s, "c1", 1, 2),
        ReleaseDecision::Refused(Refusal::NonceReused)
    );
    assert_eq!(s.sessions(AGENT).unwrap()[0].releases, 1);
}

#[test]
fn expired_and_unknown_challenges_refused() {
    let s = enrolled(1, None);
    challenge(&s, "old", 10); // expires at now
    assert_eq!(
        attest(&s, "old", 1, 1),
        ReleaseDecision::Refused(Refusal::ChallengeExpired)
    );
    assert_eq!(
        attest(&s, "nope", 1, 1),
        ReleaseDecision::Refused(Refusal::ChallengeUnknown)
    );
    assert!(
        s.sessions(AGENT).unwrap().is_empty(),
        "refusals consume nothing"
    );
}

#[test]
fn reset_count_going_backwards_refused() {
    let s = enrolled(1, None);
    challenge(&s, "c1", 100);
    challenge(&s, "c2", 100);
    challenge(&s, "c3", 100);
    assert!(matches!(
        attest(&s, "c1", 7, 1),
        ReleaseDecision::Released { .. }
    ));
    assert_eq!(
        attest(&s, "c2", 6, 2),
        ReleaseDecision::Refused(Refusal::ResetCountWentBackwards {
            quoted: 6,
            latest: 7
        })
    );
    // A new boot (higher resetCount) releases again.
    assert!(matches!(
        attest(&s, "c3", 8, 3),
        ReleaseDecision::Released { .. }
    ));
}

#[test]
fn max_boots_terminates_the_agent_for_good() {
    let s = enrolled(1, Some(2));
    for id in ["c1", "c2", "c3"] {
        challenge(&s, id, 100);
    }
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Released { .. }
    ));
    assert!(matches!(
        attest(&s, "c2", 2, 2),
        ReleaseDecision::Released { .. }
    ));
    assert_eq!(
        s.enrollment(AGENT).unwrap().unwrap().state,
        EnrollmentState::Terminated
    );
    assert_eq!(
        attest(&s, "c3", 3, 3),
        ReleaseDecision::Refused(Refusal::AgentTerminated)
    );
    // Re-arm clears the budget and the session history.
    s.rearm(AGENT, 20).unwrap();
    challenge(&s, "c4", 100);
    assert!(matches!(
        attest(&s, "c4", 1, 4),
        ReleaseDecision::Released { .. }
    ));
}

#[test]
fn revoked_agent_refused() {
    let s = enrolled(1, None);
    challenge(&s, "c1", 100);
    s.set_state(AGENT, EnrollmentState::Revoked, 5).unwrap();
    assert_eq!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Refused(Refusal::Revoked)
    );
}

#[test]
fn seal_failure_releases_nothing() {
    let s = enrolled(1, None);
    challenge(&s, "c1", 100);
    let h = [1; 32];
    let r = s.release(
        &ReleaseRequest {
            challenge_id: "c1",
            agent_id: AGENT,
            reset_count: 1,
            evidence_hash: &h,
            now: 10,
        },
        |_, _| Err(StoreError::Seal("boom".into())),
    );
    assert!(r.is_err());
    assert!(s.sessions(AGENT).unwrap().is_empty());
    assert!(s.challenge("c1").unwrap().unwrap().used.is_none());
}

#[test]
fn fifty_concurrent_attests_release_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    {
        let s = Store::open(&path).unwrap();
        s.enroll(
            &NewEnrollment {
                agent_id: AGENT.into(),
                ek_pub: vec![1],
                policy: "{}".into(),
                max_attestations: 1,
                max_boots: None,
                share_wrapped: vec![1],
                payload_ct: None,
            },
            0,
        )
        .unwrap();
        for i in 0..50 {
            challenge(&s, &format!("c{i}"), 100);
        }
    }
    // Separate connections (as separate replicas would have) racing on one file.
    let released = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let path = path.clone();
            let released = released.clone();
            std::thread::spawn(move || {
                let s = Store::open(&path).unwrap();
                if let ReleaseDecision::Released { .. } = attest(&s, &format!("c{i}"), 3, i) {
                    released.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(released.load(std::sync::atomic::Ordering::SeqCst), 1);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.sessions(AGENT).unwrap()[0].releases, 1);
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    {
        let s = Store::open(&path).unwrap();
        s.enroll(
            &NewEnrollment {
                agent_id: AGENT.into(),
                ek_pub: vec![1],
                policy: "{}".into(),
                max_attestations: 1,
                max_boots: None,
                share_wrapped: vec![1],
                payload_ct: None,
            },
            0,
        )
        .unwrap();
        challenge(&s, "c1", 100);
        challenge(&s, "c2", 100);
        assert!(matches!(
            attest(&s, "c1", 2, 1),
            ReleaseDecision::Released { .. }
        ));
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        attest(&s, "c2", 2, 2),
        ReleaseDecision::Refused(Refusal::SessionTerminated { reset_count: 2 })
    );
}

#[test]
fn duplicate_enrollment_refused() {
    let s = enrolled(1, None);
    let e = NewEnrollment {
        agent_id: AGENT.into(),
        ek_pub: vec![],
        policy: "{}".into(),
        max_attestations: 1,
        max_boots: None,
        share_wrapped: vec![],
        payload_ct: None,
    };
    assert!(matches!(
        s.enroll(&e, 1),
        Err(StoreError::AlreadyEnrolled(_))
    ));
}
