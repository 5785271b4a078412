//! Subcommands of `unlockctl`. Each subcommand group has its own module; `run` dispatches and
//! turns errors into one line on stderr and an exit status (1: bad input or failure,
//! 2: usage, from clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod eventlog;

/// Operator CLI of the TPM-attested network disk unlock service.
#[derive(Debug, Parser)]
#[command(name = "unlockctl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect UEFI measured-boot event logs.
    Eventlog {
        #[command(subcommand)]
        command: eventlog::EventlogCommand,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Eventlog { command } => eventlog::run(command),
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
