//! The unlock server: registrar, verifier and tenant roles, their storage and HTTP API, and
//! the operator CLI `unlockctl`. All verification is delegated to `verifier-core`; this crate
//! adds state (what was enrolled, which nonces were used, how many releases a boot had) and
//! transport.
#![forbid(unsafe_code)]

pub mod config;
pub mod dashboard;
pub mod ek_cert_hook;
pub mod error;
pub mod http;
pub mod metrics;
pub mod net;
pub mod purge;
pub mod role;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhook;
