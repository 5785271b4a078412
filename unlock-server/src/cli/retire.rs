//! `unlockctl policy retire`: the last step of an update. Both roles decide from their own
//! boot records which allowlist items of the policy's latest version no enrolled machine
//! used in its last N successful boots; only the items both agree on are retired, by name,
//! so each role checks them again against its records before writing the narrowed version.

use anyhow::{bail, Context};
use clap::Args;
use verifier_core::policy::{KeptItem, UsedItem};
use verifier_core::proto::v1::{
    admin_path, Id, PolicyApplyRequest, PolicyApplyResponse, PolicyRetireRequest,
    PolicyRetireResponse,
};

use super::client::{Connection, RoleClient};

/// Default boots a machine must have had without an item before it is retired.
const DEFAULT_AFTER_BOOTS: u32 = 3;

#[derive(Debug, Args)]
pub(super) struct RetireArgs {
    #[command(flatten)]
    conn: Connection,
    /// Policy name.
    name: String,
    /// Successful boots every machine of the policy must have had (under versions allowing
    /// an item) without using it. A machine with fewer keeps everything.
    #[arg(long, default_value_t = DEFAULT_AFTER_BOOTS)]
    after_boots: u32,
    /// Store the narrowed version (without it, only show the diff).
    #[arg(long)]
    yes: bool,
    /// With --yes: also move every enrollment of the policy to the new version.
    #[arg(long, requires = "yes")]
    apply: bool,
}

pub(super) fn run(a: &RetireArgs) -> anyhow::Result<()> {
    let n = Id::try_from(a.name.clone()).map_err(|e| anyhow::anyhow!("policy name: {e}"))?;
    let path = format!("{}/{n}/retire", admin_path::POLICIES);
    let (verifier, tenant) = a.conn.clients()?;
    let req = |dry_run, items: Option<Vec<UsedItem>>| PolicyRetireRequest {
        after_boots: a.after_boots,
        dry_run,
        items,
    };
    let v: PolicyRetireResponse = verifier.post(&path, &req(true, None))?;
    let t: PolicyRetireResponse = tenant.post(&path, &req(true, None))?;
    if v.from != t.from {
        bail!(
            "the roles' latest versions differ ({} vs {}): fix with `unlockctl policy update`",
            v.from,
            t.from
        );
    }
    let agreed: Vec<UsedItem> = v
        .retirement
        .removed
        .iter()
        .filter(|i| t.retirement.removed.contains(i))
        .cloned()
        .collect();
    print_kept(&v, &t);
    if agreed.is_empty() {
        bail!(
            "{}: nothing can be retired ({} machine(s) considered, {} boot(s) each)",
            v.from,
            v.machines,
            a.after_boots
        );
    }
    // The diff of exactly the agreed items (one role may have allowed more).
    let plan: PolicyRetireResponse = verifier.post(&path, &req(true, Some(agreed.clone())))?;
    println!("changes from {}:", plan.from);
    print!("{}", plan.retirement.diff);
    if !a.yes {
        println!("dry run: nothing stored; re-run with --yes to add the narrowed version");
        return Ok(());
    }
    store(a, &verifier, &tenant, &path, req(false, Some(agreed)))
}

/// Each kept item once per role, with why.
fn print_kept(v: &PolicyRetireResponse, t: &PolicyRetireResponse) {
    let lines = |role: &str, kept: &[KeptItem]| {
        for k in kept {
            println!("kept ({role})  {}: {}", k.item, k.reason);
        }
    };
    lines("verifier", &v.retirement.kept);
    lines("tenant", &t.retirement.kept);
    // An item one role would retire and the other keeps is kept: say so once.
    for i in &v.retirement.removed {
        if !t.retirement.removed.contains(i) && !t.retirement.kept.iter().any(|k| k.item == *i) {
            println!("kept (tenant)  {i}: not retirable on the tenant role");
        }
    }
}

fn store(
    a: &RetireArgs,
    verifier: &RoleClient,
    tenant: &RoleClient,
    path: &str,
    req: PolicyRetireRequest,
) -> anyhow::Result<()> {
    let v: PolicyRetireResponse = verifier.post(path, &req)?;
    let t: PolicyRetireResponse = tenant
        .post(path, &req)
        .context("the verifier role has the narrowed version, the tenant role does not")?;
    let (Some(vs), Some(ts)) = (v.stored, t.stored) else {
        bail!("a role answered without storing a version");
    };
    if vs != ts {
        bail!(
            "the roles numbered the new version differently ({vs} vs {ts}): their histories differ"
        );
    }
    println!(
        "stored {vs} (retired {} item(s))",
        v.retirement.removed.len()
    );
    if !a.apply {
        println!(
            "move machines with `unlockctl policy apply {} --version {} --all --yes`",
            vs.name, vs.version
        );
        return Ok(());
    }
    let apply = PolicyApplyRequest {
        version: vs.version,
        agents: Vec::new(),
        all: true,
        dry_run: false,
    };
    let apply_path = format!("{}/{}/apply", admin_path::POLICIES, vs.name);
    let mv: PolicyApplyResponse = verifier.post(&apply_path, &apply)?;
    let mt: PolicyApplyResponse = tenant
        .post(&apply_path, &apply)
        .context("applied on the verifier role only; re-run `unlockctl policy apply`")?;
    println!(
        "moved {} enrollment(s) on the verifier role and {} on the tenant role to {vs}",
        mv.moved.len(),
        mt.moved.len()
    );
    Ok(())
}
