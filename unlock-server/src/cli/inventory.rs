//! `unlockctl enroll-inventory`: many machines from one CSV inventory, as a fleet's
//! provisioning system exports it. Each row is enrolled as `unlockctl enroll` would; a row
//! that fails is reported with its reason and the rest go on; a machine already enrolled
//! with both roles is skipped, so a re-run after a failure (or a crash) enrolls only what is
//! missing. A machine enrolled with one role only (an interrupted enrollment whose rollback
//! failed) is reported, never completed: its other half cannot be made again without the
//! key the interrupted run generated, so it must be deleted and enrolled anew.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use verifier_core::keysplit::MAX_PAYLOAD_LEN;
use verifier_core::proto::v1::{AgentId, EnrollmentInfo};
use zeroize::Zeroizing;

use super::admin::{agent_path, enroll_bytes, read_ek, EnrollOptions};

/// Rows an inventory may hold (a typo'd file of gigabytes is refused, not read).
const MAX_ROWS: usize = 100_000;
/// Largest inventory file read.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// `unlockctl enroll-inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Defaults for every row (a row's own columns win).
    #[command(flatten)]
    pub opts: EnrollOptions,
    /// CSV file, first line a header naming its columns: `ek_pub` and `payload` (paths,
    /// relative to the inventory's directory) are required; `name` (shown in the report),
    /// `policy_name`, `max_attestations` and `max_boots` are optional. No quoting: a value
    /// may not contain a comma or a double quote. Lines starting with `#` are comments.
    /// Or a JSON array of objects with the same fields (the file starts with `[`).
    pub inventory: PathBuf,
    /// Print the summary as JSON (one object: counts and every row's outcome).
    #[arg(long)]
    pub json: bool,
}

/// One row of the inventory, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line number in the file (1-based), for messages.
    pub line: usize,
    /// The row's name column, or its line.
    pub name: String,
    pub ek_pub: PathBuf,
    pub payload: PathBuf,
    pub policy_name: Option<String>,
    pub max_attestations: Option<u32>,
    pub max_boots: Option<u32>,
}

/// What happened to a row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Enrolled { agent_id: String },
    AlreadyEnrolled { agent_id: String },
    Failed { reason: String },
}

/// Parses an inventory: a JSON array of objects when the file starts with `[` (what an
/// inventory system exports), otherwise CSV (header + rows). A malformed row is an error
/// naming its line (CSV) or entry (JSON), since a file whose columns are misread would
/// enroll machines with the wrong secrets.
pub fn parse(text: &str, base: &Path) -> anyhow::Result<Vec<Row>> {
    if text.trim_start().starts_with('[') {
        parse_json(text, base)
    } else {
        parse_csv(text, base)
    }
}

/// One entry of a JSON inventory: the CSV columns as fields, unknown fields refused.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    name: Option<String>,
    ek_pub: PathBuf,
    payload: PathBuf,
    policy_name: Option<String>,
    max_attestations: Option<u32>,
    max_boots: Option<u32>,
}

/// A JSON inventory; `line` of each row is its entry number (1-based).
fn parse_json(text: &str, base: &Path) -> anyhow::Result<Vec<Row>> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(text).context("not a JSON array of inventory entries")?;
    if entries.len() > MAX_ROWS {
        bail!("more than {MAX_ROWS} entries: split the inventory");
    }
    let mut rows = Vec::with_capacity(entries.len());
    for (i, v) in entries.into_iter().enumerate() {
        let entry = i + 1;
        let r: JsonRow = serde_json::from_value(v).with_context(|| format!("entry {entry}"))?;
        for (field, n) in [
            ("max_attestations", r.max_attestations),
            ("max_boots", r.max_boots),
        ] {
            if n == Some(0) {
                bail!("entry {entry}: {field} must be >= 1");
            }
        }
        for (field, p) in [("ek_pub", &r.ek_pub), ("payload", &r.payload)] {
            if p.as_os_str().is_empty() {
                bail!("entry {entry}: {field} is empty");
            }
        }
        rows.push(Row {
            line: entry,
            name: r.name.unwrap_or_else(|| format!("entry {entry}")),
            ek_pub: base.join(r.ek_pub),
            payload: base.join(r.payload),
            policy_name: r.policy_name,
            max_attestations: r.max_attestations,
            max_boots: r.max_boots,
        });
    }
    Ok(rows)
}

fn parse_csv(text: &str, base: &Path) -> anyhow::Result<Vec<Row>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        bail!("the inventory is empty (it needs a header line: ek_pub,payload,...)");
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    const KNOWN: [&str; 6] = [
        "name",
        "ek_pub",
        "payload",
        "policy_name",
        "max_attestations",
        "max_boots",
    ];
    for (i, c) in columns.iter().enumerate() {
        if !KNOWN.contains(c) {
            bail!("header: unknown column {c:?} (known: {})", KNOWN.join(", "));
        }
        if columns.iter().take(i).any(|x| x == c) {
            bail!("header: column {c:?} appears twice");
        }
    }
    for required in ["ek_pub", "payload"] {
        if !columns.contains(&required) {
            bail!("header: the {required} column is required");
        }
    }
    let mut rows = Vec::new();
    for (line, text) in lines {
        if rows.len() >= MAX_ROWS {
            bail!("more than {MAX_ROWS} rows: split the inventory");
        }
        if text.contains('"') {
            bail!("line {line}: double quotes are not supported (no quoting in this format)");
        }
        let values: Vec<&str> = text.split(',').map(str::trim).collect();
        if values.len() != columns.len() {
            bail!(
                "line {line}: {} values for {} columns",
                values.len(),
                columns.len()
            );
        }
        let get = |c: &str| {
            columns
                .iter()
                .position(|x| *x == c)
                .and_then(|i| values.get(i))
                .copied()
                .filter(|v| !v.is_empty())
        };
        let number = |c: &str| -> anyhow::Result<Option<u32>> {
            get(c)
                .map(|v| {
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .with_context(|| format!("line {line}: {c} {v:?} is not a number >= 1"))
                })
                .transpose()
        };
        let path = |c: &str| -> anyhow::Result<PathBuf> {
            let v = get(c).with_context(|| format!("line {line}: {c} is empty"))?;
            Ok(base.join(v))
        };
        rows.push(Row {
            line,
            name: get("name").map_or_else(|| format!("line {line}"), str::to_owned),
            ek_pub: path("ek_pub")?,
            payload: path("payload")?,
            policy_name: get("policy_name").map(str::to_owned),
            max_attestations: number("max_attestations")?,
            max_boots: number("max_boots")?,
        });
    }
    Ok(rows)
}

pub fn run(args: &InventoryArgs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&args.inventory)
        .with_context(|| format!("cannot read {}", args.inventory.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{}: larger than {} MiB",
            args.inventory.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    let text = std::fs::read_to_string(&args.inventory)
        .with_context(|| format!("cannot read {}", args.inventory.display()))?;
    let base = args
        .inventory
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let rows = parse(&text, &base).with_context(|| format!("{}", args.inventory.display()))?;
    let (verifier, tenant) = args.opts.conn.clients()?;
    let total = rows.len();
    let mut outcomes: Vec<(Row, Outcome)> = Vec::with_capacity(total);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        let outcome = match enroll_row(&args.opts, &row, &verifier, &tenant, &mut seen) {
            Ok(o) => o,
            Err(e) => Outcome::Failed {
                reason: format!("{e:#}"),
            },
        };
        let shown = match &outcome {
            Outcome::Enrolled { agent_id } => format!("enrolled {agent_id}"),
            Outcome::AlreadyEnrolled { agent_id } => {
                format!("already enrolled {agent_id}, skipped")
            }
            Outcome::Failed { reason } => format!("FAILED: {reason}"),
        };
        // Progress on stderr, one line per row, so a script can keep stdout for the summary.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[{:>w$}/{total}] {}: {shown}",
            i + 1,
            row.name,
            w = total.to_string().len()
        );
        outcomes.push((row, outcome));
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let enrolled = count(|o| matches!(o, Outcome::Enrolled { .. }));
    let skipped = count(|o| matches!(o, Outcome::AlreadyEnrolled { .. }));
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    if args.json {
        let rows: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(r, o)| serde_json::json!({"line": r.line, "name": r.name, "result": o}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"rows": total, "enrolled": enrolled, "already_enrolled": skipped, "failed": failed, "results": rows})
        );
    } else {
        println!("{total} rows: {enrolled} enrolled, {skipped} already enrolled (skipped), {failed} failed");
        for (row, o) in &outcomes {
            if let Outcome::Failed { reason } = o {
                println!("  line {} ({}): {reason}", row.line, row.name);
            }
        }
        if failed > 0 {
            println!("Fix the failed rows and run the same command again: enrolled machines are skipped.");
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} rows failed");
    }
    Ok(())
}

fn enroll_row(
    defaults: &EnrollOptions,
    row: &Row,
    verifier: &super::client::RoleClient,
    tenant: &super::client::RoleClient,
    seen: &mut HashMap<String, usize>,
) -> anyhow::Result<Outcome> {
    let payload = Zeroizing::new(
        std::fs::read(&row.payload)
            .with_context(|| format!("cannot read {}", row.payload.display()))?,
    );
    if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
        bail!(
            "{}: the payload must be 1 to {MAX_PAYLOAD_LEN} bytes",
            row.payload.display()
        );
    }
    let ek = read_ek(&row.ek_pub)?;
    let agent_id = AgentId::of_ek(&ek);
    if let Some(first) = seen.insert(agent_id.to_string(), row.line) {
        bail!("the same EK as line {first} (agent {agent_id})");
    }
    let path = agent_path(agent_id.as_str());
    let v: Option<EnrollmentInfo> = verifier.get_opt(&path)?;
    let t: Option<EnrollmentInfo> = tenant.get_opt(&path)?;
    match (v.is_some(), t.is_some()) {
        (true, true) => {
            return Ok(Outcome::AlreadyEnrolled {
                agent_id: agent_id.to_string(),
            })
        }
        (true, false) | (false, true) => bail!(
            "agent {agent_id} is enrolled with the {} role only (an interrupted enrollment): \
             run `unlockctl delete {agent_id}`, then this inventory again",
            if v.is_some() { "verifier" } else { "tenant" }
        ),
        (false, false) => {}
    }
    let mut opts = defaults.clone();
    if let Some(name) = &row.policy_name {
        opts.policy = None;
        opts.policy_name = Some(name.clone());
        opts.policy_version = None;
    }
    if let Some(n) = row.max_attestations {
        opts.max_attestations = n;
    }
    if let Some(n) = row.max_boots {
        opts.max_boots = Some(n);
    }
    let agent_id = enroll_bytes(&opts, ek, &payload)?;
    Ok(Outcome::Enrolled {
        agent_id: agent_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_optional_columns_and_comments() {
        let text = "# fleet\nname,ek_pub,payload,max_attestations\nweb-1,ek/1.pub,keys/1.key,2\n\nweb-2, ek/2.pub ,keys/2.key,\n";
        let rows = parse(text, Path::new("/inv")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "web-1");
        assert_eq!(rows[0].ek_pub, PathBuf::from("/inv/ek/1.pub"));
        assert_eq!(rows[0].max_attestations, Some(2));
        assert_eq!(rows[1].ek_pub, PathBuf::from("/inv/ek/2.pub"));
        assert_eq!(rows[1].max_attestations, None);
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn json_inventories_read_like_csv_and_name_the_bad_entry() {
        let csv = parse(
            "name,ek_pub,payload,max_boots\nweb1,a.ek,a.key,3\n",
            Path::new("/inv"),
        )
        .unwrap();
        let json = parse(
            r#"[{"name": "web1", "ek_pub": "a.ek", "payload": "a.key", "max_boots": 3}]"#,
            Path::new("/inv"),
        )
        .unwrap();
        assert_eq!(json.len(), 1);
        assert_eq!(
            (
                &json[0].name,
                &json[0].ek_pub,
                &json[0].payload,
                json[0].max_boots
            ),
            (
                &csv[0].name,
                &csv[0].ek_pub,
                &csv[0].payload,
                csv[0].max_boots
            )
        );
        for (text, want) in [
            (
                r#"[{"ek_pub": "a", "payload": "b"}, {"ek_pub": "a"}]"#,
                "entry 2",
            ),
            (
                r#"[{"ek_pub": "a", "payload": "b", "secret": 1}]"#,
                "entry 1",
            ),
            (
                r#"[{"ek_pub": "a", "payload": "b", "max_boots": 0}]"#,
                "max_boots",
            ),
            (r#"[{"ek_pub": "", "payload": "b"}]"#, "ek_pub is empty"),
            (r#"[{"ek_pub": "a", "payload": "b"}"#, "not a JSON array"),
        ] {
            let e = format!("{:#}", parse(text, Path::new(".")).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn malformed_inventories_are_refused_with_the_line() {
        let cases = [
            ("", "empty"),
            ("ek_pub\nx\n", "payload column is required"),
            ("ek_pub,payload,colour\na,b,c\n", "unknown column"),
            ("ek_pub,payload,ek_pub\na,b,c\n", "twice"),
            ("ek_pub,payload\na\n", "line 2: 1 values for 2 columns"),
            ("ek_pub,payload\n\"a,b\",c\n", "line 2: double quotes"),
            (
                "ek_pub,payload,max_boots\na,b,0\n",
                "line 2: max_boots \"0\"",
            ),
            ("ek_pub,payload,max_boots\na,b,x\n", "not a number"),
            ("ek_pub,payload\n,b\n", "line 2: ek_pub is empty"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(text, Path::new(".")).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
