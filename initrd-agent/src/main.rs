//! `initrd-agent`: not built yet (issue 3). This binary only explains that; the pieces live in
//! the library (`initrd_agent::tpm`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eprintln!("initrd-agent: the attestation agent is not implemented yet (see README.md)");
    std::process::ExitCode::FAILURE
}
