//! From a document to rules ready to evaluate: names become algorithms, hex becomes digests,
//! patterns become compiled regular expressions. Every error names the field.

use std::collections::{BTreeMap, HashMap, HashSet};

use regex::Regex;

use super::boot::{
    KeyHash, SigEntry, PCR_BOOT_APPS, PCR_GRUB_CMD, PCR_GRUB_FILES, PCR_SD_CMDLINE,
    PCR_SECURE_BOOT, PCR_UKI,
};
use super::document::{CmdlineRuleDocument, MeasuredBootDocument, PolicyDocument};
use super::PolicyError;
use crate::evidence::IMA_PCR;
use crate::wire::{BankSelection, Digest, HashAlg, PcrSelection, PCR_COUNT};

/// Largest compiled regular expression (bytes of automaton): operator input, but a policy
/// must not be able to make the server allocate without bound.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(super) struct Compiled {
    pub(super) pcrs: Vec<PcrRule>,
    pub(super) release: Option<(HashAlg, u8)>,
    pub(super) measured_boot: Option<MeasuredBoot>,
    pub(super) ima: Option<ImaRules>,
    pub(super) clock: ClockRules,
    pub(super) snp: SnpRules,
}

/// SEV-SNP rules: the document's `snp` section, or its defaults when absent (evidence with
/// an SNP report is always held to at least the defaults).
#[derive(Debug, Clone, Default)]
pub(super) struct SnpRules {
    /// The document has an `snp` section: evidence without an SNP report fails it.
    pub(super) required: bool,
    pub(super) measurements: Option<Vec<Vec<u8>>>,
    pub(super) min_tcb: Option<crate::attester::snp::TcbVersion>,
    pub(super) allow_debug: bool,
    pub(super) allow_migration_agent: bool,
    pub(super) require_no_smt: bool,
    pub(super) max_vmpl: Option<u32>,
    pub(super) min_guest_svn: Option<u32>,
    pub(super) require_azure_secure_boot: bool,
}

fn snp_rules(doc: Option<&super::document::SnpDocument>) -> Result<SnpRules, PolicyError> {
    let Some(d) = doc else {
        return Ok(SnpRules::default());
    };
    let measurements = match &d.measurements {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(invalid(
                "snp.measurements".to_owned(),
                "empty list: nothing could match (remove the rule to accept any measurement)",
            ))
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(k, m)| match hex::decode(m) {
                    Ok(b) if b.len() == 48 => Ok(b),
                    _ => Err(invalid(
                        format!("snp.measurements[{k}]"),
                        "must be 96 hex digits (a SHA-384 launch measurement)",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(SnpRules {
        required: true,
        measurements,
        min_tcb: d.min_tcb.map(|t| crate::attester::snp::TcbVersion {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        }),
        allow_debug: d.allow_debug,
        allow_migration_agent: d.allow_migration_agent,
        require_no_smt: d.require_no_smt,
        max_vmpl: d.max_vmpl,
        min_guest_svn: d.min_guest_svn,
        require_azure_secure_boot: d.require_azure_secure_boot,
    })
}

#[derive(Debug, Clone)]
pub(super) struct PcrRule {
    pub(super) alg: HashAlg,
    pub(super) index: u8,
    pub(super) allowed: Vec<Digest>,
    pub(super) initial: bool,
}

#[derive(Debug, Clone)]
pub(super) struct MeasuredBoot {
    pub(super) bank: HashAlg,
    pub(super) covered: Vec<u8>,
    pub(super) require_secure_boot: bool,
    /// PK, KEK, db allowlists.
    pub(super) keys: [Option<HashSet<SigEntry, KeyHash>>; 3],
    pub(super) dbx: Option<DbxRule>,
    /// Allowed Secure Boot authorities (PCR 7 `EV_EFI_VARIABLE_AUTHORITY`).
    pub(super) authorities: Option<HashSet<SigEntry, KeyHash>>,
    pub(super) boot_apps: Option<Vec<Digest>>,
    pub(super) kernels: Option<Vec<Digest>>,
    pub(super) initrds: Option<Vec<Digest>>,
    pub(super) cmdline: Option<Vec<CmdlineRule>>,
}

#[derive(Debug, Clone)]
pub(super) struct DbxRule {
    pub(super) required: Vec<SigEntry>,
    /// Position of each required entry in `required`.
    pub(super) index: HashMap<SigEntry, usize, KeyHash>,
    pub(super) min_entries: Option<u32>,
}

#[derive(Debug, Clone)]
pub(super) enum CmdlineRule {
    Exact(String),
    Regex(Regex),
}

impl CmdlineRule {
    pub(super) fn matches(&self, text: &str) -> bool {
        match self {
            Self::Exact(s) => s == text,
            Self::Regex(r) => r.is_match(text),
        }
    }

    /// Whether the Linux EFI stub's load-options digest is of this rule's text (only an
    /// exact rule names a text that can be hashed).
    pub(super) fn matches_load_options(&self, measured: &crate::wire::Digest) -> bool {
        match self {
            Self::Exact(s) => crate::predict::load_options_digest(s, measured.alg()) == *measured,
            Self::Regex(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ImaRules {
    pub(super) bank: HashAlg,
    /// Path bytes → allowed (algorithm name, digest bytes).
    pub(super) allowed: HashMap<Vec<u8>, Vec<(String, Vec<u8>)>>,
    pub(super) excludes: Vec<regex::bytes::Regex>,
    pub(super) allow_violations: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ClockRules {
    pub(super) require_safe: bool,
    pub(super) reboots: Option<(u32, u32)>,
    pub(super) max_restarts: Option<u32>,
}

impl Compiled {
    pub(super) fn selection(&self) -> PcrSelection {
        let mut banks: BTreeMap<HashAlg, Vec<u8>> = BTreeMap::new();
        for r in &self.pcrs {
            banks.entry(r.alg).or_default().push(r.index);
        }
        if let Some((alg, i)) = self.release {
            banks.entry(alg).or_default().push(i);
        }
        if let Some(mb) = &self.measured_boot {
            banks
                .entry(mb.bank)
                .or_default()
                .extend_from_slice(&mb.covered);
        }
        if let Some(ima) = &self.ima {
            banks.entry(ima.bank).or_default().push(IMA_PCR);
        }
        let banks: Vec<BankSelection> = banks
            .into_iter()
            .filter_map(|(alg, idx)| BankSelection::new(alg, &idx))
            .collect();
        PcrSelection::new(banks).unwrap_or_default()
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn bank(field: &str, name: &str) -> Result<HashAlg, PolicyError> {
    HashAlg::from_name(name).ok_or_else(|| {
        invalid(
            field,
            format!("unknown bank `{name}` (use sha1, sha256, sha384 or sha512)"),
        )
    })
}

fn pcr_index(field: &str, i: u8) -> Result<u8, PolicyError> {
    if i < PCR_COUNT {
        Ok(i)
    } else {
        Err(invalid(field, format!("PCR index {i} is not 0-23")))
    }
}

fn digests(field: &str, alg: HashAlg, hex: &[String]) -> Result<Vec<Digest>, PolicyError> {
    hex.iter()
        .enumerate()
        .map(|(k, v)| {
            Digest::from_hex(alg, v).ok_or_else(|| {
                invalid(
                    format!("{field}[{k}]"),
                    format!("not a {}-byte hex {alg} digest", alg.size()),
                )
            })
        })
        .collect()
}

fn regex(field: &str, pattern: &str) -> Result<Regex, PolicyError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(field, format!("not a valid regular expression: {e}")))
}

pub(super) fn compile(doc: &PolicyDocument) -> Result<Compiled, PolicyError> {
    let mut pcrs = Vec::with_capacity(doc.pcrs.len());
    for (n, r) in doc.pcrs.iter().enumerate() {
        let alg = bank(&format!("pcrs[{n}].bank"), &r.bank)?;
        let index = pcr_index(&format!("pcrs[{n}].index"), r.index)?;
        if r.allowed.is_empty() && !r.initial {
            return Err(invalid(
                format!("pcrs[{n}].allowed"),
                "empty list: nothing could match (remove the rule, or set \"initial\": true)",
            ));
        }
        let allowed = digests(&format!("pcrs[{n}].allowed"), alg, &r.allowed)?;
        pcrs.push(PcrRule {
            alg,
            index,
            allowed,
            initial: r.initial,
        });
    }
    let release = match &doc.release_pcr {
        Some(r) => Some((
            bank("release_pcr.bank", &r.bank)?,
            pcr_index("release_pcr.index", r.index)?,
        )),
        None => None,
    };
    if let Some(a) = &doc.auto_approve {
        super::signer_certificates(a)?;
    }
    let measured_boot = doc.measured_boot.as_ref().map(measured_boot).transpose()?;
    let ima = doc.ima.as_ref().map(ima).transpose()?;
    let clock = match &doc.clock {
        None => ClockRules::default(),
        Some(c) => {
            let reboots = match (c.reset_count_at_enrollment, c.max_reboots) {
                (Some(base), Some(max)) => Some((base, max)),
                (None, Some(_)) => {
                    return Err(invalid(
                        "clock.max_reboots",
                        "needs clock.reset_count_at_enrollment (policy learn records it)",
                    ))
                }
                _ => None,
            };
            ClockRules {
                require_safe: c.require_safe,
                reboots,
                max_restarts: c.max_restarts,
            }
        }
    };
    let snp = snp_rules(doc.snp.as_ref())?;
    Ok(Compiled {
        pcrs,
        release,
        measured_boot,
        ima,
        clock,
        snp,
    })
}

fn sig_entries(field: &str, list: &[String]) -> Result<Vec<SigEntry>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(k, s)| {
            SigEntry::parse(s).ok_or_else(|| {
                invalid(
                    format!("{field}[{k}]"),
                    "not `x509:<sha256 hex>`, `sha256:<hex>` or `<type guid>:<sha256 hex>`",
                )
            })
        })
        .collect()
}

fn measured_boot(doc: &MeasuredBootDocument) -> Result<MeasuredBoot, PolicyError> {
    let alg = match &doc.bank {
        Some(b) => bank("measured_boot.bank", b)?,
        None => HashAlg::Sha256,
    };
    let f = |name: &str| format!("measured_boot.{name}");
    let opt_digests = |name: &str, v: &Option<Vec<String>>| {
        v.as_ref().map(|l| digests(&f(name), alg, l)).transpose()
    };
    let keys_of = |name: &str, v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|l| {
                sig_entries(&f(name), l).map(|e| e.into_iter().collect::<HashSet<_, KeyHash>>())
            })
            .transpose()
    };
    let keys = [
        keys_of("pk", &doc.pk)?,
        keys_of("kek", &doc.kek)?,
        keys_of("db", &doc.db)?,
    ];
    let dbx = match &doc.dbx {
        Some(d) => {
            let mut required = sig_entries(&f("dbx.required"), &d.required)?;
            required.sort_unstable();
            required.dedup();
            let index = required.iter().enumerate().map(|(i, e)| (*e, i)).collect();
            Some(DbxRule {
                required,
                index,
                min_entries: d.min_entries,
            })
        }
        None => None,
    };
    let cmdline = match &doc.kernel_cmdline {
        Some(rules) => {
            if rules.is_empty() {
                return Err(invalid(
                    f("kernel_cmdline"),
                    "empty list: no command line could match (remove the rule instead)",
                ));
            }
            let mut out = Vec::with_capacity(rules.len());
            for (k, r) in rules.iter().enumerate() {
                out.push(match r {
                    CmdlineRuleDocument::Exact(s) => CmdlineRule::Exact(s.clone()),
                    CmdlineRuleDocument::Regex(p) => CmdlineRule::Regex(regex(
                        &format!("measured_boot.kernel_cmdline[{k}].regex"),
                        p,
                    )?),
                });
            }
            Some(out)
        }
        None => None,
    };
    let mut mb = MeasuredBoot {
        bank: alg,
        covered: Vec::new(),
        require_secure_boot: doc.require_secure_boot,
        keys,
        dbx,
        authorities: keys_of("authorities", &doc.authorities)?,
        boot_apps: opt_digests("boot_applications", &doc.boot_applications)?,
        kernels: opt_digests("kernels", &doc.kernels)?,
        initrds: opt_digests("initrds", &doc.initrds)?,
        cmdline,
    };
    // Each rule reads events of some PCRs; at least one of them must be covered, or the
    // rule would be reading events nothing vouches for.
    let mut needs: Vec<(&str, &[u8])> = Vec::new();
    if mb.require_secure_boot
        || mb.keys.iter().any(Option::is_some)
        || mb.dbx.is_some()
        || mb.authorities.is_some()
    {
        needs.push(("secure boot and key rules", &[PCR_SECURE_BOOT]));
    }
    if mb.boot_apps.is_some() {
        needs.push(("boot_applications", &[PCR_BOOT_APPS]));
    }
    if mb.kernels.is_some() || mb.initrds.is_some() {
        needs.push(("kernels and initrds", &[PCR_GRUB_FILES, PCR_UKI]));
    }
    if mb.cmdline.is_some() {
        needs.push((
            "kernel_cmdline",
            &[PCR_GRUB_CMD, PCR_GRUB_FILES, PCR_SD_CMDLINE],
        ));
    }
    mb.covered = match &doc.pcrs {
        Some(list) => {
            let mut covered = Vec::with_capacity(list.len());
            for (k, &i) in list.iter().enumerate() {
                covered.push(pcr_index(&format!("measured_boot.pcrs[{k}]"), i)?);
            }
            covered.sort_unstable();
            covered.dedup();
            for (rule, pcrs) in &needs {
                if !pcrs.iter().any(|p| covered.contains(p)) {
                    return Err(invalid(
                        f("pcrs"),
                        format!("{rule} read PCR {pcrs:?}, which the list does not cover"),
                    ));
                }
            }
            covered
        }
        None => {
            let mut covered: Vec<u8> = needs.iter().flat_map(|(_, p)| p.iter().copied()).collect();
            // grub's kernel and initrd are told apart by its PCR 8 commands.
            if mb.kernels.is_some() || mb.initrds.is_some() {
                covered.push(PCR_GRUB_CMD);
            }
            covered.sort_unstable();
            covered.dedup();
            covered
        }
    };
    Ok(mb)
}

fn ima(doc: &super::document::ImaDocument) -> Result<ImaRules, PolicyError> {
    let alg = match &doc.bank {
        Some(b) => bank("ima.bank", b)?,
        None => HashAlg::Sha256,
    };
    let mut allowed = HashMap::with_capacity(doc.allowed.len());
    for (path, list) in &doc.allowed {
        let mut parsed = Vec::with_capacity(list.len());
        for (k, d) in list.iter().enumerate() {
            let field = || format!("ima.allowed[\"{path}\"][{k}]");
            let (name, hex_part) = d
                .split_once(':')
                .ok_or_else(|| invalid(field(), "not `<algorithm>:<hex digest>`"))?;
            let bytes = hex::decode(hex_part)
                .map_err(|_| invalid(field(), "digest is not lowercase hex"))?;
            if hex_part.bytes().any(|c| c.is_ascii_uppercase()) || bytes.is_empty() {
                return Err(invalid(field(), "digest is not lowercase hex"));
            }
            if let Some(a) = HashAlg::from_name(name) {
                if a.size() != bytes.len() {
                    return Err(invalid(
                        field(),
                        format!("a {name} digest is {} bytes", a.size()),
                    ));
                }
            }
            parsed.push((name.to_owned(), bytes));
        }
        allowed.insert(path.as_bytes().to_vec(), parsed);
    }
    let excludes = doc
        .excludes
        .iter()
        .enumerate()
        .map(|(k, p)| {
            // Excludes match anywhere in the path, as in keylime's runtime policies.
            regex::bytes::RegexBuilder::new(p)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    invalid(
                        format!("ima.excludes[{k}]"),
                        format!("not a valid regular expression: {e}"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(ImaRules {
        bank: alg,
        allowed,
        excludes,
        allow_violations: doc.allow_violations,
    })
}
