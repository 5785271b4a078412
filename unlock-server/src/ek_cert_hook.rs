//! The EK certificate fetcher hook: an operator's program that finds the EK certificate of
//! an agent whose TPM keeps none in NV (cloud vTPMs publish it through their API instead).
//!
//! The program is trusted to run, not to answer: whatever it prints is parsed and verified
//! against the EK trust store and the agent's EK exactly like a certificate the agent sent,
//! so a hook that returns another machine's certificate, or one from an unknown CA, gets the
//! registration refused. Its output is bounded, it is killed after its timeout, and a
//! non-zero exit is a failure, never an empty answer.
//!
//! Interface: `PROGRAM AGENT_ID` with `UNLOCK_AGENT_ID` and `UNLOCK_EK_PUB` (base64 of the
//! EK's TPMT_PUBLIC) and `PATH` as its whole environment, no stdin; stdout is PEM (the EK certificate first,
//! then any chain certificates) or one DER certificate. A URL template is a one-line
//! script around `curl` (see the README), so the server links no HTTP client for this.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Largest output read from the hook: a certificate and a short chain in PEM.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How the hook is run.
#[derive(Debug, Clone)]
pub struct EkCertHook {
    /// The program (run directly, no shell).
    pub program: PathBuf,
    /// Killed after this long.
    pub timeout: Duration,
}

/// What the hook printed: the EK certificate and the chain certificates after it.
#[derive(Debug)]
pub struct Fetched {
    /// The EK certificate (DER).
    pub cert: Vec<u8>,
    /// Further certificates (DER), untrusted intermediates.
    pub chain: Vec<Vec<u8>>,
}

/// Why the hook gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("cannot run the EK certificate command {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran longer than its timeout and was killed.
    #[error("the EK certificate command did not finish within {0:?} and was killed")]
    Timeout(Duration),
    /// It exited unsuccessfully.
    #[error("the EK certificate command failed ({0})")]
    Status(std::process::ExitStatus),
    /// It printed more than [`MAX_OUTPUT`] bytes.
    #[error("the EK certificate command printed more than {MAX_OUTPUT} bytes")]
    TooLarge,
    /// It printed something that is not a certificate.
    #[error("the EK certificate command printed no certificate: {0}")]
    Output(String),
}

impl EkCertHook {
    /// Runs the hook for the agent `agent_id` with EK public area `ek_pub`.
    pub fn fetch(&self, agent_id: &str, ek_pub: &[u8]) -> Result<Fetched, HookError> {
        // A clean environment: the server's may hold a database URL or other secrets the
        // program has no business with. PATH is kept so a script can find its tools.
        let mut command = Command::new(&self.program);
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let mut child = command
            .arg(agent_id)
            .env("UNLOCK_AGENT_ID", agent_id)
            .env(
                "UNLOCK_EK_PUB",
                base64::engine::general_purpose::STANDARD.encode(ek_pub),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| HookError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        // The reader runs beside the wait so a hook filling the pipe cannot stall it; it
        // stops at the bound (one byte past it tells "too large" from "exactly full").
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let ok = stdout.is_some_and(|s| {
                s.take(
                    u64::try_from(MAX_OUTPUT)
                        .unwrap_or(u64::MAX)
                        .saturating_add(1),
                )
                .read_to_end(&mut out)
                .is_ok()
            });
            let _ = tx.send(ok.then_some(out));
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HookError::Timeout(self.timeout));
                }
            }
        };
        if !status.success() {
            return Err(HookError::Status(status));
        }
        // The program has exited; a descendant still holding stdout open gets the rest of
        // the timeout, not more.
        let left = deadline.saturating_duration_since(Instant::now());
        let out = rx
            .recv_timeout(left)
            .map_err(|_| HookError::Timeout(self.timeout))?
            .ok_or_else(|| HookError::Output("reading its output failed".into()))?;
        if out.len() > MAX_OUTPUT {
            return Err(HookError::TooLarge);
        }
        parse_output(&out)
    }
}

/// PEM (first block the EK certificate, the rest its chain) or a single DER certificate.
fn parse_output(out: &[u8]) -> Result<Fetched, HookError> {
    let text_like = out.windows(11).any(|w| w == b"-----BEGIN ");
    let mut certs = if text_like {
        verifier_core::ekcert::pem_certificates(out)
            .map_err(|e| HookError::Output(e.to_string()))?
    } else if out.is_empty() {
        return Err(HookError::Output("empty output".into()));
    } else {
        vec![out.to_vec()]
    };
    if certs.len() > 1 + verifier_core::proto::v1::MAX_EK_CHAIN {
        return Err(HookError::Output(format!(
            "{} certificates; at most {} are accepted",
            certs.len(),
            1 + verifier_core::proto::v1::MAX_EK_CHAIN
        )));
    }
    let cert = certs.remove(0);
    Ok(Fetched { cert, chain: certs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_forms() {
        assert!(matches!(parse_output(b""), Err(HookError::Output(_))));
        let der = parse_output(&[0x30, 0x00]).unwrap();
        assert_eq!(der.cert, vec![0x30, 0x00]);
        assert!(der.chain.is_empty());
        let pem = b"x\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMAE=\n-----END CERTIFICATE-----\n";
        let two = parse_output(pem).unwrap();
        assert_eq!(two.cert, vec![0x30, 0x00]);
        assert_eq!(two.chain, vec![vec![0x30, 0x01]]);
        assert!(matches!(
            parse_output(b"-----BEGIN CERTIFICATE-----\n!!\n"),
            Err(HookError::Output(_))
        ));
    }
}
