//! The IAK path (config `iak_handle` + `iak_cert`): the AK is the device's IAK, a key its
//! OEM put in the TPM and certified, and registration sends that certificate instead of
//! answering MakeCredential. No activation round: the roles check the certificate and pin
//! the IAK at once. The per-boot challenge, quote and attest steps are the unlock path's.
//!
//! The agent parses no X.509: it only splits a PEM file into DER blocks (base64) and sends
//! them; every check is the server's.

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use verifier_core::proto::v1::{path, ActivateResponse, AgentId, RegisterIakRequest, Role};
use verifier_core::proto::Base64Bytes;

use super::{
    attest_rounds, distinct_bases, endpoints, expect_agent_id, finish, needs_registration, par,
    FlowError, Steps, Unlocked,
};
use crate::config::{Config, IakConfig};
use crate::http::Client;
use crate::tpm::{Ak, Ek, Tpm};

/// Largest IAK certificate file read (a certificate and its intermediates are a few KiB).
const MAX_CERT_FILE: u64 = 64 * 1024;
/// Most certificates sent (the IAK certificate and its intermediates); the protocol's
/// bound.
const MAX_CERTS: usize = verifier_core::proto::v1::MAX_IAK_CHAIN;

/// The IAK from its persistent handle.
pub(super) fn iak(tpm: &mut Tpm, iak: &IakConfig) -> Result<Ak, FlowError> {
    tpm.persistent_key(iak.handle)?
        .ok_or(FlowError::NoIak { handle: iak.handle })
}

/// The boot on the IAK path: straight to the challenges when the roles know the EK's agent
/// id and this IAK; otherwise the EK is derived (its public area names the enrollment),
/// the IAK registered with its certificate at every role, the EK kept, and then the
/// challenges.
pub(super) fn boot(
    config: &Config,
    iak: &IakConfig,
    client: &Client,
    tpm: &mut Tpm,
    ak: &Ak,
    known_ek: Option<AgentId>,
    steps: &mut Steps,
) -> Result<Unlocked, FlowError> {
    if let Some(agent_id) = known_ek {
        match attest_rounds(config, client, tpm, ak, &agent_id, steps) {
            Ok(halves) => return finish(config, tpm, &agent_id, halves, steps),
            Err(e) if needs_registration(&e) => {
                eprintln!("initrd-agent: note: {e}; registering this TPM's IAK certificate");
            }
            Err(e) => return Err(e),
        }
    }
    let certs = read_certs(&iak.cert)?;
    let t = Instant::now();
    let ek = tpm.create_ek(config.ek)?;
    steps.record("ek", t);
    let result = register_and_attest(config, client, tpm, (&ek, ak), certs, steps);
    let _ = tpm.flush_ek(ek);
    result
}

/// Registration alone on the IAK path (`initrd-agent register`).
pub(super) fn register(
    config: &Config,
    iak: &IakConfig,
    client: &Client,
    tpm: &mut Tpm,
    steps: &mut Steps,
) -> Result<AgentId, FlowError> {
    let certs = read_certs(&iak.cert)?;
    let ak = self::iak(tpm, iak)?;
    let ek = tpm.create_ek(config.ek)?;
    let agent_id = AgentId::of_ek(ek.public());
    let result = register_all(
        client,
        (&ek, &ak),
        certs,
        &endpoints(config),
        &agent_id,
        steps,
    );
    if result.is_ok() {
        keep_ek(tpm, &ek);
    }
    let _ = tpm.flush_ek(ek);
    result.map(|()| agent_id)
}

fn register_and_attest(
    config: &Config,
    client: &Client,
    tpm: &mut Tpm,
    (ek, ak): (&Ek, &Ak),
    certs: Vec<Vec<u8>>,
    steps: &mut Steps,
) -> Result<Unlocked, FlowError> {
    let agent_id = AgentId::of_ek(ek.public());
    register_all(
        client,
        (ek, ak),
        certs,
        &endpoints(config),
        &agent_id,
        steps,
    )?;
    keep_ek(tpm, ek);
    let halves = attest_rounds(config, client, tpm, ak, &agent_id, steps)?;
    finish(config, tpm, &agent_id, halves, steps)
}

/// The EK at its TCG handle (when free), so the next boot reads its id back. The IAK is
/// persistent already (the OEM's).
fn keep_ek(tpm: &mut Tpm, ek: &Ek) {
    if let Err(e) = tpm.persist_ek_if_free(ek) {
        eprintln!(
            "initrd-agent: note: the EK was not made persistent ({e}); the next boot registers again"
        );
    }
}

/// `register/iak` with every distinct base URL, in parallel.
fn register_all(
    client: &Client,
    (ek, ak): (&Ek, &Ak),
    mut certs: Vec<Vec<u8>>,
    roles: &[(Role, &str)],
    agent_id: &AgentId,
    steps: &mut Steps,
) -> Result<(), FlowError> {
    let bases = distinct_bases(roles.iter().copied());
    let chain = certs.split_off(1.min(certs.len()));
    let req = RegisterIakRequest {
        ek_pub: Base64Bytes::from(ek.public()),
        ak_pub: Base64Bytes::from(ak.public()),
        iak_cert: Base64Bytes::new(certs.into_iter().next().unwrap_or_default()),
        iak_chain: chain.into_iter().map(Base64Bytes::new).collect(),
    };
    let t = Instant::now();
    let answers = par(&bases, |(_, base)| {
        client.post::<_, ActivateResponse>(base, path::REGISTER_IAK, &req)
    });
    expect_agent_id(bases.iter().map(|b| b.0), answers, agent_id)?;
    steps.record("register-iak", t);
    Ok(())
}

/// The certificates of the `iak_cert` file, IAK certificate first: one DER certificate, or
/// the CERTIFICATE blocks of a PEM file in order.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, FlowError> {
    let bad = |reason| FlowError::IakCert {
        path: path.to_owned(),
        reason,
    };
    let input = |source| FlowError::Input {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(input)?.len();
    if len > MAX_CERT_FILE {
        return Err(bad("larger than 64 KiB"));
    }
    let bytes = std::fs::read(path).map_err(input)?;
    // DER starts with a SEQUENCE tag; anything else is PEM text.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes]);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("neither DER nor PEM text"))?;
    let mut certs = Vec::new();
    let mut rest = text;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let body = rest.get(start + BEGIN.len()..).unwrap_or_default();
        let end = body
            .find(END)
            .ok_or(bad("a BEGIN CERTIFICATE block has no END"))?;
        let b64: String = body
            .get(..end)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("invalid base64 in a CERTIFICATE block"))?;
        if certs.len() == MAX_CERTS {
            return Err(bad("more certificates than the protocol carries (4)"));
        }
        certs.push(der);
        rest = body.get(end + END.len()..).unwrap_or_default();
    }
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_in_order_der_as_is_garbage_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let pem = dir.join("iak.pem");
        std::fs::write(
            &pem,
            "junk\n-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nMAMCAQI=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(
            read_certs(&pem).unwrap(),
            vec![vec![0x30, 3, 2, 1, 1], vec![0x30, 3, 2, 1, 2]]
        );
        let der = dir.join("iak.der");
        std::fs::write(&der, [0x30, 3, 2, 1, 1]).unwrap();
        assert_eq!(read_certs(&der).unwrap(), vec![vec![0x30, 3, 2, 1, 1]]);
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "no certificate here").unwrap();
        assert!(matches!(read_certs(&bad), Err(FlowError::IakCert { .. })));
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(read_certs(&bad), Err(FlowError::IakCert { .. })));
    }
}
