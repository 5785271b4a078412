//! TPMT_PUBLIC / TPM2B_PUBLIC (TPM 2.0 Part 2, 12.2): the public area of an EK or AK.
//!
//! Only RSA and ECC (NIST P-256, P-384) objects are modelled; those are the keys an EK or an
//! AK can be. Every byte of the input is kept (including values we do not interpret, such as
//! the `keyBits` of an RSA key whose modulus is empty), so [`Public::marshal`] reproduces the
//! input exactly and [`Public::name`] equals the name the TPM computes.

use std::fmt;

use super::{Digest, HashAlg, Reader, Writer};
use crate::ParseError;

const TPMT: &str = "TPMT_PUBLIC";

/// TPM_ALG_NULL.
const ALG_NULL: u16 = 0x0010;
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_AES: u16 = 0x0006;

/// Largest RSA modulus (MAX_RSA_KEY_BYTES for 4096-bit keys).
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest ECC coordinate we accept (TPM2B_ECC_PARAMETER; P-521 would need 66).
pub const MAX_ECC_KEY_BYTES: usize = 128;
/// Our bound on a TPM2B_PUBLIC's size field: every RSA-4096 or ECC public area fits.
pub const MAX_PUBLIC_SIZE: usize = 1024;

/// TPMA_OBJECT: the attribute bits of an object (Part 2, 8.3). Unknown bits are kept so that
/// marshalling round-trips, but only the named ones carry meaning for us.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ObjectAttributes(u32);

impl ObjectAttributes {
    /// The key cannot leave this TPM.
    pub const FIXED_TPM: Self = Self(1 << 1);
    /// Saved contexts do not survive TPM Restart.
    pub const ST_CLEAR: Self = Self(1 << 2);
    /// The key cannot be re-parented.
    pub const FIXED_PARENT: Self = Self(1 << 4);
    /// The TPM generated the sensitive part (not imported).
    pub const SENSITIVE_DATA_ORIGIN: Self = Self(1 << 5);
    /// User role may use the key with an auth value.
    pub const USER_WITH_AUTH: Self = Self(1 << 6);
    /// Admin role needs a policy session.
    pub const ADMIN_WITH_POLICY: Self = Self(1 << 7);
    /// Not subject to dictionary-attack protection.
    pub const NO_DA: Self = Self(1 << 10);
    /// Duplication needs an inner wrapper.
    pub const ENCRYPTED_DUPLICATION: Self = Self(1 << 11);
    /// Usage is restricted to TPM-generated formats (quotes, storage parents).
    pub const RESTRICTED: Self = Self(1 << 16);
    /// The key can decrypt.
    pub const DECRYPT: Self = Self(1 << 17);
    /// The key can sign.
    pub const SIGN: Self = Self(1 << 18);

    /// Every named attribute with its TCG name, in bit order.
    pub const NAMED: [(Self, &'static str); 11] = [
        (Self::FIXED_TPM, "fixedTPM"),
        (Self::ST_CLEAR, "stClear"),
        (Self::FIXED_PARENT, "fixedParent"),
        (Self::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (Self::USER_WITH_AUTH, "userWithAuth"),
        (Self::ADMIN_WITH_POLICY, "adminWithPolicy"),
        (Self::NO_DA, "noDA"),
        (Self::ENCRYPTED_DUPLICATION, "encryptedDuplication"),
        (Self::RESTRICTED, "restricted"),
        (Self::DECRYPT, "decrypt"),
        (Self::SIGN, "sign"),
    ];

    /// From the raw TPMA_OBJECT value.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw TPMA_OBJECT value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self` with the bits of `other` cleared.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl std::ops::BitOr for ObjectAttributes {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectAttributes(0x{:08x}", self.0)?;
        for (bit, name) in Self::NAMED {
            if self.contains(bit) {
                write!(f, " {name}")?;
            }
        }
        f.write_str(")")
    }
}

/// TPMI_ECC_CURVE values we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// TPM_ECC_NIST_P256 (0x0003).
    NistP256,
    /// TPM_ECC_NIST_P384 (0x0004).
    NistP384,
}

impl EccCurve {
    /// Decodes a TPM_ECC_CURVE.
    pub fn from_tpm(
        id: u16,
        structure: &'static str,
        field: &'static str,
    ) -> Result<Self, ParseError> {
        match id {
            0x0003 => Ok(Self::NistP256),
            0x0004 => Ok(Self::NistP384),
            alg => Err(ParseError::UnknownAlgorithm {
                structure,
                field,
                alg,
            }),
        }
    }

    /// The TPM_ECC_CURVE.
    pub fn to_tpm(self) -> u16 {
        match self {
            Self::NistP256 => 0x0003,
            Self::NistP384 => 0x0004,
        }
    }

    /// Size of one coordinate (and of a scalar) in bytes.
    pub fn coordinate_size(self) -> usize {
        match self {
            Self::NistP256 => 32,
            Self::NistP384 => 48,
        }
    }

    /// DER of the curve's object identifier (without tag and length), for SPKI.
    fn oid(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Self::NistP256 => &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Self::NistP384 => &[0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }
}

/// TPMI_ALG_SYM_MODE values (block cipher modes) of a symmetric definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymMode {
    /// TPM_ALG_CTR (0x0040).
    Ctr,
    /// TPM_ALG_OFB (0x0041).
    Ofb,
    /// TPM_ALG_CBC (0x0042).
    Cbc,
    /// TPM_ALG_CFB (0x0043), what storage keys and EKs use.
    Cfb,
    /// TPM_ALG_ECB (0x0044).
    Ecb,
}

impl SymMode {
    fn from_tpm(id: u16, field: &'static str) -> Result<Self, ParseError> {
        match id {
            0x0040 => Ok(Self::Ctr),
            0x0041 => Ok(Self::Ofb),
            0x0042 => Ok(Self::Cbc),
            0x0043 => Ok(Self::Cfb),
            0x0044 => Ok(Self::Ecb),
            alg => Err(ParseError::UnknownAlgorithm {
                structure: TPMT,
                field,
                alg,
            }),
        }
    }

    /// The TPM_ALG_ID.
    pub fn to_tpm(self) -> u16 {
        match self {
            Self::Ctr => 0x0040,
            Self::Ofb => 0x0041,
            Self::Cbc => 0x0042,
            Self::Cfb => 0x0043,
            Self::Ecb => 0x0044,
        }
    }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (EK), or none.
///
/// MakeCredential needs it: the credential blob is encrypted with this algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymDef {
    /// TPM_ALG_NULL: not a storage key (every signing key, e.g. an AK).
    Null,
    /// TPM_ALG_AES with a key size (128, 192 or 256 bits) and mode.
    Aes {
        /// Key size in bits.
        key_bits: u16,
        /// Block mode (CFB for an EK).
        mode: SymMode,
    },
}

impl SymDef {
    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        match r.u16("parameters.symmetric.algorithm")? {
            ALG_NULL => Ok(Self::Null),
            ALG_AES => {
                let key_bits = r.u16("parameters.symmetric.keyBits")?;
                if !matches!(key_bits, 128 | 192 | 256) {
                    return Err(r.invalid("parameters.symmetric.keyBits", u64::from(key_bits)));
                }
                let mode = SymMode::from_tpm(
                    r.u16("parameters.symmetric.mode")?,
                    "parameters.symmetric.mode",
                )?;
                Ok(Self::Aes { key_bits, mode })
            }
            alg => Err(ParseError::UnknownAlgorithm {
                structure: TPMT,
                field: "parameters.symmetric.algorithm",
                alg,
            }),
        }
    }

    fn marshal(&self, w: &mut Writer) {
        match self {
            Self::Null => {
                w.u16(ALG_NULL);
            }
            Self::Aes { key_bits, mode } => {
                w.u16(ALG_AES).u16(*key_bits).u16(mode.to_tpm());
            }
        }
    }
}

/// The signing or decryption scheme of a key (TPMT_RSA_SCHEME / TPMT_ECC_SCHEME).
///
/// For a restricted signing key (an AK) the scheme fixes how every quote is signed and with
/// which hash, so the verifier refuses a signature that uses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// TPM_ALG_NULL: chosen per command (EKs, unrestricted keys).
    Null,
    /// TPM_ALG_RSASSA (0x0014): RSA PKCS#1 v1.5 signatures.
    RsaSsa(HashAlg),
    /// TPM_ALG_RSAPSS (0x0016): RSA PSS signatures.
    RsaPss(HashAlg),
    /// TPM_ALG_ECDSA (0x0018).
    Ecdsa(HashAlg),
    /// TPM_ALG_RSAES (0x0015): RSA PKCS#1 v1.5 encryption.
    RsaEs,
    /// TPM_ALG_OAEP (0x0017): RSA OAEP encryption.
    Oaep(HashAlg),
    /// TPM_ALG_ECDH (0x0019): ECC key agreement.
    Ecdh(HashAlg),
}

impl KeyScheme {
    fn parse(r: &mut Reader<'_>, rsa: bool) -> Result<Self, ParseError> {
        const F: &str = "parameters.scheme.scheme";
        const H: &str = "parameters.scheme.hashAlg";
        let alg = r.u16(F)?;
        let hash = |r: &mut Reader<'_>| HashAlg::from_tpm(r.u16(H)?, TPMT, H);
        match (alg, rsa) {
            (ALG_NULL, _) => Ok(Self::Null),
            (0x0014, true) => Ok(Self::RsaSsa(hash(r)?)),
            (0x0016, true) => Ok(Self::RsaPss(hash(r)?)),
            (0x0015, true) => Ok(Self::RsaEs),
            (0x0017, true) => Ok(Self::Oaep(hash(r)?)),
            (0x0018, false) => Ok(Self::Ecdsa(hash(r)?)),
            (0x0019, false) => Ok(Self::Ecdh(hash(r)?)),
            (alg, _) => Err(ParseError::UnknownAlgorithm {
                structure: TPMT,
                field: F,
                alg,
            }),
        }
    }

    fn marshal(&self, w: &mut Writer) {
        match self {
            Self::Null => w.u16(ALG_NULL),
            Self::RsaSsa(h) => w.u16(0x0014).u16(h.to_tpm()),
            Self::RsaPss(h) => w.u16(0x0016).u16(h.to_tpm()),
            Self::RsaEs => w.u16(0x0015),
            Self::Oaep(h) => w.u16(0x0017).u16(h.to_tpm()),
            Self::Ecdsa(h) => w.u16(0x0018).u16(h.to_tpm()),
            Self::Ecdh(h) => w.u16(0x0019).u16(h.to_tpm()),
        };
    }
}

/// TPMT_KDF_SCHEME of an ECC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KdfScheme {
    /// TPM_ALG_NULL (what EKs and AKs use).
    Null,
    /// TPM_ALG_MGF1 (0x0007).
    Mgf1(HashAlg),
    /// TPM_ALG_KDF1_SP800_56A (0x0020).
    Kdf1Sp800_56a(HashAlg),
    /// TPM_ALG_KDF2 (0x0021).
    Kdf2(HashAlg),
    /// TPM_ALG_KDF1_SP800_108 (0x0022).
    Kdf1Sp800_108(HashAlg),
}

impl KdfScheme {
    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        const F: &str = "parameters.kdf.scheme";
        const H: &str = "parameters.kdf.hashAlg";
        let alg = r.u16(F)?;
        if alg == ALG_NULL {
            return Ok(Self::Null);
        }
        let ctor: fn(HashAlg) -> Self = match alg {
            0x0007 => Self::Mgf1,
            0x0020 => Self::Kdf1Sp800_56a,
            0x0021 => Self::Kdf2,
            0x0022 => Self::Kdf1Sp800_108,
            alg => {
                return Err(ParseError::UnknownAlgorithm {
                    structure: TPMT,
                    field: F,
                    alg,
                })
            }
        };
        Ok(ctor(HashAlg::from_tpm(r.u16(H)?, TPMT, H)?))
    }

    fn marshal(&self, w: &mut Writer) {
        let (alg, hash) = match self {
            Self::Null => (ALG_NULL, None),
            Self::Mgf1(h) => (0x0007, Some(h)),
            Self::Kdf1Sp800_56a(h) => (0x0020, Some(h)),
            Self::Kdf2(h) => (0x0021, Some(h)),
            Self::Kdf1Sp800_108(h) => (0x0022, Some(h)),
        };
        w.u16(alg);
        if let Some(h) = hash {
            w.u16(h.to_tpm());
        }
    }
}

/// The type-specific part of a public area: parameters and unique (the public key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// TPM_ALG_RSA.
    Rsa {
        /// Symmetric algorithm for a storage key, [`SymDef::Null`] otherwise.
        symmetric: SymDef,
        /// Signing/decryption scheme.
        scheme: KeyScheme,
        /// Modulus size in bits (as declared; the modulus may be empty in a template).
        key_bits: u16,
        /// Public exponent as on the wire; 0 means 65537.
        exponent: u32,
        /// The modulus, big-endian (TPM2B_PUBLIC_KEY_RSA).
        modulus: Vec<u8>,
    },
    /// TPM_ALG_ECC.
    Ecc {
        /// Symmetric algorithm for a storage key, [`SymDef::Null`] otherwise.
        symmetric: SymDef,
        /// Signing/key-exchange scheme.
        scheme: KeyScheme,
        /// The curve.
        curve: EccCurve,
        /// Key derivation scheme.
        kdf: KdfScheme,
        /// Point x coordinate, big-endian.
        x: Vec<u8>,
        /// Point y coordinate, big-endian.
        y: Vec<u8>,
    },
}

/// A TPMT_PUBLIC: what identifies a TPM key (EK or AK) to the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Public {
    name_alg: HashAlg,
    attributes: ObjectAttributes,
    auth_policy: Vec<u8>,
    key: PublicKey,
}

impl Public {
    /// Assembles a public area. `auth_policy` must be empty or a digest of `name_alg`'s size.
    pub fn new(
        name_alg: HashAlg,
        attributes: ObjectAttributes,
        auth_policy: &[u8],
        key: PublicKey,
    ) -> Result<Self, ParseError> {
        let bytes = Self {
            name_alg,
            attributes,
            auth_policy: auth_policy.to_vec(),
            key,
        }
        .marshal();
        // Re-parsing applies every bound the parser applies, so a hand-built value can never
        // be something the parser would refuse.
        Self::parse(&bytes)
    }

    /// Parses a TPMT_PUBLIC that fills `bytes` exactly (what tss-esapi's
    /// `Public::marshall()` returns).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(TPMT, bytes);
        let p = Self::read(&mut r)?;
        r.finish()?;
        Ok(p)
    }

    /// Parses a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC, what `tpm2_createak -u` writes); the
    /// size must match the TPMT_PUBLIC exactly and nothing may follow.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut outer = Reader::new("TPM2B_PUBLIC", bytes);
        let len = usize::from(outer.u16("size")?);
        if len > MAX_PUBLIC_SIZE {
            return Err(ParseError::TooLarge {
                structure: "TPM2B_PUBLIC",
                field: "size",
                len,
                max: MAX_PUBLIC_SIZE,
            });
        }
        let mut inner = outer.sub(len, TPMT)?;
        let p = Self::read(&mut inner)?;
        inner.finish()?;
        outer.finish()?;
        Ok(p)
    }

    /// Reads one TPMT_PUBLIC from `r`, leaving the reader after it.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        r.set_structure(TPMT);
        let ty = r.u16("type")?;
        if ty != ALG_RSA && ty != ALG_ECC {
            return Err(ParseError::UnknownAlgorithm {
                structure: TPMT,
                field: "type",
                alg: ty,
            });
        }
        let name_alg = HashAlg::from_tpm(r.u16("nameAlg")?, TPMT, "nameAlg")?;
        let attributes = ObjectAttributes(r.u32("objectAttributes")?);
        let auth_policy = r.tpm2b("authPolicy", super::MAX_DIGEST_SIZE)?.to_vec();
        let symmetric = SymDef::parse(r)?;
        let scheme = KeyScheme::parse(r, ty == ALG_RSA)?;
        let key = if ty == ALG_RSA {
            let key_bits = r.u16("parameters.keyBits")?;
            let exponent = r.u32("parameters.exponent")?;
            let modulus = r.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES)?.to_vec();
            PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            }
        } else {
            let curve =
                EccCurve::from_tpm(r.u16("parameters.curveID")?, TPMT, "parameters.curveID")?;
            let kdf = KdfScheme::parse(r)?;
            let x = r.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)?.to_vec();
            let y = r.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)?.to_vec();
            PublicKey::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            }
        };
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            key,
        })
    }

    /// The TPMT_PUBLIC bytes (no size prefix): what the name is computed over.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    /// The TPM2B_PUBLIC bytes (size-prefixed).
    pub fn marshal_tpm2b(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.tpm2b(&self.marshal());
        w.into_vec()
    }

    /// Appends the TPMT_PUBLIC to `w`.
    pub fn write(&self, w: &mut Writer) {
        match &self.key {
            PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            } => {
                w.u16(ALG_RSA)
                    .u16(self.name_alg.to_tpm())
                    .u32(self.attributes.0);
                w.tpm2b(&self.auth_policy);
                symmetric.marshal(w);
                scheme.marshal(w);
                w.u16(*key_bits).u32(*exponent).tpm2b(modulus);
            }
            PublicKey::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            } => {
                w.u16(ALG_ECC)
                    .u16(self.name_alg.to_tpm())
                    .u32(self.attributes.0);
                w.tpm2b(&self.auth_policy);
                symmetric.marshal(w);
                scheme.marshal(w);
                w.u16(curve.to_tpm());
                kdf.marshal(w);
                w.tpm2b(x).tpm2b(y);
            }
        }
    }

    /// The object's name: nameAlg (big-endian u16) || H_nameAlg(TPMT_PUBLIC). This is what a
    /// quote's `qualifiedSigner` and MakeCredential's `objectName` refer to.
    pub fn name(&self) -> Vec<u8> {
        let digest = self.name_digest();
        let mut out = Vec::with_capacity(2 + digest.as_bytes().len());
        out.extend_from_slice(&self.name_alg.to_tpm().to_be_bytes());
        out.extend_from_slice(digest.as_bytes());
        out
    }

    /// H_nameAlg(TPMT_PUBLIC), the digest part of [`Public::name`].
    pub fn name_digest(&self) -> Digest {
        self.name_alg.hash(&self.marshal())
    }

    /// The name algorithm (also the hash MakeCredential's KDFs use for an EK).
    pub fn name_alg(&self) -> HashAlg {
        self.name_alg
    }

    /// The object attributes.
    pub fn attributes(&self) -> ObjectAttributes {
        self.attributes
    }

    /// The authPolicy digest (empty when none).
    pub fn auth_policy(&self) -> &[u8] {
        &self.auth_policy
    }

    /// Parameters and public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The symmetric definition (an EK's is AES-128-CFB; a signing key's is Null).
    pub fn symmetric(&self) -> SymDef {
        match &self.key {
            PublicKey::Rsa { symmetric, .. } | PublicKey::Ecc { symmetric, .. } => *symmetric,
        }
    }

    /// The key's scheme.
    pub fn scheme(&self) -> KeyScheme {
        match &self.key {
            PublicKey::Rsa { scheme, .. } | PublicKey::Ecc { scheme, .. } => *scheme,
        }
    }

    /// The RSA modulus, or `None` for an ECC key.
    pub fn rsa_modulus(&self) -> Option<&[u8]> {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => Some(modulus),
            PublicKey::Ecc { .. } => None,
        }
    }

    /// The effective RSA public exponent (a wire value of 0 means 65537), or `None` for ECC.
    pub fn rsa_exponent(&self) -> Option<u32> {
        match &self.key {
            PublicKey::Rsa { exponent: 0, .. } => Some(65537),
            PublicKey::Rsa { exponent, .. } => Some(*exponent),
            PublicKey::Ecc { .. } => None,
        }
    }

    /// The RSA key size in bits as declared in the parameters, or `None` for ECC.
    pub fn rsa_key_bits(&self) -> Option<u16> {
        match &self.key {
            PublicKey::Rsa { key_bits, .. } => Some(*key_bits),
            PublicKey::Ecc { .. } => None,
        }
    }

    /// The ECC curve, or `None` for an RSA key.
    pub fn ecc_curve(&self) -> Option<EccCurve> {
        match &self.key {
            PublicKey::Ecc { curve, .. } => Some(*curve),
            PublicKey::Rsa { .. } => None,
        }
    }

    /// The ECC point `(x, y)` as on the wire, or `None` for an RSA key.
    pub fn ecc_point(&self) -> Option<(&[u8], &[u8])> {
        match &self.key {
            PublicKey::Ecc { x, y, .. } => Some((x, y)),
            PublicKey::Rsa { .. } => None,
        }
    }

    /// The ECC point as an uncompressed SEC1 encoding (`04 || x || y`, coordinates left-padded
    /// to the curve size), or `None` for RSA or a coordinate longer than the curve allows.
    pub fn ecc_point_uncompressed(&self) -> Option<Vec<u8>> {
        let PublicKey::Ecc { curve, x, y, .. } = &self.key else {
            return None;
        };
        let n = curve.coordinate_size();
        let pad_x = n.checked_sub(x.len())?;
        let pad_y = n.checked_sub(y.len())?;
        let mut out = Vec::with_capacity(1 + 2 * n);
        out.push(0x04);
        out.resize(1 + pad_x, 0);
        out.extend_from_slice(x);
        out.resize(out.len() + pad_y, 0);
        out.extend_from_slice(y);
        Some(out)
    }

    /// The public key as DER SubjectPublicKeyInfo (RFC 5280), to compare byte-for-byte with
    /// the key of an EK certificate. `None` when the area holds no usable key (an empty
    /// template, an over-long ECC coordinate).
    pub fn spki_der(&self) -> Option<Vec<u8>> {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => {
                let n = strip_zeros(modulus);
                if n.is_empty() {
                    return None;
                }
                let e = self.rsa_exponent()?.to_be_bytes();
                let rsa_key = der(0x30, &[der_uint(n), der_uint(strip_zeros(&e))].concat());
                // rsaEncryption 1.2.840.113549.1.1.1 with NULL parameters.
                let alg = der(
                    0x30,
                    &[
                        der(
                            0x06,
                            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                        ),
                        vec![0x05, 0x00],
                    ]
                    .concat(),
                );
                Some(der(
                    0x30,
                    &[alg, der(0x03, &[&[0u8][..], &rsa_key].concat())].concat(),
                ))
            }
            PublicKey::Ecc { curve, x, y, .. } => {
                if x.is_empty() || y.is_empty() {
                    return None;
                }
                let point = self.ecc_point_uncompressed()?;
                // id-ecPublicKey 1.2.840.10045.2.1 with the named curve.
                let alg = der(
                    0x30,
                    &[
                        der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                        der(0x06, curve.oid()),
                    ]
                    .concat(),
                );
                Some(der(
                    0x30,
                    &[alg, der(0x03, &[&[0u8][..], &point].concat())].concat(),
                ))
            }
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&v| v != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// A DER INTEGER for a non-negative big-endian value without leading zeros.
fn der_uint(v: &[u8]) -> Vec<u8> {
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        der(0x02, &[&[0u8][..], v].concat())
    } else {
        der(0x02, v)
    }
}

/// DER tag-length-value. Lengths here are below 64 KiB (keys of at most 4096 bits).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 4);
    out.push(tag);
    match (u8::try_from(len), u16::try_from(len)) {
        (Ok(l), _) if l < 0x80 => out.push(l),
        (Ok(l), _) => out.extend_from_slice(&[0x81, l]),
        (_, Ok(l)) => {
            out.push(0x82);
            out.extend_from_slice(&l.to_be_bytes());
        }
        // Unreachable for key material; an empty length keeps the function total.
        _ => out.push(0),
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ak_attrs() -> ObjectAttributes {
        ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::SENSITIVE_DATA_ORIGIN
            | ObjectAttributes::USER_WITH_AUTH
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::SIGN
    }

    fn rsa_ek() -> Public {
        Public::new(
            HashAlg::Sha256,
            ObjectAttributes::from_bits(0x000300b2),
            &[0x11; 32],
            PublicKey::Rsa {
                symmetric: SymDef::Aes {
                    key_bits: 128,
                    mode: SymMode::Cfb,
                },
                scheme: KeyScheme::Null,
                key_bits: 2048,
                exponent: 0,
                modulus: vec![0xc5; 256],
            },
        )
        .unwrap()
    }

    fn ecc_ak() -> Public {
        Public::new(
            HashAlg::Sha256,
            ak_attrs(),
            &[],
            PublicKey::Ecc {
                symmetric: SymDef::Null,
                scheme: KeyScheme::Ecdsa(HashAlg::Sha256),
                curve: EccCurve::NistP256,
                kdf: KdfScheme::Null,
                x: vec![1; 32],
                y: vec![2; 32],
            },
        )
        .unwrap()
    }

    #[test]
    fn round_trip_rsa_and_ecc_both_framings() {
        for p in [rsa_ek(), ecc_ak()] {
            let t = p.marshal();
            assert_eq!(Public::parse(&t).unwrap(), p);
            let b = p.marshal_tpm2b();
            assert_eq!(usize::from(u16::from_be_bytes([b[0], b[1]])), t.len());
            assert_eq!(Public::parse_tpm2b(&b).unwrap(), p);
            assert_eq!(Public::parse_tpm2b(&b).unwrap().marshal(), t);
        }
    }

    #[test]
    fn accessors() {
        let ek = rsa_ek();
        assert_eq!(ek.rsa_exponent(), Some(65537));
        assert_eq!(ek.rsa_modulus().unwrap().len(), 256);
        assert_eq!(
            ek.symmetric(),
            SymDef::Aes {
                key_bits: 128,
                mode: SymMode::Cfb
            }
        );
        assert!(ek.ecc_point().is_none());
        let ak = ecc_ak();
        assert_eq!(ak.ecc_curve(), Some(EccCurve::NistP256));
        assert_eq!(ak.ecc_point().unwrap(), (&[1u8; 32][..], &[2u8; 32][..]));
        assert_eq!(ak.scheme(), KeyScheme::Ecdsa(HashAlg::Sha256));
        let name = ak.name();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(&name[2..], HashAlg::Sha256.hash(&ak.marshal()).as_bytes());
    }

    #[test]
    fn spki_der_matches_aws_lc_encoding() {
        // Generate a real P-256 key, wrap its point in a TPMT_PUBLIC, and check our SPKI is
        // what aws-lc-rs accepts as an X.509 public key.
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pt = kp.public_key().as_ref();
        let p = Public::new(
            HashAlg::Sha256,
            ak_attrs(),
            &[],
            PublicKey::Ecc {
                symmetric: SymDef::Null,
                scheme: KeyScheme::Ecdsa(HashAlg::Sha256),
                curve: EccCurve::NistP256,
                kdf: KdfScheme::Null,
                x: pt[1..33].to_vec(),
                y: pt[33..].to_vec(),
            },
        )
        .unwrap();
        let spki = p.spki_der().unwrap();
        use aws_lc_rs::encoding::AsDer;
        let expected = kp.public_key().as_der().unwrap();
        assert_eq!(spki, expected.as_ref());
    }

    #[test]
    fn errors_name_structure_and_field() {
        let mut t = ecc_ak().marshal();
        // Unknown object type.
        t[0..2].copy_from_slice(&0x0025u16.to_be_bytes());
        assert_eq!(
            Public::parse(&t),
            Err(ParseError::UnknownAlgorithm {
                structure: TPMT,
                field: "type",
                alg: 0x25
            })
        );
        // Unknown curve (P-521).
        let mut t = ecc_ak().marshal();
        let at = t.len() - (2 + 32) * 2 - 2 - 2;
        t[at..at + 2].copy_from_slice(&0x0005u16.to_be_bytes());
        assert!(matches!(
            Public::parse(&t),
            Err(ParseError::UnknownAlgorithm {
                field: "parameters.curveID",
                alg: 5,
                ..
            })
        ));
        // Truncated, trailing, and a TPM2B size that lies.
        let t = ecc_ak().marshal();
        assert!(matches!(
            Public::parse(&t[..t.len() - 1]),
            Err(ParseError::Truncated {
                field: "unique.ecc.y",
                ..
            })
        ));
        let mut long = t.clone();
        long.push(0);
        assert!(matches!(
            Public::parse(&long),
            Err(ParseError::TrailingData { .. })
        ));
        let mut b = ecc_ak().marshal_tpm2b();
        b[1] += 1;
        assert!(matches!(
            Public::parse_tpm2b(&b),
            Err(ParseError::Truncated {
                structure: "TPM2B_PUBLIC",
                field: TPMT,
                ..
            })
        ));
        let mut b = ecc_ak().marshal_tpm2b();
        b[0..2].copy_from_slice(&0x0800u16.to_be_bytes());
        assert!(matches!(
            Public::parse_tpm2b(&b),
            Err(ParseError::TooLarge {
                structure: "TPM2B_PUBLIC",
                field: "size",
                ..
            })
        ));
        // Modulus longer than MAX_RSA_KEY_BYTES.
        let mut t = rsa_ek().marshal();
        let at = t.len() - 256 - 2;
        t[at..at + 2].copy_from_slice(&600u16.to_be_bytes());
        assert!(matches!(
            Public::parse(&t),
            Err(ParseError::TooLarge {
                field: "unique.rsa",
                len: 600,
                max: 512,
                ..
            })
        ));
    }
}
