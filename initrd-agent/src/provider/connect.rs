//! Connect mode (`initrd-agent provider --server URL --token-file F`): the host TPM serving
//! `unlock-server --role provider`. The host initiates, as an agent does: it announces its
//! AK and event log (hello), long-polls for the next batch root, quotes it with the host
//! TPM and posts the quote; on any error it says hello again after a backoff. The server
//! batches requesters and verifies every quote before they see it (`docs/provider.md`).
//!
//! The host only ever signs `host_extra_data(root)`: a job carries the root, never the
//! qualifying data, so a compromised server cannot make the host's AK sign anything but a
//! provider-labelled quote.

use std::path::PathBuf;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
use verifier_core::proto::v1::{
    self, ErrorResponse, HostHelloRequest, HostHelloResponse, HostJob, HostNextRequest,
    HostQuotePost, HostQuoteResponse, Id, Validate, HOST_HELLO_PATH, HOST_NEXT_PATH,
    HOST_RESULT_PATH,
};
use zeroize::Zeroizing;

use super::batch::HostQuoter;
use super::{ProviderError, TpmQuoter};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Base URL of the provider server (`https://host:8443`).
    pub server: String,
    /// File holding the host bearer token (the server's `host.token`).
    pub token_file: PathBuf,
    /// CA bundle (PEM) for an https server.
    pub ca: Option<PathBuf>,
}

/// Why one round with the server ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The server could not be reached or the exchange broke.
    #[error("{url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What ureq said.
        message: String,
    },
    /// The server refused (4xx/5xx) with its reason.
    #[error("{url}: HTTP {status}: {message}")]
    Refused {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A message did not encode or decode.
    #[error("{0}")]
    Proto(#[from] verifier_core::proto::ProtoError),
    /// The host TPM failed to quote.
    #[error("host quote: {0}")]
    Tpm(#[from] crate::tpm::TpmError),
}

/// First wait after an error; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Link {
    http: ureq::Agent,
    base: String,
    token: Zeroizing<String>,
}

impl Link {
    /// POSTs `req`; `Ok(None)` on 204.
    fn post<Req, Resp>(&self, path: &str, req: &Req) -> Result<Option<Resp>, LinkError>
    where
        Req: serde::Serialize + Validate,
        Resp: serde::de::DeserializeOwned + Validate,
    {
        let url = format!("{}{path}", self.base);
        let body = v1::encode(req)?;
        let transport = |e: ureq::Error| LinkError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let resp = self
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token.as_str()))
            .content_type("application/json")
            .send(&body[..])
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let answer = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(transport)?;
        match status {
            204 => Ok(None),
            200..=299 => Ok(Some(v1::decode(&answer)?)),
            _ => Err(LinkError::Refused {
                url,
                status,
                message: v1::decode::<ErrorResponse>(&answer)
                    .map(|e| e.message.chars().filter(|c| !c.is_control()).collect())
                    .unwrap_or_default(),
            }),
        }
    }
}

/// Runs connect mode until killed, or until the server refuses the token (401).
pub fn run(
    config: &ConnectConfig,
    quoter: &mut TpmQuoter,
    event_log: Option<Vec<u8>>,
    ak_name_hex: &str,
) -> Result<std::convert::Infallible, ProviderError> {
    let token = std::fs::read_to_string(&config.token_file)
        .map(|t| Zeroizing::new(t.trim().to_owned()))
        .map_err(|source| ProviderError::TokenFile {
            path: config.token_file.clone(),
            source,
        })?;
    let roots = match &config.ca {
        Some(ca) => crate::http::load_ca_bundle(ca).map_err(ProviderError::Tls)?,
        None => Vec::new(),
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .root_certs(RootCerts::from(roots))
        .build();
    let http = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        // Longer than the server's poll (25 s) and a hardware quote.
        .timeout_global(Some(Duration::from_secs(90)))
        .user_agent(concat!("initrd-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let link = Link {
        http,
        base: config.server.trim_end_matches('/').to_owned(),
        token,
    };
    let hello = HostHelloRequest {
        ak_pub: quoter.ak_public().into(),
        event_log: event_log.map(Into::into),
    };
    let mut backoff = FIRST_BACKOFF;
    let mut announced = false;
    loop {
        match session(
            &link,
            &hello,
            quoter,
            &mut announced,
            &mut backoff,
            ak_name_hex,
        ) {
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(LinkError::Refused { status: 401, .. }) => {
                return Err(ProviderError::Unauthorized(config.token_file.clone()))
            }
            Err(e) => {
                eprintln!(
                    "initrd-agent: provider: {e}; reconnecting in {} s",
                    backoff.as_secs()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One session: hello, then poll → quote → post until an error.
fn session(
    link: &Link,
    hello: &HostHelloRequest,
    quoter: &mut TpmQuoter,
    announced: &mut bool,
    backoff: &mut Duration,
    ak_name_hex: &str,
) -> Result<(), LinkError> {
    let Some(h) = link.post::<_, HostHelloResponse>(HOST_HELLO_PATH, hello)? else {
        return Err(LinkError::Refused {
            url: HOST_HELLO_PATH.into(),
            status: 204,
            message: "empty answer to hello".into(),
        });
    };
    if !*announced {
        // The first stdout line, like listen mode's (tests and operators read it).
        println!(
            "initrd-agent: provider connected to {} (AK name {ak_name_hex})",
            link.base
        );
        *announced = true;
    }
    // Connected: the next failure starts the backoff from the beginning again.
    *backoff = FIRST_BACKOFF;
    let session_id: Id = h.session_id;
    loop {
        let next = HostNextRequest {
            session_id: session_id.clone(),
        };
        let Some(job) = link.post::<_, HostJob>(HOST_NEXT_PATH, &next)? else {
            continue;
        };
        let q = quoter.quote(&job.root()?)?;
        let post = HostQuotePost {
            session_id: session_id.clone(),
            job_id: job.job_id,
            quote: q.attest.into(),
            signature: q.signature.into(),
            pcrs: HostQuoteResponse::banks_of(&q.pcrs),
        };
        match link.post::<_, NoBody>(HOST_RESULT_PATH, &post) {
            // The server refused this quote and failed its batch (403), or the job is gone
            // (404: it timed out while the TPM was slow); the session goes on. Had the
            // session itself been replaced, the next poll ends it.
            Err(
                e @ LinkError::Refused {
                    status: 403 | 404, ..
                },
            ) => {
                eprintln!("initrd-agent: provider: quote not taken: {e}");
            }
            r => {
                r?;
            }
        }
    }
}

/// The empty answer of a quote post (`204`).
#[derive(Debug, serde::Deserialize)]
struct NoBody {}

impl Validate for NoBody {
    fn validate(&self) -> Result<(), verifier_core::proto::ProtoError> {
        Ok(())
    }
}
