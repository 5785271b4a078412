//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The shared test data (`UNLOCK_TESTDATA`, default `../shared/testdata` beside the
/// workspace). Panics with a clear message when it is missing: tests never skip silently.
pub fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("README.md").is_file(),
        "test data not found at {} (set UNLOCK_TESTDATA to the shared testdata folder)",
        dir.display()
    );
    dir
}
