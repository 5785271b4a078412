//! Hash algorithms (TPM_ALG_ID) and fixed-capacity digests.
//!
//! A digest is a value type with the algorithm attached, so that a SHA-1 value can never be
//! compared with or extended into a SHA-256 bank by mistake, and replay allocates nothing.

use std::fmt;

use crate::ParseError;

/// Largest digest we handle (SHA-512).
pub const MAX_DIGEST_SIZE: usize = 64;

/// A TPM hash algorithm we implement. Anything else is refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
}

impl HashAlg {
    /// All supported algorithms, in TPM_ALG_ID order.
    pub const ALL: [HashAlg; 4] = [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512];

    /// Decodes a TPM_ALG_ID; unknown values are an error naming the structure and field.
    pub fn from_tpm(
        id: u16,
        structure: &'static str,
        field: &'static str,
    ) -> Result<Self, ParseError> {
        match id {
            0x0004 => Ok(Self::Sha1),
            0x000B => Ok(Self::Sha256),
            0x000C => Ok(Self::Sha384),
            0x000D => Ok(Self::Sha512),
            alg => Err(ParseError::UnknownAlgorithm {
                structure,
                field,
                alg,
            }),
        }
    }

    /// The TPM_ALG_ID.
    pub fn to_tpm(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Lowercase name as used by tpm2-tools and IMA (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Parses a lowercase name (`sha1`, `sha256`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(crate) fn ring(self) -> &'static crate::crypto::digest::Algorithm {
        match self {
            Self::Sha1 => &crate::crypto::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &crate::crypto::digest::SHA256,
            Self::Sha384 => &crate::crypto::digest::SHA384,
            Self::Sha512 => &crate::crypto::digest::SHA512,
        }
    }

    /// Hashes `data`.
    pub fn hash(self, data: &[u8]) -> Digest {
        let d = crate::crypto::digest::digest(self.ring(), data);
        Digest::from_ring(self, d.as_ref())
    }

    /// Hashes the concatenation of `parts` without copying them together.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Digest {
        let mut ctx = crate::crypto::digest::Context::new(self.ring());
        for p in parts {
            ctx.update(p);
        }
        Digest::from_ring(self, ctx.finish().as_ref())
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest tagged with its algorithm; its length always equals `alg.size()`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: HashAlg,
    buf: [u8; MAX_DIGEST_SIZE],
}

impl Digest {
    /// The all-zero value (a PCR after reset at locality 0).
    pub fn zero(alg: HashAlg) -> Self {
        Self {
            alg,
            buf: [0; MAX_DIGEST_SIZE],
        }
    }

    /// A value with every byte set to `byte` (PCRs 17-22 reset to 0xff, for example).
    pub fn filled(alg: HashAlg, byte: u8) -> Self {
        let mut d = Self::zero(alg);
        for b in d.buf.iter_mut().take(alg.size()) {
            *b = byte;
        }
        d
    }

    /// Wraps `bytes`, which must be exactly `alg.size()` long.
    pub fn from_slice(alg: HashAlg, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != alg.size() {
            return None;
        }
        let mut d = Self::zero(alg);
        d.buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(d)
    }

    /// Parses lowercase or uppercase hex of the right length.
    pub fn from_hex(alg: HashAlg, s: &str) -> Option<Self> {
        let bytes = hex::decode(s.trim()).ok()?;
        Self::from_slice(alg, &bytes)
    }

    fn from_ring(alg: HashAlg, bytes: &[u8]) -> Self {
        let mut d = Self::zero(alg);
        let n = bytes.len().min(MAX_DIGEST_SIZE);
        if let (Some(dst), Some(src)) = (d.buf.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        d
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The digest bytes (`alg.size()` long).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.alg.size()).unwrap_or_default()
    }

    /// PCR extend: `self = H(self || measurement)`.
    pub fn extend(&mut self, measurement: &[u8]) {
        *self = self.alg.hash_parts(&[self.as_bytes(), measurement]);
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_empty_and_extend() {
        let d = HashAlg::Sha256.hash(b"");
        assert_eq!(
            d.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut pcr = Digest::zero(HashAlg::Sha1);
        pcr.extend(HashAlg::Sha1.hash(b"abc").as_bytes());
        // sha1(0^20 || sha1("abc")), computed independently with Python's hashlib.
        assert_eq!(pcr.to_hex(), "ccd5bd41458de644ac34a2478b58ff819bef5acf");
    }

    #[test]
    fn unknown_alg_is_an_error() {
        assert!(matches!(
            HashAlg::from_tpm(0x0012, "TPML_PCR_SELECTION", "hash"),
            Err(ParseError::UnknownAlgorithm { alg: 0x12, .. })
        ));
    }

    #[test]
    fn wrong_length_digest_refused() {
        assert!(Digest::from_slice(HashAlg::Sha256, &[0; 20]).is_none());
        assert!(Digest::from_hex(HashAlg::Sha1, "00").is_none());
    }
}
