//! The provider's HTTP/1.1 server: two routes, small JSON bodies, a thread per connection.
//!
//! Why this and not hyper or tiny_http: the agent is a synchronous program and the
//! provider's handler blocks anyway (until its batch is quoted), so a thread per connection
//! on `std::net` with `httparse` (already linked through ureq) for the request head is the
//! smallest server that fits; it adds no crate. It supports what requesters need and
//! refuses the rest: `Content-Length` bodies up to [`MAX_BODY`] (no chunked uploads),
//! keep-alive, a head of at most [`MAX_HEAD`] bytes, a read timeout, and a cap on open
//! connections, in all and per source address (an IPv4 address or an IPv6 /64; an eighth of
//! the total), beyond which new ones get `503` at once. A connection holds at most one
//! waiting request, so the per-source cap is also each requester's share of the waiting
//! places: one requester cannot starve the others.
//!
//! Plain HTTP: an answer is self-authenticating (signed by the pinned AK, bound to the
//! requester's own nonce), so TLS would add privacy of the host's PCRs, not integrity. Put
//! the provider behind a TLS terminator if the PCRs must not be seen on the wire.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verifier_core::proto::v1::{
    self, ErrorCode, ErrorResponse, HostAkResponse, HostQuoteRequest, HOST_AK_PATH, HOST_QUOTE_PATH,
};

use verifier_core::source::PerSource;

use super::batch::{AnswerEncoder, BatchError, Batcher, HostIdentity};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body: a `HostQuoteRequest` is about 60 bytes.
pub const MAX_BODY: usize = 4 * 1024;
/// Most headers in a request head.
const MAX_HEADERS: usize = 32;
/// An idle or slow connection is closed after this long without a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers need: the engine and the host's static evidence.
pub struct Service {
    batcher: Batcher,
    ak_json: Vec<u8>,
    host: HostIdentity,
    encoder: AnswerEncoder,
    max_connections: usize,
    connections: AtomicUsize,
    per_source: Arc<PerSource>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over a running engine. `ak_name` is the AK's name (for `GET` of the AK).
    pub fn new(
        batcher: Batcher,
        ak_name: &[u8],
        event_log: Option<Vec<u8>>,
        max_connections: usize,
    ) -> Self {
        let ak_json = serde_json::to_vec(&HostAkResponse {
            ak_pub: batcher.ak_public().into(),
            ak_name: ak_name.into(),
        })
        .unwrap_or_default();
        let host = HostIdentity {
            ak_public: batcher.ak_public().to_vec(),
            event_log,
        };
        Self {
            batcher,
            ak_json,
            host,
            encoder: AnswerEncoder::default(),
            max_connections: max_connections.max(1),
            connections: AtomicUsize::new(0),
            per_source: Arc::default(),
        }
    }

    /// Most connections one source may hold: an eighth of the total (at least one).
    fn max_per_source(&self) -> usize {
        (self.max_connections / 8).max(1)
    }

    /// The engine (for its counters).
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Accepts connections until the listener fails.
    pub fn serve(self: &Arc<Self>, listener: &TcpListener) -> io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(c) => c,
                // Out of file descriptors and the like: keep the provider up.
                Err(e) if e.kind() != io::ErrorKind::InvalidInput => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(held) = self.per_source.try_take(peer.ip(), self.max_per_source()) else {
                let mut s = stream;
                let _ = write_error(
                    &mut s,
                    503,
                    ErrorCode::RateLimited,
                    "too many connections from this address",
                );
                continue;
            };
            let open = self.connections.fetch_add(1, Ordering::AcqRel);
            if open >= self.max_connections {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                let mut s = stream;
                let _ = write_error(&mut s, 503, ErrorCode::RateLimited, "too many connections");
                continue;
            }
            let service = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("provider-conn".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    let _held = held;
                    let _ = service.connection(stream);
                    service.connections.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Binds `addr` and serves on a background thread; returns the bound address.
    pub fn spawn(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = listen(addr)?;
        let local = listener.local_addr()?;
        let service = Arc::clone(self);
        std::thread::Builder::new()
            .name("provider-accept".into())
            .spawn(move || service.serve(&listener))?;
        Ok(local)
    }

    fn connection(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        loop {
            let Some(req) = read_request(&mut stream, &mut buf)? else {
                return Ok(());
            };
            let keep_alive = match req {
                Head::Bad(status, msg) => {
                    write_error(&mut stream, status, ErrorCode::MalformedRequest, msg)?;
                    return Ok(());
                }
                Head::Ok {
                    ref method,
                    ref path,
                    ref body,
                    keep_alive,
                } => {
                    let (status, json) = self.route(method, path, body);
                    write_response(&mut stream, status, &json, keep_alive)?;
                    keep_alive
                }
            };
            if !keep_alive {
                return Ok(());
            }
        }
    }

    fn route(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        match (method, path) {
            ("GET", HOST_AK_PATH) => (200, self.ak_json.clone()),
            ("POST", HOST_QUOTE_PATH) => self.quote(body),
            (_, HOST_AK_PATH | HOST_QUOTE_PATH) => {
                error_json(405, ErrorCode::MalformedRequest, "method not allowed")
            }
            _ => error_json(404, ErrorCode::MalformedRequest, "no such path"),
        }
    }

    fn quote(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let nonce = match v1::decode::<HostQuoteRequest>(body).and_then(|r| r.nonce()) {
            Ok(n) => n,
            Err(e) => return error_json(400, ErrorCode::MalformedRequest, &e.to_string()),
        };
        match self.batcher.submit(nonce) {
            Ok(answer) => match self.encoder.encode(&answer, &self.host) {
                Ok(json) => (200, json),
                Err(_) => error_json(500, ErrorCode::Internal, "cannot encode the answer"),
            },
            Err(BatchError::Busy { .. }) => {
                error_json(503, ErrorCode::RateLimited, "provider busy, retry later")
            }
            Err(e) => {
                eprintln!("initrd-agent: provider: {e}");
                error_json(500, ErrorCode::Internal, "host quote failed")
            }
        }
    }
}

/// Binds with a deep accept queue: a burst of requesters connecting at once (the case
/// batching is for) must queue, not be reset. The kernel caps it at `net.core.somaxconn`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Accept queue length asked of the kernel.
const LISTEN_BACKLOG: i32 = 4096;

enum Head {
    Ok {
        method: String,
        path: String,
        body: Vec<u8>,
        keep_alive: bool,
    },
    Bad(u16, &'static str),
}

/// Reads one request from `stream`; `buf` carries bytes already read past the previous one.
/// `None` when the peer closed cleanly between requests.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Head>> {
    let mut chunk = [0u8; 2048];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("").to_owned();
                let path = req.path.unwrap_or("").to_owned();
                let http10 = req.version == Some(0);
                let mut length: usize = 0;
                let mut close = http10;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        match std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                        {
                            Some(n) => length = n,
                            None => return Ok(Some(Head::Bad(400, "bad Content-Length"))),
                        }
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Ok(Some(Head::Bad(411, "send a Content-Length body")));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = h.value.to_ascii_lowercase();
                        close = v == b"close" || (http10 && v != b"keep-alive");
                    }
                }
                if length > MAX_BODY {
                    return Ok(Some(Head::Bad(413, "body too large")));
                }
                let total = head_len.saturating_add(length);
                while buf.len() < total {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                }
                let body = buf.get(head_len..total).unwrap_or(&[]).to_vec();
                buf.drain(..total);
                return Ok(Some(Head::Ok {
                    method,
                    path,
                    body,
                    keep_alive: !close,
                }));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Ok(Some(Head::Bad(431, "request head too large")));
                }
            }
            Err(_) => return Ok(Some(Head::Bad(400, "malformed HTTP request"))),
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let head =
        format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)
}

fn error_json(status: u16, code: ErrorCode, message: &str) -> (u16, Vec<u8>) {
    let mut message = message.to_owned();
    // ErrorResponse bounds its message; cut on a char boundary.
    while message.len() > v1::MAX_ERROR_MESSAGE {
        message.pop();
    }
    let body = serde_json::to_vec(&ErrorResponse { code, message }).unwrap_or_default();
    (status, body)
}

fn write_error(
    stream: &mut TcpStream,
    status: u16,
    code: ErrorCode,
    message: &str,
) -> io::Result<()> {
    let (status, body) = error_json(status, code, message);
    write_response(stream, status, &body, false)
}
