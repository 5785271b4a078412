//! Pure validation of TPM 2.0 evidence for attested network disk unlock.
//!
//! Everything the unlock server decides rests on this crate, and the agent uses the same
//! types to build what it sends, so there is exactly one implementation of each structure
//! and each check. The crate does no I/O and links no TPM stack: it takes bytes and typed
//! trust inputs and returns typed verdicts. See `ARCHITECTURE.md` at the workspace root.
//!
//! Layout, by domain noun:
//! - [`audit`]: the audit trail's records and their hash chain.
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
//! - [`predict`]: the digests the next boot will measure, computed from the files an update
//!   installs (Authenticode for PCR 4, the EFI stub's and grub's PCR 8/9 events).
//! - [`tpm2`]: the agent's TPM commands and the decoding of their responses (no I/O).
//! - [`source`]: who a network client is for limits (IPv4 address or IPv6 /64), and capped
//!   per-source counts.
//!
//! Cargo features: `server` (default) is everything the unlock server and `unlockctl` use:
//! `policy` (the policy engine, with the regex crate), `ekcert` (EK certificate chains)
//! and `sim` (the software TPM and agent of tests and benches). The initramfs agent builds
//! without them (`default-features = false`), so none of that is linked into it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "server")]
pub mod attester;
#[cfg(feature = "server")]
pub mod audit;
mod crypto;
#[cfg(feature = "ekcert")]
pub mod ekcert;
mod error;
pub mod eventlog;
pub mod evidence;
pub mod ima;
#[cfg(feature = "ekcert")]
pub mod image_signature;
pub mod keysplit;
#[cfg(feature = "aws-lc")]
pub mod makecred;
pub mod merkle;
#[cfg(feature = "policy")]
pub mod policy;
pub mod predict;
pub mod proto;
pub mod provider;
pub mod quote;
pub mod round;
pub mod source;
pub mod tpm2;
pub mod wire;

#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim;

#[cfg(feature = "server")]
#[doc(hidden)]
pub mod fuzzing;

pub use error::{Error, ParseError};

/// The event extended into the release PCR (by the agent after a release and by the
/// initramfs latch on every way out of the initramfs): each active bank is extended with
/// that bank's digest of these bytes, so the resulting values are predictable. The one
/// definition, shared by the agent, the policy and the simulator.
pub const RELEASE_EVENT: &[u8] = b"unlock/v1 released";

/// The default release PCR: the agent extends it before it writes a released key, and the
/// initramfs extends it again ("latch") before it leaves, released or not, so the policy's
/// "must be initial" rule refuses any later quote in the same boot.
pub const DEFAULT_RELEASE_PCR: u8 = 15;
