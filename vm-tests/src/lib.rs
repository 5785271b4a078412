//! VM boot tests of the real initramfs (dracut's with `dracut-module/91unlock`, and
//! initramfs-tools' with `initramfs-tools/`): QEMU (TCG by default) with an swtpm TPM,
//! SeaBIOS or OVMF, a LUKS root disk, and the real `unlock-server` on the host's loopback,
//! reached from the guest at `10.0.2.100:8443` through QEMU's user network.
//!
//! What is built once per run and cached under `target/vm-tests/` (keyed by the inputs'
//! contents): the release `initrd-agent`, `unlock-server` and `unlockctl`, a pruned kernel
//! module tree, the initramfs (our dracut module plus the test-only `99unlock-test`; the
//! initramfs-tools one with our hook plus the test-only `unlock-test` hook, on first use), the
//! LUKS root image and the server's TLS identity (baked into the initramfs as the agent's
//! CA bundle). Each scenario then starts its own swtpm(s) and server and boots.
//!
//! This crate is test support: a failure anywhere is a failed test, so it panics with a
//! message saying what to fix instead of threading errors through every helper.

#![forbid(unsafe_code)]
// Test harness: every panic here is a test failure with its reason (see the module doc).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod artifacts;
pub mod console;
pub mod env;
pub mod policy;
pub mod server;
pub mod tpm;
pub mod update;
pub mod vm;

pub use artifacts::Artifacts;
pub use console::{AgentRun, Boot, LATER_READY};
pub use env::Env;
pub use server::Server;
pub use tpm::Tpm;
pub use vm::{Firmware, Generator, VmConfig};
