//! A simulated machine for tests and benchmarks: a software TPM ([`SimTpm`]) and the agent
//! side of protocol v1 over it ([`SimAgent`]).
//!
//! The server's code paths only see bytes, so a simulated agent exercises exactly what a
//! real one does (MakeCredential against an ECC EK, one quote over a Merkle root of the
//! roles' nonces, HPKE-sealed halves, payload decryption) without swtpm, and fast enough to
//! drive hundreds of concurrent boots in a benchmark. It has no I/O: it builds request
//! messages and consumes responses; the caller carries them (in process or over HTTPS).
//!
//! Its keys live in ordinary memory, so it proves nothing about a machine. Hidden from the
//! docs for that reason; never use it outside tests and benchmarks.

mod agent;
mod tpm;

pub use agent::{enroll_requests, SimAgent, SIM_MEASURED_PCRS};
pub use tpm::{ek_attributes, SimTpm, EK_AUTH_POLICY_SHA256};

use crate::keysplit::KeySplitError;
use crate::makecred::MakeCredentialError;
use crate::merkle::MerkleError;
use crate::proto::ProtoError;
use crate::quote::software::SoftwareAkError;
use crate::wire::HashAlg;
use crate::ParseError;

/// Why the simulated TPM or agent refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A TPM structure handed to the simulated TPM is malformed (credential blob, secret).
    #[error("simulated TPM: {0}")]
    Malformed(#[from] ParseError),
    /// The encrypted secret's point is not on the EK's curve (what a TPM answers with
    /// TPM_RC_ECC_POINT).
    #[error("ActivateCredential: the encrypted secret is not a point on the EK's curve")]
    EccPoint,
    /// The credential blob's integrity HMAC does not verify: it was made for another EK or
    /// another AK name, or it was changed (a TPM answers TPM_RC_INTEGRITY).
    #[error(
        "ActivateCredential: integrity check failed (credential for another EK or AK name, \
         or tampered blob)"
    )]
    Integrity,
    /// The decrypted credential is not a TPM2B_DIGEST of at most the EK nameAlg size.
    #[error("ActivateCredential: decrypted credential is {len} bytes, at most {max} allowed")]
    CredentialSize {
        /// Length found in the decrypted TPM2B_DIGEST.
        len: usize,
        /// The EK nameAlg digest size.
        max: usize,
    },
    /// A key derivation or cipher failed.
    #[error("simulated TPM: {0}")]
    Kdf(#[from] MakeCredentialError),
    /// Key generation, ECDH or the system RNG failed inside aws-lc-rs.
    #[error("simulated TPM: crypto operation failed: {0}")]
    Crypto(&'static str),
    /// Extending or quoting a PCR index at or above 24.
    #[error("simulated TPM: PCR index {0} is not 0-23")]
    PcrIndex(u8),
    /// The simulated TPM has only a SHA-256 bank.
    #[error("simulated TPM: no {0} PCR bank (only sha256 is simulated)")]
    Bank(HashAlg),
    /// The quote could not be produced.
    #[error(transparent)]
    Quote(#[from] SoftwareAkError),
    /// A message failed its own validation or a field was of the wrong form.
    #[error("protocol message: {0}")]
    Proto(#[from] ProtoError),
    /// The nonce tree could not be built.
    #[error("nonce tree: {0}")]
    Merkle(#[from] MerkleError),
    /// NK generation, opening a half or decrypting the payload failed.
    #[error("key release: {0}")]
    KeySplit(#[from] KeySplitError),
    /// The agent was asked to do a step out of order (for example `finish` before
    /// `attest_requests`).
    #[error("simulated agent: {0}")]
    OutOfOrder(&'static str),
    /// Two challenges or answers came from the same role.
    #[error("simulated agent: two messages from the {0} role")]
    DuplicateRole(&'static str),
    /// An answer came from a role no challenge was sent to, or a role's answer is missing.
    #[error("simulated agent: {0}")]
    RoleMismatch(&'static str),
    /// The role that answered activation named another agent.
    #[error("simulated agent: activation answered for another agent id")]
    AgentIdMismatch,
}
