//! Shares at rest: wrapped under a per-role master key kept outside the database.
//!
//! A database dump alone yields nothing. The wrapping key is
//! `HKDF-SHA256(master, info = "unlock/v1 share wrap")` and each row is AES-256-GCM with a
//! random nonce and `aad = context`; the context names the role and the agent
//! ([`wrap_context`]), so a row copied onto another agent, or from the verifier's table into
//! the tenant's, fails to unwrap instead of releasing the wrong share.

use std::fmt;

use zeroize::Zeroizing;

use super::share::{random_key, Share, KEY_LEN};
use super::{aead, KeySplitError};

/// Serialized length of a wrapped share: version, nonce, 32-byte share and tag.
pub const WRAPPED_SHARE_LEN: usize = KEY_LEN + aead::OVERHEAD;

/// HKDF info of the wrapping key (protocol v1).
const WRAP_KEY_INFO: &[u8] = b"unlock/v1 share wrap";

/// A role's master key (32 bytes), loaded from a file or secret store, never from the
/// database whose rows it protects.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A fresh random master key (for `unlockctl` to write out once).
    pub fn generate() -> Result<Self, KeySplitError> {
        Ok(Self(random_key()?))
    }

    /// Wraps key bytes read from the key file.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wraps key bytes of unchecked length, refusing anything but 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeySplitError> {
        let array = <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| KeySplitError::ShareLength {
            len: bytes.len(),
            expected: KEY_LEN,
        })?;
        Ok(Self::from_bytes(array))
    }

    /// The raw key, for writing a freshly generated key to its file.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Encrypts `share` for storage under `context` (see [`wrap_context`]).
    pub fn wrap_share(&self, share: &Share, context: &[u8]) -> Result<Vec<u8>, KeySplitError> {
        let key = aead::derive_key(self.0.as_slice(), WRAP_KEY_INFO)?;
        aead::seal(&key, context, share.expose_secret())
    }

    /// Decrypts a stored share; [`KeySplitError::Unwrap`] for a wrong master key, a wrong
    /// context (row of another agent or role) or a tampered row.
    pub fn unwrap_share(&self, wrapped: &[u8], context: &[u8]) -> Result<Share, KeySplitError> {
        let envelope = aead::parse("WrappedShare", wrapped, KEY_LEN)?;
        let key = aead::derive_key(self.0.as_slice(), WRAP_KEY_INFO)?;
        let plain = aead::open(&key, context, envelope).ok_or(KeySplitError::Unwrap)?;
        Share::from_slice(&plain)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The wrapping context for `role`'s share of `agent_id`: `"<role>|<agent_id>"`.
///
/// Neither part contains `|` in practice (role names are fixed words, agent ids are hex), so
/// the encoding is unambiguous.
pub fn wrap_context(role: &str, agent_id: &str) -> Vec<u8> {
    let mut context = Vec::with_capacity(role.len() + 1 + agent_id.len());
    context.extend_from_slice(role.as_bytes());
    context.push(b'|');
    context.extend_from_slice(agent_id.as_bytes());
    context
}
