//! `unlockctl policy learn | check | create | update | show | list | diff | apply`.
//!
//! `learn` and `check` work offline on evidence captured with `initrd-agent evidence --out
//! FILE` (no server, no quote: the logs are replayed against the captured PCRs, the quote's
//! signature is not checked); `check --tee-capture` on a confidential VM's capture (Azure
//! SEV-SNP vTPM: report, chain and quote signature verified, not fresh). The others manage named policies on both roles; `update`
//! adds a version without moving any enrollment, and `apply` shows what changes for each
//! machine before it moves them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use verifier_core::attester::amd::AmdRoots;
use verifier_core::attester::capture::CheckedAzureCapture;
use verifier_core::policy::rego::RegoPolicy;
use verifier_core::policy::{
    learn, Claims, Evaluator, LearnMode, LearnOptions, Policy, PolicyDocument, RuleOutcome,
    UnverifiedCapture,
};
use verifier_core::proto::v1::{
    admin_path, AgentId, CapturedEvidence, Id, PolicyApplyRequest, PolicyApplyResponse,
    PolicyCreateRequest, PolicyDiffInfo, PolicyList, PolicyRef, PolicyUpdateRequest,
    PolicyVersionInfo,
};
use verifier_core::wire::HashAlg;

use super::client::{Connection, RoleClient};

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCommand {
    /// Build a policy from captured evidence of a known-good boot (prints JSON).
    Learn(LearnArgs),
    /// Evaluate a policy against captured evidence offline and print each rule's verdict.
    Check(CheckArgs),
    /// Store a new named policy (version 1) on both roles.
    Create(FileArgs),
    /// Add the next version of a named policy; enrolled machines stay on their version.
    Update(FileArgs),
    /// Show a named policy (latest version, or --version).
    Show(ShowArgs),
    /// List named policies.
    List(ListArgs),
    /// What changes between two versions.
    Diff(DiffArgs),
    /// Move enrollments to a version: shows the changes, applies with --yes.
    Apply(ApplyArgs),
    /// Allow the boot that the given files will make: predicts its measurements (kernel
    /// Authenticode digest, initrd, command line, EFI applications) and adds them to a
    /// named policy's next version (shown as a diff; stored with --yes) or a policy file.
    Allow(AllowArgs),
    /// List the policy changes machines asked for, with what approving each would change.
    Pending(ListArgs),
    /// Approve a pending change (on both roles): the next version of the machine's policy
    /// allows it, and the machine (or with --fleet every enrollment of the policy) moves to it.
    Approve(DecideArgs),
    /// Reject a pending change (on both roles).
    Reject(DecideArgs),
    /// Retire allowlist items no machine needs any more (the last step of an update): the
    /// next version without the items (boot applications, kernels, initrds, exact command
    /// lines, PCR values) that no enrollment of the policy used in its last N successful
    /// boots. Shows the narrowing diff; stores it with --yes; moves the machines with --apply.
    Retire(super::retire::RetireArgs),
}

#[derive(Debug, Args)]
pub(super) struct DecideArgs {
    #[command(flatten)]
    conn: Connection,
    /// The change's id (as `policy pending` prints it; a unique prefix of 8 or more characters
    /// is enough).
    id: String,
    /// With approve: move every enrollment of the policy, not only the machine that asked.
    #[arg(long)]
    fleet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum BootPathArg {
    /// Firmware, systemd-boot or shim start the kernel's EFI stub; the stub measures the
    /// command line and the initrd into PCR 9.
    EfiStub,
    /// shim + grub: grub measures the kernel and initrd files into PCR 9 and its
    /// `kernel_cmdline:` text into PCR 8 (give --cmdline as grub measures it: the kernel's
    /// path, then the arguments).
    Grub,
    /// OVMF booting QEMU's -kernel/-initrd/-append (QEMU patches the kernel's setup header,
    /// OVMF appends ` initrd=initrd` to the command line).
    QemuDirect,
    /// Firmware starts a unified kernel image (give it with --uki): PCR 4 the image, PCR 11
    /// its sections (systemd-stub 252), PCR 9 the embedded command line and initrd.
    Uki,
}

#[derive(Debug, Args)]
pub(super) struct AllowArgs {
    #[command(flatten)]
    conn: Connection,
    /// Named policy to add a version to (on both roles).
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    policy: Option<String>,
    /// A policy file instead of a named policy (offline; the new document goes to --out or
    /// stdout).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where to write the new document (with --file).
    #[arg(long, requires = "file")]
    out: Option<PathBuf>,
    /// The kernel image (PE/EFI stub).
    #[arg(long, required_unless_present = "uki")]
    kernel: Option<PathBuf>,
    /// A unified kernel image (kernel, initrd and command line inside): implies
    /// `--boot-path uki`.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline"])]
    uki: Option<PathBuf>,
    /// The initrd the boot loader passes.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line, as the boot loader passes it.
    #[arg(long)]
    cmdline: Option<String>,
    /// An EFI application started before the kernel (shim, grub, systemd-boot); repeat.
    #[arg(long = "efi-app")]
    efi_apps: Vec<PathBuf>,
    /// How the machine boots the kernel.
    #[arg(long, value_enum, default_value = "efi-stub")]
    boot_path: BootPathArg,
    /// Guest memory in MiB (qemu-direct: QEMU places the initrd below it).
    #[arg(long, default_value_t = 768)]
    qemu_memory_mib: u64,
    /// Store the new version (without it, only show the diff).
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Mode {
    /// Pin PCR values (any change refuses, updates included).
    Exact,
    /// Pin the measured-boot reference state (Secure Boot, keys, boot apps, kernels,
    /// initrds, command lines).
    Reference,
    /// Both.
    Both,
}

#[derive(Debug, Args)]
pub(super) struct LearnArgs {
    /// Evidence file (`initrd-agent evidence --out FILE`).
    #[arg(long)]
    evidence: PathBuf,
    /// How strict.
    #[arg(long, value_enum, default_value = "reference")]
    mode: Mode,
    /// Bank to pin [default: sha256 if present].
    #[arg(long)]
    bank: Option<String>,
    /// PCRs to pin (exact) or cover (reference), comma-separated [default: see docs].
    #[arg(long, value_delimiter = ',')]
    pcrs: Option<Vec<u8>>,
    /// Release PCR.
    #[arg(long, default_value_t = verifier_core::policy::DEFAULT_RELEASE_PCR)]
    release_pcr: u8,
    /// Leave out the release-PCR rule (a second quote in the same boot could then pass).
    #[arg(long)]
    no_release_pcr: bool,
    /// Do not learn an IMA allowlist even if the evidence has an IMA list.
    #[arg(long)]
    no_ima: bool,
    /// Allow this many reboots from the captured resetCount (needs clock_info).
    #[arg(long)]
    max_reboots: Option<u32>,
    /// Write the policy here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Policy file (JSON).
    #[arg(long, required_unless_present = "rego")]
    policy: Option<PathBuf>,
    /// A Rego policy (`package unlock`, rule `allow`, optional set `deny`) evaluated over the
    /// same claims, beside --policy or alone; the evidence is accepted only if every policy
    /// given accepts it. The input document is described in docs/policy.md ("Rego").
    #[arg(long)]
    rego: Option<PathBuf>,
    /// Evidence file (`initrd-agent evidence --out FILE`).
    #[arg(
        long,
        required_unless_present = "tee_capture",
        conflicts_with = "tee_capture"
    )]
    evidence: Option<PathBuf>,
    /// A confidential VM's captured evidence instead: Azure SEV-SNP vTPM, in the JSON of
    /// Trustee's `az-snp-vtpm` attester (HCL report, VCEK, quote, PCRs). Its VCEK chain (to
    /// the shipped AMD roots), report, runtime data and quote signature are verified; the
    /// policy's `snp` section is evaluated on the report's claims. Not fresh: the quote is
    /// bound to the capturer's nonce.
    #[arg(long)]
    tee_capture: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct FileArgs {
    #[command(flatten)]
    conn: Connection,
    /// Policy name (1-64 characters of [A-Za-z0-9_-]).
    name: String,
    /// Policy file (JSON).
    #[arg(long)]
    file: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct ShowArgs {
    #[command(flatten)]
    conn: Connection,
    /// Policy name.
    name: String,
    /// Version [default: latest].
    #[arg(long)]
    version: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    conn: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct DiffArgs {
    #[command(flatten)]
    conn: Connection,
    /// Policy name.
    name: String,
    /// Old version.
    #[arg(long)]
    from: u32,
    /// New version [default: latest].
    #[arg(long)]
    to: Option<u32>,
}

#[derive(Debug, Args)]
pub(super) struct ApplyArgs {
    #[command(flatten)]
    conn: Connection,
    /// Policy name.
    name: String,
    /// Version to move to.
    #[arg(long)]
    version: u32,
    /// Agents to move (repeat), enrolled with any policy.
    #[arg(long = "agent", required_unless_present = "all")]
    agents: Vec<String>,
    /// Every enrollment of this policy.
    #[arg(long, conflicts_with = "agents")]
    all: bool,
    /// Apply (without it, only show what would change).
    #[arg(long)]
    yes: bool,
}

pub(super) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Learn(a) => learn_cmd(&a),
        PolicyCommand::Check(a) => check_cmd(&a),
        PolicyCommand::Create(a) => create(&a),
        PolicyCommand::Update(a) => update(&a),
        PolicyCommand::Show(a) => show(&a),
        PolicyCommand::List(a) => list(&a),
        PolicyCommand::Diff(a) => diff_cmd(&a),
        PolicyCommand::Apply(a) => apply(&a),
        PolicyCommand::Allow(a) => allow(&a),
        PolicyCommand::Pending(a) => pending(&a),
        PolicyCommand::Approve(a) => decide(&a, true),
        PolicyCommand::Reject(a) => decide(&a, false),
        PolicyCommand::Retire(a) => super::retire::run(&a),
    }
}

fn read_evidence(path: &Path) -> anyhow::Result<CapturedEvidence> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an evidence file: {e} (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

fn read_policy_file(path: &Path) -> anyhow::Result<Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Policy::from_json(&text).with_context(|| format!("{}", path.display()))
}

fn learn_cmd(a: &LearnArgs) -> anyhow::Result<()> {
    let evidence = read_evidence(&a.evidence)?;
    let capture =
        UnverifiedCapture::check(&evidence).with_context(|| format!("{}", a.evidence.display()))?;
    let bank = match &a.bank {
        Some(b) => Some(
            HashAlg::from_name(b)
                .with_context(|| format!("--bank {b}: use sha1, sha256, sha384 or sha512"))?,
        ),
        None => None,
    };
    let opts = LearnOptions {
        mode: match a.mode {
            Mode::Exact => LearnMode::Exact,
            Mode::Reference => LearnMode::Reference,
            Mode::Both => LearnMode::Both,
        },
        bank,
        pcrs: a.pcrs.clone(),
        release_pcr: (!a.no_release_pcr).then_some(a.release_pcr),
        ima: !a.no_ima,
        max_reboots: a.max_reboots,
    };
    let learned = learn(&capture.claims(), &opts)?;
    // What we print must be a policy we accept.
    Policy::from_document(learned.document.clone())?;
    for n in &learned.notes {
        eprintln!("unlockctl: note: {n}");
    }
    let mut json = serde_json::to_string_pretty(&learned.document)?;
    json.push('\n');
    match &a.out {
        Some(p) => {
            std::fs::write(p, json).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => std::io::stdout().write_all(json.as_bytes())?,
    }
    Ok(())
}

fn check_cmd(a: &CheckArgs) -> anyhow::Result<()> {
    let policy = a.policy.as_deref().map(read_policy_file).transpose()?;
    let rego = match &a.rego {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Some(RegoPolicy::new(&p.display().to_string(), &text)?)
        }
        None => None,
    };
    // Every policy given, over the same claims: the native rules' outcomes, then Rego's.
    let evaluate = |claims: &Claims<'_>| {
        let mut report = policy.as_ref().map(|p| p.check(claims)).unwrap_or_default();
        if let Some(r) = &rego {
            let verdict = r.evaluate_claims(claims);
            if verdict.accepted() {
                report.outcomes.push(RuleOutcome {
                    rule: "rego.allow".into(),
                    passed: true,
                    detail: "allow is true and deny is empty".into(),
                });
            }
            for f in verdict.failures {
                report.outcomes.push(RuleOutcome {
                    rule: f.rule,
                    passed: false,
                    detail: f.reason,
                });
            }
        }
        report
    };
    let (report, quote_checked, note) = match (&a.evidence, &a.tee_capture) {
        (_, Some(path)) => {
            let json =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let roots = AmdRoots::shipped().context("the shipped AMD roots")?;
            let capture = CheckedAzureCapture::check(&json, &roots, std::time::SystemTime::now())
                .with_context(|| format!("{}", path.display()))?;
            (
                evaluate(&Claims::unverified_from_capture_azure(&capture)),
                true,
                "offline check of a confidential VM's capture: VCEK chain, SEV-SNP report, HCL runtime data and quote signature verified; the quote is bound to the capturer's nonce, so this proves what the VM was, NOT that it is now",
            )
        }
        (Some(path), None) => {
            let evidence = read_evidence(path)?;
            let capture = UnverifiedCapture::check(&evidence)
                .with_context(|| format!("{}", path.display()))?;
            (
                evaluate(&capture.claims()),
                false,
                "offline check: the logs replay to the captured PCRs; there is no quote, so its signature, nonce and clock are NOT checked",
            )
        }
        (None, None) => bail!("give --evidence or --tee-capture"),
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "quote_signature_checked": quote_checked,
                "accepted": report.accepted(),
                "outcomes": report.outcomes,
            })
        );
    } else {
        println!("{note}");
        let width = report
            .outcomes
            .iter()
            .map(|o| o.rule.len())
            .max()
            .unwrap_or(0);
        for o in &report.outcomes {
            println!(
                "{}  {:<width$}  {}",
                if o.passed { "pass" } else { "FAIL" },
                o.rule,
                o.detail
            );
        }
        let failed = report.outcomes.iter().filter(|o| !o.passed).count();
        if failed == 0 {
            println!("verdict: accepted ({} rules)", report.outcomes.len());
        } else {
            println!(
                "verdict: REFUSED ({failed} of {} rules failed)",
                report.outcomes.len()
            );
        }
    }
    if !report.accepted() {
        bail!("the policy refuses this evidence");
    }
    Ok(())
}

fn name(n: &str) -> anyhow::Result<Id> {
    Id::try_from(n.to_owned()).map_err(|e| anyhow::anyhow!("policy name {n:?}: {e}"))
}

fn policy_path(n: &Id) -> String {
    format!("{}/{n}", admin_path::POLICIES)
}

/// The named policy's version (latest by default) as both roles store it; they must agree.
pub(super) fn named(
    verifier: &RoleClient,
    tenant: &RoleClient,
    policy_name: &str,
    version: Option<u32>,
) -> anyhow::Result<(PolicyDocument, PolicyRef)> {
    let n = name(policy_name)?;
    let path = match version {
        Some(v) => format!("{}?version={v}", policy_path(&n)),
        None => policy_path(&n),
    };
    let v: PolicyVersionInfo = verifier.get(&path)?;
    let t: PolicyVersionInfo =
        tenant.get(&format!("{}?version={}", policy_path(&n), v.policy.version))?;
    if v.document != t.document {
        bail!(
            "{} differs between the verifier and the tenant role; fix with `unlockctl policy update`",
            v.policy
        );
    }
    Ok((v.document, v.policy))
}

fn print_version(role: &str, i: &PolicyVersionInfo) {
    println!("{role}: {} (created at {})", i.policy, i.created_at);
    if let Some(d) = &i.diff_from_previous {
        println!("changes from v{}:", i.policy.version.saturating_sub(1));
        print!("{d}");
        if d.may_widen() {
            println!("(this version accepts boots the previous one refused)");
        }
    }
    if !i.pinned_elsewhere.is_empty() {
        println!(
            "{} enrollment(s) stay on other versions until `unlockctl policy apply {} --version {} ...`:",
            i.pinned_elsewhere.len(),
            i.policy.name,
            i.policy.version
        );
        for p in &i.pinned_elsewhere {
            println!("  {} v{}", p.agent_id, p.version);
        }
    }
}

fn create(a: &FileArgs) -> anyhow::Result<()> {
    let document = read_policy_file(&a.file)?.document().clone();
    let n = name(&a.name)?;
    let (verifier, tenant) = a.conn.clients()?;
    let req = PolicyCreateRequest {
        name: n.clone(),
        document,
    };
    let v: PolicyVersionInfo = verifier.post(admin_path::POLICIES, &req)?;
    let t: anyhow::Result<PolicyVersionInfo> = tenant.post(admin_path::POLICIES, &req);
    print_version("verifier", &v);
    match t {
        Ok(t) => print_version("tenant", &t),
        Err(e) => return Err(e.context("created on the verifier role only")),
    }
    Ok(())
}

fn update(a: &FileArgs) -> anyhow::Result<()> {
    let document = read_policy_file(&a.file)?.document().clone();
    let n = name(&a.name)?;
    let (verifier, tenant) = a.conn.clients()?;
    let req = PolicyUpdateRequest { document };
    let path = format!("{}/versions", policy_path(&n));
    let v: PolicyVersionInfo = verifier.post(&path, &req)?;
    print_version("verifier", &v);
    let t: PolicyVersionInfo = tenant
        .post(&path, &req)
        .context("the verifier role has the new version, the tenant role does not")?;
    print_version("tenant", &t);
    if v.policy != t.policy {
        bail!(
            "the roles numbered the new version differently ({} vs {}): their histories differ",
            v.policy,
            t.policy
        );
    }
    Ok(())
}

fn show(a: &ShowArgs) -> anyhow::Result<()> {
    let n = name(&a.name)?;
    let (verifier, _) = a.conn.clients()?;
    let path = match a.version {
        Some(v) => format!("{}?version={v}", policy_path(&n)),
        None => policy_path(&n),
    };
    let v: PolicyVersionInfo = verifier.get(&path)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_version("verifier", &v);
        println!("{}", serde_json::to_string_pretty(&v.document)?);
    }
    Ok(())
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    let (verifier, _) = a.conn.clients()?;
    let l: PolicyList = verifier.get(admin_path::POLICIES)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&l.policies)?);
        return Ok(());
    }
    println!(
        "{:<32}  {:>7}  {:>11}  {:>6}",
        "NAME", "LATEST", "ENROLLMENTS", "BEHIND"
    );
    for p in &l.policies {
        println!(
            "{:<32}  {:>7}  {:>11}  {:>6}",
            p.name, p.latest_version, p.enrollments, p.behind
        );
    }
    Ok(())
}

fn diff_cmd(a: &DiffArgs) -> anyhow::Result<()> {
    let n = name(&a.name)?;
    let (verifier, _) = a.conn.clients()?;
    let mut path = format!("{}/diff?from={}", policy_path(&n), a.from);
    if let Some(to) = a.to {
        path.push_str(&format!("&to={to}"));
    }
    let d: PolicyDiffInfo = verifier.get(&path)?;
    println!("{} -> {}", d.from, d.to);
    print!("{}", d.diff);
    Ok(())
}

fn apply(a: &ApplyArgs) -> anyhow::Result<()> {
    let n = name(&a.name)?;
    let agents = a
        .agents
        .iter()
        .map(|s| AgentId::try_from(s.clone()).map_err(|e| anyhow::anyhow!("{s}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (verifier, tenant) = a.conn.clients()?;
    let path = format!("{}/apply", policy_path(&n));
    let req = |dry_run| PolicyApplyRequest {
        version: a.version,
        agents: agents.clone(),
        all: a.all,
        dry_run,
    };
    // Always show first what would change, from the roles' own records.
    let preview: PolicyApplyResponse = verifier.post(&path, &req(true))?;
    let _: PolicyApplyResponse = tenant.post(&path, &req(true))?;
    if preview.moved.is_empty() {
        println!(
            "nothing to move: every selected enrollment is on {}",
            preview.to
        );
        return Ok(());
    }
    for m in &preview.moved {
        println!(
            "{}: {} -> {}",
            m.agent_id,
            m.from
                .as_ref()
                .map_or("inline policy".to_owned(), ToString::to_string),
            preview.to
        );
        for line in m.diff.to_string().lines() {
            println!("    {line}");
        }
    }
    if !a.yes {
        println!("dry run: nothing changed; re-run with --yes to apply");
        return Ok(());
    }
    let v: PolicyApplyResponse = verifier.post(&path, &req(false))?;
    let t: PolicyApplyResponse = tenant
        .post(&path, &req(false))
        .context("applied on the verifier role only; re-run to apply on the tenant")?;
    println!(
        "moved {} enrollment(s) on the verifier role and {} on the tenant role to {}",
        v.moved.len(),
        t.moved.len(),
        v.to
    );
    Ok(())
}

/// The banks a document's prediction-fed rules use: the measured-boot bank and those of PCR 9
/// and PCR 11 rules.
fn prediction_banks(doc: &PolicyDocument) -> anyhow::Result<Vec<HashAlg>> {
    let mut banks = Vec::new();
    let mut add = |name: &str| -> anyhow::Result<()> {
        let alg = HashAlg::from_name(name).with_context(|| format!("bank {name}"))?;
        if !banks.contains(&alg) {
            banks.push(alg);
        }
        Ok(())
    };
    if let Some(mb) = &doc.measured_boot {
        add(mb.bank.as_deref().unwrap_or("sha256"))?;
    }
    for r in doc.pcrs.iter().filter(|r| r.index == 9 || r.index == 11) {
        add(&r.bank)?;
    }
    Ok(banks)
}

fn read_file(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

/// The predictions for `doc`'s banks from the files `a` names.
pub(super) fn predictions(
    a: &AllowArgs,
    doc: &PolicyDocument,
) -> anyhow::Result<Vec<verifier_core::predict::Prediction>> {
    use verifier_core::predict::{predict, BootFiles, BootPath};
    let image = a
        .uki
        .as_ref()
        .or(a.kernel.as_ref())
        .context("--kernel or --uki")?;
    let kernel = read_file(image)?;
    let initrd = a.initrd.as_deref().map(read_file).transpose()?;
    let apps = a
        .efi_apps
        .iter()
        .map(|p| read_file(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let app_refs: Vec<&[u8]> = apps.iter().map(Vec::as_slice).collect();
    let files = BootFiles {
        kernel: &kernel,
        initrd: initrd.as_deref(),
        cmdline: a.cmdline.as_deref(),
        efi_apps: &app_refs,
    };
    let path = match a.boot_path {
        _ if a.uki.is_some() => BootPath::Uki,
        BootPathArg::Uki => BootPath::Uki,
        BootPathArg::EfiStub => BootPath::EfiStub,
        BootPathArg::Grub => BootPath::Grub,
        BootPathArg::QemuDirect => BootPath::QemuDirect {
            ram_below_4g: a
                .qemu_memory_mib
                .checked_mul(1 << 20)
                .context("--qemu-memory-mib is too large")?,
        },
    };
    prediction_banks(doc)?
        .into_iter()
        .map(|alg| {
            predict(&files, path, alg)
                .with_context(|| format!("{}: cannot predict its measurement", image.display()))
        })
        .collect()
}

fn print_prediction(preds: &[verifier_core::predict::Prediction]) {
    for p in preds {
        for (rule, items) in [
            ("boot_applications (PCR 4)", &p.boot_applications),
            ("kernels (PCR 9, 11)", &p.kernels),
            ("initrds (PCR 9, 11)", &p.initrds),
            ("PCR 11 event", &p.pcr11_events),
        ] {
            for i in items {
                println!("predicted {}: {rule} {} {}", p.alg, i.what, i.digest);
            }
        }
        if let Some(c) = &p.cmdline {
            println!("predicted {}: kernel_cmdline {c:?}", p.alg);
        }
        if let Some(v) = &p.pcr9 {
            println!("predicted {}: PCR 9 {v}", p.alg);
        }
        if let Some(v) = &p.pcr11 {
            println!("predicted {}: PCR 11 {v}", p.alg);
        }
    }
}

fn allow(a: &AllowArgs) -> anyhow::Result<()> {
    if let Some(file) = &a.file {
        let old = read_policy_file(file)?.document().clone();
        let preds = predictions(a, &old)?;
        let w = verifier_core::policy::widen(&old, &preds)
            .with_context(|| format!("{}", file.display()))?;
        for n in &w.notes {
            eprintln!("unlockctl: note: {n}");
        }
        eprint!("{}", w.diff);
        let mut json = serde_json::to_string_pretty(&w.document)?;
        json.push('\n');
        match &a.out {
            Some(p) => {
                std::fs::write(p, json).with_context(|| format!("cannot write {}", p.display()))?
            }
            None => std::io::stdout().write_all(json.as_bytes())?,
        }
        return Ok(());
    }
    let policy_name = a.policy.as_deref().context("--policy or --file")?;
    let (verifier, tenant) = a.conn.clients()?;
    let (old, from) = named(&verifier, &tenant, policy_name, None)?;
    let preds = predictions(a, &old)?;
    print_prediction(&preds);
    let w = verifier_core::policy::widen(&old, &preds).with_context(|| format!("{from}"))?;
    for n in &w.notes {
        println!("note: {n}");
    }
    if w.diff.is_empty() {
        println!("{from} already allows this boot: nothing to do");
        return Ok(());
    }
    println!("changes from {from}:");
    print!("{}", w.diff);
    if !a.yes {
        println!("dry run: nothing stored; re-run with --yes to add the next version");
        return Ok(());
    }
    let n = name(policy_name)?;
    let req = PolicyUpdateRequest {
        document: w.document,
    };
    let path = format!("{}/versions", policy_path(&n));
    let v: PolicyVersionInfo = verifier.post(&path, &req)?;
    let t: PolicyVersionInfo = tenant
        .post(&path, &req)
        .context("the verifier role has the new version, the tenant role does not")?;
    if v.policy != t.policy {
        bail!(
            "the roles numbered the new version differently ({} vs {}): their histories differ",
            v.policy,
            t.policy
        );
    }
    println!(
        "stored {}; move machines with `unlockctl policy apply {} --version {} --all`",
        v.policy, v.policy.name, v.policy.version
    );
    Ok(())
}

fn pending(a: &ListArgs) -> anyhow::Result<()> {
    use verifier_core::proto::v1::{PendingList, ADMIN_PENDING_PATH};
    let (verifier, tenant) = a.conn.clients()?;
    let v: PendingList = verifier.get(ADMIN_PENDING_PATH)?;
    let t: PendingList = tenant.get(ADMIN_PENDING_PATH)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v.changes)?);
        return Ok(());
    }
    if v.changes.is_empty() {
        println!("no policy changes were submitted");
    }
    for c in &v.changes {
        let on_tenant = t.changes.iter().find(|x| x.id == c.id);
        println!(
            "{}  {}  agent {}  submitted at {}  {:?}{}",
            c.id,
            c.state.as_str().to_uppercase(),
            c.change.agent_id,
            c.submitted_at,
            c.change.note,
            match on_tenant {
                None => "  (not on the tenant role: the machine must submit there too)".to_owned(),
                Some(x) if x.state != c.state => format!("  (tenant: {})", x.state.as_str()),
                Some(_) => String::new(),
            }
        );
        if let Some(p) = &c.policy {
            println!("    on {p}; approving adds to the latest version:");
        }
        if let Some(d) = &c.diff {
            for line in d.to_string().lines() {
                println!("    {line}");
            }
        }
        if let Some(p) = &c.problem {
            println!("    cannot be approved: {p}");
        }
        if let Some(w) = &c.not_auto_approved {
            println!("    not auto-approved: {w}");
        }
        if let Some(r) = &c.result {
            println!("    allowed by {r}");
        }
        if let Some(by) = &c.decided_by {
            println!("    decided by {by}");
        }
    }
    Ok(())
}

fn decide(a: &DecideArgs, approve: bool) -> anyhow::Result<()> {
    use verifier_core::proto::v1::{
        PendingChangeInfo, PendingDecisionRequest, PendingList, PendingState, ADMIN_PENDING_PATH,
    };
    if a.fleet && !approve {
        bail!("--fleet goes with approve");
    }
    let (verifier, tenant) = a.conn.clients()?;
    let listed: PendingList = verifier.get(ADMIN_PENDING_PATH)?;
    let matches: Vec<&PendingChangeInfo> = listed
        .changes
        .iter()
        .filter(|c| a.id.len() >= 8 && c.id.starts_with(&a.id.to_lowercase()))
        .collect();
    let change = match matches.as_slice() {
        [one] => *one,
        [] => bail!(
            "no change {} (`unlockctl policy pending` lists them; give 8 or more characters)",
            a.id
        ),
        _ => bail!(
            "{} names {} changes: give more characters",
            a.id,
            matches.len()
        ),
    };
    if change.state != PendingState::Pending {
        bail!("change {} is already {}", change.id, change.state.as_str());
    }
    if let Some(p) = &change.problem {
        if approve {
            bail!("change {} cannot be approved: {p}", change.id);
        }
    }
    println!(
        "{} from agent {} ({:?})",
        change.id, change.change.agent_id, change.change.note
    );
    if let Some(d) = &change.diff {
        print!("{d}");
    }
    let req = PendingDecisionRequest {
        approve,
        fleet: a.fleet,
    };
    let path = format!("{ADMIN_PENDING_PATH}/{}/decide", change.id);
    let v: PendingChangeInfo = verifier.post(&path, &req)?;
    let t: PendingChangeInfo = tenant.post(&path, &req).context(
        "decided on the verifier role only; the tenant role refused (has the machine submitted there?)",
    )?;
    match (&v.result, &t.result) {
        (Some(x), Some(y)) if x != y => {
            bail!("the roles allowed it in different versions ({x} vs {y}): their histories differ")
        }
        (Some(x), _) => println!(
            "approved: {x} allows it; {} moved to it",
            if a.fleet {
                "every enrollment of the policy"
            } else {
                "the machine"
            }
        ),
        (None, _) => println!("rejected on both roles"),
    }
    Ok(())
}
