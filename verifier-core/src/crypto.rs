//! The cryptographic backend, chosen at build time.
//!
//! The server links aws-lc (feature `aws-lc`, part of `server`): fast, and it has what only
//! the server needs (RSA-OAEP and AES-CFB for MakeCredential, certificate parsing,
//! RSA-PSS with any salt length). The initramfs agent links ring instead (feature `ring`),
//! whose primitives are a fraction of aws-lc's size in a static binary. The two share the
//! API this crate uses for the agent's paths (digests, HMAC, HKDF, AES-GCM, signature
//! verification, the system RNG), so those modules are written once against this alias.
//! X25519 (HPKE) is pure Rust in both builds (`x25519-dalek`): ring has no static X25519
//! keys. When both features are on (a workspace build), aws-lc is used.

#[cfg(feature = "aws-lc")]
pub(crate) use aws_lc_rs::{aead, digest, hkdf, hmac, rand, signature};
#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
pub(crate) use ring::{aead, digest, hkdf, hmac, rand, signature};

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!(
    "verifier-core needs a crypto backend: enable feature `aws-lc` (server) or `ring` (agent)"
);
