//! Which allowlist items a boot used, and the retirement of the ones no machine needs.
//!
//! An update widens a policy ([`super::widen`]): the next version allows the new kernel and
//! keeps the old one, so a machine that has not rebooted yet still unlocks. Once every
//! machine pinned to the policy has booted the new state often enough, the old items only
//! widen what an attacker may boot. [`retire`] decides which items may go, from what each
//! machine's recent successful boots matched ([`UsedItem`], reported by the evaluator in
//! [`super::Verdict::used`]); [`check_only_narrows`] is the gate a retirement passes (the
//! mirror of [`super::check_only_allows_more`]): every change removes an allowlist item.
//!
//! The rule is conservative: an item is kept unless every machine has at least N recorded
//! successful boots under versions that allowed it, and none of its last N such boots used
//! it. A machine with fewer boots since the item was allowed keeps everything.
//!
//! Retirable lists: `measured_boot.{boot_applications,kernels,initrds}`, the exact rules of
//! `measured_boot.kernel_cmdline` (a regex rule is never retired: what it matched is not one
//! item), and each PCR rule's `allowed`. Authorities, key databases and IMA lists are not
//! recorded and never retired.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::diff::{diff, Effect, PolicyDiff};
use super::document::{CmdlineRuleDocument, PolicyDocument};
use super::{Policy, PolicyError};
use crate::wire::{Digest, HashAlg};

/// Most used items recorded for one boot: a boot matches one entry per measured thing, so a
/// real boot stays far below this; the cap bounds what a release stores.
pub const MAX_USED_ITEMS: usize = 64;

/// One allowlist item, named the way the policy diff names its list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsedItem {
    /// The list (`measured_boot.kernels`, `pcrs[sha256:9].allowed`).
    pub list: String,
    /// The entry: lowercase hex for a digest, the text of an exact command-line rule.
    pub item: String,
}

impl UsedItem {
    fn new(list: impl Into<String>, item: impl Into<String>) -> Self {
        Self {
            list: list.into(),
            item: item.into(),
        }
    }

    /// The list name of a PCR rule's allowed values.
    fn pcr_list(alg: HashAlg, index: u8) -> String {
        format!("pcrs[{}:{index}].allowed", alg.name())
    }
}

/// An allowlist item as the evaluator found it: a digest (copied, no allocation) or an exact
/// command line, turned into a [`UsedItem`] only by whoever records it ([`Matched::item`]),
/// so that evaluation stays as fast as it was without the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    list: MatchedList,
    value: MatchedValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchedList {
    /// A PCR rule's `allowed`.
    Pcr(HashAlg, u8),
    /// A `measured_boot` list, by its path.
    Named(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MatchedValue {
    Digest(Digest),
    Text(String),
}

impl Matched {
    pub(super) fn pcr(alg: HashAlg, index: u8, value: Digest) -> Self {
        Self {
            list: MatchedList::Pcr(alg, index),
            value: MatchedValue::Digest(value),
        }
    }

    pub(super) fn digest(list: &'static str, value: Digest) -> Self {
        Self {
            list: MatchedList::Named(list),
            value: MatchedValue::Digest(value),
        }
    }

    pub(super) fn text(list: &'static str, value: &str) -> Self {
        Self {
            list: MatchedList::Named(list),
            value: MatchedValue::Text(value.to_owned()),
        }
    }

    /// The item in the notation of [`retirable_items`].
    pub fn item(&self) -> UsedItem {
        let list = match self.list {
            MatchedList::Pcr(alg, index) => UsedItem::pcr_list(alg, index),
            MatchedList::Named(n) => n.to_owned(),
        };
        let item = match &self.value {
            MatchedValue::Digest(d) => d.to_hex(),
            MatchedValue::Text(t) => t.clone(),
        };
        UsedItem { list, item }
    }
}

impl Serialize for Matched {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.item().serialize(s)
    }
}

impl std::fmt::Display for UsedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.list, self.item)
    }
}

/// One successful boot of a machine: the policy version it was evaluated against and the
/// items it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootUse {
    /// The version of the named policy.
    pub version: u32,
    /// Items the boot matched.
    pub used: Vec<UsedItem>,
}

/// A machine pinned to the policy and its recorded successful boots, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineUse {
    /// Who (an agent id, with the role when boots of several roles are combined).
    pub machine: String,
    /// Newest first.
    pub boots: Vec<BootUse>,
}

/// An item a retirement keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptItem {
    /// The item.
    pub item: UsedItem,
    /// Why, for a person (which machine used it, or lacks boots).
    pub reason: String,
}

/// The narrowed document and what was removed and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    /// The next version's document.
    pub document: PolicyDocument,
    /// Its changes from the latest version (each `narrows`).
    pub diff: PolicyDiff,
    /// Items removed.
    pub removed: Vec<UsedItem>,
    /// Items kept, each with its reason.
    pub kept: Vec<KeptItem>,
}

/// Why a retirement could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetireError {
    /// `--after-boots 0` would retire items no boot was ever checked against.
    #[error("after_boots must be at least 1")]
    ZeroBoots,
    /// No enrollment is pinned to the policy: there is no boot to learn from.
    #[error("no enrollment uses this policy, so no boot shows which items are unused")]
    NoMachines,
    /// The latest version is not among the versions given.
    #[error("version {0} of the policy is missing")]
    MissingVersion(u32),
    /// An item asked for is not retirable here (used, or machines lack boots).
    #[error("{0} cannot be retired: {1}")]
    NotRetirable(UsedItem, String),
    /// The change is not only a removal of allowlist items.
    #[error("the change is not only a retirement of allowlist items: {0}")]
    NotOnlyNarrowing(String),
    /// The result is not a valid policy.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// The retirable items of a document, in document order, in [`UsedItem`] notation.
pub fn retirable_items(doc: &PolicyDocument) -> Vec<UsedItem> {
    let mut out = Vec::new();
    for r in &doc.pcrs {
        let Some(alg) = HashAlg::from_name(&r.bank) else {
            continue;
        };
        for v in &r.allowed {
            out.push(UsedItem::new(
                UsedItem::pcr_list(alg, r.index),
                hex_item(alg, v),
            ));
        }
    }
    let Some(mb) = &doc.measured_boot else {
        return out;
    };
    let alg = mb
        .bank
        .as_deref()
        .map_or(Some(HashAlg::Sha256), HashAlg::from_name);
    for (name, list) in digest_lists(mb) {
        let (Some(alg), Some(list)) = (alg, list) else {
            continue;
        };
        out.extend(list.iter().map(|v| UsedItem::new(name, hex_item(alg, v))));
    }
    for r in mb.kernel_cmdline.iter().flatten() {
        if let CmdlineRuleDocument::Exact(t) = r {
            out.push(UsedItem::new(CMDLINE_LIST, t.clone()));
        }
    }
    out
}

pub(super) const CMDLINE_LIST: &str = "measured_boot.kernel_cmdline";

fn digest_lists(mb: &super::MeasuredBootDocument) -> [(&'static str, Option<&Vec<String>>); 3] {
    [
        (
            "measured_boot.boot_applications",
            mb.boot_applications.as_ref(),
        ),
        ("measured_boot.kernels", mb.kernels.as_ref()),
        ("measured_boot.initrds", mb.initrds.as_ref()),
    ]
}

/// A document's digest in the notation the evaluator records (lowercase hex).
fn hex_item(alg: HashAlg, v: &str) -> String {
    Digest::from_hex(alg, v).map_or_else(|| v.trim().to_ascii_lowercase(), |d| d.to_hex())
}

/// Decides which items of `versions[latest]` no machine needs: every machine has at least
/// `after_boots` recorded boots under versions that allowed the item, and none of its last
/// `after_boots` such boots used it. With `only`, exactly those items are retired, and each
/// must be retirable (a second role's records confirming what the first decided).
pub fn retire(
    versions: &BTreeMap<u32, PolicyDocument>,
    latest: u32,
    machines: &[MachineUse],
    after_boots: u32,
    only: Option<&[UsedItem]>,
) -> Result<Retirement, RetireError> {
    if after_boots == 0 {
        return Err(RetireError::ZeroBoots);
    }
    if machines.is_empty() {
        return Err(RetireError::NoMachines);
    }
    let doc = versions
        .get(&latest)
        .ok_or(RetireError::MissingVersion(latest))?;
    let allowed: BTreeMap<u32, BTreeSet<UsedItem>> = versions
        .iter()
        .map(|(v, d)| (*v, retirable_items(d).into_iter().collect()))
        .collect();
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for item in dedup(retirable_items(doc)) {
        match keep_reason(&item, &allowed, machines, after_boots) {
            Some(reason) => kept.push(KeptItem { item, reason }),
            None => removed.push(item),
        }
    }
    if let Some(only) = only {
        let chosen = select(only, &removed, &kept)?;
        for item in removed.into_iter().filter(|i| !chosen.contains(i)) {
            kept.push(KeptItem {
                item,
                reason: "not named in this retirement (another role's records keep it)".into(),
            });
        }
        removed = chosen;
    }
    let document = without(doc, &removed);
    let diff = check_only_narrows(doc, &document)?;
    Ok(Retirement {
        document,
        diff,
        removed,
        kept,
    })
}

fn dedup(items: Vec<UsedItem>) -> Vec<UsedItem> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// The items of `only`, each of which must be in `removable`.
fn select(
    only: &[UsedItem],
    removable: &[UsedItem],
    kept: &[KeptItem],
) -> Result<Vec<UsedItem>, RetireError> {
    for item in only {
        if removable.contains(item) {
            continue;
        }
        let reason = kept
            .iter()
            .find(|k| k.item == *item)
            .map_or("not an allowlist item of the latest version", |k| {
                k.reason.as_str()
            });
        return Err(RetireError::NotRetirable(item.clone(), reason.to_owned()));
    }
    Ok(dedup(only.to_vec()))
}

/// Why `item` must stay, or `None` when no machine needs it.
fn keep_reason(
    item: &UsedItem,
    allowed: &BTreeMap<u32, BTreeSet<UsedItem>>,
    machines: &[MachineUse],
    after_boots: u32,
) -> Option<String> {
    let n = usize::try_from(after_boots).unwrap_or(usize::MAX);
    for m in machines {
        // Only boots under a version that allowed the item could have used it.
        let since: Vec<&BootUse> = m
            .boots
            .iter()
            .filter(|b| allowed.get(&b.version).is_some_and(|a| a.contains(item)))
            .take(n)
            .collect();
        if since.len() < n {
            return Some(format!(
                "{} has {} of the {n} successful boot(s) needed since it was allowed",
                m.machine,
                since.len()
            ));
        }
        if since.iter().any(|b| b.used.contains(item)) {
            return Some(format!(
                "{} used it in its last {n} successful boot(s)",
                m.machine
            ));
        }
        // A boot that matched more items than are recorded may have used this one: what
        // was not recorded is never taken as unused.
        if since.iter().any(|b| b.used.len() >= MAX_USED_ITEMS) {
            return Some(format!(
                "{} matched more than the {MAX_USED_ITEMS} items recorded per boot in one of its last {n} successful boot(s)",
                m.machine
            ));
        }
    }
    // A list left empty would refuse every boot: the evaluator recorded some item of it for
    // each boot, so this only guards documents whose lists no boot reads.
    None
}

/// `doc` without `items` (each entry whose notation equals a removed item).
fn without(doc: &PolicyDocument, items: &[UsedItem]) -> PolicyDocument {
    let gone = |list: &str, item: String| items.contains(&UsedItem::new(list, item));
    let mut new = doc.clone();
    for r in &mut new.pcrs {
        if let Some(alg) = HashAlg::from_name(&r.bank) {
            let list = UsedItem::pcr_list(alg, r.index);
            r.allowed.retain(|v| !gone(&list, hex_item(alg, v)));
        }
    }
    if let Some(mb) = &mut new.measured_boot {
        let alg = mb
            .bank
            .as_deref()
            .map_or(Some(HashAlg::Sha256), HashAlg::from_name);
        if let Some(alg) = alg {
            let lists = [
                ("measured_boot.boot_applications", &mut mb.boot_applications),
                ("measured_boot.kernels", &mut mb.kernels),
                ("measured_boot.initrds", &mut mb.initrds),
            ];
            for (name, list) in lists {
                if let Some(list) = list {
                    list.retain(|v| !gone(name, hex_item(alg, v)));
                }
            }
        }
        if let Some(rules) = &mut mb.kernel_cmdline {
            rules.retain(|r| match r {
                CmdlineRuleDocument::Exact(t) => !gone(CMDLINE_LIST, t.clone()),
                CmdlineRuleDocument::Regex(_) => true,
            });
        }
    }
    new
}

/// Checks that `new` differs from `old` only by items removed from the retirable
/// allowlists, that no such list became empty, and that `new` is a valid policy. Returns
/// the diff (each change `narrows`).
pub fn check_only_narrows(
    old: &PolicyDocument,
    new: &PolicyDocument,
) -> Result<PolicyDiff, RetireError> {
    Policy::from_document(new.clone())?;
    let d = diff(old, new);
    for c in &d.changes {
        let list_ok = matches!(
            c.path.as_str(),
            "measured_boot.boot_applications"
                | "measured_boot.kernels"
                | "measured_boot.initrds"
                | "measured_boot.kernel_cmdline"
        ) || (c.path.starts_with("pcrs[") && c.path.ends_with("].allowed"));
        if c.effect != Effect::Narrows || !list_ok || !c.detail.starts_with("removed ") {
            return Err(RetireError::NotOnlyNarrowing(format!(
                "{}: {} ({:?})",
                c.path, c.detail, c.effect
            )));
        }
    }
    let emptied = retirable_lists(old)
        .difference(&retirable_lists(new))
        .next()
        .cloned();
    if let Some(list) = emptied {
        return Err(RetireError::NotOnlyNarrowing(format!(
            "{list}: the last item would be removed, refusing every boot"
        )));
    }
    Ok(d)
}

/// The retirable lists that hold at least one item.
fn retirable_lists(doc: &PolicyDocument) -> BTreeSet<String> {
    retirable_items(doc).into_iter().map(|i| i.list).collect()
}

#[cfg(test)]
mod tests;
