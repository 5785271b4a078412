//! `policy learn`: a policy that accepts a known-good boot, built from its claims.
//!
//! Two strictnesses, combinable: `exact` pins PCR values (any change at all refuses,
//! firmware and kernel updates included); `reference` pins the measured-boot reference state
//! read from the event log (Secure Boot, keys, boot applications, kernels, initrds,
//! command lines), so that what is allowed is named and an update is a reviewable list edit.

use std::collections::BTreeMap;

use super::boot::{
    self, KeyDb, PCR_BOOT_APPS, PCR_GRUB_CMD, PCR_GRUB_FILES, PCR_SD_CMDLINE, PCR_SECURE_BOOT,
    PCR_UKI,
};
use super::document::{
    ClockDocument, CmdlineRuleDocument, DbxDocument, ImaDocument, MeasuredBootDocument,
    PcrRuleDocument, PolicyDocument, ReleasePcrDocument,
};
use super::eval::initial;
use super::{Claims, DEFAULT_RELEASE_PCR, POLICY_VERSION};
use crate::eventlog::Finding;
use crate::wire::{HashAlg, PCR_COUNT};

/// How strict a learned policy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnMode {
    /// Pin PCR values.
    Exact,
    /// Pin the measured-boot reference state.
    Reference,
    /// Both.
    Both,
}

/// Options of [`learn`].
#[derive(Debug, Clone)]
pub struct LearnOptions {
    /// Strictness.
    pub mode: LearnMode,
    /// Bank to pin (default: sha256 when the log and the PCRs have it, else the first
    /// bank they share).
    pub bank: Option<HashAlg>,
    /// PCRs to pin (exact) or to cover (reference). Default: exact pins the PCRs the log
    /// extends among 0-9; reference covers the PCRs its rules read (4, 7, 8, 9, 11, 12).
    pub pcrs: Option<Vec<u8>>,
    /// Release PCR (default 15); `None` leaves the rule out (not recommended).
    pub release_pcr: Option<u8>,
    /// Learn an IMA allowlist when the evidence has an IMA list.
    pub ima: bool,
    /// Record resetCount and allow this many reboots (needs clock info in the evidence).
    pub max_reboots: Option<u32>,
}

impl Default for LearnOptions {
    fn default() -> Self {
        Self {
            mode: LearnMode::Reference,
            bank: None,
            pcrs: None,
            release_pcr: Some(DEFAULT_RELEASE_PCR),
            ima: true,
            max_reboots: None,
        }
    }
}

/// A learned policy and what the operator should know about it.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The policy document.
    pub document: PolicyDocument,
    /// Observations (rules left out and why, oddities of the evidence).
    pub notes: Vec<String>,
}

/// Why nothing could be learned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    /// The evidence has no PCR in a usable bank.
    #[error("no bank is shared by the PCR values and the event log (banks in the PCRs: {0})")]
    NoBank(String),
    /// Reference mode needs an event log.
    #[error("reference-state learning needs an event log in the evidence (use --mode exact)")]
    NoEventLog,
    /// `max_reboots` needs clock info.
    #[error("--max-reboots needs clock_info in the evidence")]
    NoClock,
    /// A requested PCR is not in the evidence.
    #[error("PCR {alg}:{index} is not in the evidence")]
    MissingPcr {
        /// Bank.
        alg: HashAlg,
        /// Index.
        index: u8,
    },
}

/// Learns a policy accepting `claims` (a known-good boot).
pub fn learn(claims: &Claims<'_>, opts: &LearnOptions) -> Result<Learned, LearnError> {
    let mut notes = Vec::new();
    let log = claims.event_log();
    let bank = choose_bank(claims, opts)?;
    let mut doc = PolicyDocument {
        version: POLICY_VERSION,
        release_pcr: opts.release_pcr.map(|index| ReleasePcrDocument {
            bank: bank.name().into(),
            index,
        }),
        require_event_log: log.is_some(),
        ..PolicyDocument::default()
    };
    if let Some(i) = opts.release_pcr {
        match claims.pcrs().get(bank, i) {
            Some(v) if *v == initial(bank, i) => {}
            Some(_) => notes.push(format!(
                "PCR {bank}:{i} (release PCR) is not initial in this evidence: it was captured after a release, so `policy check` on it fails the release rule"
            )),
            None => notes.push(format!("PCR {bank}:{i} (release PCR) is not in the evidence")),
        }
    }
    if let Some(log) = log {
        let mismatches: Vec<usize> = log
            .findings()
            .iter()
            .filter_map(|f| match f {
                Finding::DigestMismatch { event_index, .. } => Some(*event_index),
                _ => None,
            })
            .collect();
        if !mismatches.is_empty() {
            doc.allow_event_digest_mismatch = true;
            notes.push(format!(
                "events {mismatches:?} have digests that are not the hash of their data; allow_event_digest_mismatch is set, and rules reading those events are left out"
            ));
        }
    }
    if matches!(opts.mode, LearnMode::Exact | LearnMode::Both) {
        let touched = touched(claims);
        let list = match &opts.pcrs {
            Some(l) => l.clone(),
            None => (0..=9).filter(|p| touched.contains(p)).collect(),
        };
        for index in list {
            let v = claims
                .pcrs()
                .get(bank, index)
                .ok_or(LearnError::MissingPcr { alg: bank, index })?;
            doc.pcrs.push(PcrRuleDocument {
                bank: bank.name().into(),
                index,
                allowed: vec![v.to_hex()],
                initial: false,
            });
        }
    }
    if matches!(opts.mode, LearnMode::Reference | LearnMode::Both) {
        doc.measured_boot = Some(reference(claims, bank, opts, &mut notes)?);
    }
    if let (true, Some(list)) = (opts.ima, claims.ima()) {
        let mut allowed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut violations = 0;
        for e in list.entries() {
            if e.is_violation() {
                violations += 1;
                continue;
            }
            let fd = e.file_digest();
            let d = format!("{}:{}", fd.alg().name(), hex::encode(fd.as_bytes()));
            let entry = allowed.entry(e.path_lossy().into_owned()).or_default();
            if !entry.contains(&d) {
                entry.push(d);
            }
        }
        if violations > 0 {
            notes.push(format!(
                "the IMA list has {violations} violation entries; allow_violations is set"
            ));
        }
        doc.ima = Some(ImaDocument {
            bank: Some(bank.name().into()),
            allowed,
            excludes: Vec::new(),
            allow_violations: violations > 0,
        });
    }
    if let Some(max) = opts.max_reboots {
        let c = claims.clock().ok_or(LearnError::NoClock)?;
        doc.clock = Some(ClockDocument {
            require_safe: c.safe,
            reset_count_at_enrollment: Some(c.reset_count),
            max_reboots: Some(max),
            max_restarts: None,
        });
    }
    Ok(Learned {
        document: doc,
        notes,
    })
}

fn choose_bank(claims: &Claims<'_>, opts: &LearnOptions) -> Result<HashAlg, LearnError> {
    let in_pcrs = |a: HashAlg| claims.pcrs().banks().any(|b| b == a);
    let in_log = |a: HashAlg| {
        claims
            .event_log()
            .is_none_or(|l| l.replay().banks().any(|b| b == a))
    };
    if let Some(b) = opts.bank {
        return Ok(b);
    }
    std::iter::once(HashAlg::Sha256)
        .chain(HashAlg::ALL)
        .find(|a| in_pcrs(*a) && in_log(*a))
        .ok_or_else(|| {
            LearnError::NoBank(
                claims
                    .pcrs()
                    .banks()
                    .map(HashAlg::name)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

fn touched(claims: &Claims<'_>) -> Vec<u8> {
    let mut t = [false; PCR_COUNT as usize];
    if let Some(log) = claims.event_log() {
        for e in log.events().iter().filter(|e| e.is_extended()) {
            if let Some(x) = t.get_mut(usize::from(e.pcr())) {
                *x = true;
            }
        }
    }
    (0..PCR_COUNT)
        .filter(|p| t.get(usize::from(*p)).copied().unwrap_or(false))
        .collect()
}

fn reference(
    claims: &Claims<'_>,
    bank: HashAlg,
    opts: &LearnOptions,
    notes: &mut Vec<String>,
) -> Result<MeasuredBootDocument, LearnError> {
    let log = claims.event_log().ok_or(LearnError::NoEventLog)?;
    let touched = touched(claims);
    let candidates: Vec<u8> = match &opts.pcrs {
        Some(l) => l.clone(),
        None => [
            PCR_BOOT_APPS,
            PCR_SECURE_BOOT,
            PCR_GRUB_CMD,
            PCR_GRUB_FILES,
            PCR_UKI,
            PCR_SD_CMDLINE,
        ]
        .into_iter()
        .filter(|p| touched.contains(p))
        .collect(),
    };
    // Only PCRs the evidence holds and the log explains can be covered.
    let mut covered = [false; PCR_COUNT as usize];
    let mut list = Vec::new();
    for p in candidates {
        let expected = log
            .replay()
            .get(bank, p)
            .copied()
            .unwrap_or_else(|| initial(bank, p));
        match claims.pcrs().get(bank, p) {
            Some(v) if *v == expected => {
                if let Some(c) = covered.get_mut(usize::from(p)) {
                    *c = true;
                }
                list.push(p);
            }
            _ => notes.push(format!(
                "PCR {bank}:{p} is missing from the evidence or not explained by the log; not covered"
            )),
        }
    }
    let state = boot::read(log, bank, &covered);
    let mut mb = MeasuredBootDocument {
        bank: Some(bank.name().into()),
        ..MeasuredBootDocument::default()
    };
    match state.secure_boot {
        Some((_, Some(1), true)) => mb.require_secure_boot = true,
        Some((_, v, _)) => notes.push(format!(
            "Secure Boot is not enabled in this boot (SecureBoot = {v:?}): not required"
        )),
        None => {}
    }
    let mut keys = [None, None, None, None];
    for (slot, db) in keys.iter_mut().zip(KeyDb::ALL) {
        match state.key_db(db) {
            Some(s) if s.bound => {
                let mut entries: Vec<String> = s.entries.iter().map(ToString::to_string).collect();
                entries.sort();
                entries.dedup();
                *slot = Some(entries);
            }
            Some(s) => notes.push(format!(
                "{} (event {}) does not match its digest: not learned",
                db.name(),
                s.event
            )),
            None => {}
        }
    }
    let [pk, kek, db, dbx] = keys;
    mb.pk = pk;
    mb.kek = kek;
    mb.db = db;
    mb.dbx = dbx.map(|required| DbxDocument {
        min_entries: u32::try_from(required.len()).ok(),
        required,
    });
    if !state.authorities.is_empty() {
        if state.authorities.iter().all(|a| a.bound) {
            let mut v: Vec<String> = state
                .authorities
                .iter()
                .map(|a| a.entry.to_string())
                .collect();
            v.sort();
            v.dedup();
            mb.authorities = Some(v);
        } else {
            notes.push(
                "a Secure Boot authority event does not match its digest: authorities not learned"
                    .into(),
            );
        }
    }
    let digests = |m: &[boot::Measured]| -> Option<Vec<String>> {
        if m.is_empty() {
            return None;
        }
        let mut v: Vec<String> = m.iter().map(|x| x.digest.to_hex()).collect();
        v.sort();
        v.dedup();
        Some(v)
    };
    mb.boot_applications = digests(&state.boot_apps);
    mb.kernels = digests(&state.kernels);
    mb.initrds = digests(&state.initrds);
    let mut cmdlines: Vec<CmdlineRuleDocument> = Vec::new();
    let mut unlearnable = false;
    for c in &state.cmdlines {
        if c.stub_digest.is_some() {
            unlearnable = true;
            notes.push(format!(
                "event {} is the Linux EFI stub's load options, which the log records without its text: kernel_cmdline not learned (add the exact line with `unlockctl policy allow --cmdline`)",
                c.event
            ));
            continue;
        }
        if !c.bound {
            notes.push(format!(
                "command line of event {} is not what was measured: not learned",
                c.event
            ));
            continue;
        }
        let rule = CmdlineRuleDocument::Exact(c.text.clone().into_owned());
        if !cmdlines.contains(&rule) {
            cmdlines.push(rule);
        }
    }
    if !cmdlines.is_empty() && !unlearnable && state.cmdlines.iter().all(|c| c.bound) {
        mb.kernel_cmdline = Some(cmdlines);
    }
    // Cover exactly what the learned rules need, plus whatever the operator asked for.
    if opts.pcrs.is_none() {
        let mut needed: Vec<u8> = Vec::new();
        if mb.require_secure_boot
            || mb.pk.is_some()
            || mb.kek.is_some()
            || mb.db.is_some()
            || mb.dbx.is_some()
            || mb.authorities.is_some()
        {
            needed.push(PCR_SECURE_BOOT);
        }
        if mb.boot_applications.is_some() {
            needed.push(PCR_BOOT_APPS);
        }
        if mb.kernels.is_some() || mb.initrds.is_some() || mb.kernel_cmdline.is_some() {
            needed.extend([PCR_GRUB_CMD, PCR_GRUB_FILES, PCR_UKI, PCR_SD_CMDLINE]);
        }
        list.retain(|p| needed.contains(p));
    }
    if list.is_empty() {
        notes.push(
            "the event log shows nothing the reference state can name; measured_boot covers no PCR"
                .into(),
        );
    }
    mb.pcrs = Some(list);
    Ok(mb)
}
