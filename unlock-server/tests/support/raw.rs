//! A stranger's client: plain sockets bound to a chosen loopback source address (so the
//! server sees another source than the honest agent on 127.0.0.1), TLS done by hand, HTTP
//! written byte by byte. It can do what a well-behaved client never does: stop in the middle
//! of a head, dribble a body, send 1-byte TLS records, sit idle.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::Server;

/// The source address strangers use; the honest agent connects from 127.0.0.1.
pub fn stranger() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

/// A TLS connection of the stranger's.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects to one server from chosen source addresses.
pub struct Raw {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    rt: tokio::runtime::Runtime,
}

impl Raw {
    /// A client of `server` trusting its certificate.
    pub fn new(server: &Server) -> Self {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(server.ca()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Raw {
            addr: server.addr(),
            tls: Arc::new(tls),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap(),
        }
    }

    /// A TCP connection from `src` (std has no bind-before-connect; tokio's socket does).
    pub fn tcp_from(&self, src: IpAddr) -> std::io::Result<TcpStream> {
        let addr = self.addr;
        let s = self.rt.block_on(async move {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(src, 0))?;
            sock.connect(addr).await
        })?;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// A TLS connection from `src`, handshake done.
    pub fn tls_from(&self, src: IpAddr) -> std::io::Result<Tls> {
        let tcp = self.tcp_from(src)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let conn = ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(s)
    }

    /// One POST from `src` (`Connection: close`); the status and body.
    pub fn post_from(&self, src: IpAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = self.tls_from(src).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.flush().unwrap();
        read_answer(&mut s)
    }
}

/// Reads an HTTP/1.1 answer to its end (the server closes: `Connection: close`).
pub fn read_answer(s: &mut impl Read) -> (u16, Vec<u8>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // No close_notify from a server that just closes: the answer is complete.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, all[split + 4..].to_vec())
}

/// Whether the server has closed `s`: a read within `wait` sees the end (or a reset) rather
/// than nothing.
pub fn closed_by_server<S: Read>(
    s: &mut S,
    set_timeout: impl Fn(Duration),
    wait: Duration,
) -> bool {
    set_timeout(wait);
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 408) before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The value of one series in a `/metrics` text (`name{labels}` exactly as rendered).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
