//! TPM 2.0 structures (TPM 2.0 Part 2) and the one bounded reader every untrusted byte goes
//! through. Only the handful of structures the protocol carries are modelled.

mod alg;
mod reader;

pub use alg::{Digest, HashAlg, MAX_DIGEST_SIZE};
pub use reader::{Reader, Writer};
mod pcr;
pub use pcr::{PcrValues, PCR_COUNT};
mod public;
pub use public::{
    EccCurve, KdfScheme, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef, SymMode,
    MAX_ECC_KEY_BYTES, MAX_PUBLIC_SIZE, MAX_RSA_KEY_BYTES,
};
