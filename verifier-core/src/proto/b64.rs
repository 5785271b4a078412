//! Base64 for binary fields: standard alphabet, padded, strict (no whitespace, no
//! non-canonical trailing bits), so each byte string has exactly one spelling on the wire.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ProtoError;

/// Longest base64 text we decode at all (12 MiB, above the largest field bound once
/// encoded). Per-field bounds are checked by each message's `validate`.
const MAX_ENCODED: usize = 12 * 1024 * 1024;

/// Bytes carried as a base64 string.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Base64Bytes(Vec<u8>);

impl Base64Bytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a length other than `expected`.
    pub fn exact(&self, field: &'static str, expected: usize) -> Result<&[u8], ProtoError> {
        if self.0.len() == expected {
            Ok(&self.0)
        } else {
            Err(ProtoError::Length {
                field,
                len: self.0.len(),
                expected,
            })
        }
    }

    /// Refuses more than `max` bytes.
    pub fn at_most(&self, field: &'static str, max: usize) -> Result<&[u8], ProtoError> {
        if self.0.len() <= max {
            Ok(&self.0)
        } else {
            Err(ProtoError::TooLarge {
                field,
                len: self.0.len(),
                max,
            })
        }
    }

    /// Refuses an empty value or more than `max` bytes.
    pub fn non_empty(&self, field: &'static str, max: usize) -> Result<&[u8], ProtoError> {
        if self.0.is_empty() {
            return Err(ProtoError::Invalid {
                field,
                reason: "must not be empty",
            });
        }
        self.at_most(field, max)
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&[u8]> for Base64Bytes {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Base64Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a standard, padded base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Base64Bytes, E> {
                if v.len() > MAX_ENCODED {
                    return Err(E::custom(format_args!(
                        "base64 text of {} bytes exceeds the maximum {MAX_ENCODED}",
                        v.len()
                    )));
                }
                STANDARD
                    .decode(v)
                    .map(Base64Bytes)
                    .map_err(|_| E::custom("invalid base64 (standard alphabet, padded)"))
            }
        }
        d.deserialize_str(Visitor)
    }
}
