//! `initrd-agent latch`: closes the release "door" on the way out of the initramfs.
//!
//! The release policy requires the release PCR at its initial value. The agent extends it
//! before it writes a released key, but a boot in which the agent released nothing (server
//! unreachable, refused, timed out, `rd.unlock=0`, agent killed) would otherwise switch to
//! the real root with the PCR still initial, and anything running later in that boot could
//! run the agent and get the key. The dracut module's `initrd-agent-latch.service` runs this
//! on every path out of the initramfs: it only extends the release PCR, with the same event
//! as the agent ([`crate::tpm::RELEASE_EVENT`], every active bank). It always extends, even
//! when the agent already did (a second extend is harmless: the PCR is simply not initial),
//! so it does not depend on what the agent did or printed. It talks to no server and ignores
//! `rd.unlock=0`.

use crate::config::LocalConfig;
use crate::flow::FlowError;
use crate::tpm::Tpm;

/// Extends `config.release_pcr` with the release event in every active bank.
pub fn latch(config: &LocalConfig) -> Result<(), FlowError> {
    let mut tpm = Tpm::open(&config.tcti)?;
    tpm.extend_release(config.release_pcr)
        .map_err(FlowError::Tpm)
}
