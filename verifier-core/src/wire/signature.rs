//! TPMT_SIGNATURE (TPM 2.0 Part 2, 11.3.4): a quote's signature.

use super::{HashAlg, Reader, Writer, MAX_ECC_KEY_BYTES, MAX_RSA_KEY_BYTES};
use crate::ParseError;

const S: &str = "TPMT_SIGNATURE";

/// A TPMT_SIGNATURE of one of the schemes an AK can use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Signature {
    /// TPM_ALG_RSASSA (0x0014): RSA PKCS#1 v1.5.
    RsaSsa {
        /// Hash signed.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// TPM_ALG_RSAPSS (0x0016).
    RsaPss {
        /// Hash signed.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// TPM_ALG_ECDSA (0x0018).
    Ecdsa {
        /// Hash signed.
        hash: HashAlg,
        /// `r`, big-endian; a TPM may strip leading zeros.
        r: Vec<u8>,
        /// `s`, big-endian; a TPM may strip leading zeros.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Reads a TPMT_SIGNATURE. TPM_ALG_NULL and schemes an AK cannot have are refused as
    /// unknown algorithms.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let alg = r.u16("sigAlg")?;
        if !matches!(alg, 0x0014 | 0x0016 | 0x0018) {
            return Err(ParseError::UnknownAlgorithm {
                structure: S,
                field: "sigAlg",
                alg,
            });
        }
        let hash = HashAlg::from_tpm(r.u16("signature.hash")?, S, "signature.hash")?;
        Ok(match alg {
            0x0018 => {
                let rr = r.tpm2b("signature.signatureR", MAX_ECC_KEY_BYTES)?.to_vec();
                let s = r.tpm2b("signature.signatureS", MAX_ECC_KEY_BYTES)?.to_vec();
                Self::Ecdsa { hash, r: rr, s }
            }
            0x0016 => Self::RsaPss {
                hash,
                sig: r.tpm2b("signature.sig", MAX_RSA_KEY_BYTES)?.to_vec(),
            },
            _ => Self::RsaSsa {
                hash,
                sig: r.tpm2b("signature.sig", MAX_RSA_KEY_BYTES)?.to_vec(),
            },
        })
    }

    /// Parses a TPMT_SIGNATURE that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(S, bytes);
        let sig = Self::read(&mut r)?;
        r.finish()?;
        Ok(sig)
    }

    /// Appends the TPMT_SIGNATURE.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Self::RsaSsa { hash, sig } => w.u16(0x0014).u16(hash.to_tpm()).tpm2b(sig),
            Self::RsaPss { hash, sig } => w.u16(0x0016).u16(hash.to_tpm()).tpm2b(sig),
            Self::Ecdsa { hash, r, s } => w.u16(0x0018).u16(hash.to_tpm()).tpm2b(r).tpm2b(s),
        };
    }

    /// The marshalled TPMT_SIGNATURE.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    /// The hash the signer used. TPM2_Quote computes the pcrDigest with this same hash (the
    /// signing scheme's), so the verifier uses it for both.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_scheme() {
        for sig in [
            Signature::RsaSsa {
                hash: HashAlg::Sha256,
                sig: vec![7; 256],
            },
            Signature::RsaPss {
                hash: HashAlg::Sha384,
                sig: vec![8; 384],
            },
            Signature::Ecdsa {
                hash: HashAlg::Sha256,
                r: vec![1; 32],
                s: vec![2; 31],
            },
        ] {
            let b = sig.marshal();
            assert_eq!(Signature::parse(&b).unwrap(), sig);
            assert_eq!(Signature::parse(&b).unwrap().marshal(), b);
        }
    }

    #[test]
    fn bad_inputs_name_field() {
        assert_eq!(
            Signature::parse(&[0x00, 0x10, 0x00, 0x0b]),
            Err(ParseError::UnknownAlgorithm {
                structure: S,
                field: "sigAlg",
                alg: 0x10
            })
        );
        assert_eq!(
            Signature::parse(&[0x00, 0x14, 0x00, 0x12, 0, 0]),
            Err(ParseError::UnknownAlgorithm {
                structure: S,
                field: "signature.hash",
                alg: 0x12
            })
        );
        assert!(matches!(
            Signature::parse(&[0x00, 0x18, 0x00, 0x0b, 0x00, 0x81]),
            Err(ParseError::TooLarge {
                field: "signature.signatureR",
                len: 0x81,
                ..
            })
        ));
        assert!(matches!(
            Signature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x02, 1]),
            Err(ParseError::Truncated {
                field: "signature.sig",
                needed: 1,
                ..
            })
        ));
        assert!(matches!(
            Signature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x01, 1, 9]),
            Err(ParseError::TrailingData { remaining: 1, .. })
        ));
    }
}
