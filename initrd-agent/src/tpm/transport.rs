//! The byte pipe to the TPM: the kernel's resource manager device or swtpm's TCP socket.
//!
//! Both carry raw TPM 2.0 command and response bytes, so no TSS is needed to reach them:
//! `/dev/tpmrm0` is written one command at a time and read one response at a time (the
//! kernel returns a whole response per read), and swtpm's server port speaks the same bytes
//! over TCP (the "swtpm" TCTI of tpm2-tss), framed by the responseSize in the header.
//!
//! TCTI strings follow tpm2-tss's spelling so existing configurations keep working:
//! `device:/dev/tpmrm0` (or just `device`), `swtpm:host=127.0.0.1,port=2321` (or `swtpm`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use verifier_core::tpm2::{HEADER_SIZE, MAX_RESPONSE_SIZE};

/// The default device: the in-kernel resource manager, which flushes what a crashed agent
/// left loaded and shares the TPM with other users.
const DEFAULT_DEVICE: &str = "/dev/tpmrm0";
/// swtpm's default server port.
const DEFAULT_SWTPM_PORT: u16 = 2321;
/// How long a TCP TPM may take to answer one command (an RSA CreatePrimary on a loaded
/// machine takes seconds; more than this is a dead simulator).
const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the TPM could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCTI string is not one this agent understands.
    #[error(
        "unsupported TCTI {0:?}: use device:/dev/tpmrm0 or swtpm:host=ADDRESS,port=PORT \
         (the agent talks to the TPM without libtss2, so tabrmd and mssim are not available)"
    )]
    Unsupported(String),
    /// Opening the device or connecting failed.
    #[error("cannot open {what}: {source}")]
    Open {
        /// The device path or socket address.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("TPM I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The response header announces a size that cannot be a response.
    #[error("the TPM's response announces {0} bytes (a response has 10 to 16384)")]
    BadSize(usize),
}

/// An open connection to a TPM.
#[derive(Debug)]
pub enum Transport {
    /// A character device (`/dev/tpmrm0`, `/dev/tpm0`).
    Device(File),
    /// swtpm's server socket.
    Tcp(TcpStream),
}

impl Transport {
    /// Opens the TPM named by a TCTI string.
    pub fn open(tcti: &str) -> Result<Self, TransportError> {
        let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
        match kind {
            "device" => {
                let path = if conf.is_empty() {
                    DEFAULT_DEVICE
                } else {
                    conf
                };
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|source| TransportError::Open {
                        what: path.to_owned(),
                        source,
                    })?;
                Ok(Self::Device(file))
            }
            "swtpm" => {
                let addr = swtpm_address(conf)
                    .ok_or_else(|| TransportError::Unsupported(tcti.to_owned()))?;
                let open = |source| TransportError::Open {
                    what: addr.to_string(),
                    source,
                };
                let stream = TcpStream::connect_timeout(&addr, TCP_TIMEOUT).map_err(open)?;
                stream.set_read_timeout(Some(TCP_TIMEOUT)).map_err(open)?;
                stream.set_write_timeout(Some(TCP_TIMEOUT)).map_err(open)?;
                // Commands are small and answered before the next is sent: no batching.
                stream.set_nodelay(true).map_err(open)?;
                Ok(Self::Tcp(stream))
            }
            _ => Err(TransportError::Unsupported(tcti.to_owned())),
        }
    }

    /// Sends one command and returns its whole response (header included, its size checked
    /// against the bytes received; the content is the caller's to check).
    pub fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        match self {
            Self::Device(f) => {
                f.write_all(command)?;
                let mut buf = vec![0u8; MAX_RESPONSE_SIZE];
                let n = f.read(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }
            Self::Tcp(s) => {
                s.write_all(command)?;
                let mut header = [0u8; HEADER_SIZE];
                s.read_exact(&mut header)?;
                let size = header
                    .get(2..6)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
                    .and_then(|s| usize::try_from(s).ok())
                    .unwrap_or(0);
                if !(HEADER_SIZE..=MAX_RESPONSE_SIZE).contains(&size) {
                    return Err(TransportError::BadSize(size));
                }
                let mut buf = vec![0u8; size];
                let (head, body) = buf.split_at_mut(HEADER_SIZE);
                head.copy_from_slice(&header);
                s.read_exact(body)?;
                Ok(buf)
            }
        }
    }
}

/// `host=H,port=P` (both optional) as a socket address. Only numeric addresses and
/// `localhost` are accepted: the agent never needs a resolver to reach its TPM.
fn swtpm_address(conf: &str) -> Option<SocketAddr> {
    let mut host = "127.0.0.1";
    let mut port = DEFAULT_SWTPM_PORT;
    for part in conf.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=')?;
        match k {
            "host" => host = if v == "localhost" { "127.0.0.1" } else { v },
            "port" => port = v.parse().ok()?,
            _ => return None,
        }
    }
    let ip: std::net::IpAddr = host.parse().ok()?;
    (ip, port).to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_strings() {
        assert_eq!(
            swtpm_address("host=127.0.0.1,port=2400"),
            Some("127.0.0.1:2400".parse().unwrap())
        );
        assert_eq!(swtpm_address(""), Some("127.0.0.1:2321".parse().unwrap()));
        assert_eq!(
            swtpm_address("host=::1,port=5"),
            Some("[::1]:5".parse().unwrap())
        );
        assert_eq!(swtpm_address("host=tpm.example,port=5"), None);
        assert_eq!(swtpm_address("port=99999"), None);
        assert_eq!(swtpm_address("path=/x"), None);
        assert!(matches!(
            Transport::open("tabrmd:bus_type=system"),
            Err(TransportError::Unsupported(_))
        ));
        assert!(matches!(
            Transport::open("device:/nonexistent/tpm"),
            Err(TransportError::Open { .. })
        ));
    }
}
