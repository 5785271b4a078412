//! `unlockctl audit verify | show | export`: each role's hash-chained audit trail, read page
//! by page and checked here, on the operator's machine (verifier-core's `audit`), so a
//! server that altered its records cannot also vouch for them.

use std::io::Write as _;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use verifier_core::audit::{verify_chain, AuditPage, AuditRecord, GENESIS};
use verifier_core::proto::v1::{admin_path, AgentId};

use super::client::{Connection, RoleClient};

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check each role's whole chain; report the first break (exit 1) or the head.
    Verify(VerifyArgs),
    /// One machine's story: its records from both roles, in time order.
    Show(ShowArgs),
    /// Every record of a role as JSON lines (to archive; `verify` checks an archive's chain
    /// from the server's records, not from the file).
    Export(ExportArgs),
}

/// Which role(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Which {
    Verifier,
    Tenant,
    Both,
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    conn: Connection,
    /// The role(s) whose chain to check.
    #[arg(long, value_enum, default_value = "both")]
    role: Which,
    /// A head recorded earlier, as `SEQ:HASH` (what `verify` printed then): the chain must
    /// still pass through it, which catches a rewrite of everything after that point.
    #[arg(long, value_name = "SEQ:HASH")]
    expect: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ShowArgs {
    #[command(flatten)]
    conn: Connection,
    /// The agent id.
    agent_id: String,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    conn: Connection,
    /// The role whose records to export.
    #[arg(long, value_enum)]
    role: Which,
    /// Only records after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: i64,
}

pub(super) fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify(a) => verify(&a),
        AuditCommand::Show(a) => show(&a),
        AuditCommand::Export(a) => export(&a),
    }
}

fn roles(conn: &Connection, which: Which) -> anyhow::Result<Vec<RoleClient>> {
    let (v, t) = conn.clients()?;
    Ok(match which {
        Which::Verifier => vec![v],
        Which::Tenant => vec![t],
        Which::Both => vec![v, t],
    })
}

/// Every page after `after`, oldest first, handed to `f` (of `agent` only if given).
fn pages(
    c: &RoleClient,
    after: i64,
    agent: Option<&str>,
    mut f: impl FnMut(&AuditPage) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after = after;
    loop {
        let mut path = format!("{}?after={after}&limit=1000", admin_path::AUDIT);
        if let Some(a) = agent {
            path.push_str(&format!("&agent={a}"));
        }
        let page: AuditPage = c.get(&path)?;
        f(&page)?;
        match page.records.last() {
            Some(last) if last.seq > after => after = last.seq,
            _ => return Ok(()),
        }
    }
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let expect = args
        .expect
        .as_deref()
        .map(|e| {
            let (seq, hash) = e
                .split_once(':')
                .context("--expect is SEQ:HASH (as `audit verify` printed it)")?;
            let seq: i64 = seq.parse().context("--expect: SEQ is not a number")?;
            Ok::<_, anyhow::Error>((seq, hash.to_ascii_lowercase()))
        })
        .transpose()?;
    let mut broken = false;
    let mut report = Vec::new();
    for c in roles(&args.conn, args.role)? {
        let role = c.role.as_str();
        let mut prev = GENESIS;
        let mut next_seq = 1;
        let mut count = 0u64;
        let mut head = (0, hex::encode(GENESIS));
        let mut seen_expect = expect.is_none();
        let result = pages(&c, 0, None, |page| {
            if let Some((seq, hash)) = verify_chain(&page.records, next_seq, prev)? {
                prev = hash;
                next_seq = seq + 1;
                head = (seq, hex::encode(hash));
            }
            count += page.records.len() as u64;
            if let Some((seq, hash)) = &expect {
                if page
                    .records
                    .iter()
                    .any(|r| r.seq == *seq && r.hash == *hash)
                {
                    seen_expect = true;
                }
            }
            Ok(())
        });
        let outcome = match result {
            Err(e) => {
                broken = true;
                format!("BROKEN: {e:#}")
            }
            Ok(()) if !seen_expect => {
                broken = true;
                "BROKEN: the chain does not pass through the expected head".to_owned()
            }
            Ok(()) => format!("intact: {count} records, head {}:{}", head.0, head.1),
        };
        if !args.json {
            println!("{role}: {outcome}");
        }
        report.push(serde_json::json!({"role": role, "intact": !outcome.starts_with("BROKEN"), "outcome": outcome, "records": count, "head_seq": head.0, "head_hash": head.1}));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(report));
    }
    if broken {
        bail!("the audit trail is broken (see above)");
    }
    Ok(())
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let agent = AgentId::try_from(args.agent_id.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.agent_id))?;
    let mut all: Vec<(&'static str, AuditRecord)> = Vec::new();
    for c in roles(&args.conn, Which::Both)? {
        let role = c.role.as_str();
        pages(&c, 0, Some(agent.as_str()), |page| {
            all.extend(page.records.iter().cloned().map(|r| (role, r)));
            Ok(())
        })?;
    }
    all.sort_by(|(ra, a), (rb, b)| (a.at, ra, a.seq).cmp(&(b.at, rb, b.seq)));
    let mut out = std::io::stdout().lock();
    if all.is_empty() && !args.json {
        writeln!(out, "no audit records for agent {agent}")?;
    }
    for (role, r) in &all {
        if args.json {
            writeln!(out, "{}", serde_json::json!({"role": role, "record": r}))?;
        } else {
            writeln!(
                out,
                "{} {role:<8} #{:<6} {:<14} {:<6} {}",
                r.at, r.seq, r.kind, r.actor, r.detail
            )?;
        }
    }
    Ok(())
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    if args.role == Which::Both {
        bail!(
            "export one role at a time (--role verifier or --role tenant): each has its own chain"
        );
    }
    let mut out = std::io::stdout().lock();
    for c in roles(&args.conn, args.role)? {
        pages(&c, args.after, None, |page| {
            for r in &page.records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
