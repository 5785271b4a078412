//! `unlockctl enroll | list | status | revoke | rearm | delete`: the operator's view of the
//! two roles. Enrollment generates K_b here, on the operator's machine, so that no role ever
//! sees it or the payload.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use verifier_core::keysplit::{enroll_material, MAX_PAYLOAD_LEN};
use verifier_core::policy::{Policy, PolicyDocument};
use verifier_core::proto::v1::{
    admin_path, AgentId, EnrollRequest, EnrollmentInfo, EnrollmentList, EvidenceKind,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::Public;
use zeroize::Zeroizing;

use super::client::{Connection, RoleClient};

/// How to enroll (shared by `enroll`, `bind` and `enroll-inventory`).
#[derive(Debug, Clone, Args)]
pub struct EnrollOptions {
    #[command(flatten)]
    pub conn: Connection,
    /// Policy document (JSON), inline and anonymous. Without it (and without
    /// --policy-name) only the release-PCR rule applies: any genuine boot of this TPM
    /// unlocks, whatever it booted.
    #[arg(long, conflicts_with = "policy_name")]
    pub policy: Option<PathBuf>,
    /// A named policy on the server (`unlockctl policy create`); the enrollment is pinned
    /// to its latest version (or --policy-version) until `unlockctl policy apply` moves it.
    #[arg(long)]
    pub policy_name: Option<String>,
    /// The version of --policy-name [default: the latest].
    #[arg(long, requires = "policy_name")]
    pub policy_version: Option<u32>,
    /// Releases allowed per boot.
    #[arg(long, default_value_t = 1)]
    pub max_attestations: u32,
    /// Boots allowed in the enrollment's lifetime (default: unbounded).
    #[arg(long)]
    pub max_boots: Option<u32>,
    /// How the machine's AK is trusted: `tpm` (EK certificate and MakeCredential) or
    /// `snp-vtpm` (alias `azure-snp-vtpm`: an Azure SEV-SNP confidential VM, whose vTPM AK
    /// the CPU's attestation report vouches for through the HCL report). The roles refuse
    /// a registration of the other kind. `test-challenge-round` is for tests only (a server
    /// accepts it only when started with --test-attester-key).
    #[arg(long, default_value = "tpm")]
    pub evidence: EvidenceKind,
}

/// `unlockctl enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub opts: EnrollOptions,
    /// The machine's EK public area (TPMT_PUBLIC or TPM2B_PUBLIC, as `initrd-agent ek` writes).
    #[arg(long)]
    pub ek_pub: PathBuf,
    /// The secret to release (the LUKS key file), at most 64 KiB.
    #[arg(long)]
    pub payload: PathBuf,
    /// Print JSON (`{"agent_id": ...}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Commands that name one agent.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// The agent id (64 hex characters, printed by `enroll` and `list`).
    pub agent_id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `unlockctl list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads an EK public area in either TPMT_PUBLIC or TPM2B_PUBLIC form; returns TPMT_PUBLIC.
pub fn read_ek(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let public = Public::parse(&bytes)
        .or_else(|_| Public::parse_tpm2b(&bytes))
        .with_context(|| format!("{}: not a TPMT_PUBLIC or TPM2B_PUBLIC", path.display()))?;
    Ok(public.marshal())
}

/// Reads and checks a policy file (JSON), or the default policy.
pub fn read_policy(path: Option<&Path>) -> anyhow::Result<PolicyDocument> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let policy = Policy::from_json(&text).with_context(|| format!("{}", p.display()))?;
            Ok(policy.document().clone())
        }
        None => {
            eprintln!("unlockctl: no --policy: only the release-PCR rule applies (any genuine boot of this TPM unlocks)");
            Ok(Policy::from_json(r#"{"version":1}"#)?.document().clone())
        }
    }
}

pub fn enroll(args: &EnrollArgs) -> anyhow::Result<()> {
    let ek = read_ek(&args.ek_pub)?;
    let payload = Zeroizing::new(
        std::fs::read(&args.payload)
            .with_context(|| format!("cannot read {}", args.payload.display()))?,
    );
    if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
        bail!(
            "{}: the payload must be 1 to {MAX_PAYLOAD_LEN} bytes",
            args.payload.display()
        );
    }
    let agent_id = enroll_bytes(&args.opts, ek, &payload)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "agent_id": agent_id,
                "max_attestations": args.opts.max_attestations,
                "max_boots": args.opts.max_boots,
            })
        );
    } else {
        println!("{}", enrolled_line(&agent_id, &args.opts));
    }
    Ok(())
}

/// What `enroll` and `bind` print for a new enrollment.
pub fn enrolled_line(agent_id: &AgentId, opts: &EnrollOptions) -> String {
    format!(
        "enrolled agent {agent_id} (verifier holds V and the payload ciphertext, tenant holds U; max_attestations {}{})",
        opts.max_attestations,
        opts.max_boots
            .map(|b| format!(", max_boots {b}"))
            .unwrap_or_default()
    )
}

/// Enrolls `ek` (TPMT_PUBLIC) with `payload` as the secret: K_b, U and V are made here;
/// V and the ciphertext go to the verifier, U to the tenant (rolled back if the tenant
/// refuses).
pub fn enroll_bytes(opts: &EnrollOptions, ek: Vec<u8>, payload: &[u8]) -> anyhow::Result<AgentId> {
    let agent_id = AgentId::of_ek(&ek);
    let (verifier, tenant) = opts.conn.clients()?;
    let (policy, policy_ref) = match &opts.policy_name {
        Some(name) => {
            let (doc, r) = super::policy::named(&verifier, &tenant, name, opts.policy_version)?;
            (doc, Some(r))
        }
        None => (read_policy(opts.policy.as_deref())?, None),
    };
    let material = enroll_material(agent_id.as_str(), payload)?;
    let request = |share: &[u8], payload_ct: Option<Base64Bytes>| EnrollRequest {
        agent_id: agent_id.clone(),
        ek_pub: Base64Bytes::new(ek.clone()),
        policy: policy.clone(),
        policy_ref: policy_ref.clone(),
        max_attestations: opts.max_attestations,
        max_boots: opts.max_boots,
        share: Base64Bytes::new(share.to_vec()),
        payload_ct,
        evidence: opts.evidence,
    };
    let _: EnrollmentInfo = verifier.post(
        admin_path::ENROLLMENTS,
        &request(
            material.v.expose_secret(),
            Some(Base64Bytes::new(material.payload_ct.as_bytes().to_vec())),
        ),
    )?;
    let tenant_result: anyhow::Result<EnrollmentInfo> = tenant.post(
        admin_path::ENROLLMENTS,
        &request(material.u.expose_secret(), None),
    );
    if let Err(e) = tenant_result {
        // Do not leave V enrolled without U: the machine could never unlock.
        let undo = verifier.delete(&agent_path(agent_id.as_str()));
        return Err(e.context(match undo {
            Ok(()) => "the tenant role refused; the verifier enrollment was rolled back",
            Err(_) => "the tenant role refused AND rolling back the verifier enrollment failed: run `unlockctl delete`",
        }));
    }
    Ok(agent_id)
}

/// Deletes `agent_id` from both roles (best effort, for rollbacks).
pub fn delete_both(conn: &Connection, agent_id: &AgentId) -> anyhow::Result<()> {
    let (verifier, tenant) = conn.clients()?;
    let p = agent_path(agent_id.as_str());
    let v = verifier.delete(&p);
    let t = tenant.delete(&p);
    v.and(t)
}

pub fn agent_path(agent_id: &str) -> String {
    format!("{}/{agent_id}", admin_path::ENROLLMENTS)
}

fn checked_agent(agent_id: &str) -> anyhow::Result<AgentId> {
    AgentId::try_from(agent_id.to_owned()).map_err(|e| anyhow::anyhow!("{agent_id}: {e}"))
}

pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let (verifier, tenant) = args.conn.clients()?;
    let v: EnrollmentList = verifier.get(admin_path::ENROLLMENTS)?;
    let t: EnrollmentList = tenant.get(admin_path::ENROLLMENTS)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"verifier": v.enrollments, "tenant": t.enrollments})
        );
        return Ok(());
    }
    println!(
        "{:<64}  {:<10}  {:<10}  {:>5}  {:>8}  ADMITTED",
        "AGENT", "VERIFIER", "TENANT", "BOOTS", "MAX/BOOT"
    );
    let mut ids: Vec<&AgentId> = v.enrollments.iter().map(|e| &e.agent_id).collect();
    ids.extend(t.enrollments.iter().map(|e| &e.agent_id));
    ids.sort();
    ids.dedup();
    for id in ids {
        let ve = v.enrollments.iter().find(|e| &e.agent_id == id);
        let te = t.enrollments.iter().find(|e| &e.agent_id == id);
        println!(
            "{:<64}  {:<10}  {:<10}  {:>5}  {:>8}  {}",
            id,
            ve.map_or("-", |e| e.state.as_str()),
            te.map_or("-", |e| e.state.as_str()),
            ve.map_or(0, |e| e.boots_used),
            ve.map_or(0, |e| e.max_attestations),
            admitted(ve, te),
        );
    }
    Ok(())
}

/// How a machine was admitted, as both roles recorded it: `operator`, or the rule and what
/// matched (each role's own when they differ).
fn admitted(v: Option<&EnrollmentInfo>, t: Option<&EnrollmentInfo>) -> String {
    let how = |e: Option<&EnrollmentInfo>| match e {
        None => "-".to_owned(),
        Some(e) => e
            .admitted_by
            .clone()
            .unwrap_or_else(|| "operator".to_owned()),
    };
    let (vh, th) = (how(v), how(t));
    if vh == th {
        vh
    } else {
        format!("verifier: {vh}; tenant: {th}")
    }
}

/// Runs `f` on both roles and prints what they say now.
fn on_both(
    args: &AgentArgs,
    f: impl Fn(&RoleClient, &str) -> anyhow::Result<EnrollmentInfo>,
) -> anyhow::Result<()> {
    let agent_id = checked_agent(&args.agent_id)?;
    let (verifier, tenant) = args.conn.clients()?;
    let v = f(&verifier, &agent_path(agent_id.as_str()));
    let t = f(&tenant, &agent_path(agent_id.as_str()));
    if args.json {
        let show = |r: &anyhow::Result<EnrollmentInfo>| match r {
            Ok(i) => serde_json::to_value(i).unwrap_or_default(),
            Err(e) => serde_json::json!({"error": format!("{e:#}")}),
        };
        println!(
            "{}",
            serde_json::json!({"verifier": show(&v), "tenant": show(&t)})
        );
    } else {
        for (name, r) in [("verifier", &v), ("tenant", &t)] {
            match r {
                Ok(i) => print_info(name, i),
                Err(e) => println!("{name}: {e:#}"),
            }
        }
    }
    v.and(t).map(drop)
}

fn print_info(role: &str, i: &EnrollmentInfo) {
    println!(
        "{role}: {} state={} boots_used={} max_attestations={} max_boots={}",
        i.agent_id,
        i.state,
        i.boots_used,
        i.max_attestations,
        i.max_boots.map_or("-".into(), |b| b.to_string())
    );
    if let Some(how) = &i.admitted_by {
        println!("  auto-enrolled: admitted by {how}");
    }
    for s in &i.sessions {
        println!(
            "  boot resetCount={} releases={} {}",
            s.reset_count, s.releases, s.state
        );
    }
    for a in i.attempts.iter().take(5) {
        println!(
            "  attempt at {}: {} {}",
            a.at,
            if a.released { "released" } else { "refused:" },
            if a.released { "" } else { a.reason.as_str() }
        );
    }
}

pub fn status(args: &AgentArgs) -> anyhow::Result<()> {
    on_both(args, |c, p| c.get(p))
}

pub fn revoke(args: &AgentArgs) -> anyhow::Result<()> {
    on_both(args, |c, p| c.post_empty(&format!("{p}/revoke")))
}

pub fn unpin_ak(args: &AgentArgs) -> anyhow::Result<()> {
    on_both(args, |c, p| c.post_empty(&format!("{p}/unpin-ak")))
}

pub fn rearm(args: &AgentArgs) -> anyhow::Result<()> {
    on_both(args, |c, p| c.post_empty(&format!("{p}/rearm")))
}

pub fn delete(args: &AgentArgs) -> anyhow::Result<()> {
    let agent_id = checked_agent(&args.agent_id)?;
    let (verifier, tenant) = args.conn.clients()?;
    let p = agent_path(agent_id.as_str());
    let v = verifier.delete(&p);
    let t = tenant.delete(&p);
    match (v, t) {
        (Ok(()), Ok(())) => {
            println!("deleted agent {agent_id} from both roles");
            Ok(())
        }
        (v, t) => {
            let msg =
                |r: anyhow::Result<()>| r.err().map_or("deleted".into(), |e| format!("{e:#}"));
            bail!("verifier: {}; tenant: {}", msg(v), msg(t))
        }
    }
}
