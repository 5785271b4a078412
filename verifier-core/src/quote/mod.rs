//! Placeholder: being written (see ARCHITECTURE.md).

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Malformed input.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AkError {
    /// Malformed input.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
}

