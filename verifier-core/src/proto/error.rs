//! Errors of protocol message decoding and validation. Each names the field (as a JSON path)
//! so that a 400 answer tells the agent's operator exactly what was wrong.

/// A protocol message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The JSON did not decode into the message: syntax, an unknown or missing field, a wrong
    /// type, bad base64 or an identifier of the wrong form. `path` is the JSON path of the
    /// offending value (`.` for the top level); `message` is serde's description, cut to 200
    /// characters and stripped of control characters since it can quote the input.
    #[error("{path}: {message}")]
    Decode {
        /// JSON path of the offending value.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The whole message exceeds [`super::v1::MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Size received.
        len: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// A binary field must have an exact length (a nonce is never padded or truncated).
    #[error("{field}: {len} bytes, expected exactly {expected}")]
    Length {
        /// Field path.
        field: &'static str,
        /// Length received.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A field exceeds its bound.
    #[error("{field}: {len} exceeds the maximum of {max}")]
    TooLarge {
        /// Field path.
        field: &'static str,
        /// Size (bytes or items) received.
        len: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field path.
        field: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
    /// A message could not be encoded as JSON (cannot happen for valid messages).
    #[error("encoding a message failed: {message}")]
    Encode {
        /// serde_json's description.
        message: String,
    },
}

impl ProtoError {
    pub(crate) fn decode(path: String, message: &str) -> Self {
        let clean =
            |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(200).collect() };
        Self::Decode {
            path: clean(&path),
            message: clean(message),
        }
    }
}
