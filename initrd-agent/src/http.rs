//! HTTPS to the roles: ureq on rustls with the aws-lc-rs provider, trusting only the
//! configured CA bundle.
//!
//! Every request has a deadline (the step timeout, cut to what is left of the overall
//! budget). Connection failures and 5xx answers are retried with exponential backoff; a 4xx
//! is a refusal and is never retried. Retrying is safe for every v1 call: register and
//! challenge create fresh server state, and an attest is resent with the *same bytes* (the
//! body is encoded once), which the server answers with the same sealed half without counting
//! a second release.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use verifier_core::proto::v1::{self, ErrorCode, ErrorResponse, Validate, MAX_MESSAGE_BYTES};
use verifier_core::proto::ProtoError;

use crate::config::Config;

/// First retry delay; doubled per retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest delay between retries. Short: in the initramfs the agent starts while the
/// network is still coming up, and every second of backoff after the link is up is a
/// second added to the boot (the overall budget still bounds the retries).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The CA bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The file could not be read.
    #[error("cannot read CA bundle {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not PEM certificates.
    #[error("CA bundle {} is not valid PEM: {message}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// The PEM parser's description.
        message: String,
    },
    /// The file holds no certificate.
    #[error("CA bundle {} holds no CERTIFICATE block", .0.display())]
    Empty(std::path::PathBuf),
}

/// A request did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The role answered with a 4xx and a reason: a refusal. Not retried.
    #[error("{}: {message}", code_name(*code))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The stable reason.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server could not be reached (or kept failing with 5xx) within the retries.
    #[error("{url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the last attempt saw.
        detail: String,
    },
    /// The overall budget ran out.
    #[error("{url}: no answer within the time budget")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name): not retried, since
    /// it will not change and may be an attack.
    #[error("{url}: TLS failed: {detail}")]
    Tls {
        /// The URL.
        url: String,
        /// rustls' description.
        detail: String,
    },
    /// The answer is not a valid v1 message of the expected type.
    #[error("{url}: HTTP {status} answer is not a valid message: {reason}")]
    BadAnswer {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The decoding or validation failure.
        reason: ProtoError,
    },
    /// The answer has a status that v1 does not use (redirects, 1xx).
    #[error("{url}: unexpected HTTP status {status}")]
    UnexpectedStatus {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// Our own request does not encode (a bug: every field is produced locally).
    #[error("request does not encode: {0}")]
    Encode(ProtoError),
}

impl HttpError {
    /// True for failures of the network or the server's availability (exit code 2), false
    /// for answers (refusals, malformed answers).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Tls { .. }
        )
    }
}

/// The snake_case wire name of an error code (as the server sent it).
pub fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// An HTTP client bound to the agent's deadlines.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    step_timeout: Duration,
    retries: u32,
    deadline: Instant,
}

/// Outcome of one attempt.
enum Attempt {
    Done(u16, Vec<u8>),
    Retry(String),
    Fail(HttpError),
}

impl Client {
    /// A client for `config`, whose overall budget ends at `deadline`. Loads the CA bundle
    /// when any role URL is https.
    pub fn new(config: &Config, deadline: Instant) -> Result<Self, TlsSetupError> {
        let needs_tls = [&config.verifier_url, &config.tenant_url]
            .iter()
            .any(|u| u.starts_with("https://"));
        let roots = if needs_tls {
            load_ca_bundle(&config.ca_bundle)?
        } else {
            Vec::new()
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(RootCerts::from(roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(!config.insecure_http)
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("initrd-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            step_timeout: config.step_timeout,
            retries: config.retries,
            deadline,
        })
    }

    /// Encodes `req`, POSTs it to `{base}{path}` and decodes the answer.
    pub fn post<Req, Resp>(&self, base: &str, path: &str, req: &Req) -> Result<Resp, HttpError>
    where
        Req: Serialize + Validate,
        Resp: DeserializeOwned + Validate,
    {
        let body = v1::encode(req).map_err(HttpError::Encode)?;
        self.post_encoded(base, path, &body)
    }

    /// POSTs an already encoded body; retries resend exactly these bytes.
    pub fn post_encoded<Resp>(&self, base: &str, path: &str, body: &[u8]) -> Result<Resp, HttpError>
    where
        Resp: DeserializeOwned + Validate,
    {
        let url = format!("{base}{path}");
        let (status, answer) = self.exchange(&url, body)?;
        let bad = |reason| HttpError::BadAnswer {
            url: url.clone(),
            status,
            reason,
        };
        match status {
            200..=299 => v1::decode::<Resp>(&answer).map_err(bad),
            400..=499 => {
                let e = v1::decode::<ErrorResponse>(&answer).map_err(bad)?;
                Err(HttpError::Refused {
                    status,
                    code: e.code,
                    message: printable(&e.message),
                })
            }
            _ => Err(HttpError::UnexpectedStatus { url, status }),
        }
    }

    /// Sends with retries; returns the final status (never 5xx) and body.
    fn exchange(&self, url: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 0..=self.retries {
            let now = Instant::now();
            let Some(left) = self
                .deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            else {
                return Err(self.out_of_time(url, &last));
            };
            if attempt > 0 {
                if left <= backoff {
                    return Err(self.out_of_time(url, &last));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.out_of_time(url, &last));
            }
            match self.attempt(url, body, self.step_timeout.min(left)) {
                Attempt::Done(status, answer) => return Ok((status, answer)),
                Attempt::Retry(detail) => last = detail,
                Attempt::Fail(e) => return Err(e),
            }
        }
        Err(HttpError::Unreachable {
            url: url.to_owned(),
            detail: format!("{last} (after {} attempts)", self.retries + 1),
        })
    }

    fn out_of_time(&self, url: &str, last: &str) -> HttpError {
        if last.is_empty() {
            HttpError::Timeout {
                url: url.to_owned(),
            }
        } else {
            HttpError::Unreachable {
                url: url.to_owned(),
                detail: format!("{last} (time budget exhausted)"),
            }
        }
    }

    fn attempt(&self, url: &str, body: &[u8], timeout: Duration) -> Attempt {
        let sent = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .send(body);
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return classify(url, e),
        };
        let status = resp.status().as_u16();
        let limit = u64::try_from(MAX_MESSAGE_BYTES).unwrap_or(u64::MAX);
        let answer = match resp.body_mut().with_config().limit(limit).read_to_vec() {
            Ok(a) => a,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Attempt::Fail(HttpError::BadAnswer {
                    url: url.to_owned(),
                    status,
                    reason: ProtoError::MessageTooLarge {
                        len: MAX_MESSAGE_BYTES + 1,
                        max: MAX_MESSAGE_BYTES,
                    },
                })
            }
            Err(e) => return classify(url, e),
        };
        if (500..=599).contains(&status) {
            let why = match v1::decode::<ErrorResponse>(&answer) {
                Ok(e) => format!(
                    "HTTP {status} {}: {}",
                    code_name(e.code),
                    printable(&e.message)
                ),
                Err(_) => format!("HTTP {status}"),
            };
            return Attempt::Retry(why);
        }
        Attempt::Done(status, answer)
    }
}

/// Sorts a transport error into retry or fail.
fn classify(url: &str, e: ureq::Error) -> Attempt {
    // rustls reports handshake failures through the I/O layer.
    let tls_in_io = match &e {
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    };
    if tls_in_io {
        return Attempt::Fail(HttpError::Tls {
            url: url.to_owned(),
            detail: e.to_string(),
        });
    }
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => Attempt::Fail(HttpError::Tls {
            url: url.to_owned(),
            detail: e.to_string(),
        }),
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(_)
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => Attempt::Retry(e.to_string()),
        other => Attempt::Fail(HttpError::Unreachable {
            url: url.to_owned(),
            detail: other.to_string(),
        }),
    }
}

/// A server's message, cut and stripped of control characters so it cannot garble the
/// console.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(v1::MAX_ERROR_MESSAGE)
        .collect()
}

/// Loads the CA certificates to trust from a PEM bundle.
pub fn load_ca_bundle(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let der = item.map_err(|e| TlsSetupError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        certs.push(Certificate::from_der(der.as_ref()).to_owned());
    }
    if certs.is_empty() {
        return Err(TlsSetupError::Empty(path.to_path_buf()));
    }
    Ok(certs)
}
