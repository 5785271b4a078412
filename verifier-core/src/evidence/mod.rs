//! Validation of a whole attestation: the quote, its binding to this role's nonce and the
//! agent's NK, and the logs that claim to explain the quoted PCRs.
//!
//! Validation answers "is this evidence genuine and self-consistent?" and produces
//! [`ValidatedEvidence`]; whether the machine may have its key is policy's question
//! ([`crate::policy`]), asked only of validated claims. Freshness (nonce unused, unexpired)
//! and the boot-session rules need state, so the server checks those in its store.

use crate::eventlog::{EventLog, EventLogError};
use crate::ima::MeasurementList;
use crate::merkle::{self, InclusionProof, MerkleError};
#[cfg(feature = "policy")]
use crate::policy::Claims;
use crate::proto::v1::ErrorCode;
use crate::quote::{verify_quote, AkPublic, VerifiedQuote, VerifyError};
use crate::wire::{HashAlg, PcrValues, Signature};

/// The PCR IMA extends.
pub const IMA_PCR: u8 = 10;

/// What the verifying role itself knows and expects (trust inputs, not from the agent).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The AK, already proven (ActivateCredential) to be in the enrolled EK's TPM.
    pub ak: &'a AkPublic,
    /// The nonce this role issued for the challenge.
    pub nonce: &'a [u8; 32],
}

/// What the agent sent.
#[derive(Debug, Clone, Copy)]
pub struct Submitted<'a> {
    /// TPMS_ATTEST exactly as signed.
    pub attest: &'a [u8],
    /// The quote's signature.
    pub signature: &'a Signature,
    /// Reported PCR values (only the quoted ones are kept).
    pub pcrs: &'a PcrValues,
    /// The agent's ephemeral public key NK, as sent.
    pub nk_pub: &'a [u8],
    /// Inclusion proof of this role's nonce in the Merkle root the quote binds.
    pub proof: &'a InclusionProof,
    /// UEFI measured-boot event log, if the machine has one.
    pub event_log: Option<&'a [u8]>,
    /// IMA measurement list (parsed from the ascii or binary form the agent sent), if IMA
    /// ran. Parsing is the caller's because the list's format travels beside it.
    pub ima_log: Option<&'a MeasurementList>,
}

/// Evidence that passed validation. Only [`validate`] constructs it.
#[derive(Debug)]
pub struct ValidatedEvidence<'a> {
    quote: VerifiedQuote,
    event_log: Option<EventLog<'a>>,
    ima: Option<&'a MeasurementList>,
}

impl<'a> ValidatedEvidence<'a> {
    /// The verified quote (PCRs covered by the signature, clock info).
    pub fn quote(&self) -> &VerifiedQuote {
        &self.quote
    }
    /// The event log, whose replay matched every quoted PCR it extends.
    pub fn event_log(&self) -> Option<&EventLog<'a>> {
        self.event_log.as_ref()
    }
    /// The IMA list, whose replay matched the quoted PCR 10.
    pub fn ima(&self) -> Option<&'a MeasurementList> {
        self.ima
    }
    /// The claims a policy evaluates: the quoted PCRs and clock, the replay-checked logs.
    #[cfg(feature = "policy")]
    pub fn claims(&self) -> Claims<'_> {
        Claims::from_validated(
            self.quote.pcrs(),
            self.quote.clock_info(),
            self.event_log.as_ref(),
            self.ima,
        )
    }
}

/// Why evidence is not genuine. Each variant names the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// This role's nonce is not in the Merkle root the agent claims (wrong leaf, wrong
    /// proof, or a nonce from another challenge).
    #[error("nonce inclusion proof invalid: {0}")]
    Merkle(#[from] MerkleError),
    /// The quote failed verification (signature, extraData binding to nonce and NK, PCR digest).
    #[error("quote: {0}")]
    Quote(#[from] VerifyError),
    /// NK is not a well-formed key.
    #[error("NK public key must be {expected} bytes, got {got}")]
    NkLength {
        /// Required length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// The event log could not be parsed.
    #[error("event log: {0}")]
    EventLog(#[from] EventLogError),
    /// The event log does not carry the bank the quote used, so it explains nothing.
    #[error("event log has no replayable {alg} bank (the quote used it)")]
    EventLogBankMissing {
        /// The quoted bank.
        alg: HashAlg,
    },
    /// Replaying the event log does not reproduce a quoted PCR: the log was edited, or is
    /// from another boot.
    #[error("event log does not replay to quoted PCR {index} ({alg})")]
    EventLogMismatch {
        /// Bank.
        alg: HashAlg,
        /// PCR index.
        index: u8,
    },
    /// Replaying the IMA list does not reproduce quoted PCR 10.
    #[error("IMA log does not replay to quoted PCR 10 ({alg})")]
    ImaMismatch {
        /// Bank.
        alg: HashAlg,
    },
    /// An IMA entry's logged template hash is not the hash of its data: the file shown is
    /// not what was measured.
    #[error("IMA log entry {index} does not match its template hash")]
    ImaEntryMismatch {
        /// 0-based entry index.
        index: usize,
    },
    /// An IMA list was sent but PCR 10 was not quoted, so it cannot be trusted.
    #[error("IMA log sent but PCR 10 is not in the quote")]
    ImaNotQuoted,
}

impl ValidationError {
    /// Whether the refused evidence was provably the machine's own: a quote signed by the
    /// expected AK and bound to this challenge's nonce and NK, refused for what it reports
    /// (PCR values, event log, IMA list). Anything failing earlier (structure, signature,
    /// binding, inclusion proof) anyone could have sent, so a server must not count it
    /// against the machine (that would let a stranger lock it out).
    pub fn signed_by_ak(&self) -> bool {
        match self {
            Self::Merkle(_) | Self::NkLength { .. } => false,
            Self::Quote(q) => match q {
                VerifyError::MissingPcr { .. } | VerifyError::PcrDigestMismatch => true,
                VerifyError::Parse(_)
                | VerifyError::BadMagic { .. }
                | VerifyError::NotAQuote { .. }
                | VerifyError::SchemeMismatch { .. }
                | VerifyError::SignatureInvalid
                | VerifyError::ExtraDataMismatch => false,
            },
            Self::EventLog(_)
            | Self::EventLogBankMissing { .. }
            | Self::EventLogMismatch { .. }
            | Self::ImaMismatch { .. }
            | Self::ImaEntryMismatch { .. }
            | Self::ImaNotQuoted => true,
        }
    }

    /// The protocol's refusal code for this failure, decided here once and exhaustively (no
    /// catch-all arm: a new check must be given its own code, not inherit a neighbour's).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Merkle(_) => ErrorCode::BindingMismatch,
            Self::NkLength { .. } => ErrorCode::MalformedRequest,
            Self::Quote(q) => match q {
                VerifyError::ExtraDataMismatch => ErrorCode::BindingMismatch,
                VerifyError::MissingPcr { .. } | VerifyError::PcrDigestMismatch => {
                    ErrorCode::PcrMismatch
                }
                VerifyError::Parse(_)
                | VerifyError::BadMagic { .. }
                | VerifyError::NotAQuote { .. }
                | VerifyError::SchemeMismatch { .. }
                | VerifyError::SignatureInvalid => ErrorCode::QuoteInvalid,
            },
            Self::EventLog(_)
            | Self::EventLogBankMissing { .. }
            | Self::EventLogMismatch { .. } => ErrorCode::EventLogMismatch,
            Self::ImaMismatch { .. } | Self::ImaEntryMismatch { .. } | Self::ImaNotQuoted => {
                ErrorCode::ImaLogMismatch
            }
        }
    }
}

/// Validates an attestation for one role.
///
/// Order: the nonce's inclusion proof gives the Merkle root; the expected `extraData` is
/// `SHA-256("unlock/v1" || root || SHA-256(NK))`; the quote must verify with the AK and carry
/// exactly that; then every log must replay to the quoted PCRs it claims to explain.
pub fn validate<'a>(
    expected: Expected<'_>,
    submitted: Submitted<'a>,
) -> Result<ValidatedEvidence<'a>, ValidationError> {
    if submitted.nk_pub.len() != crate::keysplit::NK_PUBLIC_LEN {
        return Err(ValidationError::NkLength {
            expected: crate::keysplit::NK_PUBLIC_LEN,
            got: submitted.nk_pub.len(),
        });
    }
    let root = merkle::root_from_proof(expected.nonce, submitted.proof)?;
    let extra_data = merkle::quote_extra_data(&root, submitted.nk_pub);
    let quote = verify_quote(
        expected.ak,
        &extra_data,
        submitted.attest,
        submitted.signature,
        submitted.pcrs,
    )?;

    let event_log = match submitted.event_log {
        Some(bytes) => {
            let log = EventLog::parse(bytes)?;
            check_event_log(&log, quote.pcrs())?;
            Some(log)
        }
        None => None,
    };
    if let Some(list) = submitted.ima_log {
        check_ima(list, quote.pcrs())?;
    }
    let ima = submitted.ima_log;
    Ok(ValidatedEvidence {
        quote,
        event_log,
        ima,
    })
}

/// Every quoted PCR that the log extends must equal the log's replay in the quoted bank.
/// Quoted PCRs the log never touches (the release PCR, PCR 10) are not the log's business.
/// `pcrs` holds exactly the quoted PCRs (or, offline, the captured ones).
pub(crate) fn check_event_log(log: &EventLog<'_>, pcrs: &PcrValues) -> Result<(), ValidationError> {
    let mut touched = [false; crate::wire::PCR_COUNT as usize];
    for e in log.events() {
        if e.is_extended() {
            if let Some(t) = touched.get_mut(usize::from(e.pcr())) {
                *t = true;
            }
        }
    }
    let replayed = log.replay();
    for alg in pcrs.banks() {
        for (index, quoted) in pcrs.bank(alg) {
            if !touched.get(usize::from(index)).copied().unwrap_or(false) {
                continue;
            }
            if !log.banks().contains(&alg) || replayed.banks().all(|b| b != alg) {
                return Err(ValidationError::EventLogBankMissing { alg });
            }
            if replayed.get(alg, index) != Some(quoted) {
                return Err(ValidationError::EventLogMismatch { alg, index });
            }
        }
    }
    Ok(())
}

/// The list's entries must match their template hashes and replay to every PCR 10 in
/// `pcrs` (the quoted PCRs, or offline the captured ones); at least one must be there.
pub(crate) fn check_ima(list: &MeasurementList, pcrs: &PcrValues) -> Result<(), ValidationError> {
    if let Some(crate::ima::ImaFinding::TemplateHashMismatch { index, .. }) =
        list.findings().first()
    {
        return Err(ValidationError::ImaEntryMismatch { index: *index });
    }
    let mut checked = false;
    for alg in pcrs.banks() {
        let Some(quoted) = pcrs.get(alg, IMA_PCR) else {
            continue;
        };
        let replay = list.replay(alg);
        if replay.pcr(alg, IMA_PCR) != Some(quoted) {
            return Err(ValidationError::ImaMismatch { alg });
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(ValidationError::ImaNotQuoted)
    }
}
