use super::*;
use crate::policy::PcrRuleDocument;

const A: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
const B: &str = "bb00000000000000000000000000000000000000000000000000000000000000";
const C: &str = "cc00000000000000000000000000000000000000000000000000000000000000";

fn doc(allowed: &[&str]) -> PolicyDocument {
    PolicyDocument {
        pcrs: vec![PcrRuleDocument {
            bank: "sha256".into(),
            index: 9,
            allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
            initial: false,
        }],
        ..PolicyDocument::default()
    }
}

fn item(v: &str) -> UsedItem {
    UsedItem::new("pcrs[sha256:9].allowed", v)
}

fn machine(name: &str, boots: &[(u32, &str)]) -> MachineUse {
    MachineUse {
        machine: name.into(),
        boots: boots
            .iter()
            .map(|(version, v)| BootUse {
                version: *version,
                used: vec![item(v)],
            })
            .collect(),
    }
}

fn versions(docs: &[PolicyDocument]) -> BTreeMap<u32, PolicyDocument> {
    (1u32..).zip(docs.iter().cloned()).collect()
}

#[test]
fn an_item_no_machine_used_in_its_last_n_boots_is_retired() {
    let vs = versions(&[doc(&[A, B])]);
    let m = [machine("m1", &[(1, B), (1, B), (1, B), (1, A)])];
    let r = retire(&vs, 1, &m, 3, None).unwrap();
    assert_eq!(r.removed, vec![item(A)]);
    assert_eq!(r.document, doc(&[B]));
    assert_eq!(r.kept.len(), 1);
    assert!(r.kept[0].reason.contains("m1 used it"), "{:?}", r.kept);
    assert!(!r.diff.may_widen());
    assert_eq!(r.diff.changes.len(), 1);
}

#[test]
fn a_machine_with_fewer_than_n_boots_keeps_everything() {
    let vs = versions(&[doc(&[A, B])]);
    let m = [
        machine("m1", &[(1, B), (1, B), (1, B)]),
        machine("m2", &[(1, B), (1, B)]),
    ];
    let r = retire(&vs, 1, &m, 3, None).unwrap();
    assert!(r.removed.is_empty());
    assert!(
        r.kept
            .iter()
            .any(|k| k.item == item(A) && k.reason.contains("m2 has 2 of the 3")),
        "{:?}",
        r.kept
    );
}

#[test]
fn boots_under_a_version_without_the_item_do_not_count() {
    // C was added in v2; three boots under v1 say nothing about it.
    let vs = versions(&[doc(&[A, B]), doc(&[A, B, C])]);
    let m = [machine("m1", &[(2, B), (1, B), (1, B), (1, B)])];
    let r = retire(&vs, 2, &m, 3, None).unwrap();
    assert_eq!(r.removed, vec![item(A)]);
    assert!(r.kept.iter().any(|k| k.item == item(C)), "{:?}", r.kept);
}

#[test]
fn no_machine_or_zero_boots_is_refused() {
    let vs = versions(&[doc(&[A, B])]);
    assert_eq!(retire(&vs, 1, &[], 3, None), Err(RetireError::NoMachines));
    let m = [machine("m1", &[(1, B)])];
    assert_eq!(retire(&vs, 1, &m, 0, None), Err(RetireError::ZeroBoots));
}

#[test]
fn only_items_this_role_can_retire_are_accepted() {
    let vs = versions(&[doc(&[A, B, C])]);
    let m = [machine("m1", &[(1, B), (1, B), (1, B)])];
    let r = retire(&vs, 1, &m, 3, Some(&[item(A)])).unwrap();
    assert_eq!(r.removed, vec![item(A)]);
    assert_eq!(r.document, doc(&[B, C]));
    assert!(
        r.kept
            .iter()
            .any(|k| k.item == item(C) && k.reason.contains("not named")),
        "{:?}",
        r.kept
    );
    match retire(&vs, 1, &m, 3, Some(&[item(B)])) {
        Err(RetireError::NotRetirable(i, why)) => {
            assert_eq!(i, item(B));
            assert!(why.contains("used it"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn digests_are_compared_in_lowercase() {
    let upper = A.to_ascii_uppercase();
    let vs = versions(&[doc(&[&upper, B])]);
    let m = [machine("m1", &[(1, B), (1, B), (1, B)])];
    let r = retire(&vs, 1, &m, 3, None).unwrap();
    assert_eq!(r.removed, vec![item(A)]);
    assert_eq!(r.document, doc(&[B]));
}

#[test]
fn only_removals_from_allowlists_pass_the_gate() {
    let old = doc(&[A, B]);
    assert!(check_only_narrows(&old, &doc(&[B])).is_ok());
    // Adding widens.
    assert!(matches!(
        check_only_narrows(&old, &doc(&[A, B, C])),
        Err(RetireError::NotOnlyNarrowing(_))
    ));
    // Emptying a list refuses every boot.
    let mut empty = doc(&[]);
    empty.pcrs[0].initial = true;
    assert!(matches!(
        check_only_narrows(&old, &empty),
        Err(RetireError::NotOnlyNarrowing(_))
    ));
    // A narrowing elsewhere is not a retirement.
    let mut other = doc(&[A, B]);
    other.require_event_log = true;
    assert!(matches!(
        check_only_narrows(&old, &other),
        Err(RetireError::NotOnlyNarrowing(_))
    ));
}

#[test]
fn kernels_and_exact_command_lines_are_items_and_regexes_are_not() {
    let d = PolicyDocument {
        measured_boot: Some(crate::policy::MeasuredBootDocument {
            kernels: Some(vec![A.into(), B.into()]),
            kernel_cmdline: Some(vec![
                CmdlineRuleDocument::Exact("root=/dev/a".into()),
                CmdlineRuleDocument::Exact("root=/dev/b".into()),
                CmdlineRuleDocument::Regex("root=.*".into()),
            ]),
            ..Default::default()
        }),
        ..PolicyDocument::default()
    };
    let items = retirable_items(&d);
    assert_eq!(items.len(), 4, "{items:?}");
    let vs = versions(&[d]);
    let used = vec![
        UsedItem::new("measured_boot.kernels", B),
        UsedItem::new("measured_boot.kernel_cmdline", "root=/dev/b"),
    ];
    let m = [MachineUse {
        machine: "m1".into(),
        boots: vec![BootUse { version: 1, used }],
    }];
    let r = retire(&vs, 1, &m, 1, None).unwrap();
    let mb = r.document.measured_boot.unwrap();
    assert_eq!(mb.kernels, Some(vec![B.to_owned()]));
    assert_eq!(
        mb.kernel_cmdline,
        Some(vec![
            CmdlineRuleDocument::Exact("root=/dev/b".into()),
            CmdlineRuleDocument::Regex("root=.*".into()),
        ])
    );
}

#[test]
fn a_boot_whose_record_is_full_keeps_every_item() {
    let vs = versions(&[doc(&[A, B])]);
    let mut m = [machine("m1", &[(1, B), (1, B), (1, B)])];
    // The newest boot matched more than is recorded: its record holds B and 63 other items
    // (as many PCR rules could give), A perhaps among those not recorded.
    m[0].boots[0].used.extend((0..MAX_USED_ITEMS - 1).map(|i| {
        UsedItem::new(
            "measured_boot.boot_applications",
            format!("sha256:{i:064x}"),
        )
    }));
    let r = retire(&vs, 1, &m, 3, None).unwrap();
    assert!(r.removed.is_empty(), "{:?}", r.removed);
    assert!(
        r.kept
            .iter()
            .any(|k| k.item == item(A) && k.reason.contains("more than the 64 items")),
        "{:?}",
        r.kept
    );
    // One entry fewer in the record: complete, so A is retired as before.
    m[0].boots[0].used.pop();
    assert_eq!(retire(&vs, 1, &m, 3, None).unwrap().removed, vec![item(A)]);
}
