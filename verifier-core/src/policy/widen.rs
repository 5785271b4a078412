//! Allowing a predicted boot: the next version of a policy that accepts exactly one more set
//! of measurements ([`crate::predict::Prediction`]) and nothing else.
//!
//! An update must never change what a policy means beyond "these digests too": [`widen`]
//! only appends to allowlists the policy already has (a list it does not have is not
//! checked, and adding one would refuse boots that pass today), and
//! [`check_only_allows_more`] is the gate every such change passes, here and on the server
//! for a change a machine submits: every change must widen, and only in the places a
//! prediction fills.

use super::diff::{diff, Effect, PolicyDiff};
use super::document::{CmdlineRuleDocument, PcrRuleDocument, PolicyDocument};
use super::{Policy, PolicyError};
use crate::predict::Prediction;
use crate::wire::HashAlg;

/// Why a policy could not be widened by a prediction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WidenError {
    /// The policy has no rule a prediction can add to.
    #[error("the policy names no event digest or PCR 9/11 value a prediction could add to (it has no measured_boot allowlist and pins neither PCR 9 nor PCR 11); nothing to allow")]
    NothingToWiden,
    /// A prediction in the bank the policy names is missing.
    #[error("no prediction in bank {0}, which the policy's rules use")]
    MissingBank(HashAlg),
    /// The new document changes something other than an allowlist a prediction fills.
    #[error("the change is not only an allowance: {0}")]
    NotOnlyWidening(String),
    /// The result is not a valid policy.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// The new document and what changed.
#[derive(Debug, Clone)]
pub struct Widened {
    /// The next version's document.
    pub document: PolicyDocument,
    /// Its changes from the old one (each `Widens`).
    pub diff: PolicyDiff,
    /// What was not added and why, for a person.
    pub notes: Vec<String>,
}

/// The allowlists a prediction may add to.
fn allowance_path(path: &str) -> bool {
    matches!(
        path,
        "measured_boot.boot_applications"
            | "measured_boot.kernels"
            | "measured_boot.initrds"
            | "measured_boot.kernel_cmdline"
    ) || (path.starts_with("pcrs[")
        && (path.ends_with(":9].allowed") || path.ends_with(":11].allowed")))
}

/// Checks that `new` differs from `old` only by items added to the allowlists a prediction
/// fills (`measured_boot.{boot_applications,kernels,initrds,kernel_cmdline}` and a PCR 9 or
/// PCR 11 rule's `allowed`), and is a valid policy. Returns the diff.
pub fn check_only_allows_more(
    old: &PolicyDocument,
    new: &PolicyDocument,
) -> Result<PolicyDiff, WidenError> {
    Policy::from_document(new.clone())?;
    let d = diff(old, new);
    for c in &d.changes {
        if c.effect != Effect::Widens || !allowance_path(&c.path) || !c.detail.starts_with("added ")
        {
            return Err(WidenError::NotOnlyWidening(format!(
                "{}: {} ({:?})",
                c.path, c.detail, c.effect
            )));
        }
    }
    // A command-line allowance names one line: a new regex could allow any number.
    let rules = |doc: &PolicyDocument| {
        doc.measured_boot
            .as_ref()
            .and_then(|m| m.kernel_cmdline.clone())
            .unwrap_or_default()
    };
    let before = rules(old);
    for r in rules(new).iter().filter(|r| !before.contains(r)) {
        if let CmdlineRuleDocument::Regex(p) = r {
            return Err(WidenError::NotOnlyWidening(format!(
                "measured_boot.kernel_cmdline: a regex rule ({p:?}) may only be added by an operator's own `policy update`, not as an allowance of one command line"
            )));
        }
    }
    Ok(d)
}

fn push_new(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The next version of `old` that also accepts the boot `predictions` describe (one per bank
/// the policy uses; extra banks are ignored).
pub fn widen(old: &PolicyDocument, predictions: &[Prediction]) -> Result<Widened, WidenError> {
    let of = |alg: HashAlg| {
        predictions
            .iter()
            .find(|p| p.alg == alg)
            .ok_or(WidenError::MissingBank(alg))
    };
    let mut new = old.clone();
    let mut notes = Vec::new();
    let mut touched = false;
    if let Some(mb) = &mut new.measured_boot {
        let alg = match &mb.bank {
            Some(b) => HashAlg::from_name(b).ok_or_else(|| {
                WidenError::NotOnlyWidening(format!("measured_boot.bank {b} is not a bank"))
            })?,
            None => HashAlg::Sha256,
        };
        let p = of(alg)?;
        let lists = [
            (
                "boot_applications",
                &mut mb.boot_applications,
                &p.boot_applications,
            ),
            ("kernels", &mut mb.kernels, &p.kernels),
            ("initrds", &mut mb.initrds, &p.initrds),
        ];
        for (name, list, predicted) in lists {
            match list {
                Some(list) => {
                    for item in predicted {
                        push_new(list, item.digest.to_hex());
                    }
                    touched = true;
                }
                None if !predicted.is_empty() => notes.push(format!(
                    "measured_boot.{name}: the policy does not check it; nothing added"
                )),
                None => {}
            }
        }
        match (&mut mb.kernel_cmdline, &p.cmdline) {
            (Some(rules), Some(text)) => {
                let rule = CmdlineRuleDocument::Exact(text.clone());
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
                touched = true;
            }
            (None, Some(_)) => notes.push(
                "measured_boot.kernel_cmdline: the policy does not check it; nothing added".into(),
            ),
            _ => {}
        }
    }
    for rule in new.pcrs.iter_mut().filter(|r| r.index == 9) {
        let PcrRuleDocument { bank, allowed, .. } = rule;
        let alg = HashAlg::from_name(bank).ok_or_else(|| {
            WidenError::NotOnlyWidening(format!("pcrs bank {bank} is not a bank"))
        })?;
        match of(alg)?.pcr9 {
            Some(v) => {
                push_new(allowed, v.to_hex());
                touched = true;
            }
            None => notes.push(format!(
                "pcrs[{bank}:9]: this boot path's PCR 9 cannot be predicted (grub measures every file it reads); nothing added"
            )),
        }
    }
    for rule in new.pcrs.iter_mut().filter(|r| r.index == 11) {
        let PcrRuleDocument { bank, allowed, .. } = rule;
        let alg = HashAlg::from_name(bank).ok_or_else(|| {
            WidenError::NotOnlyWidening(format!("pcrs bank {bank} is not a bank"))
        })?;
        match of(alg)?.pcr11 {
            Some(v) => {
                push_new(allowed, v.to_hex());
                touched = true;
            }
            None => notes.push(format!(
                "pcrs[{bank}:11]: only a unified kernel image's PCR 11 is predicted (--boot-path uki); nothing added"
            )),
        }
    }
    if !touched {
        return Err(WidenError::NothingToWiden);
    }
    let diff = check_only_allows_more(old, &new)?;
    Ok(Widened {
        document: new,
        diff,
        notes,
    })
}
