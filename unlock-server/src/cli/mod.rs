//! Subcommands of `unlockctl`. Each subcommand group has its own module; `run` dispatches and
//! turns errors into one line on stderr and an exit status (1: bad input or failure,
//! 2: usage, from clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod audit;
mod bind;
mod client;
mod eventlog;
mod iak;
mod inventory;
mod policy;
mod retire;

/// Operator CLI of the TPM-attested network disk unlock service.
#[derive(Debug, Parser)]
#[command(name = "unlockctl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll a machine: make K_b, split it, deposit V + payload ciphertext with the
    /// verifier role and U with the tenant role.
    Enroll(admin::EnrollArgs),
    /// Enroll many machines from a CSV inventory (EK and payload file per row); machines
    /// already enrolled are skipped, so re-running after a failure enrolls what is missing.
    EnrollInventory(inventory::InventoryArgs),
    /// On the machine itself: read the EK from the TPM, add a fresh random key to a LUKS
    /// key slot of --device, and enroll that key (the `clevis luks bind` experience).
    Bind(bind::BindArgs),
    /// List enrollments of both roles.
    List(admin::ListArgs),
    /// Show one agent's enrollment, boot sessions and recent attempts.
    Status(admin::AgentArgs),
    /// Stop releasing to an agent until it is re-armed.
    Revoke(admin::AgentArgs),
    /// Re-arm an agent: clears TERMINATED state, its boot budget and session history.
    Rearm(admin::AgentArgs),
    /// Delete an agent's enrollment (and its halves) from both roles.
    Delete(admin::AgentArgs),
    /// Release an agent's pinned AK on both roles, when its AK really changed (an agent
    /// with another AK template): the next boot registers and pins anew. Until then another
    /// AK is refused with `ak_not_pinned`. (A TPM replaced or with a new endorsement seed has
    /// a new EK too: that is a new enrollment, refused with `not_enrolled` until enrolled.)
    UnpinAk(admin::AgentArgs),
    /// Bind machines to the device their IAK certificate names (registration by IAK
    /// certificate, no MakeCredential round).
    Iak {
        #[command(subcommand)]
        command: iak::IakCommand,
    },
    /// Inspect UEFI measured-boot event logs.
    Eventlog {
        #[command(subcommand)]
        command: eventlog::EventlogCommand,
    },
    /// The hash-chained audit trail of each role: verify it, tell one machine's story,
    /// export it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Print a shell completion script (e.g. `unlockctl completions bash >
    /// /etc/bash_completion.d/unlockctl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (unlockctl.1 and one per subcommand, unlockctl-<sub>.1) into a
    /// directory.
    Man {
        /// Output directory (created if absent).
        #[arg(long, value_name = "DIR")]
        out_dir: std::path::PathBuf,
    },
    /// Learn and check policies offline; manage named, versioned policies on the server.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Enroll(a) => admin::enroll(&a),
        Command::EnrollInventory(a) => inventory::run(&a),
        Command::Bind(a) => bind::bind(&a),
        Command::List(a) => admin::list(&a),
        Command::Status(a) => admin::status(&a),
        Command::Revoke(a) => admin::revoke(&a),
        Command::Rearm(a) => admin::rearm(&a),
        Command::Delete(a) => admin::delete(&a),
        Command::UnpinAk(a) => admin::unpin_ak(&a),
        Command::Iak { command } => iak::run(command),
        Command::Eventlog { command } => eventlog::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Audit { command } => audit::run(command),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "unlockctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out_dir } => man_pages(&out_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined, so a script can show it as is.
            eprintln!("unlockctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `unlockctl man`: the top page and one page per subcommand (and sub-subcommand), named as
/// git's are (`unlockctl-policy-apply.1`).
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fn write(cmd: clap::Command, name: String, dir: &std::path::Path) -> anyhow::Result<usize> {
        let cmd = cmd.name(name.clone());
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        let mut n = 1;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            n += write(sub.clone(), format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(n)
    }
    let n = write(Cli::command(), "unlockctl".to_owned(), dir)?;
    println!("{n} man pages written to {}", dir.display());
    Ok(())
}
