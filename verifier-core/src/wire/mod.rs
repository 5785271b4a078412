//! TPM 2.0 structures (TPM 2.0 Part 2) and the one bounded reader every untrusted byte goes
//! through. Only the handful of structures the protocol carries are modelled.

mod alg;
mod reader;

pub use alg::{Digest, HashAlg, MAX_DIGEST_SIZE};
pub use reader::{Reader, Writer};
mod pcr;
pub use pcr::{
    BankSelection, MissingPcr, PcrSelection, PcrValues, MAX_PCR_BANKS, PCR_COUNT, PCR_SELECT_MAX,
};
mod public;
pub use public::{
    EccCurve, KdfScheme, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef, SymMode,
    MAX_ECC_KEY_BYTES, MAX_PUBLIC_SIZE, MAX_RSA_KEY_BYTES,
};
mod signature;
pub use signature::Signature;
mod attest;
pub use attest::{
    Attest, Attested, ClockInfo, QuoteInfo, MAX_ATTEST_SIZE, MAX_DATA_SIZE, MAX_NAME_SIZE,
    TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE,
};
