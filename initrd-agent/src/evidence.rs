//! `initrd-agent evidence --out FILE`: a snapshot of this machine's measured state for
//! offline policy work (learning a policy, testing one against a known-good boot).
//!
//! Nothing here is signed: it is what the operator looks at, not what a role trusts. The
//! PCR values are of every active bank, 0-23, read in one pass.

use std::path::Path;

use verifier_core::proto::v1::AgentId;
use verifier_core::proto::Base64Bytes;

use crate::config::LocalConfig;
use crate::flow::FlowError;
use crate::logs::{read_event_log, read_ima_log};
use crate::tpm::{full_selection, Tpm};

// The layout is defined once in verifier-core, shared with `unlockctl policy learn|check`.
pub use verifier_core::proto::v1::{CapturedEvidence, EVIDENCE_FORMAT};

/// Captures the evidence from the TPM and the log files.
pub fn capture(config: &LocalConfig) -> Result<CapturedEvidence, FlowError> {
    let mut tpm = Tpm::open(&config.tcti)?;
    let ek = tpm.create_ek(config.ek)?;
    let captured = (|| -> Result<CapturedEvidence, FlowError> {
        let ek_cert = tpm.read_ek_cert(config.ek)?;
        let ak = tpm.create_ak(&ek)?;
        let ak_pub = Base64Bytes::from(ak.public());
        let _ = tpm.flush_ak(ak);
        let banks = tpm.active_banks()?;
        let sel = full_selection(&banks);
        let values = tpm.read_pcrs(&sel)?;
        Ok(CapturedEvidence {
            format: EVIDENCE_FORMAT.to_owned(),
            agent_id: AgentId::of_ek(ek.public()),
            ek: config.ek.config_name().to_owned(),
            ek_pub: Base64Bytes::from(ek.public()),
            ek_cert: ek_cert.map(Base64Bytes::new),
            ak_pub,
            pcrs: crate::flow::pcr_banks(&sel, &values),
            event_log: read_event_log(&config.event_log)?.map(Base64Bytes::new),
            ima_log: read_ima_log(&config.ima_log)?,
            clock_info: None,
        })
    })();
    let _ = tpm.flush_ek(ek);
    captured
}

/// Writes the evidence as pretty JSON.
pub fn write(evidence: &CapturedEvidence, out: &Path) -> Result<(), FlowError> {
    let output = |source| FlowError::Output {
        path: out.to_path_buf(),
        source,
    };
    let mut json = serde_json::to_vec_pretty(evidence).map_err(|e| output(e.into()))?;
    json.push(b'\n');
    std::fs::write(out, json).map_err(output)
}

/// Writes the EK's TPMT_PUBLIC to `out` (what enrollment needs) and returns the agent id.
pub fn write_ek(config: &LocalConfig, out: &Path) -> Result<AgentId, FlowError> {
    let mut tpm = Tpm::open(&config.tcti)?;
    let ek = tpm.create_ek(config.ek)?;
    let public = ek.public().to_vec();
    let _ = tpm.flush_ek(ek);
    std::fs::write(out, &public).map_err(|source| FlowError::Output {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(AgentId::of_ek(&public))
}
