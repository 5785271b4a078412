use std::sync::{Arc, OnceLock};

use super::*;

#[path = "../../tests/support/pg.rs"]
mod pg;

const AGENT: &str = "aa00";

/// Where a test's database lives; `open` gives another connection to the same data, as a
/// replica (or a restarted server) would have.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Db {
    fn open(&self) -> Store {
        match self {
            Db::Sqlite(dir) => Store::open(&dir.path().join("v.db")).unwrap(),
            Db::Postgres { url, schema } => Store::open_postgres(url, schema).unwrap(),
        }
    }
}

fn sqlite_db() -> Db {
    Db::Sqlite(tempfile::tempdir().unwrap())
}

/// A fresh schema in the test binary's one cluster; `None` with `UNLOCK_SKIP_POSTGRES=1`.
fn pg_db() -> Option<Db> {
    static CLUSTER: OnceLock<Option<pg::PgCluster>> = OnceLock::new();
    let cluster = CLUSTER
        .get_or_init(|| pg::PgCluster::start_with(false))
        .as_ref()?;
    Some(Db::Postgres {
        url: cluster.url(),
        schema: cluster.fresh_schema(),
    })
}

/// The same test against SQLite and PostgreSQL.
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                let body: fn(Db) = $body;
                body(sqlite_db());
            }
            #[test]
            fn postgres() {
                let body: fn(Db) = $body;
                if let Some(db) = pg_db() {
                    body(db);
                }
            }
        }
    };
}

fn enrolled_in(db: &Db, max_attestations: u32, max_boots: Option<u32>) -> Store {
    let s = db.open();
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

thread_local! {
    /// The tickets a test issued: id → expiry. Issuing a challenge writes nothing to the
    /// store (the role's ticket carries it); the store sees it first in the release.
    static ISSUED: std::cell::RefCell<std::collections::HashMap<String, i64>> =
        std::cell::RefCell::default();
}

fn challenge(_s: &Store, id: &str, expires_at: i64) {
    ISSUED.with(|m| m.borrow_mut().insert(id.to_owned(), expires_at));
}

fn issued(agent: &str, id: &str) -> NewChallenge {
    NewChallenge {
        challenge_id: id.into(),
        agent_id: agent.into(),
        ak_name: vec![0, 11],
        nonce: [5; 32],
        expires_at: ISSUED.with(|m| m.borrow().get(id).copied().unwrap_or(100)),
    }
}

fn attest(s: &Store, id: &str, reset_count: u32, evidence: u8) -> ReleaseDecision {
    let h = [evidence; 32];
    s.release(
        &ReleaseRequest {
            challenge: &issued(AGENT, id),
            reset_count,
            evidence_hash: &h,
            nk_hash: None,
            now: 10,
            usage: None,
        },
        |_, _| Ok(format!("sealed-{id}").into_bytes()),
    )
    .unwrap()
}

fn attest_nk(s: &Store, id: &str, reset_count: u32, evidence: u8, nk: u8) -> ReleaseDecision {
    let h = [evidence; 32];
    s.release(
        &ReleaseRequest {
            challenge: &issued(AGENT, id),
            reset_count,
            evidence_hash: &h,
            nk_hash: Some([nk; 32]),
            now: 10,
            usage: None,
        },
        |_, count| Ok(format!("sealed-{id}-{}", count.releases).into_bytes()),
    )
    .unwrap()
}

both!(
    the_same_nk_in_the_same_boot_is_answered_again_uncounted,
    |db| {
        let s = enrolled_in(&db, 1, None);
        for c in ["c1", "c2", "c3", "c4"] {
            challenge(&s, c, 100);
        }
        assert!(matches!(
            attest_nk(&s, "c1", 5, 1, 0xA),
            ReleaseDecision::Released {
                releases: 1,
                session_terminated: true,
                ..
            }
        ));
        // A new challenge, new evidence, the same NK: re-sealed for c2, not counted.
        match attest_nk(&s, "c2", 5, 2, 0xA) {
            ReleaseDecision::Resealed { response } => assert_eq!(response, b"sealed-c2-1"),
            other => panic!("{other:?}"),
        }
        // Another NK (another agent process) in that boot: TERMINATED.
        assert!(matches!(
            attest_nk(&s, "c3", 5, 3, 0xB),
            ReleaseDecision::Refused(Refusal::SessionTerminated { .. })
        ));
        let sessions = s.sessions(AGENT).unwrap();
        assert_eq!((sessions.len(), sessions[0].releases), (1, 1));
        // The re-sealed challenge is used: its retry is answered, other evidence is a reuse.
        assert!(matches!(
            attest_nk(&s, "c2", 5, 2, 0xA),
            ReleaseDecision::Retried { .. }
        ));
        assert!(matches!(
            attest_nk(&s, "c2", 5, 9, 0xA),
            ReleaseDecision::Refused(Refusal::NonceReused)
        ));
        // Revoked: nothing, not even to the same NK.
        s.set_state(AGENT, EnrollmentState::Revoked, 11).unwrap();
        assert!(matches!(
            attest_nk(&s, "c4", 5, 4, 0xA),
            ReleaseDecision::Refused(Refusal::Revoked)
        ));
    }
);

both!(releases_once_then_session_terminated, |db| {
    let s = enrolled_in(&db, 1, None);
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
});

both!(bounded_release_counts_to_max_attestations, |db| {
    let s = enrolled_in(&db, 2, None);
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
});

both!(identical_retry_gets_same_answer_without_counting, |db| {
    let s = enrolled_in(&db, 1, None);
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
});

both!(expired_and_unknown_challenges_refused, |db| {
    let s = enrolled_in(&db, 1, None);
    challenge(&s, "old", 10); // expires at now
    assert_eq!(
        attest(&s, "old", 1, 1),
        ReleaseDecision::Refused(Refusal::ChallengeExpired)
    );
    // A challenge another agent used is not this agent's.
    let other = issued("another-agent", "theirs");
    s.enroll(
        &NewEnrollment {
            agent_id: "another-agent".into(),
            ek_pub: vec![4],
            policy: "{}".into(),
            max_attestations: 1,
            max_boots: None,
            share_wrapped: vec![9; 48],
            payload_ct: None,
        },
        0,
    )
    .unwrap();
    let h = [1u8; 32];
    let used = s
        .release(
            &ReleaseRequest {
                challenge: &other,
                reset_count: 1,
                evidence_hash: &h,
                nk_hash: None,
                now: 10,
                usage: None,
            },
            |_, _| Ok(b"theirs".to_vec()),
        )
        .unwrap();
    assert!(matches!(used, ReleaseDecision::Released { .. }));
    assert_eq!(
        attest(&s, "theirs", 1, 1),
        ReleaseDecision::Refused(Refusal::ChallengeUnknown)
    );
    assert!(
        s.sessions(AGENT).unwrap().is_empty(),
        "refusals consume nothing"
    );
});

both!(reset_count_going_backwards_refused, |db| {
    let s = enrolled_in(&db, 1, None);
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
});

both!(max_boots_terminates_the_agent_for_good, |db| {
    let s = enrolled_in(&db, 1, Some(2));
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
});

both!(revoked_agent_refused, |db| {
    let s = enrolled_in(&db, 1, None);
    challenge(&s, "c1", 100);
    s.set_state(AGENT, EnrollmentState::Revoked, 5).unwrap();
    assert_eq!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Refused(Refusal::Revoked)
    );
});

both!(seal_failure_releases_nothing, |db| {
    let s = enrolled_in(&db, 1, None);
    challenge(&s, "c1", 100);
    let h = [1; 32];
    let r = s.release(
        &ReleaseRequest {
            challenge: &issued(AGENT, "c1"),
            reset_count: 1,
            evidence_hash: &h,
            nk_hash: None,
            now: 10,
            usage: None,
        },
        |_, _| Err(StoreError::Seal("boom".into())),
    );
    assert!(r.is_err());
    assert!(s.sessions(AGENT).unwrap().is_empty());
    assert!(
        s.challenge("c1").unwrap().is_none(),
        "a failed release leaves the challenge unused (not stored)"
    );
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Released { releases: 1, .. }
    ));
});

both!(fifty_concurrent_attests_release_exactly_once, |db| {
    {
        let s = db.open();
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
    // Separate connections (as separate replicas would have) racing on one database.
    let db = Arc::new(db);
    let start = Arc::new(std::sync::Barrier::new(50));
    let released = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let db = db.clone();
            let start = start.clone();
            let released = released.clone();
            std::thread::spawn(move || {
                let s = db.open();
                // Connected first, then all at once.
                s.ping().unwrap();
                start.wait();
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
    let s = db.open();
    assert_eq!(s.sessions(AGENT).unwrap()[0].releases, 1);
});

both!(state_survives_reopen, |db| {
    {
        let s = db.open();
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
    let s = db.open();
    assert_eq!(
        attest(&s, "c2", 2, 2),
        ReleaseDecision::Refused(Refusal::SessionTerminated { reset_count: 2 })
    );
});

both!(duplicate_enrollment_refused, |db| {
    let s = enrolled_in(&db, 1, None);
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
});

both!(named_policies_pin_and_move_enrollments, |db| {
    let s = db.open();
    assert_eq!(s.create_policy("web", r#"{"v":1}"#, 1).unwrap(), 1);
    assert!(matches!(
        s.create_policy("web", "{}", 1),
        Err(StoreError::PolicyExists(_))
    ));
    assert_eq!(
        s.add_policy_version("web", None, r#"{"v":2}"#, Actor::Admin, 2)
            .unwrap(),
        2
    );
    assert!(matches!(
        s.add_policy_version("nope", None, "{}", Actor::Admin, 2),
        Err(StoreError::PolicyNotFound(_))
    ));
    // Two writers that each planned on v1 (e.g. two machines' auto-approved changes): the
    // second is told the policy moved instead of writing a v3 without the first's change.
    assert!(matches!(
        s.add_policy_version("web", Some(1), r#"{"v":"1+b"}"#, Actor::Agent, 2),
        Err(StoreError::PolicyMoved {
            base: 1,
            latest: 2,
            ..
        })
    ));
    assert_eq!(s.policy("web", None).unwrap().version, 2);
    let e = NewEnrollment {
        agent_id: AGENT.into(),
        ek_pub: vec![1],
        policy: r#"{"v":1}"#.into(),
        max_attestations: 1,
        max_boots: None,
        share_wrapped: vec![1],
        payload_ct: None,
    };
    assert!(matches!(
        s.enroll_pinned(&e, Some(("web", 9)), 3),
        Err(StoreError::PolicyNotFound(_))
    ));
    s.enroll_pinned(&e, Some(("web", 1)), 3).unwrap();
    let enr = s.enrollment(AGENT).unwrap().unwrap();
    assert_eq!(enr.policy_ref, Some(("web".into(), 1)));
    assert_eq!(s.policy("web", None).unwrap().version, 2);
    assert_eq!(s.policy("web", Some(1)).unwrap().document, r#"{"v":1}"#);
    let list = s.policies().unwrap();
    assert_eq!((list[0].enrollments, list[0].behind), (1, 1));
    let dry = s.apply_policy("web", 2, None, true, 4).unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(s.policy_pins("web").unwrap(), vec![(AGENT.to_owned(), 1)]);
    let moved = s.apply_policy("web", 2, None, false, 4).unwrap();
    assert_eq!(moved[0].old_document, r#"{"v":1}"#);
    assert_eq!(s.policy_pins("web").unwrap(), vec![(AGENT.to_owned(), 2)]);
    assert_eq!(s.enrollment(AGENT).unwrap().unwrap().policy, r#"{"v":2}"#);
});

both!(registration_is_taken_once, |db| {
    let s = db.open();
    s.insert_registration(&Registration {
        registration_id: "r1".into(),
        agent_id: AGENT.into(),
        ak_pub: vec![1],
        ak_name: vec![2],
        secret_wrapped: vec![3],
        expires_at: 100,
    })
    .unwrap();
    assert_eq!(s.take_registration("r1").unwrap().unwrap().ak_name, vec![2]);
    assert!(s.take_registration("r1").unwrap().is_none());
    s.activate_ak(AGENT, &[2], &[1], 5).unwrap();
    s.activate_ak(AGENT, &[2], &[1, 1], 6).unwrap();
    assert_eq!(s.activated_ak(AGENT, &[2]).unwrap(), Some(vec![1, 1]));
    assert_eq!(s.activated_ak(AGENT, &[3]).unwrap(), None);
});

both!(refusals_since_the_last_release_are_counted, |db| {
    let s = enrolled_in(&db, 1, None);
    s.record_refusal(AGENT, Some("q1"), "bad", true, 5).unwrap();
    s.record_refusal(AGENT, Some("q2"), "bad", true, 50)
        .unwrap();
    // The same challenge refused again (copies of one quote with mangled logs) counts once.
    s.record_refusal(AGENT, Some("q2"), "bad", true, 50)
        .unwrap();
    // Not the machine's fault (the host's provider was down): logged, not counted.
    s.record_refusal(AGENT, None, "host_unreachable", false, 51)
        .unwrap();
    assert_eq!(s.recent_refusals(AGENT, 0).unwrap(), 2);
    assert_eq!(s.recent_refusals(AGENT, 10).unwrap(), 1, "window");
    challenge(&s, "c1", 100);
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Released { .. }
    ));
    assert_eq!(s.recent_refusals(AGENT, 0).unwrap(), 0, "a release resets");
    // A store decision (TERMINATED session) is logged but is not an evidence failure.
    challenge(&s, "c2", 100);
    assert!(matches!(
        attest(&s, "c2", 1, 2),
        ReleaseDecision::Refused(Refusal::SessionTerminated { .. })
    ));
    assert_eq!(s.recent_refusals(AGENT, 0).unwrap(), 0);
    assert_eq!(
        s.attempts(AGENT, 10).unwrap().len(),
        6,
        "every refusal is logged, counted or not"
    );
});

/// Rows in `table` (committed).
fn rows(s: &Store, table: &str) -> i64 {
    s.read(|c| {
        c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
            .int(0, "count")
    })
    .unwrap()
}

fn enroll_agent(s: &Store, agent_id: &str, max_attestations: u32) {
    s.enroll(
        &NewEnrollment {
            agent_id: agent_id.into(),
            ek_pub: vec![1],
            policy: "{}".into(),
            max_attestations,
            max_boots: None,
            share_wrapped: vec![1],
            payload_ct: None,
        },
        0,
    )
    .unwrap();
}

// Issue 12: a flood of registrations (and challenges, and refusals) is gone after it
// expired and one purge ran, also when the server restarted in between; the purge stops at
// its per-run cap and says there is more.
both!(
    a_registration_flood_is_purged_after_expiry_and_restart,
    |db| {
        const T0: i64 = 1_000_000;
        const FLOOD: usize = 5000;
        let db = Arc::new(db);
        {
            let s = Arc::new(enrolled_in(&db, 1, None));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for i in (t..FLOOD).step_by(8) {
                            s.insert_registration(&Registration {
                                registration_id: format!("r{i}"),
                                agent_id: AGENT.into(),
                                ak_pub: vec![1; 64],
                                ak_name: vec![2; 34],
                                secret_wrapped: vec![3; 60],
                                expires_at: T0 + 120,
                            })
                            .unwrap();
                            if i % 5 == 0 {
                                s.insert_legacy_challenge(&NewChallenge {
                                    challenge_id: format!("c{i}"),
                                    agent_id: AGENT.into(),
                                    ak_name: vec![0, 11],
                                    nonce: [5; 32],
                                    expires_at: T0 + 60,
                                })
                                .unwrap();
                                s.record_refusal(AGENT, None, "bad", true, T0).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // Still valid: kept.
            for i in 0..10 {
                s.insert_registration(&Registration {
                    registration_id: format!("live{i}"),
                    agent_id: AGENT.into(),
                    ak_pub: vec![1],
                    ak_name: vec![2],
                    secret_wrapped: vec![3],
                    expires_at: T0 + 10_000,
                })
                .unwrap();
            }
            assert_eq!(rows(&s, "registrations"), 5010);
        }
        // A restart: nothing in memory knows about the flood.
        let s = db.open();
        let p = PurgePolicy::default();
        let before_expiry = s.purge(T0 + 100, &p).unwrap();
        assert_eq!(before_expiry.registrations, 0, "{before_expiry:?}");
        let after = T0 + 120 + p.expiry_grace + 1;
        let capped = s
            .purge(
                after,
                &PurgePolicy {
                    max_rows: 1000,
                    ..p
                },
            )
            .unwrap();
        assert_eq!(capped.registrations, 1000);
        assert!(capped.more);
        let c = s.purge(after, &p).unwrap();
        assert_eq!(c.registrations, 4000, "{c:?}");
        assert_eq!(c.challenges, 1000 - capped.challenges, "{c:?}");
        assert!(!c.more);
        assert_eq!(rows(&s, "registrations"), 10);
        assert_eq!(rows(&s, "challenges"), 0);
        // The refusals are in the rate-limit window (plus grace): all kept.
        assert_eq!(rows(&s, "attempts"), 1000);
        // An hour later only the per-agent cap's newest are left, a week later none.
        let c = s
            .purge(
                T0 + 3600,
                &PurgePolicy {
                    attempts_per_agent: 100,
                    ..p
                },
            )
            .unwrap();
        assert_eq!(c.attempts, 900);
        assert_eq!(rows(&s, "attempts"), 100);
        assert_eq!(s.purge(T0 + 20_000, &p).unwrap().registrations, 10);
        s.purge(T0 + p.attempt_retention + 1, &p).unwrap();
        assert_eq!(rows(&s, "attempts"), 0);
        assert_eq!(rows(&s, "registrations"), 0);
        assert_eq!(
            s.purge(T0 + p.attempt_retention + 1, &p).unwrap(),
            PurgeCounts::default()
        );
    }
);

// A used challenge keeps its stored answer for the retention after expiry: an identical
// retry still gets it, other evidence is still a replay; unused expired ones go after the
// grace. Past the retention the retry is refused (unknown), and nothing more is released.
both!(
    used_challenges_keep_their_answer_until_the_retention,
    |db| {
        let s = enrolled_in(&db, 1, None);
        challenge(&s, "c1", 100);
        // An unused challenge row, as servers before tickets stored at issue.
        s.insert_legacy_challenge(&issued(AGENT, "unused")).unwrap();
        let ReleaseDecision::Released { response, .. } = attest(&s, "c1", 1, 1) else {
            panic!("not released")
        };
        let p = PurgePolicy::default();
        let c = s.purge(100 + p.expiry_grace + 1, &p).unwrap();
        assert_eq!(c.challenges, 1, "only the unused one");
        assert!(s.challenge("unused").unwrap().is_none());
        assert_eq!(
            attest(&s, "c1", 1, 1),
            ReleaseDecision::Retried {
                response: response.clone()
            }
        );
        assert_eq!(
            attest(&s, "c1", 1, 2),
            ReleaseDecision::Refused(Refusal::NonceReused)
        );
        // Within the retention: still kept.
        let c = s.purge(100 + p.used_challenge_retention - 1, &p).unwrap();
        assert_eq!(c.challenges, 0);
        let c = s.purge(100 + p.used_challenge_retention + 1, &p).unwrap();
        assert_eq!(c.challenges, 1);
        // The row is gone; the ticket's own expiry refuses it now (nothing is released).
        let h = [1u8; 32];
        let late = s
            .release(
                &ReleaseRequest {
                    challenge: &issued(AGENT, "c1"),
                    reset_count: 1,
                    evidence_hash: &h,
                    nk_hash: None,
                    now: 100 + p.used_challenge_retention + 1,
                    usage: None,
                },
                |_, _| Ok(b"again".to_vec()),
            )
            .unwrap();
        assert_eq!(late, ReleaseDecision::Refused(Refusal::ChallengeExpired));
        assert_eq!(s.sessions(AGENT).unwrap()[0].releases, 1);
    }
);

// Attempts in the rate-limit window survive any retention and cap; older ones go past the
// retention, or beyond the newest N of their agent.
both!(attempts_in_the_rate_limit_window_survive, |db| {
    let s = enrolled_in(&db, 1, None);
    let now = 100_000;
    for _ in 0..20 {
        s.record_refusal(AGENT, None, "old", true, now - 5000)
            .unwrap();
    }
    for i in 0..12 {
        s.record_refusal(AGENT, Some(&format!("r{i}")), "recent", true, now - 100)
            .unwrap();
    }
    for _ in 0..3 {
        s.record_refusal("bb11", None, "old", true, now - 2000)
            .unwrap();
    }
    for _ in 0..10 {
        s.record_refusal("cc22", None, "aging", true, now - 700)
            .unwrap();
    }
    let window = now - 300;
    assert_eq!(s.recent_refusals(AGENT, window).unwrap(), 12);
    let p = PurgePolicy {
        attempt_retention: 1000,
        attempts_per_agent: 5,
        attempt_protect: 600,
        ..PurgePolicy::default()
    };
    let c = s.purge(now, &p).unwrap();
    assert_eq!(c.attempts, 20 + 3 + 5, "{c:?}");
    assert_eq!(
        s.recent_refusals(AGENT, window).unwrap(),
        12,
        "rate limit unchanged"
    );
    let left = s.attempts(AGENT, 100).unwrap();
    assert_eq!(left.len(), 12, "the cap never reaches into the window");
    assert!(left.iter().all(|a| a.reason == "recent"));
    assert!(
        s.attempts("bb11", 10).unwrap().is_empty(),
        "past the retention"
    );
    assert_eq!(s.attempts("cc22", 10).unwrap().len(), 5, "the newest N");
    // Even a policy asking for no retention at all keeps the protected window.
    let c = s
        .purge(
            now,
            &PurgePolicy {
                attempt_retention: 0,
                attempts_per_agent: 1,
                ..p
            },
        )
        .unwrap();
    assert_eq!(c.attempts, 5, "cc22's, outside the window");
    assert_eq!(s.recent_refusals(AGENT, window).unwrap(), 12);
});

// Old boot sessions go, the latest of each agent stays: a quote of an old boot is still
// refused (its resetCount went backwards), the latest TERMINATED boot still refused.
both!(latest_session_survives_and_old_boots_stay_refused, |db| {
    let s = enrolled_in(&db, 1, None);
    for id in ["c1", "c2", "c3", "c4", "c5"] {
        challenge(&s, id, 100);
    }
    for (id, reset, evidence) in [("c1", 1, 1), ("c2", 2, 2), ("c3", 3, 3)] {
        assert!(matches!(
            attest(&s, id, reset, evidence),
            ReleaseDecision::Released { .. }
        ));
    }
    let p = PurgePolicy {
        session_retention: 0,
        ..PurgePolicy::default()
    };
    let c = s.purge(11, &p).unwrap();
    assert_eq!(c.sessions, 2, "{c:?}");
    let sessions = s.sessions(AGENT).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].reset_count, 3);
    assert_eq!(
        attest(&s, "c4", 2, 9),
        ReleaseDecision::Refused(Refusal::ResetCountWentBackwards {
            quoted: 2,
            latest: 3
        })
    );
    assert_eq!(
        attest(&s, "c5", 3, 9),
        ReleaseDecision::Refused(Refusal::SessionTerminated { reset_count: 3 })
    );
    assert_eq!(
        s.purge(1_000_000, &p).unwrap().sessions,
        0,
        "never the latest"
    );
    assert_eq!(s.sessions(AGENT).unwrap().len(), 1);
    assert_eq!(s.enrollment(AGENT).unwrap().unwrap().boots_used, 3);
});

// Purges running all the time (two of them, small batches, everything eligible) while
// four agents boot fifty times each: every release succeeds, and afterwards only the
// latest session of each agent is left.
both!(purge_concurrent_with_releases_fails_none, |db| {
    const AGENTS: [&str; 4] = ["a1", "a2", "a3", "a4"];
    const BOOTS: u32 = 50;
    {
        let s = db.open();
        for agent in AGENTS {
            enroll_agent(&s, agent, 1);
        }
        // Expired junk for the purgers to chew on.
        for i in 0..1000 {
            s.insert_registration(&Registration {
                registration_id: format!("junk{i}"),
                agent_id: "a1".into(),
                ak_pub: vec![1],
                ak_name: vec![2],
                secret_wrapped: vec![3],
                expires_at: 0,
            })
            .unwrap();
            s.insert_legacy_challenge(&NewChallenge {
                challenge_id: format!("junk{i}"),
                agent_id: "a2".into(),
                ak_name: vec![1],
                nonce: [0; 32],
                expires_at: 0,
            })
            .unwrap();
        }
    }
    let db = Arc::new(db);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let policy = PurgePolicy {
        expiry_grace: 0,
        used_challenge_retention: 0,
        attempt_retention: 0,
        attempts_per_agent: 1,
        attempt_protect: 0,
        session_retention: 0,
        batch: 50,
        max_rows: 10_000,
    };
    let purgers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let s = db.open();
                let mut runs = 0u32;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
                    s.purge(11, &policy).unwrap();
                    runs += 1;
                }
                runs
            })
        })
        .collect();
    let agents: Vec<_> = AGENTS
        .iter()
        .map(|&agent| {
            let db = db.clone();
            std::thread::spawn(move || {
                let s = db.open();
                for boot in 1..=BOOTS {
                    let id = format!("{agent}-{boot}");
                    let h = [u8::try_from(boot).unwrap(); 32];
                    let d = s
                        .release(
                            &ReleaseRequest {
                                challenge: &issued(agent, &id),
                                reset_count: boot,
                                evidence_hash: &h,
                                nk_hash: None,
                                now: 10,
                                usage: None,
                            },
                            |_, _| Ok(id.clone().into_bytes()),
                        )
                        .unwrap();
                    assert!(
                        matches!(d, ReleaseDecision::Released { releases: 1, .. }),
                        "{agent} boot {boot}: {d:?}"
                    );
                }
            })
        })
        .collect();
    for a in agents {
        a.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in purgers {
        assert!(p.join().unwrap() >= 1);
    }
    let s = db.open();
    s.purge(11, &policy).unwrap();
    for agent in AGENTS {
        let sessions = s.sessions(agent).unwrap();
        assert_eq!(sessions.len(), 1, "{agent}");
        assert_eq!(sessions[0].reset_count, BOOTS);
        assert_eq!(s.enrollment(agent).unwrap().unwrap().boots_used, BOOTS);
    }
    assert_eq!(rows(&s, "registrations"), 0);
    // The used ones are not expired yet (an identical retry may come).
    assert_eq!(rows(&s, "challenges"), 200);
    s.purge(101, &policy).unwrap();
    assert_eq!(rows(&s, "challenges"), 0);
});

/// Both migrations define the same tables and columns.
#[test]
fn sqlite_and_postgres_schemas_match() {
    let sqlite = Store::open_in_memory().unwrap().schema_columns().unwrap();
    assert!(sqlite.contains(&("sessions".into(), "releases".into())));
    let Some(db) = pg_db() else { return };
    assert_eq!(db.open().schema_columns().unwrap(), sqlite);
}

#[test]
fn database_urls() {
    assert_eq!(
        DatabaseUrl::parse("sqlite:///var/lib/x").unwrap(),
        DatabaseUrl::Sqlite("/var/lib/x".into())
    );
    assert!(matches!(
        DatabaseUrl::parse("postgres://u:secret@h/db").unwrap(),
        DatabaseUrl::Postgres(_)
    ));
    assert!(!format!(
        "{:?}",
        DatabaseUrl::parse("postgres://u:secret@h/db").unwrap()
    )
    .contains("secret"));
    assert!(DatabaseUrl::parse("mysql://h").is_err());
    assert!(DatabaseUrl::parse("sqlite://").is_err());
    assert!(matches!(
        Store::open_postgres("postgres://127.0.0.1:1/x", "bad-name"),
        Err(StoreError::Config(_))
    ));
}

/// Group commit (SQLite): concurrent requests share transactions, yet every request's
/// writes are committed (visible to a separate connection, as after a crash and restart)
/// before its call returns, and a failing request leaves nothing behind.
mod group_commit {
    use std::sync::Barrier;

    use super::*;

    const THREADS: usize = 48;
    const WRITES: usize = 10;

    fn sqlite(store: &Store) -> &sqlite::SqliteDb {
        match &store.backend {
            Backend::Sqlite(db) => db,
            Backend::Postgres(_) => panic!("not SQLite"),
        }
    }

    fn insert(c: &mut dyn Conn, id: &str) -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO registrations (registration_id, agent_id, ak_pub, ak_name, secret, expires_at)
             VALUES (?1, 'aa00', x'02', x'03', x'04', 0)",
            args![id],
        )
        .map(drop)
    }

    /// Whether `id` is committed, seen from a connection of its own.
    fn committed(outside: &rusqlite::Connection, id: &str) -> bool {
        outside
            .query_row(
                "SELECT count(*) FROM registrations WHERE registration_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }

    #[test]
    fn every_write_is_committed_before_it_returns_and_commits_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Arc::new(Store::open(&path).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier, path) = (store.clone(), barrier.clone(), path.clone());
                std::thread::spawn(move || {
                    let outside = rusqlite::Connection::open(&path).unwrap();
                    barrier.wait();
                    for w in 0..WRITES {
                        let id = format!("r{t}-{w}");
                        sqlite(&store).write(|c| insert(c, &id)).unwrap();
                        assert!(
                            committed(&outside, &id),
                            "{id}: write returned before its transaction was committed"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (requests, commits) = store.group_commit_stats().unwrap();
        assert!(requests >= (THREADS * WRITES) as u64, "{requests} requests");
        assert!(
            commits < requests,
            "{THREADS} concurrent writers never shared a commit ({commits} commits for {requests} requests)"
        );
        drop(store);
        let reopened = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = reopened
            .query_row("SELECT count(*) FROM registrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, (THREADS * WRITES) as i64);
    }

    #[test]
    fn a_failing_request_rolls_back_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Arc::new(Store::open(&path).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for w in 0..WRITES {
                        let id = format!("r{t}-{w}");
                        let fail = (t + w) % 3 == 0;
                        let r = sqlite(&store).write(|c| {
                            insert(c, &id)?;
                            if fail {
                                // Wrote, then refused: as a release refused after its checks.
                                return Err(StoreError::NotFound(id.clone()));
                            }
                            insert(c, &format!("{id}-second"))
                        });
                        assert_eq!(r.is_err(), fail, "{id}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(store);
        let outside = rusqlite::Connection::open(&path).unwrap();
        for t in 0..THREADS {
            for w in 0..WRITES {
                let id = format!("r{t}-{w}");
                let kept = (t + w) % 3 != 0;
                assert_eq!(committed(&outside, &id), kept, "{id}");
                assert_eq!(committed(&outside, &format!("{id}-second")), kept, "{id}");
            }
        }
    }

    /// A request that kills the whole shared transaction (as SQLite does on an I/O error or
    /// a full disk) while others join and commit: every request that returned Ok is on disk,
    /// every one that returned an error left nothing, and nobody hangs.
    #[test]
    fn a_transaction_killed_midway_fails_exactly_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Arc::new(Store::open(&path).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..WRITES)
                        .map(|w| {
                            let id = format!("r{t}-{w}");
                            let kill = (t * WRITES + w) % 7 == 0;
                            let r = sqlite(&store).write(|c| {
                                insert(c, &id)?;
                                if kill {
                                    c.execute("ROLLBACK", &[])?;
                                }
                                Ok(())
                            });
                            (id, r.is_ok(), kill)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let outside = rusqlite::Connection::open(&path).unwrap();
        let mut ok = 0;
        for (id, returned_ok, kill) in &results {
            assert!(
                !(*kill && *returned_ok),
                "{id} killed its transaction yet returned Ok"
            );
            assert_eq!(committed(&outside, id), *returned_ok, "{id}");
            ok += usize::from(*returned_ok);
        }
        assert!(ok > 0, "no request survived");
        // The connection is usable afterwards.
        sqlite(&store).write(|c| insert(c, "after")).unwrap();
        assert!(committed(&outside, "after"));
    }

    #[test]
    fn a_constraint_violation_fails_only_its_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("v.db")).unwrap());
        sqlite(&store).write(|c| insert(c, "taken")).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let id = if t == 0 {
                        "taken".to_owned()
                    } else {
                        format!("new{t}")
                    };
                    sqlite(&store).write(|c| insert(c, &id)).is_ok()
                })
            })
            .collect();
        let ok: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(ok, [false, true, true, true, true, true, true, true]);
        let n = sqlite(&store)
            .read(|c| {
                c.query_one("SELECT count(*) FROM registrations", &[])?
                    .int(0, "r")
            })
            .unwrap();
        assert_eq!(n, 8);
    }
}

/// Every record of the audit chain, oldest first.
fn audit_all(s: &Store) -> Vec<verifier_core::audit::AuditRecord> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map_or(0, |r: &verifier_core::audit::AuditRecord| r.seq);
        let (page, _, _) = s.audit_page(after, 1000, None).unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

// The audit trail: enrollment, release, refusal and admin actions each append one record in
// their own transaction; the chain verifies; an altered record is found where it was
// altered.
both!(audit_records_each_decision_and_finds_tampering, |db| {
    let s = enrolled_in(&db, 1, None);
    challenge(&s, "c1", 100);
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Released { .. }
    ));
    challenge(&s, "c2", 100);
    assert!(matches!(
        attest(&s, "c2", 1, 2),
        ReleaseDecision::Refused(Refusal::SessionTerminated { .. })
    ));
    s.record_refusal(AGENT, Some("c3"), "policy denied", true, 11)
        .unwrap();
    s.set_state(AGENT, EnrollmentState::Revoked, 12).unwrap();
    s.rearm(AGENT, 13).unwrap();
    // A retried release appends nothing (nothing was decided).
    assert!(matches!(
        attest(&s, "c1", 1, 1),
        ReleaseDecision::Retried { .. }
    ));
    let records = audit_all(&s);
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["enroll", "release", "refusal", "refusal", "state", "rearm"]
    );
    assert!(
        records[1].detail.contains("\"session_terminated\":true"),
        "{}",
        records[1].detail
    );
    let (_, head_seq, head_hash) = s.audit_page(0, 1, None).unwrap();
    let (last, hash) =
        verifier_core::audit::verify_chain(&records, 1, verifier_core::audit::GENESIS)
            .unwrap()
            .unwrap();
    assert_eq!((last, hash.to_vec()), (head_seq, head_hash));
    s.tamper_audit(3, "{\"reason\":\"nothing to see\"}")
        .unwrap();
    assert_eq!(
        verifier_core::audit::verify_chain(&audit_all(&s), 1, verifier_core::audit::GENESIS),
        Err(verifier_core::audit::ChainBreak::Altered { seq: 3 })
    );
});

// Many writers at once (threads here; replicas on PostgreSQL take the same row lock): one
// chain, no gap, no fork, one record per release.
both!(
    audit_chain_has_no_gap_or_fork_under_concurrent_releases,
    |db| {
        const AGENTS: [&str; 4] = ["b1", "b2", "b3", "b4"];
        const BOOTS: u32 = 15;
        {
            let s = db.open();
            for agent in AGENTS {
                enroll_agent(&s, agent, 1);
            }
        }
        let db = Arc::new(db);
        let threads: Vec<_> = AGENTS
            .iter()
            .map(|&agent| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let s = db.open();
                    for boot in 1..=BOOTS {
                        let id = format!("{agent}-{boot}");
                        let h = [u8::try_from(boot).unwrap(); 32];
                        let d = s
                            .release(
                                &ReleaseRequest {
                                    challenge: &issued(agent, &id),
                                    reset_count: boot,
                                    evidence_hash: &h,
                                    nk_hash: None,
                                    now: 10,
                                    usage: None,
                                },
                                |_, _| Ok(id.clone().into_bytes()),
                            )
                            .unwrap();
                        assert!(matches!(d, ReleaseDecision::Released { .. }), "{d:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = db.open();
        let records = audit_all(&s);
        let releases = records.iter().filter(|r| r.kind == "release").count();
        assert_eq!(releases, AGENTS.len() * BOOTS as usize);
        assert_eq!(records.len(), AGENTS.len() * (BOOTS as usize + 1));
        verifier_core::audit::verify_chain(&records, 1, verifier_core::audit::GENESIS).unwrap();
    }
);

// Pending policy changes: stored once per id, capped per agent (the cap holds under
// concurrent submissions), decided once, and only for an enrolled agent.
both!(
    pending_changes_are_capped_deduplicated_and_decided_once,
    |db| {
        let s = enrolled_in(&db, 1, None);
        let max = 3;
        assert!(matches!(
            s.submit_pending("id-x", "not-enrolled", "{}", max, 1),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.submit_pending("id-0", AGENT, "{\"n\":0}", max, 1)
                .unwrap(),
            Submitted::New
        );
        // The same change again: the row it made, not a second one.
        assert_eq!(
            s.submit_pending("id-0", AGENT, "{\"n\":0}", max, 2)
                .unwrap(),
            Submitted::Exists("pending".into())
        );
        // Concurrent submissions of distinct changes from several connections: never more
        // than `max` pending, whatever the interleaving.
        let handles: Vec<_> = (1..8)
            .map(|i| {
                let s = db.open();
                std::thread::spawn(move || {
                    s.submit_pending(&format!("id-{i}"), AGENT, "{}", max, 3)
                })
            })
            .collect();
        let mut refused = 0;
        for h in handles {
            match h.join().unwrap() {
                Ok(Submitted::New) => {}
                Err(StoreError::TooManyPending { max: m, .. }) => {
                    assert_eq!(m, max);
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, 7 - (max as usize - 1));
        let pending = s.pending_changes(Some(AGENT)).unwrap();
        assert_eq!(pending.len(), max as usize);
        assert!(pending.iter().all(|r| r.state == "pending"));

        // Decided once; a decision frees a slot; a replay of a decided change gets the decision.
        let reject = Decision {
            approved: false,
            result: None,
            by: "operator",
            actor: Actor::Admin,
        };
        let approve = |result| Decision {
            approved: true,
            result: Some(result),
            by: "auto: signed by CN=x",
            actor: Actor::Agent,
        };
        assert!(s.decide_pending("id-0", &reject, 5).unwrap());
        assert!(!s.decide_pending("id-0", &approve(("p", 2)), 6).unwrap());
        let r = s.pending_change("id-0").unwrap().unwrap();
        assert_eq!(
            (
                r.state.as_str(),
                r.decided_at,
                r.result,
                r.decided_by.as_deref()
            ),
            ("rejected", Some(5), None, Some("operator"))
        );
        assert_eq!(
            s.submit_pending("id-0", AGENT, "{\"n\":0}", max, 7)
                .unwrap(),
            Submitted::Exists("rejected".into())
        );
        let other = pending.iter().find(|r| r.id != "id-0").unwrap().id.clone();
        assert!(s.decide_pending(&other, &approve(("fleet", 2)), 8).unwrap());
        let r = s.pending_change(&other).unwrap().unwrap();
        assert_eq!(r.result, Some(("fleet".into(), 2)));
        assert_eq!(r.decided_by.as_deref(), Some("auto: signed by CN=x"));
        assert_eq!(
            s.submit_pending("id-new", AGENT, "{}", max, 9).unwrap(),
            Submitted::New
        );
        // A restarted server (another connection) sees the same rows.
        assert_eq!(
            db.open().pending_changes(None).unwrap().len(),
            max as usize + 1
        );
    }
);

both!(
    attempt_histogram_counts_releases_and_refusals_per_bucket,
    |db| {
        let s = enrolled_in(&db, 1, None);
        challenge(&s, "c1", 100);
        // A release at t=10 (attest's clock), refusals at 5, 50, 3600 and 7300.
        assert!(matches!(
            attest(&s, "c1", 1, 1),
            ReleaseDecision::Released { .. }
        ));
        for at in [5, 50, 3600, 7300] {
            s.record_refusal(AGENT, None, "bad", true, at).unwrap();
        }
        let all = s.attempt_histogram(0, 3600).unwrap();
        let got: Vec<(i64, u64, u64)> = all
            .iter()
            .map(|b| (b.start, b.released, b.refused))
            .collect();
        assert_eq!(got, vec![(0, 1, 2), (3600, 0, 1), (7200, 0, 1)]);
        // `since` cuts at the attempt, not the bucket.
        let later = s.attempt_histogram(3601, 3600).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].start, later[0].refused), (7200, 1));
        assert!(s.attempt_histogram(0, 0).is_err());
    }
);

both!(
    iak_binding_needs_an_enrollment_is_replaced_and_deleted_with_it,
    |db| {
        let s = db.open();
        assert!(matches!(
            s.bind_iak(AGENT, "2.23.133.1.2:41", 1),
            Err(StoreError::NotFound(_))
        ));
        let s = enrolled_in(&db, 1, None);
        assert_eq!(s.iak_binding(AGENT).unwrap(), None);
        s.bind_iak(AGENT, "2.23.133.1.2:41", 1).unwrap();
        s.bind_iak(AGENT, "2.23.133.1.2:42", 2).unwrap();
        // Another replica sees the latest binding.
        assert_eq!(
            db.open().iak_binding(AGENT).unwrap().as_deref(),
            Some("2.23.133.1.2:42")
        );
        s.delete(AGENT, 3).unwrap();
        assert_eq!(s.iak_binding(AGENT).unwrap(), None);
    }
);

/// Auto-enrollment admissions and deposits (`store/admission.rs`), on both backends.
#[path = "admission_tests.rs"]
mod admission_tests;
// Confidential VMs: the evidence kind is written with the enrollment (none for `tpm`), a
// TEE pin stores the report and refuses another AK like an activation does, refuses a
// `tpm` enrollment, and a delete forgets the kind and the report.
both!(tee_kind_pin_and_evidence, |db| {
    use verifier_core::proto::v1::EvidenceKind;
    let s = db.open();
    let e = |agent: &str| NewEnrollment {
        agent_id: agent.into(),
        ek_pub: vec![1],
        policy: "{}".into(),
        max_attestations: 1,
        max_boots: None,
        share_wrapped: vec![9; 48],
        payload_ct: None,
    };
    let cvm = "c".repeat(64);
    let tpm = "d".repeat(64);
    s.enroll_as(&e(&cvm), None, EvidenceKind::AzureSnpVtpm, 1)
        .unwrap();
    s.enroll_as(&e(&tpm), None, EvidenceKind::Tpm, 1).unwrap();
    assert_eq!(s.evidence_kind(&cvm).unwrap(), EvidenceKind::AzureSnpVtpm);
    assert_eq!(s.evidence_kind(&tpm).unwrap(), EvidenceKind::Tpm);
    assert_eq!(
        s.tee_evidence(&cvm).unwrap(),
        None,
        "nothing registered yet"
    );
    let ev = |b: u8, at: i64| TeeEvidence {
        hcl_report: vec![b; 10],
        vcek: vec![b; 5],
        registered_at: at,
    };
    assert!(s.pin_tee_ak(&cvm, &[1], &[11], &ev(1, 5)).unwrap());
    assert_eq!(s.tee_evidence(&cvm).unwrap(), Some(ev(1, 5)));
    assert_eq!(s.activated_ak(&cvm, &[1]).unwrap(), Some(vec![11]));
    // The same AK again (next registration): the newer report is kept.
    assert!(s.pin_tee_ak(&cvm, &[1], &[11], &ev(2, 6)).unwrap());
    assert_eq!(s.tee_evidence(&cvm).unwrap(), Some(ev(2, 6)));
    // Another AK: refused, nothing changed.
    assert!(!s.pin_tee_ak(&cvm, &[2], &[12], &ev(3, 7)).unwrap());
    assert_eq!(s.tee_evidence(&cvm).unwrap(), Some(ev(2, 6)));
    assert_eq!(s.activated_ak(&cvm, &[2]).unwrap(), None);
    // A `tpm` enrollment takes no TEE pin.
    assert!(matches!(
        s.pin_tee_ak(&tpm, &[1], &[11], &ev(1, 5)),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.activated_ak(&tpm, &[1]).unwrap(), None);
    s.delete(&cvm, 8).unwrap();
    assert_eq!(s.evidence_kind(&cvm).unwrap(), EvidenceKind::Tpm);
    assert_eq!(s.tee_evidence(&cvm).unwrap(), None);
});

/// Boot usage and retired versions (`store/usage.rs`), on both backends.
#[path = "usage_tests.rs"]
mod usage_tests;
