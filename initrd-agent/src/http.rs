//! HTTPS to the roles: ureq on rustls with the ring provider, trusting only the
//! configured CA bundle.
//!
//! Every request has a deadline (the step timeout, cut to what is left of the overall
//! budget). Connection failures and 5xx, 408 and 429 answers are retried with exponential
//! backoff; any other 4xx is a refusal and is never retried. Retrying is safe for every v1 call: register and
//! challenge create fresh server state, and an attest is resent with the *same bytes* (the
//! body is encoded once), which the server answers with the same sealed half without counting
//! a second release.
//!
//! Each request carries a random id (`x-request-id`), the same across its retries; the
//! server logs under it and a failure's console line prints it, so an operator can go from
//! the console of a machine that did not unlock to the server's log lines about it.

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
        /// The id the request was sent with (the server logs under it).
        request_id: String,
    },
    /// The server could not be reached (or kept failing with 5xx) within the retries.
    #[error("{url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the last attempt saw.
        detail: String,
        /// The id the request was sent with.
        request_id: String,
    },
    /// The overall budget ran out.
    #[error("{url}: no answer within the time budget")]
    Timeout {
        /// The URL.
        url: String,
        /// The id the request was sent with.
        request_id: String,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name): not retried, since
    /// it will not change and may be an attack.
    #[error("{url}: TLS failed: {detail}")]
    Tls {
        /// The URL.
        url: String,
        /// rustls' description.
        detail: String,
        /// The id the request was sent with.
        request_id: String,
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

    /// The id the failed request was sent with, for the console line (None when no request
    /// was sent or the failure is about the answer's content).
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Refused { request_id, .. }
            | Self::Unreachable { request_id, .. }
            | Self::Timeout { request_id, .. }
            | Self::Tls { request_id, .. } => Some(request_id),
            _ => None,
        }
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
    /// Counts against the retries: the server was reached and said "not now", or the
    /// connection failed on the way.
    Retry(String),
    /// This machine has no route yet (no address, no link): in the initramfs the network
    /// is often still coming up when the agent starts. Retried until the overall deadline
    /// without spending a retry, so a slow DHCP does not become a passphrase prompt.
    NoNetwork(String),
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
            .unversioned_rustls_crypto_provider(crate::tls::provider())
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
        let request_id = new_request_id();
        let (status, answer) = self.exchange(&url, body, &request_id)?;
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
                    request_id,
                })
            }
            _ => Err(HttpError::UnexpectedStatus { url, status }),
        }
    }

    /// Sends with retries; returns the final status (never 5xx) and body. Bounded by the
    /// overall deadline, and by `retries` for failures that count (see [`Attempt`]).
    fn exchange(&self, url: &str, body: &[u8], rid: &str) -> Result<(u16, Vec<u8>), HttpError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        let mut counted = 0u32;
        let mut tries = 0u32;
        loop {
            let Some(left) = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Err(self.out_of_time(url, &last, rid));
            };
            if tries > 0 {
                if left <= backoff {
                    return Err(self.out_of_time(url, &last, rid));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.out_of_time(url, &last, rid));
            }
            tries = tries.saturating_add(1);
            match self.attempt(url, body, rid, self.step_timeout.min(left)) {
                Attempt::Done(status, answer) => return Ok((status, answer)),
                Attempt::NoNetwork(detail) => last = detail,
                Attempt::Retry(detail) => {
                    last = detail;
                    counted = counted.saturating_add(1);
                    if counted > self.retries {
                        return Err(HttpError::Unreachable {
                            url: url.to_owned(),
                            detail: format!("{last} (after {tries} attempts)"),
                            request_id: rid.to_owned(),
                        });
                    }
                }
                Attempt::Fail(e) => return Err(e),
            }
        }
    }

    fn out_of_time(&self, url: &str, last: &str, rid: &str) -> HttpError {
        if last.is_empty() {
            HttpError::Timeout {
                url: url.to_owned(),
                request_id: rid.to_owned(),
            }
        } else {
            HttpError::Unreachable {
                url: url.to_owned(),
                detail: format!("{last} (time budget exhausted)"),
                request_id: rid.to_owned(),
            }
        }
    }

    fn attempt(&self, url: &str, body: &[u8], rid: &str, timeout: Duration) -> Attempt {
        let sent = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header(REQUEST_ID, rid)
            .send(body);
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return classify(url, rid, e),
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
            Err(e) => return classify(url, rid, e),
        };
        // 5xx, 408 (our request was too slow) and 429 (the server asks us to come back)
        // all say "not now", never "no".
        if (500..=599).contains(&status) || status == 408 || status == 429 {
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

/// The header carrying the request id (the server echoes it and logs under it).
pub const REQUEST_ID: &str = "x-request-id";

/// 96 random bits in hex: within what the server accepts (≤ 64 of `[A-Za-z0-9_-]`). A
/// failing RNG yields a fixed marker rather than no request: the id is for logs only.
fn new_request_id() -> String {
    let mut b = [0u8; 12];
    match crate::tls::fill_random(&mut b) {
        Ok(()) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Err(_) => "agent-no-rng".to_owned(),
    }
}

/// Sorts a transport error into retry or fail.
fn classify(url: &str, rid: &str, e: ureq::Error) -> Attempt {
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
            request_id: rid.to_owned(),
        });
    }
    if let ureq::Error::Io(io) = &e {
        if matches!(
            io.kind(),
            std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::AddrNotAvailable
        ) {
            return Attempt::NoNetwork(e.to_string());
        }
    }
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => Attempt::Fail(HttpError::Tls {
            url: url.to_owned(),
            detail: e.to_string(),
            request_id: rid.to_owned(),
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
            request_id: rid.to_owned(),
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;
    use crate::flow::FlowError;

    fn config() -> Config {
        Config {
            verifier_url: String::new(),
            tenant_url: String::new(),
            ca_bundle: "/nonexistent".into(),
            tcti: String::new(),
            ek: crate::tpm::EkKind::Rsa2048,
            key_file: "/nonexistent".into(),
            timeout: Duration::from_secs(5),
            step_timeout: Duration::from_secs(2),
            retries: 0,
            release_pcr: crate::config::DEFAULT_RELEASE_PCR,
            event_log: "/nonexistent".into(),
            ima_log: "/nonexistent".into(),
            insecure_http: true,
            iak: None,
            evidence: verifier_core::proto::v1::EvidenceKind::Tpm,
            vcek_file: "/nonexistent".into(),
        }
    }

    /// A one-connection server answering 403 policy_denied; sends back the request's
    /// `x-request-id` header.
    fn refusing_server() -> (String, mpsc::Receiver<Option<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn);
            let mut id = None;
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("x-request-id") {
                        id = Some(v.trim().to_owned());
                    }
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            let json = br#"{"code":"policy_denied","message":"no"}"#;
            let head = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                json.len()
            );
            let conn = reader.get_mut();
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(json).unwrap();
            tx.send(id).unwrap();
        });
        (base, rx)
    }

    #[test]
    fn no_route_yet_is_waited_for_and_other_failures_count() {
        let io = |kind| ureq::Error::Io(std::io::Error::from(kind));
        for kind in [
            std::io::ErrorKind::NetworkUnreachable,
            std::io::ErrorKind::HostUnreachable,
            std::io::ErrorKind::AddrNotAvailable,
        ] {
            assert!(
                matches!(classify("u", "r", io(kind)), Attempt::NoNetwork(_)),
                "{kind:?}"
            );
        }
        // A server that is down (the host answered) counts against the retries, so the
        // fallback to the passphrase comes within them.
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
        ] {
            assert!(
                matches!(classify("u", "r", io(kind)), Attempt::Retry(_)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn each_request_sends_a_fresh_id_and_a_refusal_line_prints_it() {
        let client = Client::new(&config(), Instant::now() + Duration::from_secs(5)).unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (base, rx) = refusing_server();
            let err = client
                .post_encoded::<ErrorResponse>(&base, "/verifier/v1/attest", b"{}")
                .unwrap_err();
            let sent = rx.recv().unwrap().expect("x-request-id header sent");
            assert_eq!(err.request_id(), Some(sent.as_str()));
            assert!(sent.len() <= 64 && sent.bytes().all(|b| b.is_ascii_hexdigit()));
            let line = FlowError::Http {
                role: "verifier",
                source: err,
            }
            .console_line();
            assert_eq!(
                line,
                format!("refused by verifier: policy_denied: no (request id {sent})")
            );
            seen.push(sent);
        }
        assert_ne!(seen[0], seen[1], "one id per request");
    }

    #[test]
    fn an_unreachable_line_prints_the_request_id() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let client = Client::new(&config(), Instant::now() + Duration::from_secs(5)).unwrap();
        let err = client
            .post_encoded::<ErrorResponse>(&base, "/tenant/v1/register", b"{}")
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        let id = err.request_id().unwrap().to_owned();
        let line = FlowError::Http {
            role: "tenant",
            source: err,
        }
        .console_line();
        assert!(line.starts_with("server unreachable: tenant: "), "{line}");
        assert!(line.ends_with(&format!(" (request id {id})")), "{line}");
    }
}
