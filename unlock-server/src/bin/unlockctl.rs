//! `unlockctl`: the operator CLI. Parses the command line and hands it to [`cli::run`]; every
//! subcommand lives in `src/cli/`.
#![forbid(unsafe_code)]

use clap::Parser;

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    // Usage errors exit with status 2 (clap's convention); `run` returns 1 for bad input.
    cli::run(cli::Cli::parse())
}
