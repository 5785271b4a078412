//! K_b and its two shares: `K_b = U xor V`.
//!
//! A one-time pad split: U is uniformly random and independent of K_b, and so is V = K_b xor U
//! on its own, so a role holding one share learns nothing about K_b or the payload. Both
//! roles must release for the agent to recover K_b.

use std::fmt;

use crate::crypto::rand::{SecureRandom, SystemRandom};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use super::KeySplitError;

/// Length of K_b, of each share and of a master key.
pub const KEY_LEN: usize = 32;

/// The boot key K_b from which the payload key is derived. Exists only inside `unlockctl`
/// during enrollment and inside the agent after both shares arrived; no role ever holds it.
#[derive(Clone)]
pub struct BootKey(Zeroizing<[u8; KEY_LEN]>);

/// One half of K_b (U for the tenant role, V for the verifier role).
#[derive(Clone)]
pub struct Share(Zeroizing<[u8; KEY_LEN]>);

impl BootKey {
    /// A fresh random K_b from the operating system's generator.
    pub fn generate() -> Result<Self, KeySplitError> {
        Ok(Self(random_key()?))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Share {
    /// Wraps share bytes (received from the network, unwrapped from storage, or typed in).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wraps share bytes of unchecked length, refusing anything but [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeySplitError> {
        let array = <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| KeySplitError::ShareLength {
            len: bytes.len(),
            expected: KEY_LEN,
        })?;
        Ok(Self::from_bytes(array))
    }

    /// The raw share, for sending it to its role at enrollment or sealing it. Named so that
    /// every place a secret leaves its wrapper is easy to find.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Splits K_b into `(U, V)` with U random and `V = K_b xor U`.
pub fn split(k_b: &BootKey) -> Result<(Share, Share), KeySplitError> {
    let u = random_key()?;
    let v = xor(&k_b.0, &u);
    Ok((Share(u), Share(v)))
}

/// Recovers K_b from both shares: `K_b = U xor V`.
pub fn combine(u: &Share, v: &Share) -> BootKey {
    BootKey(xor(&u.0, &v.0))
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for ((o, x), y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
        *o = x ^ y;
    }
    out
}

pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, KeySplitError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(key.as_mut())
        .map_err(|_| KeySplitError::Random)?;
    Ok(key)
}

pub(crate) fn random_nonce() -> Result<[u8; 12], KeySplitError> {
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeySplitError::Random)?;
    Ok(nonce)
}

impl fmt::Debug for BootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootKey(<redacted>)")
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Share(<redacted>)")
    }
}

impl ConstantTimeEq for BootKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.as_slice().ct_eq(other.0.as_slice())
    }
}

impl PartialEq for BootKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for BootKey {}

impl ConstantTimeEq for Share {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.as_slice().ct_eq(other.0.as_slice())
    }
}

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Share {}
