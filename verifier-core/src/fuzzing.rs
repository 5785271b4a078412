//! Entry points for `cargo fuzz` targets (see `verifier-core/fuzz/`). Each takes arbitrary
//! bytes and must return without panicking whatever they are.
