//! Evaluation: every rule of a compiled policy against claims. Failures carry a reason; in
//! verbose mode (for `policy check`) passes are recorded too. The non-verbose path formats
//! nothing for rules that pass, which keeps evaluation well above 20,000/s on real logs.

use std::fmt::Write as _;

use super::boot::{self, AuthorityUse, BootState, KeyDb, KeyHash, Measured, SigEntry};
use super::compile::{ClockRules, ImaRules, MeasuredBoot, SnpRules};
use super::usage::{Matched, CMDLINE_LIST, MAX_USED_ITEMS};
use super::{Claims, Policy, RuleOutcome};
use crate::eventlog::{EventLog, Finding};
use crate::wire::{Digest, HashAlg, PCR_COUNT};

/// At most this many offending items are named per rule; the rest are counted.
const MAX_NAMED: usize = 5;

pub(super) struct Sink {
    verbose: bool,
    outcomes: Vec<RuleOutcome>,
    /// Allowlist items the evidence matched (see `usage`).
    used: Vec<Matched>,
}

impl Sink {
    pub(super) fn verbose() -> Self {
        Self {
            verbose: true,
            outcomes: Vec::new(),
            used: Vec::new(),
        }
    }

    pub(super) fn failures_only() -> Self {
        Self {
            verbose: false,
            outcomes: Vec::new(),
            used: Vec::new(),
        }
    }

    pub(super) fn into_parts(self) -> (Vec<RuleOutcome>, Vec<Matched>) {
        (self.outcomes, self.used)
    }

    /// Records a matched allowlist item, once, up to [`MAX_USED_ITEMS`].
    fn used(&mut self, item: Matched) {
        if self.used.len() < MAX_USED_ITEMS && !self.used.contains(&item) {
            self.used.push(item);
        }
    }

    fn pass(&mut self, rule: impl FnOnce() -> String, detail: impl FnOnce() -> String) {
        if self.verbose {
            self.outcomes.push(RuleOutcome {
                rule: rule(),
                passed: true,
                detail: detail(),
            });
        }
    }

    fn fail(&mut self, rule: impl Into<String>, detail: impl Into<String>) {
        self.outcomes.push(RuleOutcome {
            rule: rule.into(),
            passed: false,
            detail: detail.into(),
        });
    }

    fn record(&mut self, rule: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => self.pass(|| rule.to_owned(), || detail),
            Err(reason) => self.fail(rule, reason),
        }
    }
}

/// The value a PCR holds after TPM2_Startup: zeros, or all `ff` for PCRs 17-22.
pub(super) fn initial(alg: HashAlg, index: u8) -> Digest {
    if (17..=22).contains(&index) {
        Digest::filled(alg, 0xff)
    } else {
        Digest::zero(alg)
    }
}

pub(super) fn evaluate(policy: &Policy, claims: &Claims<'_>, out: &mut Sink) {
    let rules = &policy.rules;
    let doc = &policy.doc;
    for r in &rules.pcrs {
        let rule = || format!("pcr {}:{}", r.alg, r.index);
        match claims.pcrs().get(r.alg, r.index) {
            None => out.fail(rule(), "not covered by the quote"),
            Some(v) if r.allowed.contains(v) => {
                out.used(Matched::pcr(r.alg, r.index, *v));
                out.pass(rule, || format!("{v} is allowed"));
            }
            Some(v) if r.initial && *v == initial(r.alg, r.index) => {
                out.pass(rule, || "initial (nothing measured)".into())
            }
            Some(v) => out.fail(
                rule(),
                if r.allowed.is_empty() {
                    format!("value {v} is not the initial value (something was measured)")
                } else {
                    format!("value {v} is not one of the {} allowed", r.allowed.len())
                },
            ),
        }
    }
    if let Some((alg, i)) = rules.release {
        let rule = || format!("release_pcr {alg}:{i}");
        match claims.pcrs().get(alg, i) {
            None => out.fail(rule(), "release PCR not covered by the quote"),
            Some(v) if *v != Digest::zero(alg) => out.fail(
                rule(),
                "already extended in this boot (a key was released, or the initramfs was left)",
            ),
            Some(_) => out.pass(rule, || "initial: no release yet in this boot".into()),
        }
    }
    if doc.require_event_log {
        out.record(
            "require_event_log",
            match claims.event_log() {
                Some(_) => Ok("an event log was sent".into()),
                None => Err("no UEFI event log was sent".into()),
            },
        );
    }
    if !doc.allow_event_digest_mismatch {
        if let Some(log) = claims.event_log() {
            let mut any = false;
            for f in log.findings() {
                if let Finding::DigestMismatch {
                    event_index, pcr, ..
                } = f
                {
                    any = true;
                    out.fail(
                        "event_digest_mismatch",
                        format!("event {event_index} (PCR {pcr}) digest does not match its data"),
                    );
                }
            }
            if !any {
                out.pass(
                    || "event_digest_mismatch".into(),
                    || "every checkable event digest matches its data".into(),
                );
            }
        }
    }
    if doc.require_clock_safe {
        out.record("require_clock_safe", clock_safe(claims));
    }
    if let Some(mb) = &rules.measured_boot {
        measured_boot(mb, claims, out);
    }
    if let Some(ima) = &rules.ima {
        ima_rules(ima, claims, out);
    }
    clock(&rules.clock, claims, out);
    snp(&rules.snp, claims, out);
}

fn snp(rules: &SnpRules, claims: &Claims<'_>, out: &mut Sink) {
    let Some(c) = claims.snp() else {
        if rules.required {
            out.fail(
                "snp",
                "the evidence has no SEV-SNP report (enrolled with another evidence kind?)",
            );
        }
        return;
    };
    out.record(
        "snp.debug",
        match (c.debug_allowed, rules.allow_debug) {
            (false, _) => Ok("guest policy forbids debugging".into()),
            (true, true) => Ok("debugging allowed by the guest policy, and by this policy".into()),
            (true, false) => {
                Err("the guest policy lets the host debug the guest (read its memory)".into())
            }
        },
    );
    out.record(
        "snp.migration_agent",
        match (c.migration_agent_allowed, rules.allow_migration_agent) {
            (false, _) => Ok("no migration agent allowed by the guest policy".into()),
            (true, true) => Ok("migration agent allowed, and by this policy".into()),
            (true, false) => Err("the guest policy allows a migration agent".into()),
        },
    );
    if rules.require_no_smt {
        out.record(
            "snp.smt",
            if c.smt_allowed {
                Err("the guest policy allows SMT".into())
            } else {
                Ok("SMT not allowed by the guest policy".into())
            },
        );
    }
    if let Some(list) = &rules.measurements {
        out.record(
            "snp.measurement",
            if list.contains(&c.measurement) {
                Ok(format!("{} is allowed", hex::encode(&c.measurement)))
            } else {
                Err(format!(
                    "launch measurement {} is not one of the {} allowed",
                    hex::encode(&c.measurement),
                    list.len()
                ))
            },
        );
    }
    if let Some(min) = &rules.min_tcb {
        out.record(
            "snp.min_tcb",
            if c.reported_tcb.at_least(min) {
                Ok(format!("reported TCB {}", c.reported_tcb))
            } else {
                Err(format!(
                    "reported TCB ({}) is below the minimum ({min})",
                    c.reported_tcb
                ))
            },
        );
    }
    if let Some(max) = rules.max_vmpl {
        out.record(
            "snp.max_vmpl",
            if c.vmpl <= max {
                Ok(format!("VMPL {}", c.vmpl))
            } else {
                Err(format!(
                    "report from VMPL {}, at most {max} allowed",
                    c.vmpl
                ))
            },
        );
    }
    if let Some(min) = rules.min_guest_svn {
        out.record(
            "snp.min_guest_svn",
            if c.guest_svn >= min {
                Ok(format!("guest SVN {}", c.guest_svn))
            } else {
                Err(format!("guest SVN {} is below {min}", c.guest_svn))
            },
        );
    }
    if rules.require_azure_secure_boot {
        out.record(
            "snp.azure_secure_boot",
            match c.azure {
                Some(v) if v.secure_boot => Ok("the HCL states Secure Boot is on".into()),
                Some(_) => Err("the HCL states Secure Boot is off".into()),
                None => Err("not an Azure CVM (no HCL VM configuration)".into()),
            },
        );
    }
}

fn clock_safe(claims: &Claims<'_>) -> Result<String, String> {
    match claims.clock() {
        None => Err("no clockInfo (evidence captured without a quote)".into()),
        Some(c) if c.safe => Ok("clockInfo.safe = yes".into()),
        Some(_) => Err("the TPM clock is not safe (clockInfo.safe = no)".into()),
    }
}

fn clock(rules: &ClockRules, claims: &Claims<'_>, out: &mut Sink) {
    if rules.require_safe {
        out.record("clock.require_safe", clock_safe(claims));
    }
    let no_clock = || "no clockInfo (evidence captured without a quote)".to_owned();
    if let Some((base, max)) = rules.reboots {
        let result = match claims.clock() {
            None => Err(no_clock()),
            Some(c) if c.reset_count < base => Err(format!(
                "resetCount {} is below {base} recorded at enrollment (TPM cleared?)",
                c.reset_count
            )),
            Some(c) if c.reset_count - base > max => Err(format!(
                "{} reboots since enrollment (resetCount {} - {base}), at most {max} allowed",
                c.reset_count - base,
                c.reset_count
            )),
            Some(c) => Ok(format!("{} of {max} reboots used", c.reset_count - base)),
        };
        out.record("clock.max_reboots", result);
    }
    if let Some(max) = rules.max_restarts {
        let result = match claims.clock() {
            None => Err(no_clock()),
            Some(c) if c.restart_count > max => Err(format!(
                "{} resumes in this boot (restartCount), at most {max} allowed",
                c.restart_count
            )),
            Some(c) => Ok(format!("restartCount {}", c.restart_count)),
        };
        out.record("clock.max_restarts", result);
    }
}

fn measured_boot(mb: &MeasuredBoot, claims: &Claims<'_>, out: &mut Sink) {
    let Some(log) = claims.event_log() else {
        out.fail(
            "measured_boot",
            "no UEFI event log was sent, so the boot cannot be checked",
        );
        return;
    };
    let bank = mb.bank;
    if log.replay().banks().all(|b| b != bank) {
        out.fail(
            "measured_boot",
            format!("the event log has no complete {bank} bank"),
        );
        return;
    }
    let mut covered = [false; PCR_COUNT as usize];
    for &p in &mb.covered {
        let rule = || format!("measured_boot.pcr {bank}:{p}");
        let expected = log
            .replay()
            .get(bank, p)
            .copied()
            .unwrap_or_else(|| initial(bank, p));
        match claims.pcrs().get(bank, p) {
            None => out.fail(rule(), "not covered by the quote"),
            Some(v) if *v != expected => out.fail(
                rule(),
                "does not equal the event log's replay (measured outside the log)",
            ),
            Some(_) => {
                if let Some(c) = covered.get_mut(usize::from(p)) {
                    *c = true;
                }
                out.pass(rule, || "explained by the event log".into());
            }
        }
    }
    let state = boot::read(log, bank, &covered);
    if mb.require_secure_boot {
        let r = match state.secure_boot {
            None => Err("the SecureBoot variable is not measured (PCR 7)".into()),
            Some((e, _, false)) => Err(unbound(e)),
            Some((_, Some(1), true)) => Ok("enabled".into()),
            Some((e, v, true)) => Err(format!(
                "Secure Boot is disabled (event {e}: SecureBoot = {})",
                v.map_or("empty".into(), |v| v.to_string())
            )),
        };
        out.record("measured_boot.secure_boot", r);
    }
    for (db, allowed) in KeyDb::ALL.iter().zip(&mb.keys) {
        let Some(allowed) = allowed else {
            continue;
        };
        let rule = format!("measured_boot.{}", db.name());
        let r = match state.key_db(*db) {
            None => Err(format!("{} is not measured (PCR 7)", db.name())),
            Some(s) if !s.bound => Err(unbound(s.event)),
            Some(s) => {
                let bad: Vec<&SigEntry> =
                    s.entries.iter().filter(|e| !allowed.contains(e)).collect();
                if bad.is_empty() {
                    Ok(format!("{} entries, all allowed", s.entries.len()))
                } else {
                    Err(format!(
                        "event {}: {} not allowed: {}",
                        s.event,
                        plural(bad.len(), "entry is", "entries are"),
                        named(bad.iter())
                    ))
                }
            }
        };
        out.record(&rule, r);
    }
    if let Some(rule) = &mb.dbx {
        let r = match state.key_db(KeyDb::Dbx) {
            None => Err("dbx is not measured (PCR 7)".into()),
            Some(s) if !s.bound => Err(unbound(s.event)),
            Some(s) => {
                let mut seen = vec![false; rule.required.len()];
                for e in &s.entries {
                    if let Some(slot) = rule.index.get(e).and_then(|&i| seen.get_mut(i)) {
                        *slot = true;
                    }
                }
                let missing: Vec<&SigEntry> = rule
                    .required
                    .iter()
                    .zip(&seen)
                    .filter(|(_, seen)| !**seen)
                    .map(|(e, _)| e)
                    .collect();
                let count = u32::try_from(s.entries.len()).unwrap_or(u32::MAX);
                if !missing.is_empty() {
                    Err(format!(
                        "{} missing from dbx (revocations rolled back?): {}",
                        plural(missing.len(), "required entry is", "required entries are"),
                        named(missing.iter())
                    ))
                } else if let Some(min) = rule.min_entries.filter(|m| count < *m) {
                    Err(format!(
                        "dbx holds {count} entries, fewer than the {min} required"
                    ))
                } else {
                    Ok(format!("{count} entries, every required one present"))
                }
            }
        };
        out.record("measured_boot.dbx", r);
    }
    if let Some(allowed) = &mb.authorities {
        out.record(
            "measured_boot.authorities",
            authorities(allowed, &state.authorities),
        );
    }
    type Allowlist<'r> = (
        &'static str,
        &'r Option<Vec<Digest>>,
        &'r [Measured],
        &'r str,
    );
    let lists: [Allowlist<'_>; 3] = [
        (
            "measured_boot.boot_applications",
            &mb.boot_apps,
            &state.boot_apps,
            "boot application",
        ),
        (
            "measured_boot.kernels",
            &mb.kernels,
            &state.kernels,
            "kernel",
        ),
        (
            "measured_boot.initrds",
            &mb.initrds,
            &state.initrds,
            "initrd",
        ),
    ];
    for (rule, allowed, found, what) in lists {
        if let Some(allowed) = allowed {
            let r = allowlist(allowed, found, what, log);
            if r.is_ok() {
                for m in found {
                    out.used(Matched::digest(rule, m.digest));
                }
            }
            out.record(rule, r);
        }
    }
    if let Some(rules) = &mb.cmdline {
        let r = cmdlines(rules, &state);
        if r.is_ok() {
            for text in exact_matches(rules, &state) {
                out.used(Matched::text(CMDLINE_LIST, text));
            }
        }
        out.record(CMDLINE_LIST, r);
    }
}

/// Every authority that verified a boot application must be allowed and bound to PCR 7.
fn authorities(
    allowed: &std::collections::HashSet<SigEntry, KeyHash>,
    found: &[AuthorityUse],
) -> Result<String, String> {
    if found.is_empty() {
        return Err(
            "no Secure Boot authority is measured (PCR 7): Secure Boot verified no boot application"
                .into(),
        );
    }
    let mut bad = Vec::new();
    for a in found {
        if !a.bound {
            bad.push(format!(
                "event {}: the {} entry is not what was measured (digest differs)",
                a.event, a.variable
            ));
        } else if !allowed.contains(&a.entry) {
            bad.push(format!(
                "event {}: {} entry {} is not an allowed authority",
                a.event, a.variable, a.entry
            ));
        }
    }
    if bad.is_empty() {
        return Ok(format!(
            "{} verified the boot applications, all allowed",
            plural(found.len(), "authority", "authorities")
        ));
    }
    Err(named(bad.iter()))
}

fn cmdlines(
    rules: &[super::compile::CmdlineRule],
    state: &BootState<'_>,
) -> Result<String, String> {
    if state.cmdlines.is_empty() {
        return Err("no kernel command line is measured (PCR 8, 9 or 12)".into());
    }
    let mut bad = Vec::new();
    for c in &state.cmdlines {
        if let Some(d) = &c.stub_digest {
            if !rules.iter().any(|r| r.matches_load_options(d)) {
                bad.push(format!(
                    "event {}: the EFI stub's load options ({d}) match no exact rule (the log records no text, so no regex can match it)",
                    c.event
                ));
            }
        } else if !c.bound {
            bad.push(format!(
                "event {}: the text is not what was measured (digest differs)",
                c.event
            ));
        } else if !rules.iter().any(|r| r.matches(&c.text)) {
            bad.push(format!(
                "event {}: \"{}\" matches no rule",
                c.event,
                cut(&c.text, 160)
            ));
        }
    }
    if bad.is_empty() {
        return Ok(format!(
            "{} command line(s), each allowed",
            state.cmdlines.len()
        ));
    }
    let n = bad.len();
    bad.truncate(MAX_NAMED);
    let mut s = bad.join("; ");
    if n > MAX_NAMED {
        let _ = write!(s, "; and {} more", n - MAX_NAMED);
    }
    Err(s)
}

/// The exact rules the measured command lines matched (a line matched only by a regex
/// names no item).
fn exact_matches<'r>(
    rules: &'r [super::compile::CmdlineRule],
    state: &BootState<'_>,
) -> Vec<&'r str> {
    let mut out = Vec::new();
    for c in &state.cmdlines {
        let hit = rules.iter().find_map(|r| match r {
            super::compile::CmdlineRule::Exact(s) => {
                let matched = match &c.stub_digest {
                    Some(d) => r.matches_load_options(d),
                    None => c.bound && r.matches(&c.text),
                };
                matched.then_some(s.as_str())
            }
            super::compile::CmdlineRule::Regex(_) => None,
        });
        out.extend(hit);
    }
    out
}

fn allowlist(
    allowed: &[Digest],
    found: &[Measured],
    what: &str,
    log: &EventLog<'_>,
) -> Result<String, String> {
    if found.is_empty() {
        return Err(format!("no {what} is measured"));
    }
    let bad: Vec<&Measured> = found
        .iter()
        .filter(|m| !allowed.contains(&m.digest))
        .collect();
    if bad.is_empty() {
        return Ok(format!("{} measured, all allowed", found.len()));
    }
    let names = bad.iter().map(|m| {
        let path = log
            .events()
            .get(m.event)
            .and_then(|e| match e.decode() {
                crate::eventlog::EventData::ImageLoad(i) => i.file_path,
                crate::eventlog::EventData::Ipl(i) => Some(i.text.into_owned()),
                _ => None,
            })
            .map(|p| format!(" {}", cut(&p, 80)))
            .unwrap_or_default();
        format!("event {}{path} {}", m.event, m.digest)
    });
    Err(format!(
        "{} not allowed: {}",
        plural(bad.len(), &format!("{what} is"), &format!("{what}s are")),
        named(names)
    ))
}

fn ima_rules(rules: &ImaRules, claims: &Claims<'_>, out: &mut Sink) {
    let Some(list) = claims.ima() else {
        out.fail("ima", "no IMA measurement list was sent");
        return;
    };
    let mut violations = 0usize;
    let mut bad: Vec<String> = Vec::new();
    let mut bad_count = 0usize;
    let mut checked = 0usize;
    for e in list.entries() {
        let path = e.path();
        if rules.excludes.iter().any(|r| r.is_match(path)) {
            continue;
        }
        if e.is_violation() {
            violations += 1;
            continue;
        }
        checked += 1;
        let fd = e.file_digest();
        let problem = match rules.allowed.get(path) {
            None => Some("not in the allowlist"),
            Some(list)
                if !list
                    .iter()
                    .any(|(a, d)| a == fd.alg().name() && d == fd.as_bytes()) =>
            {
                Some("digest not allowed")
            }
            Some(_) => None,
        };
        if let Some(p) = problem {
            bad_count += 1;
            if bad.len() < MAX_NAMED {
                bad.push(format!(
                    "{} {}:{} {p}",
                    cut(&e.path_lossy(), 120),
                    fd.alg().name(),
                    hex::encode(fd.as_bytes())
                ));
            }
        }
    }
    let r = if bad_count == 0 {
        Ok(format!("{checked} entries checked, all allowed"))
    } else {
        let mut s = bad.join("; ");
        if bad_count > MAX_NAMED {
            let _ = write!(s, "; and {} more", bad_count - MAX_NAMED);
        }
        Err(s)
    };
    out.record("ima.allowlist", r);
    if violations > 0 && !rules.allow_violations {
        out.fail(
            "ima.violations",
            format!(
                "{violations} violation entries (file changed while measured; contents unknown)"
            ),
        );
    }
}

fn unbound(event: usize) -> String {
    format!("event {event}: its data is not what was measured (digest differs)")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn named<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let mut s = String::new();
    let mut n = 0;
    for (i, item) in items.enumerate() {
        n = i + 1;
        if i < MAX_NAMED {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{item}");
        }
    }
    if n > MAX_NAMED {
        let _ = write!(s, ", and {} more", n - MAX_NAMED);
    }
    s
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}
