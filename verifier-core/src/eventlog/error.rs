//! Why a log was refused. Every variant names the event index and the byte offset of the
//! event's first header byte, so a person can find it with a hex dump.

use crate::wire::HashAlg;
use crate::ParseError;

/// A UEFI event log that cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The input holds no bytes at all: a missing log must not look like an empty boot.
    #[error("event log is empty (0 bytes)")]
    Empty,
    /// An event's header, digests or Spec ID content could not be decoded.
    #[error("event {index} at offset {offset}: {error}")]
    Malformed {
        /// Index of the event (0 is the first event of the file).
        index: usize,
        /// Offset of the event's first byte.
        offset: usize,
        /// What was wrong, naming the TCG structure and field. (Not `source`: the message
        /// already includes it, and a chain printer would repeat it.)
        error: ParseError,
    },
    /// The PCR index is outside 0..24 and is not a trust point's `0xffffffff`, so the event
    /// cannot belong to a TPM PCR.
    #[error(
        "event {index} at offset {offset}: pcrIndex {pcr} is not a PCR (must be below 24, or \
         0xffffffff for a trust point)"
    )]
    PcrIndex {
        /// Index of the event.
        index: usize,
        /// Offset of the event's first byte.
        offset: usize,
        /// The PCR index found.
        pcr: u32,
    },
    /// A crypto-agile event carries a digest of a bank the Spec ID event did not declare, or
    /// of one bank twice.
    #[error(
        "event {index} at offset {offset}: {alg} digest is not declared by the Spec ID event \
         or is repeated"
    )]
    BankMismatch {
        /// Index of the event.
        index: usize,
        /// Offset of the event's first byte.
        offset: usize,
        /// The bank missing or repeated.
        alg: HashAlg,
    },
    /// The Spec ID event declares a bank twice.
    #[error("event 0 at offset 0: Spec ID event declares {alg} twice")]
    DuplicateBank {
        /// The repeated bank.
        alg: HashAlg,
    },
    /// The Spec ID event declares a digest size that is not the algorithm's.
    #[error("event 0 at offset 0: Spec ID event declares {alg} with digest size {size}")]
    DigestSize {
        /// The algorithm.
        alg: HashAlg,
        /// The size declared.
        size: u16,
    },
}

impl EventLogError {
    pub(super) fn malformed(index: usize, offset: usize, error: ParseError) -> Self {
        Self::Malformed {
            index,
            offset,
            error,
        }
    }

    /// Index of the event that was refused, when the error is about one.
    pub fn event_index(&self) -> Option<usize> {
        match self {
            Self::Empty => None,
            Self::Malformed { index, .. }
            | Self::PcrIndex { index, .. }
            | Self::BankMismatch { index, .. } => Some(*index),
            Self::DuplicateBank { .. } | Self::DigestSize { .. } => Some(0),
        }
    }

    /// Offset of the first byte of the event that was refused.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Self::Empty => None,
            Self::Malformed { offset, .. }
            | Self::PcrIndex { offset, .. }
            | Self::BankMismatch { offset, .. } => Some(*offset),
            Self::DuplicateBank { .. } | Self::DigestSize { .. } => Some(0),
        }
    }
}
