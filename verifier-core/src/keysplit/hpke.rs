//! HPKE (RFC 9180) base mode, single shot, for one suite:
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM (0x0020 / 0x0001 / 0x0001).
//!
//! Each role seals its share to the agent's ephemeral key NK; only the TPM-bound NK (its hash
//! is in the quote's extraData) can open it, so a man in the middle who swaps NK gets a
//! quote that fails validation, and one who does not swap it gets ciphertext only.
//!
//! Written on primitives (HMAC-SHA256 and AES-GCM from the crypto backend, X25519 from
//! `x25519-dalek`, pure Rust, the same in the server and the static agent) because HKDF's
//! raw PRK is needed by `LabeledExtract`. Only sequence number 0 is ever used: one message per context.

use std::fmt;

use crate::crypto::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use crate::crypto::hmac;
use crate::crypto::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret as PrivateKey};
use zeroize::Zeroizing;

use super::KeySplitError;
use crate::wire::Reader;

/// Length of an X25519 public key, and so of `enc`.
pub const NK_PUBLIC_LEN: usize = 32;

/// Largest plaintext [`seal`] accepts and [`NkPrivate::open`] expects; a share is 32 bytes.
pub const MAX_SEALED_PLAINTEXT: usize = 64 * 1024;

const MODE_BASE: u8 = 0x00;
const HASH_LEN: usize = 32;
const AEAD_KEY_LEN: usize = 16;
const AEAD_NONCE_LEN: usize = 12;
const AEAD_TAG_LEN: usize = 16;

/// `"KEM" || I2OSP(kem_id = 0x0020, 2)`.
const KEM_SUITE_ID: [u8; 5] = *b"KEM\x00\x20";

/// `"HPKE" || I2OSP(kem_id = 0x0020, 2) || I2OSP(kdf_id = 0x0001, 2) || I2OSP(aead_id = 0x0001, 2)`.
const HPKE_SUITE_ID: [u8; 10] = *b"HPKE\x00\x20\x00\x01\x00\x01";

/// The agent's ephemeral key NK: X25519, generated fresh each boot and never stored.
///
/// The private scalar is zeroized when dropped (`x25519-dalek`'s `zeroize` feature); it is
/// never exported and `Debug` shows only the public half.
pub struct NkPrivate {
    key: PrivateKey,
    public: NkPublic,
}

/// NK's public key: the 32 raw X25519 bytes, as sent to the roles and hashed into extraData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NkPublic([u8; NK_PUBLIC_LEN]);

/// An HPKE single-shot message: the encapsulated key and the AEAD ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The sender's ephemeral X25519 public key (`enc`).
    pub enc: [u8; NK_PUBLIC_LEN],
    /// AES-128-GCM ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl NkPrivate {
    /// A fresh NK from the operating system's generator.
    pub fn generate() -> Result<Self, KeySplitError> {
        Self::from_key(generate()?)
    }

    /// Imports a raw X25519 private key; only known-answer tests need a fixed NK.
    #[cfg(test)]
    pub(crate) fn from_raw(bytes: &[u8]) -> Result<Self, KeySplitError> {
        let raw = <[u8; 32]>::try_from(bytes).map_err(|_| KeySplitError::KeyGeneration)?;
        Self::from_key(PrivateKey::from(raw))
    }

    fn from_key(key: PrivateKey) -> Result<Self, KeySplitError> {
        let public = public_of(&key)?;
        Ok(Self { key, public })
    }

    /// NK's public key.
    pub fn public(&self) -> NkPublic {
        self.public
    }

    /// Opens a message sealed to this NK with the same `info` and `aad`. Fails with
    /// [`KeySplitError::Open`] for another NK, another info or aad, or a changed enc or
    /// ciphertext, and with [`KeySplitError::InvalidPublicKey`] for a low-order `enc`.
    pub fn open(
        &self,
        sealed: &Sealed,
        info: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeySplitError> {
        let len = sealed.ciphertext.len();
        if !(AEAD_TAG_LEN..=MAX_SEALED_PLAINTEXT + AEAD_TAG_LEN).contains(&len) {
            return Err(KeySplitError::SealedLength {
                len,
                min: AEAD_TAG_LEN,
                max: MAX_SEALED_PLAINTEXT + AEAD_TAG_LEN,
            });
        }
        // Decap: dh = DH(skR, pkE); kem_context = enc || pkRm.
        let dh = diffie_hellman(&self.key, &sealed.enc)?;
        let shared_secret = extract_and_expand(&dh, &sealed.enc, &self.public.0)?;
        let (key, nonce) = key_schedule(&shared_secret, info)?;
        let mut buf = Zeroizing::new(sealed.ciphertext.clone());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                buf.as_mut_slice(),
            )
            .map_err(|_| KeySplitError::Open)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

impl fmt::Debug for NkPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NkPrivate")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl NkPublic {
    /// Wraps raw X25519 public key bytes.
    pub fn from_bytes(bytes: [u8; NK_PUBLIC_LEN]) -> Self {
        Self(bytes)
    }

    /// Wraps public key bytes of unchecked length (from the wire), refusing anything but 32.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeySplitError> {
        let array =
            <[u8; NK_PUBLIC_LEN]>::try_from(bytes).map_err(|_| KeySplitError::PublicKeyLength {
                len: bytes.len(),
                expected: NK_PUBLIC_LEN,
            })?;
        Ok(Self(array))
    }

    /// The raw key bytes (what extraData hashes and the wire carries).
    pub fn as_bytes(&self) -> &[u8; NK_PUBLIC_LEN] {
        &self.0
    }
}

impl Sealed {
    /// Serializes as `enc (32) || ciphertext`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(NK_PUBLIC_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.enc);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes [`Sealed::to_bytes`] output from untrusted bytes, bounding the ciphertext.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeySplitError> {
        let mut r = Reader::new("HpkeSealed", bytes);
        let enc = r.take_array::<NK_PUBLIC_LEN>("enc")?;
        let len = r.remaining();
        let ciphertext = r
            .bounded(len, "ciphertext", MAX_SEALED_PLAINTEXT + AEAD_TAG_LEN)?
            .to_vec();
        r.finish()?;
        if ciphertext.len() < AEAD_TAG_LEN {
            return Err(KeySplitError::SealedLength {
                len: ciphertext.len(),
                min: AEAD_TAG_LEN,
                max: MAX_SEALED_PLAINTEXT + AEAD_TAG_LEN,
            });
        }
        Ok(Self { enc, ciphertext })
    }
}

/// Seals `plaintext` to `nk_pub` (HPKE `SealBase`, sequence number 0) under a fresh
/// ephemeral key. `info` names the purpose and `aad` binds the message to its exchange;
/// `open` must be given the same two.
pub fn seal(
    nk_pub: &NkPublic,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, KeySplitError> {
    let ephemeral = generate()?;
    seal_with_ephemeral(&ephemeral, nk_pub, info, aad, plaintext)
}

/// `SealBase` with a given ephemeral key: the random draw is the caller's, which only the
/// known-answer test may do. Reusing an ephemeral key breaks confidentiality.
fn seal_with_ephemeral(
    ephemeral: &PrivateKey,
    nk_pub: &NkPublic,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, KeySplitError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(KeySplitError::SealedLength {
            len: plaintext.len() + AEAD_TAG_LEN,
            min: AEAD_TAG_LEN,
            max: MAX_SEALED_PLAINTEXT + AEAD_TAG_LEN,
        });
    }
    // Encap: dh = DH(skE, pkR); enc = pkE; kem_context = enc || pkRm.
    let enc = public_of(ephemeral)?.0;
    let dh = diffie_hellman(ephemeral, &nk_pub.0)?;
    let shared_secret = extract_and_expand(&dh, &enc, &nk_pub.0)?;
    let (key, nonce) = key_schedule(&shared_secret, info)?;
    let mut ciphertext = Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN);
    ciphertext.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut ciphertext,
    )
    .map_err(|_| KeySplitError::Internal {
        operation: "AES-128-GCM seal",
    })?;
    Ok(Sealed { enc, ciphertext })
}

/// A fresh X25519 private key from the operating system's generator (the scalar is
/// clamped by X25519 itself).
fn generate() -> Result<PrivateKey, KeySplitError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(raw.as_mut_slice())
        .map_err(|_| KeySplitError::KeyGeneration)?;
    Ok(PrivateKey::from(*raw))
}

fn public_of(key: &PrivateKey) -> Result<NkPublic, KeySplitError> {
    NkPublic::from_slice(X25519Public::from(key).as_bytes())
}

/// X25519, refusing the all-zero output of a low-order peer key (RFC 9180 section 7.1.4).
fn diffie_hellman(
    key: &PrivateKey,
    peer: &[u8; NK_PUBLIC_LEN],
) -> Result<Zeroizing<[u8; 32]>, KeySplitError> {
    let dh = Zeroizing::new(key.diffie_hellman(&X25519Public::from(*peer)).to_bytes());
    if bool::from(dh.as_slice().ct_eq(&[0u8; 32])) {
        return Err(KeySplitError::InvalidPublicKey);
    }
    Ok(dh)
}

/// DHKEM `ExtractAndExpand(dh, kem_context)` with `kem_context = enc || pkRm`.
fn extract_and_expand(
    dh: &[u8; 32],
    enc: &[u8; NK_PUBLIC_LEN],
    pk_rm: &[u8; NK_PUBLIC_LEN],
) -> Result<Zeroizing<[u8; HASH_LEN]>, KeySplitError> {
    let eae_prk = labeled_extract(&KEM_SUITE_ID, &[], b"eae_prk", dh);
    let mut kem_context = [0u8; 2 * NK_PUBLIC_LEN];
    for (slot, byte) in kem_context.iter_mut().zip(enc.iter().chain(pk_rm.iter())) {
        *slot = *byte;
    }
    let mut shared_secret = Zeroizing::new([0u8; HASH_LEN]);
    labeled_expand(
        &KEM_SUITE_ID,
        &eae_prk,
        b"shared_secret",
        &kem_context,
        shared_secret.as_mut_slice(),
    )?;
    Ok(shared_secret)
}

/// `KeySchedule(mode_base, shared_secret, info, psk = "", psk_id = "")`, returning the AEAD
/// key and base nonce (the exporter secret is never used).
fn key_schedule(
    shared_secret: &[u8; HASH_LEN],
    info: &[u8],
) -> Result<(LessSafeKey, [u8; AEAD_NONCE_LEN]), KeySplitError> {
    let (key_bytes, nonce) = key_schedule_bytes(shared_secret, info)?;
    let key = UnboundKey::new(&AES_128_GCM, key_bytes.as_slice()).map_err(|_| {
        KeySplitError::Internal {
            operation: "AES-128-GCM key",
        }
    })?;
    Ok((LessSafeKey::new(key), nonce))
}

#[allow(clippy::type_complexity)]
fn key_schedule_bytes(
    shared_secret: &[u8; HASH_LEN],
    info: &[u8],
) -> Result<(Zeroizing<[u8; AEAD_KEY_LEN]>, [u8; AEAD_NONCE_LEN]), KeySplitError> {
    let psk_id_hash = labeled_extract(&HPKE_SUITE_ID, &[], b"psk_id_hash", &[]);
    let info_hash = labeled_extract(&HPKE_SUITE_ID, &[], b"info_hash", info);
    let mut context = [0u8; 1 + 2 * HASH_LEN];
    let parts = std::iter::once(&MODE_BASE)
        .chain(psk_id_hash.iter())
        .chain(info_hash.iter());
    for (slot, byte) in context.iter_mut().zip(parts) {
        *slot = *byte;
    }
    let secret = labeled_extract(&HPKE_SUITE_ID, shared_secret, b"secret", &[]);
    let mut key = Zeroizing::new([0u8; AEAD_KEY_LEN]);
    labeled_expand(
        &HPKE_SUITE_ID,
        &secret,
        b"key",
        &context,
        key.as_mut_slice(),
    )?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    labeled_expand(&HPKE_SUITE_ID, &secret, b"base_nonce", &context, &mut nonce)?;
    Ok((key, nonce))
}

/// `LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm)`.
fn labeled_extract(
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Zeroizing<[u8; HASH_LEN]> {
    // HKDF-Extract(salt, ikm) = HMAC-SHA256(key = salt, ikm); an empty salt is HashLen zeros,
    // which HMAC's zero padding makes identical to an empty key.
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    ctx.update(b"HPKE-v1");
    ctx.update(suite_id);
    ctx.update(label);
    ctx.update(ikm);
    let mut prk = Zeroizing::new([0u8; HASH_LEN]);
    prk.copy_from_slice(ctx.sign().as_ref());
    prk
}

/// `LabeledExpand(prk, label, info, L)` into `out` (L = `out.len()`, at most one HMAC block,
/// which is all this suite ever asks for).
fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8; HASH_LEN],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), KeySplitError> {
    if out.len() > HASH_LEN {
        return Err(KeySplitError::Internal {
            operation: "HKDF-Expand longer than one block",
        });
    }
    let len = u16::try_from(out.len()).map_err(|_| KeySplitError::Internal {
        operation: "HKDF-Expand length",
    })?;
    // HKDF-Expand, first block: T(1) = HMAC(prk, labeled_info || 0x01).
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, prk));
    ctx.update(&len.to_be_bytes());
    ctx.update(b"HPKE-v1");
    ctx.update(suite_id);
    ctx.update(label);
    ctx.update(info);
    ctx.update(&[0x01]);
    let tag = ctx.sign();
    for (slot, byte) in out.iter_mut().zip(tag.as_ref().iter()) {
        *slot = *byte;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base
    //! mode. Values as published in the RFC (also in the CFRG `test-vectors.json` and Go's
    //! `crypto/internal/hpke/testdata/rfc9180-vectors.json`).
    use super::*;

    const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
    const SK_EM: &str = "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736";
    const PK_EM: &str = "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431";
    const SK_RM: &str = "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8";
    const PK_RM: &str = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d";
    const SHARED_SECRET: &str = "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc";
    const KEY: &str = "4531685d41d65f03dc48f6b8302c05b0";
    const BASE_NONCE: &str = "56d890e5accaaf011cff4b7d";
    const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const AAD0: &str = "436f756e742d30";
    const CT0: &str = "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    #[test]
    fn key_pairs_match_vector() {
        let nk = NkPrivate::from_raw(&h(SK_RM)).unwrap();
        assert_eq!(nk.public().as_bytes(), &h32(PK_RM));
        let ephemeral = PrivateKey::from(h32(SK_EM));
        assert_eq!(public_of(&ephemeral).unwrap().as_bytes(), &h32(PK_EM));
    }

    #[test]
    fn encap_and_key_schedule_match_vector() {
        let ephemeral = PrivateKey::from(h32(SK_EM));
        let dh = diffie_hellman(&ephemeral, &h32(PK_RM)).unwrap();
        let shared = extract_and_expand(&dh, &h32(PK_EM), &h32(PK_RM)).unwrap();
        assert_eq!(hex::encode(shared.as_slice()), SHARED_SECRET);
        let (key, nonce) = key_schedule_bytes(&shared, &h(INFO)).unwrap();
        assert_eq!(hex::encode(key.as_slice()), KEY);
        assert_eq!(hex::encode(nonce), BASE_NONCE);
    }

    #[test]
    fn seal_reproduces_vector_ciphertext() {
        let ephemeral = PrivateKey::from(h32(SK_EM));
        let pk_r = NkPublic::from_bytes(h32(PK_RM));
        let sealed = seal_with_ephemeral(&ephemeral, &pk_r, &h(INFO), &h(AAD0), &h(PT)).unwrap();
        assert_eq!(hex::encode(sealed.enc), PK_EM);
        assert_eq!(hex::encode(&sealed.ciphertext), CT0);
    }

    #[test]
    fn open_decrypts_vector_ciphertext() {
        let nk = NkPrivate::from_raw(&h(SK_RM)).unwrap();
        let sealed = Sealed {
            enc: h32(PK_EM),
            ciphertext: h(CT0),
        };
        let pt = nk.open(&sealed, &h(INFO), &h(AAD0)).unwrap();
        assert_eq!(pt.as_slice(), h(PT).as_slice());
        // The same vector with the next sequence's aad must not open at sequence 0.
        assert_eq!(
            nk.open(&sealed, &h(INFO), b"Count-1").unwrap_err(),
            KeySplitError::Open
        );
    }

    #[test]
    fn debug_never_shows_private_key() {
        let nk = NkPrivate::from_raw(&h(SK_RM)).unwrap();
        let shown = format!("{nk:?}");
        assert!(!shown.contains(SK_RM), "{shown}");
        assert!(!shown.to_lowercase().contains("4612c5"), "{shown}");
        assert!(shown.contains("NkPrivate"));
    }
}
