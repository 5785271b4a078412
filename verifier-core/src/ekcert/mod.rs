//! Placeholder: being written (see ARCHITECTURE.md).

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EkCertError {
    /// Malformed input.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
}

