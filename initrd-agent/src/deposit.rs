//! `initrd-agent deposit --payload FILE`: on the installed system, enroll this machine
//! itself with roles whose auto-enrollment rules admit its TPM (no admin token).
//!
//! 1. Registers and activates with every role ([`crate::flow::register`]): a role that has
//!    no enrollment for this EK admits it by one of its rules (EK certificate from the
//!    rule's CA, or TOFU where a rule says so) and pins the AK this TPM proves.
//! 2. Makes K_b here, splits it (U for the tenant, V for the verifier) and encrypts the
//!    payload under it ([`verifier_core::keysplit::enroll_material`]); K_b is gone when
//!    that returns, and each role receives only its own part, so neither ever holds K_b.
//! 3. For each role: asks the admission's nonce, quotes the deposit's digest (which covers
//!    that nonce) with the AK the role just pinned, and deposits. The role arms the
//!    enrollment only then, once; a second deposit is refused.
//!
//! `unlockctl bind --auto-enroll` runs this with a fresh LUKS key and adds the key slot.
//! If the verifier accepts and the tenant refuses, the verifier's enrollment cannot unlock
//! anything (it holds V only); an operator deletes it (`unlockctl delete`) before a retry.

use std::path::Path;
use std::time::{Duration, Instant};

use verifier_core::keysplit::{enroll_material, MAX_PAYLOAD_LEN};
use verifier_core::proto::v1::{
    AgentId, Deposit, DepositNonceRequest, DepositNonceResponse, DepositRequest, DepositResponse,
    PcrBank, Role, DEPOSIT_NONCE_PATH, DEPOSIT_PATH,
};
use verifier_core::proto::Base64Bytes;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::flow::{FlowError, Steps};
use crate::http::Client;
use crate::tpm::Tpm;

/// What `deposit` did: the machine, and each role's record of how it admitted it.
#[derive(Debug)]
pub struct Deposited {
    /// The machine's agent id.
    pub agent_id: AgentId,
    /// (role, admitted_by) per role.
    pub roles: Vec<(&'static str, String)>,
}

/// Registers (the roles admit this machine), then deposits each role's part.
pub fn deposit(
    config: &Config,
    payload_file: &Path,
    steps: &mut Steps,
    started: Instant,
) -> Result<Deposited, FlowError> {
    let payload =
        Zeroizing::new(
            std::fs::read(payload_file).map_err(|source| FlowError::Input {
                path: payload_file.to_path_buf(),
                source,
            })?,
        );
    if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
        return Err(FlowError::Change(
            verifier_core::proto::ProtoError::Invalid {
                field: "payload",
                reason: "the payload must be 1 to 65536 bytes",
            },
        ));
    }
    let agent_id = crate::flow::register(config, steps, started)?;
    let material = enroll_material(agent_id.as_str(), &payload).map_err(FlowError::Nk)?;
    let deadline = Instant::now() + config.timeout.max(Duration::from_secs(30));
    let client = Client::new(config, deadline)?;
    let mut tpm = Tpm::open(&config.tcti)?;
    let (ak, _) = tpm.primary_ak()?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for (role, name, base) in [
        (Role::Verifier, "verifier", config.verifier_url.as_str()),
        (Role::Tenant, "tenant", config.tenant_url.as_str()),
    ] {
        let (share, payload_ct) = match role {
            Role::Verifier => (
                material.v.expose_secret().to_vec(),
                Some(Base64Bytes::new(material.payload_ct.as_bytes().to_vec())),
            ),
            Role::Tenant => (material.u.expose_secret().to_vec(), None),
        };
        let d = Deposit {
            agent_id: agent_id.clone(),
            role,
            share: Base64Bytes::new(share),
            payload_ct,
        };
        let r = deposit_one(&client, &mut tpm, &ak, base, name, d);
        match r {
            Ok(resp) => out.push((name, resp.admitted_by)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = tpm.flush_ak(ak);
    result.map(|()| Deposited {
        agent_id,
        roles: out,
    })
}

fn deposit_one(
    client: &Client,
    tpm: &mut Tpm,
    ak: &crate::tpm::Ak,
    base: &str,
    role: &'static str,
    deposit: Deposit,
) -> Result<DepositResponse, FlowError> {
    let http = |source| FlowError::Http { role, source };
    let n: DepositNonceResponse = client
        .post(
            base,
            DEPOSIT_NONCE_PATH,
            &DepositNonceRequest {
                agent_id: deposit.agent_id.clone(),
            },
        )
        .map_err(http)?;
    let digest = deposit
        .digest(n.nonce.as_bytes())
        .map_err(FlowError::Change)?;
    let (quoted, selection) = tpm.sign_with_quote(ak, &digest)?;
    let req = DepositRequest {
        deposit,
        ak_name: Base64Bytes::new(ak.name().to_vec()),
        quote: Base64Bytes::new(quoted.quote.attest),
        signature: Base64Bytes::new(quoted.quote.signature),
        pcrs: crate::flow::pcr_banks(&selection, &quoted.pcrs)
            .into_iter()
            .collect::<Vec<PcrBank>>(),
    };
    client.post(base, DEPOSIT_PATH, &req).map_err(http)
}
