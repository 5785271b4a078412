//! The initramfs agent: attests the machine with its TPM (through `tss-esapi`) to the unlock
//! server's verifier and tenant roles, receives the two halves of the boot key sealed to an
//! ephemeral key, decrypts the LUKS key and writes it for systemd-cryptsetup. Everything it
//! sends is checked again by the server with `verifier-core`; the agent checks its own quote
//! with the same code before sending it.
//!
//! Modules: [`config`] (TOML + kernel command line), [`tpm`] (EK, AK, activation, PCRs,
//! quote, release extend), [`http`] (ureq + rustls/ring with deadlines and retries),
//! [`flow`] (the protocol), [`keyfile`] (atomic 0400 write), [`logs`] (event log, IMA),
//! [`evidence`] (offline capture), [`latch`] (the release-PCR extend on every way out of the
//! initramfs) and [`cli`] (arguments, console lines, exit codes).
#![forbid(unsafe_code)]

pub mod allow;
pub mod cli;
pub mod config;
pub mod deposit;
pub mod evidence;
pub mod flow;
pub mod http;
pub mod keyfile;
pub mod latch;
pub mod logs;
pub mod provider;
pub mod tls;
pub mod tpm;

pub use cli::{run, Cli};
