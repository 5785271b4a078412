//! The agent/server protocol: wire types, defined once and shared by both sides.
//!
//! Versioning: the version is the URL path prefix (`/v1/...`, see [`v1::path`]) and the
//! module (`proto::v1`); bodies carry no version field. A v2 gets a new module and new
//! paths, and v1 keeps its fixtures (`verifier-core/tests/fixtures/proto/v1/`) for as long
//! as it is served. Decoding is strict (unknown fields are refused) so that a body meant for
//! another version cannot be half-understood.
//!
//! Binary fields are [`Base64Bytes`] (standard alphabet, padded). Every message implements
//! [`v1::Validate`]; [`v1::decode`] parses *and* validates, so a handler that uses it never
//! sees an out-of-bounds field.

mod b64;
mod error;
pub mod v1;

pub use b64::Base64Bytes;
pub use error::ProtoError;

use crate::wire::HashAlg;

/// The agent's identity: lowercase hex SHA-256 of the EK's marshalled TPMT_PUBLIC (no size
/// prefix, as tss-esapi's `Public::marshall()` yields). Stable across boots and independent
/// of certificates, so re-issuing an EK certificate does not change it.
pub fn agent_id(ek_tpmt_public: &[u8]) -> String {
    HashAlg::Sha256.hash(ek_tpmt_public).to_hex()
}
