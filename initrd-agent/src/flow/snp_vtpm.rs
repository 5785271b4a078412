//! The unlock of an Azure SEV-SNP confidential VM (`evidence = "snp-vtpm"`).
//!
//! The per-boot flow is the TPM's (challenges from both roles, one quote, U and V sealed to
//! NK, the release PCR extended). Only the AK and its registration differ:
//!
//! - The AK is the vTPM's own, at persistent handle `0x81000003` (made by Azure's
//!   paravisor), not one the agent derives: the HCL report vouches for that key alone.
//! - Registration sends the vTPM's EK and AK public areas, the HCL report read from NV
//!   index `0x01400001`, and the VCEK certificate from [`Config::vcek_file`] to
//!   `/v1/register/snp-vtpm`; the role verifies them and pins the AK. No MakeCredential.
//!
//! The agent parses none of it (no X.509, no report parsing): it reads bytes and sends them.

use std::time::Instant;

use verifier_core::proto::v1::{path, ActivateResponse, AgentId, SnpVtpmRegisterRequest};
use verifier_core::proto::Base64Bytes;

use super::{
    attest_rounds, distinct_bases, endpoints, expect_agent_id, finish, needs_registration, par,
    FlowError, Steps, Unlocked,
};
use crate::config::Config;
use crate::http::Client;
use crate::tpm::{Ak, Tpm, TpmError};

/// The unlock with the vTPM's AK: straight to the challenges when the EK is kept and the
/// roles know the AK; otherwise register (report, VCEK) first.
pub(super) fn unlock(
    config: &Config,
    steps: &mut Steps,
    started: Instant,
) -> Result<Unlocked, FlowError> {
    let client = Client::new(config, started + config.timeout)?;
    let t = Instant::now();
    let mut tpm = Tpm::open(&config.tcti)?;
    let ak = tpm.vtpm_ak()?.ok_or(TpmError::Unsupported(
        "no key at the vTPM AK handle 0x81000003: not an Azure SEV-SNP confidential VM \
         (set evidence = \"tpm\" in the agent's configuration)",
    ))?;
    let known_ek = tpm.persistent_ek_id(config.ek)?;
    steps.record("tpm", t);
    if let Some(agent_id) = known_ek {
        match attest_rounds(config, &client, &mut tpm, &ak, &agent_id, steps) {
            Ok(halves) => return finish(config, &mut tpm, &agent_id, halves, steps),
            Err(e) if needs_registration(&e) => {
                eprintln!("initrd-agent: note: {e}; registering this vTPM's report and AK");
            }
            Err(e) => return Err(e),
        }
    }
    let t = Instant::now();
    let ek = tpm.create_ek(config.ek)?;
    let result = (|| {
        steps.record("ek", t);
        let agent_id = AgentId::of_ek(ek.public());
        register(
            config,
            &client,
            &mut tpm,
            (ek.public(), &ak),
            &agent_id,
            steps,
        )?;
        if let Err(e) = tpm.persist_ek_if_free(&ek) {
            eprintln!(
                "initrd-agent: note: the EK was not made persistent ({e}); the next boot registers again"
            );
        }
        let halves = attest_rounds(config, &client, &mut tpm, &ak, &agent_id, steps)?;
        finish(config, &mut tpm, &agent_id, halves, steps)
    })();
    let _ = tpm.flush_ek(ek);
    let _ = tpm.flush_ak(ak);
    result
}

/// Registration alone (`initrd-agent register` at enrollment): the vTPM's EK derived,
/// the report and VCEK sent to every role, the EK kept at its handle.
pub(super) fn register_only(
    config: &Config,
    steps: &mut Steps,
    started: Instant,
) -> Result<AgentId, FlowError> {
    let client = Client::new(config, started + config.timeout)?;
    let mut tpm = Tpm::open(&config.tcti)?;
    let ak = tpm.vtpm_ak()?.ok_or(TpmError::Unsupported(
        "no key at the vTPM AK handle 0x81000003: not an Azure SEV-SNP confidential VM",
    ))?;
    let ek = tpm.create_ek(config.ek)?;
    let agent_id = AgentId::of_ek(ek.public());
    let result = register(
        config,
        &client,
        &mut tpm,
        (ek.public(), &ak),
        &agent_id,
        steps,
    );
    if result.is_ok() {
        if let Err(e) = tpm.persist_ek_if_free(&ek) {
            eprintln!("initrd-agent: note: the EK was not made persistent ({e})");
        }
    }
    let _ = tpm.flush_ek(ek);
    let _ = tpm.flush_ak(ak);
    result.map(|()| agent_id)
}

/// Registration with every distinct role base: the report, the VCEK and the two public
/// areas, in one request each; the answer names the agent id the role pinned the AK for.
fn register(
    config: &Config,
    client: &Client,
    tpm: &mut Tpm,
    (ek_pub, ak): (&[u8], &Ak),
    agent_id: &AgentId,
    steps: &mut Steps,
) -> Result<(), FlowError> {
    let t = Instant::now();
    let hcl_report = tpm.read_hcl_report()?.ok_or(TpmError::Unsupported(
        "no HCL report at NV index 0x01400001: not an Azure SEV-SNP confidential VM",
    ))?;
    let vcek = std::fs::read(&config.vcek_file).map_err(|source| FlowError::Input {
        path: config.vcek_file.clone(),
        source,
    })?;
    let req = SnpVtpmRegisterRequest {
        ek_pub: Base64Bytes::from(ek_pub),
        ak_pub: Base64Bytes::from(ak.public()),
        hcl_report: Base64Bytes::new(hcl_report),
        vcek: Base64Bytes::new(vcek),
    };
    let bases = distinct_bases(endpoints(config));
    let answers = par(&bases, |(_, base)| {
        client.post::<_, ActivateResponse>(base, path::REGISTER_SNP_VTPM, &req)
    });
    expect_agent_id(bases.iter().map(|b| b.0), answers, agent_id)?;
    steps.record("register", t);
    Ok(())
}
