//! The boot key K_b, its split between the roles, the payload it protects, and how the halves
//! travel and rest (DESIGN section 2).
//!
//! - Enrollment ([`enroll_material`]): K_b is random, `U` is random, `V = K_b xor U`; the
//!   payload (the LUKS key) is encrypted under a key derived from K_b with `aad = agent_id`.
//!   The verifier role gets V and the ciphertext, the tenant role gets U; no role ever holds
//!   K_b or the payload.
//! - At rest ([`MasterKey`]): each role keeps its share wrapped under a master key that is not
//!   in the database, bound to `"<role>|<agent_id>"` ([`wrap_context`]).
//! - In flight ([`seal_share`] / [`NkPrivate::open_share`]): after a successful attestation a
//!   role seals its share to the agent's ephemeral key NK with HPKE (RFC 9180, X25519 /
//!   HKDF-SHA256 / AES-128-GCM), `info = "unlock/v1 share" || role`, `aad = challenge_id`.
//! - The agent: `K_b = U xor V` ([`combine`]), then [`decrypt_payload`].
//!
//! Every secret is held in a zeroizing wrapper with a redacting `Debug` and compares in
//! constant time.

mod aead;
mod hpke;
mod nk;
mod payload;
mod share;
mod wrap;

pub use hpke::{seal, NkPrivate, NkPublic, Sealed, MAX_SEALED_PLAINTEXT, NK_PUBLIC_LEN};
pub use nk::{seal_share, share_info, SHARE_INFO_PREFIX};
pub use payload::{
    decrypt_payload, encrypt_payload, enroll_material, EnrollMaterial, PayloadCiphertext,
    MAX_PAYLOAD_CIPHERTEXT_LEN, MAX_PAYLOAD_LEN,
};
pub use share::{combine, split, BootKey, Share, KEY_LEN};
pub use wrap::{wrap_context, MasterKey, WRAPPED_SHARE_LEN};

use crate::ParseError;

/// Key split, payload, share wrapping or NK sealing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySplitError {
    /// The operating system's random number generator failed; nothing was produced.
    #[error("system random number generator failed")]
    Random,
    /// An X25519 key could not be generated or imported.
    #[error("X25519 key generation or import failed")]
    KeyGeneration,
    /// aws-lc-rs refused an operation that cannot fail on valid inputs.
    #[error("cryptographic operation failed inside aws-lc-rs: {operation}")]
    Internal {
        /// The operation that failed.
        operation: &'static str,
    },
    /// A payload longer than [`MAX_PAYLOAD_LEN`].
    #[error("payload of {len} bytes exceeds the maximum {max}")]
    PayloadTooLarge {
        /// Payload length given.
        len: usize,
        /// Largest accepted payload.
        max: usize,
    },
    /// The payload ciphertext did not authenticate.
    #[error(
        "payload ciphertext does not decrypt: wrong K_b (U or V not from the same enrollment), \
         wrong agent_id, or tampered ciphertext"
    )]
    PayloadDecrypt,
    /// A wrapped share did not authenticate.
    #[error(
        "wrapped share does not unwrap: wrong master key, row of another role or agent \
         (context mismatch), or tampered row"
    )]
    Unwrap,
    /// An HPKE message did not authenticate.
    #[error(
        "sealed share does not open: sealed to another NK, for another role or challenge \
         (info/aad mismatch), or enc/ciphertext changed"
    )]
    Open,
    /// An X25519 public key (NK or `enc`) is invalid or of low order (all-zero shared secret).
    #[error("X25519 public key rejected: invalid or low-order point (all-zero shared secret)")]
    InvalidPublicKey,
    /// A public key of the wrong length.
    #[error("X25519 public key is {len} bytes, expected {expected}")]
    PublicKeyLength {
        /// Length given.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A share or master key of the wrong length.
    #[error("key material is {len} bytes, expected {expected}")]
    ShareLength {
        /// Length given.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// An HPKE ciphertext (with tag) shorter than a tag or longer than the bound.
    #[error("sealed ciphertext of {len} bytes is outside {min}..={max}")]
    SealedLength {
        /// Ciphertext length (with tag).
        len: usize,
        /// Smallest valid length (the tag alone).
        min: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// A serialized ciphertext or wrapped share of a version this build does not know.
    #[error("{structure}: unsupported format version {version} (this build reads version 1)")]
    UnsupportedVersion {
        /// Structure being decoded.
        structure: &'static str,
        /// Version byte found.
        version: u8,
    },
    /// A serialized ciphertext, wrapped share or sealed message is malformed.
    #[error(transparent)]
    Malformed(#[from] ParseError),
}
