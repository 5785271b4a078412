//! `unlockctl iak`: binding enrollments to the device their IAK certificate names, so the
//! machine may register with the certificate instead of MakeCredential.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use verifier_core::ekcert::{iak_identity, pem_certificates};
use verifier_core::proto::v1::{admin_path, AgentId, IakBindRequest, IakBindResponse};

use super::client::Connection;

/// `unlockctl iak ...`.
#[derive(Debug, Subcommand)]
pub enum IakCommand {
    /// Bind an enrolled machine (on both roles) to the device its IAK certificate names:
    /// the certificate's hardwareModuleName (hwType and hwSerialNum). The device's IDevID
    /// certificate names the same device and may be given instead. Only an IAK certificate
    /// naming that device, issued by a CA the server trusts (--iak-ca), is then accepted as
    /// the machine's AK proof. Nothing is checked against a CA here.
    Bind(BindArgs),
    /// Print the device identity an IAK (or IDevID) certificate names, without binding.
    Show {
        /// The certificate (PEM or DER; the first PEM block is used).
        #[arg(long, visible_alias = "idevid-cert", value_name = "FILE")]
        iak_cert: PathBuf,
    },
}

/// `unlockctl iak bind`.
#[derive(Debug, Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// The agent id (64 hex characters, printed by `enroll` and `list`).
    pub agent_id: String,
    /// The machine's IAK (or IDevID) certificate (PEM or DER; the first PEM block is used).
    #[arg(long, visible_alias = "idevid-cert", value_name = "FILE")]
    pub iak_cert: PathBuf,
}

/// Runs an `iak` subcommand.
pub fn run(command: IakCommand) -> anyhow::Result<()> {
    match command {
        IakCommand::Bind(a) => bind(&a),
        IakCommand::Show { iak_cert } => {
            let id = identity(&iak_cert)?;
            println!("{id}");
            Ok(())
        }
    }
}

fn identity(path: &Path) -> anyhow::Result<verifier_core::ekcert::IakIdentity> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // DER starts with a SEQUENCE tag; anything else is read as PEM text.
    let der = if bytes.first() != Some(&0x30) {
        pem_certificates(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .into_iter()
            .next()
            .unwrap_or_default()
    } else {
        bytes
    };
    iak_identity(&der).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn bind(args: &BindArgs) -> anyhow::Result<()> {
    let agent_id = AgentId::try_from(args.agent_id.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.agent_id))?;
    let id = identity(&args.iak_cert)?;
    let req = IakBindRequest {
        agent_id: agent_id.clone(),
        identity: id.key(),
    };
    let (verifier, tenant) = args.conn.clients()?;
    let v = verifier.post::<_, IakBindResponse>(admin_path::IAK_BINDINGS, &req);
    let t = tenant.post::<_, IakBindResponse>(admin_path::IAK_BINDINGS, &req);
    match (v, t) {
        (Ok(_), Ok(_)) => {
            println!("bound agent {agent_id} to IAK identity {id} on both roles");
            Ok(())
        }
        (v, t) => {
            let msg = |r: anyhow::Result<IakBindResponse>| {
                r.map_or_else(|e| format!("{e:#}"), |_| "bound".into())
            };
            bail!("verifier: {}; tenant: {}", msg(v), msg(t))
        }
    }
}
