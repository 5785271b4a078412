//! Why an unlock did not happen, and what the console and the exit code say about it.

use verifier_core::keysplit::KeySplitError;
use verifier_core::merkle::MerkleError;
use verifier_core::proto::v1::EvidenceKind;
use verifier_core::proto::ProtoError;
use verifier_core::wire::HashAlg;

use crate::config::ConfigError;
use crate::http::{code_name, HttpError, TlsSetupError};
use crate::keyfile::KeyFileError;
use crate::logs::LogError;
use crate::tpm::TpmError;

/// Exit code: unlocked, or skipped with `rd.unlock=0`.
pub const EXIT_UNLOCKED: u8 = 0;
/// Exit code: a role refused (4xx) or answered something unusable.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: a role could not be reached within the budget.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit code: a local problem (TPM, configuration, file system).
pub const EXIT_LOCAL: u8 = 3;

/// A role's answer was well-formed but wrong for this exchange.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The server registered another identity than our EK's.
    #[error("activation answered agent_id {got}, but this TPM's EK is {expected}")]
    AgentIdMismatch {
        /// Ours.
        expected: String,
        /// The server's.
        got: String,
    },
    /// The answer names another role than the one asked.
    #[error("answer is from role {got}, expected {expected}")]
    WrongRole {
        /// The role asked.
        expected: &'static str,
        /// The role named in the answer.
        got: &'static str,
    },
    /// The challenge asks for a signing hash our AK does not use.
    #[error("challenge asks for a {0} quote, but the AK signs with ECDSA-SHA256")]
    HashAlg(HashAlg),
    /// A field of the answer does not convert (already validated, so this is unexpected).
    #[error("{0}")]
    Field(ProtoError),
    /// The challenge's PCR selection cannot be quoted.
    #[error("challenge PCR selection is unusable: {0}")]
    Selection(&'static str),
    /// The sealed half does not open with NK for this role and challenge.
    #[error("sealed half does not open: {0}")]
    Open(KeySplitError),
    /// The verifier's payload ciphertext is malformed or does not decrypt under U xor V.
    #[error("payload does not decrypt: {0}")]
    Payload(KeySplitError),
    /// The challenge carries verifier-made parameters and this agent's evidence kind has no
    /// attester that answers them (the enrollment's `--evidence` and the agent's `evidence`
    /// setting disagree, or the kind is not built into this agent).
    #[error(
        "the challenge carries parameters for a challenge round and evidence kind `{0}` has \
         no attester in this agent that answers them: check the enrollment's --evidence"
    )]
    UnansweredParams(EvidenceKind),
    /// The attester could not answer the challenge's parameters.
    #[error("the attester could not answer the challenge's parameters: {0}")]
    Round(verifier_core::round::RoundError),
}

/// Why the agent did not unlock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CA bundle is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A TPM operation failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// A measurement log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The key file could not be written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// NK could not be generated.
    #[error("cannot generate the ephemeral key NK: {0}")]
    Nk(KeySplitError),
    /// The nonce tree could not be built.
    #[error("cannot build the nonce Merkle tree: {0}")]
    Merkle(MerkleError),
    /// A request to a role failed.
    #[error("{role}: {source}")]
    Http {
        /// The role (`verifier` or `tenant`).
        role: &'static str,
        /// What happened.
        source: HttpError,
    },
    /// A role's answer is wrong for this exchange.
    #[error("{role}: {reason}")]
    Answer {
        /// The role.
        role: &'static str,
        /// What is wrong.
        reason: AnswerError,
    },
    /// Extending the release PCR failed after the key was decrypted; the key was dropped
    /// without being written, so a boot whose PCR still looks unreleased never has it.
    #[error("extending the release PCR failed, key not written: {0}")]
    Extend(TpmError),
    /// Reading a file to predict its measurement (`request-allow`) failed.
    #[error("cannot read {}: {source}", path.display())]
    Input {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The files do not give a prediction (`request-allow`: not a PE kernel, ...).
    #[error("cannot predict the boot's measurements: {0}")]
    Predict(verifier_core::predict::PredictError),
    /// The change could not be encoded.
    #[error("cannot encode the policy change: {0}")]
    Change(verifier_core::proto::ProtoError),
    /// The configured IAK handle holds no key (the IAK path needs the OEM's IAK there).
    #[error("no key at the IAK handle {handle:#010x} (iak_handle): the IAK path needs the device's IAK persisted there")]
    NoIak {
        /// The configured handle.
        handle: u32,
    },
    /// The IAK certificate file holds no certificate.
    #[error("{}: {reason}", path.display())]
    IakCert {
        /// The file (`iak_cert`).
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Writing the evidence file (`evidence --out`) failed.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl FlowError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Http { source, .. } if source.is_unreachable() => EXIT_UNREACHABLE,
            Self::Http {
                source: HttpError::Encode(_),
                ..
            } => EXIT_LOCAL,
            Self::Http { .. } | Self::Answer { .. } => EXIT_REFUSED,
            _ => EXIT_LOCAL,
        }
    }

    /// The one console line (without the `initrd-agent: ` prefix).
    pub fn console_line(&self) -> String {
        match self {
            Self::Http {
                role,
                source:
                    HttpError::Refused {
                        code,
                        message,
                        request_id,
                        ..
                    },
            } => format!(
                "refused by {role}: {}: {message} (request id {request_id})",
                code_name(*code)
            ),
            Self::Http {
                role,
                source: source @ HttpError::Timeout { request_id, .. },
            } => format!("server unreachable: {role}: {source} (timeout; request id {request_id})"),
            Self::Http { role, source } if source.is_unreachable() => match source.request_id() {
                Some(id) => format!("server unreachable: {role}: {source} (request id {id})"),
                None => format!("server unreachable: {role}: {source}"),
            },
            Self::Http { role, source } => format!("bad answer from {role}: {source}"),
            Self::Answer { role, reason } => format!("bad answer from {role}: {reason}"),
            other => format!("error: {other}"),
        }
    }
}
