//! Errors. Parsing failures are a small `Copy` type that names the structure and field, so a
//! person reading a log knows which bytes were wrong; the crate-level [`Error`] wraps the
//! errors of each layer without erasing them.

/// A structure could not be decoded from untrusted bytes.
///
/// `structure` and `field` are TCG names (`"TPMS_ATTEST"`, `"extraData"`) so that the message
/// can be matched against the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ended before the field was complete.
    #[error("{structure}.{field}: truncated at offset {offset} (needed {needed} more bytes)")]
    Truncated {
        /// Structure being decoded.
        structure: &'static str,
        /// Field being decoded.
        field: &'static str,
        /// Offset of the field within the input.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// Bytes were left over after a complete structure.
    #[error("{structure}: {remaining} trailing bytes at offset {offset}")]
    TrailingData {
        /// Structure that should have consumed all bytes.
        structure: &'static str,
        /// Offset of the first unexpected byte.
        offset: usize,
        /// Number of unexpected bytes.
        remaining: usize,
    },
    /// A length field exceeds what the specification (or our bound) allows.
    #[error("{structure}.{field}: length {len} exceeds the maximum {max}")]
    TooLarge {
        /// Structure being decoded.
        structure: &'static str,
        /// Length field.
        field: &'static str,
        /// Length claimed by the input.
        len: usize,
        /// Largest allowed length.
        max: usize,
    },
    /// An algorithm identifier we do not implement.
    #[error("{structure}.{field}: unknown or unsupported algorithm 0x{alg:04x}")]
    UnknownAlgorithm {
        /// Structure being decoded.
        structure: &'static str,
        /// Field holding the algorithm.
        field: &'static str,
        /// The TPM_ALG_ID found.
        alg: u16,
    },
    /// A field holds a value the specification does not allow here.
    #[error("{structure}.{field}: invalid value 0x{value:x}")]
    InvalidValue {
        /// Structure being decoded.
        structure: &'static str,
        /// Field being decoded.
        field: &'static str,
        /// The value found (truncated to 64 bits).
        value: u64,
    },
}

/// Any error of this crate, by layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed TPM structure.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A quote failed verification.
    #[error(transparent)]
    Verify(#[from] crate::quote::VerifyError),
    /// An AK is not acceptable as an attestation key.
    #[error(transparent)]
    Ak(#[from] crate::quote::AkError),
    /// MakeCredential could not be computed.
    #[error(transparent)]
    #[cfg(feature = "aws-lc")]
    MakeCredential(#[from] crate::makecred::MakeCredentialError),
    /// An EK certificate was refused.
    #[cfg(feature = "ekcert")]
    #[error(transparent)]
    EkCert(#[from] crate::ekcert::EkCertError),
    /// A UEFI event log could not be parsed.
    #[error(transparent)]
    EventLog(#[from] crate::eventlog::EventLogError),
    /// An IMA measurement list could not be parsed.
    #[error(transparent)]
    Ima(#[from] crate::ima::ImaError),
    /// A protocol message was malformed.
    #[error(transparent)]
    Proto(#[from] crate::proto::ProtoError),
    /// Key split, payload, share wrapping or NK sealing failed.
    #[error(transparent)]
    KeySplit(#[from] crate::keysplit::KeySplitError),
    /// A Merkle tree or inclusion proof was refused.
    #[error(transparent)]
    Merkle(#[from] crate::merkle::MerkleError),
}
