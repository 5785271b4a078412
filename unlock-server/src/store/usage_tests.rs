//! Boot usage (`store/usage.rs`): only a session's first release records what the boot
//! used, refusals record nothing, the items are capped, and a retired version is written
//! once, from the latest version, with its audit record.

use verifier_core::policy::{UsedItem, MAX_USED_ITEMS};

use super::*;

fn item(v: &str) -> UsedItem {
    UsedItem {
        list: "pcrs[sha256:9].allowed".into(),
        item: v.into(),
    }
}

fn pinned(db: &Db, max_attestations: u32) -> Store {
    let s = db.open();
    s.create_policy("web", r#"{"version":1}"#, 1).unwrap();
    let e = NewEnrollment {
        agent_id: AGENT.into(),
        ek_pub: vec![1],
        policy: r#"{"version":1}"#.into(),
        max_attestations,
        max_boots: None,
        share_wrapped: vec![1],
        payload_ct: None,
    };
    s.enroll_pinned(&e, Some(("web", 1)), 2).unwrap();
    s
}

fn release_using(
    s: &Store,
    id: &str,
    reset_count: u32,
    expires_at: i64,
    used: &[UsedItem],
) -> ReleaseDecision {
    challenge(s, id, expires_at);
    let h = [u8::try_from(reset_count).unwrap(); 32];
    s.release(
        &ReleaseRequest {
            challenge: &issued(AGENT, id),
            reset_count,
            evidence_hash: &h,
            nk_hash: None,
            now: 10,
            usage: Some(BootUsage {
                policy_name: "web",
                policy_version: 1,
                used,
            }),
        },
        |_, _| Ok(id.as_bytes().to_vec()),
    )
    .unwrap()
}

fn released(d: ReleaseDecision) -> bool {
    matches!(d, ReleaseDecision::Released { .. })
}

both!(
    first_release_of_a_session_records_what_the_boot_used,
    |db| {
        let s = pinned(&db, 2);
        assert!(released(release_using(&s, "c1", 1, 100, &[item("aa")])));
        // A second release in the same boot does not replace the record.
        assert!(released(release_using(&s, "c2", 1, 100, &[item("bb")])));
        // An expired challenge is refused: no session, nothing recorded.
        assert!(!released(release_using(&s, "c3", 2, 5, &[item("cc")])));
        let many: Vec<UsedItem> = (0..MAX_USED_ITEMS + 10)
            .map(|i| item(&i.to_string()))
            .collect();
        assert!(released(release_using(&s, "c4", 3, 100, &many)));
        let usage = s.policy_usage("web").unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].machine, AGENT);
        let boots = &usage[0].boots;
        assert_eq!(boots.len(), 2, "{boots:?}");
        assert_eq!(boots[0].used.len(), MAX_USED_ITEMS);
        assert_eq!((boots[1].version, &boots[1].used), (1, &vec![item("aa")]));
        // Another policy's name sees nothing of it.
        s.create_policy("other", r#"{"version":1}"#, 1).unwrap();
        assert!(s.policy_usage("other").unwrap().is_empty());
    }
);

both!(an_enrollment_without_boots_is_listed_with_none, |db| {
    let s = pinned(&db, 1);
    let usage = s.policy_usage("web").unwrap();
    assert_eq!(usage.len(), 1);
    assert!(usage[0].boots.is_empty());
});

both!(a_retired_version_is_written_once_from_the_latest, |db| {
    let s = pinned(&db, 1);
    let detail = serde_json::json!({"after_boots": 3, "removed": [item("aa")]});
    assert_eq!(
        s.add_retired_version("web", 1, r#"{"version":1,"v":2}"#, &detail, 5)
            .unwrap(),
        2
    );
    match s.add_retired_version("web", 1, "{}", &detail, 6) {
        Err(StoreError::PolicyMoved { base, latest, .. }) => assert_eq!((base, latest), (1, 2)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.add_retired_version("nope", 1, "{}", &detail, 6),
        Err(StoreError::PolicyNotFound(_))
    ));
    let last = audit_all(&s).pop().unwrap();
    assert_eq!(last.kind, "policy_retire");
    let detail: serde_json::Value = serde_json::from_str(&last.detail).unwrap();
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["from_version"], 1);
    assert_eq!(detail["removed"][0]["item"], "aa");
    assert_eq!(s.policy("web", None).unwrap().version, 2);
});
