//! `unlockctl eventlog ...`: parse and replay a UEFI event log offline, for a person (a table
//! of events and the replayed PCRs) or a script (`--json`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use verifier_core::eventlog::{
    EventData, EventLog, Finding, IplForm, NoActionEvent, PostCode, VariableValue,
};

#[derive(Debug, Subcommand)]
pub(super) enum EventlogCommand {
    /// Parse FILE (binary_bios_measurements), print its events and the replayed PCRs.
    Replay {
        /// The binary event log.
        file: PathBuf,
        /// Print `{"pcrs": {bank: {index: hex}}, "events": [...], "findings": [...]}`.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(command: EventlogCommand) -> anyhow::Result<()> {
    match command {
        EventlogCommand::Replay { file, json } => replay(&file, json),
    }
}

fn replay(file: &Path, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let log = EventLog::parse(&bytes).with_context(|| format!("{}", file.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        serde_json::to_writer_pretty(&mut out, &json_report(&log))?;
        writeln!(out)?;
    } else {
        human_report(&mut out, &log)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct JsonReport<'l, 'a> {
    pcrs: BTreeMap<&'static str, BTreeMap<String, String>>,
    events: &'l [verifier_core::eventlog::Event<'a>],
    findings: &'l [Finding],
}

fn json_report<'l, 'a>(log: &'l EventLog<'a>) -> JsonReport<'l, 'a> {
    let mut pcrs: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    let replay = log.replay();
    for alg in replay.banks() {
        let bank = pcrs.entry(alg.name()).or_default();
        for (index, value) in replay.bank(alg) {
            bank.insert(index.to_string(), value.to_hex());
        }
    }
    JsonReport {
        pcrs,
        events: log.events(),
        findings: log.findings(),
    }
}

fn human_report(out: &mut impl Write, log: &EventLog<'_>) -> std::io::Result<()> {
    let banks: Vec<&str> = log.banks().iter().map(|a| a.name()).collect();
    writeln!(
        out,
        "format: {:?}, banks: {}, events: {}",
        log.format(),
        banks.join(", "),
        log.events().len()
    )?;
    if let Some(locality) = log.startup_locality() {
        writeln!(
            out,
            "startup locality: {locality} (PCR 0 starts at ..0{locality})"
        )?;
    }
    if log.padding() > 0 {
        writeln!(out, "padding after the last event: {} bytes", log.padding())?;
    }
    writeln!(out)?;
    for e in log.events() {
        let extended = if e.is_extended() {
            ""
        } else {
            " (not extended)"
        };
        // A trust point (pcrIndex 0xffffffff) names no PCR: print it as logged.
        let pcr = if e.pcr_index() == u32::MAX {
            "-".to_owned()
        } else {
            e.pcr_index().to_string()
        };
        writeln!(
            out,
            "#{:<4} PCR {:<2} {}{}: {}",
            e.index(),
            pcr,
            e.event_type(),
            extended,
            summary(&e.decode())
        )?;
        for d in e.digests().as_slice() {
            writeln!(out, "        {:<6} {}", d.alg().name(), d.to_hex())?;
        }
    }
    if !log.findings().is_empty() {
        writeln!(out, "\nfindings:")?;
        for f in log.findings() {
            writeln!(out, "  {}", finding(f))?;
        }
    }
    writeln!(out, "\nreplayed PCRs:")?;
    let replay = log.replay();
    for alg in replay.banks() {
        writeln!(out, "  {alg}:")?;
        for (index, value) in replay.bank(alg) {
            writeln!(out, "    {index:>2}: {value}")?;
        }
    }
    Ok(())
}

fn finding(f: &Finding) -> String {
    match f {
        Finding::DigestMismatch {
            event_index,
            pcr,
            event_type,
            alg,
        } => format!(
            "event {event_index} (PCR {pcr}, {event_type}): {alg} digest is not the hash of \
             the event data"
        ),
        Finding::IncompleteBank { alg, event_index } => {
            format!("{alg} bank not replayed: event {event_index} carries no {alg} digest")
        }
        Finding::LateStartupLocality { event_index } => {
            format!("event {event_index}: StartupLocality after PCR 0 was extended, ignored")
        }
        other => format!("{other:?}"),
    }
}

/// One short line describing an event's content.
fn summary(data: &EventData<'_>) -> String {
    const MAX: usize = 100;
    let s = match data {
        EventData::NoAction(n) => match n {
            NoActionEvent::SpecId(s) => {
                let algs: Vec<String> = s
                    .algorithms
                    .iter()
                    .map(|a| format!("0x{:04x}/{}", a.algorithm_id, a.digest_size))
                    .collect();
                format!("Spec ID Event03, algorithms {}", algs.join(" "))
            }
            NoActionEvent::StartupLocality { locality } => {
                format!("StartupLocality {locality}")
            }
            NoActionEvent::Sp800155 {
                signature,
                platform_manufacturer,
                platform_model,
                ..
            } => format!("{signature}: {platform_manufacturer} {platform_model}"),
            NoActionEvent::Other { signature } => format!("{signature:?}"),
        },
        EventData::Separator { value } => format!("separator 0x{value:08x}"),
        EventData::Action { text } | EventData::Text { text } => format!("{text:?}"),
        EventData::PostCode(PostCode::Text { text }) => format!("{text:?}"),
        EventData::PostCode(PostCode::Blob { base, length })
        | EventData::FirmwareBlob { base, length } => {
            format!("blob at 0x{base:x}, {length} bytes")
        }
        EventData::SCrtmVersion { version } => format!("{version:?}"),
        EventData::FirmwareBlob2 {
            description,
            base,
            length,
        } => format!("{description:?} at 0x{base:x}, {length} bytes"),
        EventData::HandoffTables {
            description,
            tables,
        } => format!("{description:?} {} table(s)", tables.len()),
        EventData::Variable(v) => {
            let value = match &v.value {
                VariableValue::SecureBoot { value } => match value {
                    Some(1) => "enabled".to_string(),
                    Some(v) => format!("= {v}"),
                    None => "empty".to_string(),
                },
                VariableValue::SignatureDb { lists } => {
                    let n: usize = lists.iter().map(|l| l.signatures.len()).sum();
                    format!("{n} signature(s) in {} list(s)", lists.len())
                }
                VariableValue::Authority(s) => {
                    format!("owner {}, {} bytes", s.owner, s.data.len())
                }
                VariableValue::BootOrder { order } => {
                    let o: Vec<String> = order.iter().map(|n| format!("{n:04X}")).collect();
                    o.join(",")
                }
                VariableValue::LoadOption(o) => match &o.file_path {
                    Some(p) => format!("{:?} {p}", o.description),
                    None => format!("{:?}", o.description),
                },
                _ => format!("{} bytes", v.data.len()),
            };
            format!("{} {value}", v.name)
        }
        EventData::ImageLoad(i) => match &i.file_path {
            Some(p) => format!("{p} ({} bytes)", i.image_length),
            None => format!("image of {} bytes", i.image_length),
        },
        EventData::Gpt(g) => format!("disk {}, {} partition(s)", g.disk_guid, g.partitions.len()),
        EventData::Ipl(i) => match i.form {
            IplForm::GrubCommand => format!("grub_cmd: {}", i.text),
            IplForm::KernelCmdline => format!("kernel_cmdline: {}", i.text),
            _ => format!("{:?}", i.text),
        },
        EventData::CompactHash { data } => format!("{} bytes", data.len()),
        EventData::EventTag { id, data } => format!("tag 0x{id:08x}, {} bytes", data.len()),
        EventData::Raw { note: Some(note) } => format!("undecoded: {note}"),
        _ => String::new(),
    };
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        s
    }
}
