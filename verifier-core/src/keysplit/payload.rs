//! The payload (the LUKS key) encrypted under K_b, and the enrollment material.
//!
//! `payload_key = HKDF-SHA256(ikm = K_b, salt = empty, info = "unlock/v1 payload")`, then
//! AES-256-GCM with a random 96-bit nonce and `aad = agent_id`, so a ciphertext copied to
//! another agent's record does not decrypt even under the right K_b.

use std::fmt;

use zeroize::Zeroizing;

use super::share::{split, BootKey, Share};
use super::{aead, KeySplitError};

/// Largest payload accepted: far above a LUKS key (32-512 bytes) or a small provisioning
/// secret, small enough that a hostile ciphertext cannot make anyone allocate much.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;

/// Largest serialized [`PayloadCiphertext`]: version, nonce and tag around the payload.
pub const MAX_PAYLOAD_CIPHERTEXT_LEN: usize = MAX_PAYLOAD_LEN + aead::OVERHEAD;

/// HKDF info of the payload key (protocol v1).
const PAYLOAD_KEY_INFO: &[u8] = b"unlock/v1 payload";

/// A serialized payload ciphertext: `version (0x01) || nonce (12) || ciphertext || tag (16)`.
///
/// Only constructible by encrypting or by a bounded parse, so holding one means its length
/// and version are already known to be acceptable.
#[derive(Clone, PartialEq, Eq)]
pub struct PayloadCiphertext(Vec<u8>);

impl PayloadCiphertext {
    /// Parses a ciphertext from untrusted bytes (the verifier's answer, the enrollment API).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeySplitError> {
        aead::parse("PayloadCiphertext", bytes, MAX_PAYLOAD_LEN)?;
        Ok(Self(bytes.to_vec()))
    }

    /// The serialized form, for storage and the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serialized form, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for PayloadCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadCiphertext({} bytes)", self.0.len())
    }
}

/// Encrypts `payload` for `agent_id` under K_b. Refuses payloads above [`MAX_PAYLOAD_LEN`].
pub fn encrypt_payload(
    k_b: &BootKey,
    agent_id: &str,
    payload: &[u8],
) -> Result<PayloadCiphertext, KeySplitError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(KeySplitError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    let key = aead::derive_key(k_b.bytes(), PAYLOAD_KEY_INFO)?;
    Ok(PayloadCiphertext(aead::seal(
        &key,
        agent_id.as_bytes(),
        payload,
    )?))
}

/// Decrypts the payload; fails with [`KeySplitError::PayloadDecrypt`] for a wrong K_b, a
/// wrong `agent_id` or a tampered ciphertext.
pub fn decrypt_payload(
    k_b: &BootKey,
    agent_id: &str,
    ct: &PayloadCiphertext,
) -> Result<Zeroizing<Vec<u8>>, KeySplitError> {
    let envelope = aead::parse("PayloadCiphertext", &ct.0, MAX_PAYLOAD_LEN)?;
    let key = aead::derive_key(k_b.bytes(), PAYLOAD_KEY_INFO)?;
    aead::open(&key, agent_id.as_bytes(), envelope).ok_or(KeySplitError::PayloadDecrypt)
}

/// What enrollment hands out: V and the ciphertext to the verifier role, U to the tenant.
#[derive(Debug, Clone)]
pub struct EnrollMaterial {
    /// Tenant role's share.
    pub u: Share,
    /// Verifier role's share.
    pub v: Share,
    /// The payload under K_b, stored by the verifier role.
    pub payload_ct: PayloadCiphertext,
}

/// Generates K_b, splits it and encrypts `payload` under it for `agent_id`. K_b is zeroized
/// before this returns: afterwards only the two shares together can recover it.
pub fn enroll_material(agent_id: &str, payload: &[u8]) -> Result<EnrollMaterial, KeySplitError> {
    let k_b = BootKey::generate()?;
    let payload_ct = encrypt_payload(&k_b, agent_id, payload)?;
    let (u, v) = split(&k_b)?;
    Ok(EnrollMaterial { u, v, payload_ct })
}
