//! `initrd-agent`: see `initrd-agent --help` and the library's `cli` module.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    initrd_agent::run(initrd_agent::Cli::parse())
}
