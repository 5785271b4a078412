//! `initrd-agent`: see `initrd-agent --help` and the library's `cli` module.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    initrd_agent::run(initrd_agent::Cli::parse())
}
