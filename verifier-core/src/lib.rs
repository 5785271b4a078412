//! Pure validation of TPM 2.0 evidence for attested network disk unlock.
//!
//! Everything the unlock server decides rests on this crate, and the agent uses the same
//! types to build what it sends, so there is exactly one implementation of each structure
//! and each check. The crate does no I/O and links no TPM stack: it takes bytes and typed
//! trust inputs and returns typed verdicts. See `ARCHITECTURE.md` at the workspace root.
//!
//! Layout, by domain noun:
//! - [`wire`]: the bounded reader and the TPM 2.0 structures we (un)marshal.
//! - [`quote`]: quote verification and AK checks, returning [`quote::VerifiedQuote`].
//! - [`makecred`]: TPM2_MakeCredential in software (RSA and ECC EKs).
//! - [`attester`]: one interface over evidence kinds (TPM quote, Azure SEV-SNP vTPM), the
//!   SEV-SNP report and AMD certificate chain, the Azure HCL report.
//! - [`ekcert`]: EK certificate chain validation against a trust store.
//! - [`eventlog`]: UEFI measured-boot event log parsing, decoding and replay.
//! - [`ima`]: IMA measurement list parsing and replay.
//! - [`proto`]: the versioned wire types of the agent/server protocol.
//! - [`keysplit`]: K_b = U xor V, payload encryption, share wrapping and HPKE sealing to NK.
//! - [`merkle`]: RFC 6962 Merkle tree over the roles' nonces, bound into one quote.
//! - [`provider`]: checking a host quote shared by a batch of requesters (provider mode).
//! - [`source`]: who a network client is for limits (IPv4 address or IPv6 /64), and capped
//!   per-source counts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attester;
pub mod ekcert;
mod error;
pub mod eventlog;
pub mod evidence;
pub mod ima;
pub mod keysplit;
pub mod makecred;
pub mod merkle;
pub mod policy;
pub mod proto;
pub mod provider;
pub mod quote;
pub mod source;
pub mod wire;

#[doc(hidden)]
pub mod sim;

#[doc(hidden)]
pub mod fuzzing;

pub use error::{Error, ParseError};
