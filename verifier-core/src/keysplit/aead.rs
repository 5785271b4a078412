//! The AES-256-GCM envelope shared by payload ciphertexts and wrapped shares:
//! `version (1) || nonce (12) || ciphertext || tag (16)`, under a key derived by HKDF-SHA256
//! from a 32-byte secret and a purpose label, so one secret never keys two purposes.

use crate::crypto::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use crate::crypto::hkdf;
use zeroize::Zeroizing;

use super::share::random_nonce;
use super::KeySplitError;
use crate::wire::Reader;
use crate::ParseError;

/// Envelope format version written today.
pub(crate) const ENVELOPE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// AES-GCM authentication tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub(crate) const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// `HKDF-SHA256(ikm, salt = empty, info = label)` as an AES-256-GCM key.
pub(crate) fn derive_key(ikm: &[u8], label: &[u8]) -> Result<LessSafeKey, KeySplitError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm);
    let info = [label];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| KeySplitError::Internal {
            operation: "HKDF-Expand",
        })?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Encrypts under a fresh random nonce and returns the serialized envelope.
pub(crate) fn seal(
    key: &LessSafeKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeySplitError> {
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(1 + NONCE_LEN..).unwrap_or_default();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| KeySplitError::Internal {
            operation: "AES-256-GCM seal",
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// A parsed envelope whose length is known to be within bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    body: &'a [u8],
}

/// Parses an envelope from untrusted bytes, refusing an unknown version and a plaintext
/// longer than `max_plaintext` before anything is copied.
pub(crate) fn parse<'a>(
    structure: &'static str,
    bytes: &'a [u8],
    max_plaintext: usize,
) -> Result<Envelope<'a>, KeySplitError> {
    let mut r = Reader::new(structure, bytes);
    let version = r.u8("version")?;
    if version != ENVELOPE_VERSION {
        return Err(KeySplitError::UnsupportedVersion { structure, version });
    }
    let nonce = r.take_array::<NONCE_LEN>("nonce")?;
    let len = r.remaining();
    if len < TAG_LEN {
        return Err(KeySplitError::Malformed(ParseError::Truncated {
            structure,
            field: "tag",
            offset: r.offset(),
            needed: TAG_LEN - len,
        }));
    }
    let body = r.bounded(len, "ciphertext", max_plaintext.saturating_add(TAG_LEN))?;
    r.finish()?;
    Ok(Envelope { nonce, body })
}

/// Authenticates and decrypts; `None` when the key, the aad or the bytes are wrong (AES-GCM
/// cannot tell these apart, and callers name all three in their error).
pub(crate) fn open(
    key: &LessSafeKey,
    aad: &[u8],
    envelope: Envelope<'_>,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(envelope.body.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(envelope.nonce),
            Aad::from(aad),
            buf.as_mut_slice(),
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}
