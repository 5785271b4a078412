//! `unlockctl`: the operator CLI. Placeholder, being written.
#![forbid(unsafe_code)]

fn main() {}
