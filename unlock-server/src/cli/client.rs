//! HTTP(S) client for the roles' admin APIs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use verifier_core::proto::v1::{self, ErrorResponse, Role, Validate};
use zeroize::Zeroizing;

/// Where the roles are and how to reach them.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of a server running both roles (the roles are at URL/verifier and URL/tenant).
    #[arg(long, env = "UNLOCK_SERVER", default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// Verifier role base URL, for split deployments [default: SERVER/verifier].
    #[arg(long)]
    pub verifier: Option<String>,
    /// Tenant role base URL, for split deployments [default: SERVER/tenant].
    #[arg(long)]
    pub tenant: Option<String>,
    /// Admin token file (the server's admin.token) used for both roles.
    #[arg(
        long,
        env = "UNLOCK_TOKEN_FILE",
        default_value = "/var/lib/unlock-server/admin.token"
    )]
    pub token_file: PathBuf,
    /// Admin token file of the tenant role when it differs [default: --token-file].
    #[arg(long)]
    pub tenant_token_file: Option<PathBuf>,
    /// PEM file of the CA(s) that issued the server's TLS certificate (for a self-signed
    /// server, its tls.crt) [default: the system's web PKI roots].
    #[arg(long, env = "UNLOCK_CA")]
    pub ca: Option<PathBuf>,
}

/// A client of one role's admin API.
pub struct RoleClient {
    /// The role.
    pub role: Role,
    base: String,
    token: Zeroizing<String>,
    agent: ureq::Agent,
}

impl Connection {
    /// Clients for both roles.
    pub fn clients(&self) -> anyhow::Result<(RoleClient, RoleClient)> {
        let agent = http_agent(self.ca.as_deref())?;
        let server = self.server.trim_end_matches('/');
        let verifier = self
            .verifier
            .clone()
            .unwrap_or_else(|| format!("{server}/verifier"));
        let tenant = self
            .tenant
            .clone()
            .unwrap_or_else(|| format!("{server}/tenant"));
        let token = read_token(&self.token_file)?;
        let tenant_token = match &self.tenant_token_file {
            Some(p) => read_token(p)?,
            None => token.clone(),
        };
        Ok((
            RoleClient {
                role: Role::Verifier,
                base: verifier.trim_end_matches('/').to_owned(),
                token,
                agent: agent.clone(),
            },
            RoleClient {
                role: Role::Tenant,
                base: tenant.trim_end_matches('/').to_owned(),
                token: tenant_token,
                agent,
            },
        ))
    }
}

fn read_token(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?,
    );
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// An HTTP agent trusting `ca` (or the web PKI roots) (one definition, in the library).
pub fn http_agent(ca: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    unlock_server::tls::client_agent(ca, 30)
}

impl RoleClient {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token.as_str())
    }

    /// `POST path` with a JSON body.
    pub fn post<Req: Serialize + Validate, Resp: DeserializeOwned + Validate>(
        &self,
        path: &str,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        let body = v1::encode(body)?;
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth())
            .content_type("application/json")
            .send(&body[..])
            .with_context(|| format!("{} role at {}", self.role.as_str(), self.base))?;
        self.answer(resp)
    }

    /// `POST path` without a body.
    pub fn post_empty<Resp: DeserializeOwned + Validate>(
        &self,
        path: &str,
    ) -> anyhow::Result<Resp> {
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth())
            .send_empty()
            .with_context(|| format!("{} role at {}", self.role.as_str(), self.base))?;
        self.answer(resp)
    }

    /// `GET path`.
    pub fn get<Resp: DeserializeOwned + Validate>(&self, path: &str) -> anyhow::Result<Resp> {
        let resp = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.auth())
            .call()
            .with_context(|| format!("{} role at {}", self.role.as_str(), self.base))?;
        self.answer(resp)
    }

    /// `GET path`, `None` when the role answers 404 (no such enrollment, policy, ...).
    pub fn get_opt<Resp: DeserializeOwned + Validate>(
        &self,
        path: &str,
    ) -> anyhow::Result<Option<Resp>> {
        let resp = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.auth())
            .call()
            .with_context(|| format!("{} role at {}", self.role.as_str(), self.base))?;
        if resp.status() == ureq::http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.answer(resp).map(Some)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &self.auth())
            .call()
            .with_context(|| format!("{} role at {}", self.role.as_str(), self.base))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(self.error(status, resp))
    }

    fn answer<Resp: DeserializeOwned + Validate>(
        &self,
        resp: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<Resp> {
        let status = resp.status();
        if !status.is_success() {
            return Err(self.error(status, resp));
        }
        let bytes = resp.into_body().read_to_vec()?;
        Ok(v1::decode(&bytes)?)
    }

    fn error(
        &self,
        status: ureq::http::StatusCode,
        resp: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Error {
        let bytes = resp.into_body().read_to_vec().unwrap_or_default();
        match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(e) => anyhow::anyhow!(
                "{} role refused ({}): {}: {}",
                self.role.as_str(),
                status.as_u16(),
                serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                e.message
            ),
            Err(_) => anyhow::anyhow!(
                "{} role answered HTTP {}",
                self.role.as_str(),
                status.as_u16()
            ),
        }
    }
}
