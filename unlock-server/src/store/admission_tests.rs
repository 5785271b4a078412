//! Admissions: the budgets hold and write nothing when spent; a deposit arms once, only
//! with its admission's nonce and EK, and never over an existing enrollment.

use super::*;

const BUDGET: AdmissionBudget = AdmissionBudget {
    rule_per_hour: 3,
    max_waiting: 2,
};

fn admission<'a>(agent: &'a str, nonce: u8, now: i64) -> NewAdmission<'a> {
    NewAdmission {
        agent_id: agent,
        ek_pub: &[1, 2, 3],
        rule: "r",
        admitted_by: "rule r (tofu: any EK)",
        nonce: [nonce; 32],
        expires_at: now + 600,
    }
}

fn deposit_of(agent: &str) -> NewEnrollment {
    NewEnrollment {
        agent_id: agent.into(),
        ek_pub: vec![1, 2, 3],
        policy: "{\"version\":1}".into(),
        max_attestations: 1,
        max_boots: None,
        share_wrapped: vec![9; 48],
        payload_ct: Some(vec![7; 40]),
    }
}

fn audit_kinds(s: &Store) -> Vec<String> {
    s.audit_page(0, 100, None)
        .unwrap()
        .0
        .into_iter()
        .map(|r| r.kind)
        .collect()
}

both!(budgets_hold_and_refusals_write_nothing, |db| {
    let s = db.open();
    assert_eq!(
        s.admit(&admission("a1", 1, 0), BUDGET, 0).unwrap(),
        Admitted::New
    );
    // A retried registration keeps its admission (same nonce), nothing counted or written.
    assert_eq!(
        s.admit(&admission("a1", 9, 1), BUDGET, 1).unwrap(),
        Admitted::Waiting
    );
    assert_eq!(s.admission("a1").unwrap().unwrap().nonce, vec![1; 32]);
    assert_eq!(
        s.admit(&admission("a2", 2, 2), BUDGET, 2).unwrap(),
        Admitted::New
    );
    // Two wait: a third is refused, and leaves no row and no audit record.
    let before = audit_kinds(&s);
    assert!(matches!(
        s.admit(&admission("a3", 3, 3), BUDGET, 3),
        Err(StoreError::AdmissionBudgetSpent(_))
    ));
    assert!(s.admission("a3").unwrap().is_none());
    assert_eq!(audit_kinds(&s), before);
    // Once they expire, there is room again; the rule's hourly budget still counts them.
    assert_eq!(
        s.admit(&admission("a3", 3, 700), BUDGET, 700).unwrap(),
        Admitted::New
    );
    assert!(matches!(
        s.admit(&admission("a4", 4, 701), BUDGET, 701),
        Err(StoreError::AdmissionBudgetSpent(m)) if m.contains("max_per_hour")
    ));
    // An hour later the rule may admit again.
    assert_eq!(
        s.admit(&admission("a4", 4, 3700), BUDGET, 3700).unwrap(),
        Admitted::New
    );
});

both!(deposit_arms_once_with_its_nonce, |db| {
    let s = db.open();
    s.create_policy("fleet", "{\"version\":1}", 0).unwrap();
    s.admit(&admission("a1", 1, 0), BUDGET, 0).unwrap();
    let e = deposit_of("a1");
    // Another admission's nonce, another EK: refused, nothing enrolled.
    assert!(matches!(
        s.deposit(&e, &[2; 32], ("fleet", 1), 5),
        Err(StoreError::NotAwaitingDeposit(_))
    ));
    let mut other_ek = deposit_of("a1");
    other_ek.ek_pub = vec![4, 5, 6];
    assert!(matches!(
        s.deposit(&other_ek, &[1; 32], ("fleet", 1), 5),
        Err(StoreError::NotAwaitingDeposit(_))
    ));
    assert!(s.enrollment("a1").unwrap().is_none());
    // After its expiry: refused.
    assert!(matches!(
        s.deposit(&e, &[1; 32], ("fleet", 1), 600),
        Err(StoreError::NotAwaitingDeposit(_))
    ));
    // In time, with its nonce: armed, recorded as admitted, audited as the agent's.
    let how = s.deposit(&e, &[1; 32], ("fleet", 1), 5).unwrap();
    assert_eq!(how, "rule r (tofu: any EK)");
    let got = s.enrollment("a1").unwrap().unwrap();
    assert_eq!(got.state, EnrollmentState::Armed);
    assert_eq!(got.admitted_by.as_deref(), Some("rule r (tofu: any EK)"));
    assert_eq!(got.policy_ref, Some(("fleet".into(), 1)));
    assert!(audit_kinds(&s).contains(&"auto_enroll".to_owned()));
    // A second deposit is refused; the enrollment keeps the first share.
    let mut second = deposit_of("a1");
    second.share_wrapped = vec![1; 48];
    assert!(matches!(
        s.deposit(&second, &[1; 32], ("fleet", 1), 6),
        Err(StoreError::NotAwaitingDeposit(_))
    ));
    assert_eq!(
        s.enrollment("a1").unwrap().unwrap().share_wrapped,
        vec![9; 48]
    );
});

both!(deposit_never_overwrites_an_operator_enrollment, |db| {
    let s = db.open();
    s.create_policy("fleet", "{\"version\":1}", 0).unwrap();
    s.admit(&admission(AGENT, 1, 0), BUDGET, 0).unwrap();
    let mut operator = deposit_of(AGENT);
    operator.share_wrapped = vec![3; 48];
    s.enroll(&operator, 1).unwrap();
    assert!(matches!(
        s.deposit(&deposit_of(AGENT), &[1; 32], ("fleet", 1), 2),
        Err(StoreError::AlreadyEnrolled(_))
    ));
    let got = s.enrollment(AGENT).unwrap().unwrap();
    assert_eq!(got.share_wrapped, vec![3; 48]);
    assert_eq!(got.admitted_by, None);
});
