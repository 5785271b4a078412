//! The initramfs agent: talks to the TPM (through `tss-esapi`) and, later, to the unlock
//! server. Everything it checks is checked again by the server with `verifier-core`.
#![forbid(unsafe_code)]

pub mod tpm;
