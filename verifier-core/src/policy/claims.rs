//! What a policy evaluates: [`Claims`], produced by validation on the server and, for the
//! offline debugging tool only, from captured evidence whose quote signature is not checked.

use crate::attester::SnpClaims;
use crate::eventlog::EventLog;
use crate::evidence::{check_event_log, check_ima, ValidationError};
use crate::ima::{ImaError, MeasurementList};
use crate::proto::v1::CapturedEvidence;
use crate::proto::ProtoError;
use crate::wire::{ClockInfo, PcrValues};

/// Where claims came from. Policies do not care; reports and `policy check` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsSource {
    /// A quote whose signature, nonce binding and PCR digest were verified, and logs that
    /// replay to it ([`crate::evidence::validate`]).
    VerifiedQuote,
    /// Captured evidence: the logs replay to the captured PCRs, but nothing is signed.
    UnverifiedCapture,
    /// A captured confidential VM's evidence: the CPU report, its chain and the quote's
    /// signature verified, but the quote answers someone else's nonce (not fresh, not bound
    /// to any unlock).
    CapturedTee,
}

/// The claims a policy evaluates: PCR values, clock info, the decoded event log and the IMA
/// list, each already consistent with the PCRs.
///
/// Constructed only by [`crate::evidence::ValidatedEvidence::claims`] (the server's path) and
/// by [`Claims::unverified_from_capture`] (offline checks), so an unvalidated log can never
/// reach the server's policy evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    source: ClaimsSource,
    pcrs: &'a PcrValues,
    clock: Option<ClockInfo>,
    event_log: Option<&'a EventLog<'a>>,
    ima: Option<&'a MeasurementList>,
    snp: Option<&'a SnpClaims>,
}

impl<'a> Claims<'a> {
    pub(crate) fn from_validated(
        pcrs: &'a PcrValues,
        clock: ClockInfo,
        event_log: Option<&'a EventLog<'a>>,
        ima: Option<&'a MeasurementList>,
    ) -> Self {
        Self {
            source: ClaimsSource::VerifiedQuote,
            pcrs,
            clock: Some(clock),
            event_log,
            ima,
            snp: None,
        }
    }

    /// These claims with a verified SEV-SNP report's claims beside them (the vTPM quote and
    /// the report were verified together by [`crate::attester`]).
    pub(crate) fn with_snp(self, snp: &'a SnpClaims) -> Self {
        Self {
            snp: Some(snp),
            ..self
        }
    }

    /// Claims from captured evidence, for `unlockctl policy check` and `policy learn`.
    /// The quote signature is NOT checked (there is no quote): never use this on a path that
    /// releases anything.
    pub fn unverified_from_capture(capture: &'a UnverifiedCapture<'a>) -> Self {
        Self {
            source: ClaimsSource::UnverifiedCapture,
            pcrs: &capture.pcrs,
            clock: capture.clock,
            event_log: capture.event_log.as_ref(),
            ima: capture.ima.as_ref(),
            snp: None,
        }
    }

    /// Claims from a checked Azure SEV-SNP vTPM capture, for `unlockctl policy check` and
    /// `policy learn`. The evidence is genuine but not fresh: never use this on a path that
    /// releases anything (the server uses [`crate::attester`]'s verified results).
    pub fn unverified_from_capture_azure(
        capture: &'a crate::attester::capture::CheckedAzureCapture,
    ) -> Self {
        Self {
            source: ClaimsSource::CapturedTee,
            pcrs: capture.quote().pcrs(),
            clock: Some(capture.quote().clock_info()),
            event_log: None,
            ima: None,
            snp: Some(capture.snp()),
        }
    }

    /// Where the claims came from.
    pub fn source(&self) -> ClaimsSource {
        self.source
    }
    /// The PCR values (quoted, or captured).
    pub fn pcrs(&self) -> &'a PcrValues {
        self.pcrs
    }
    /// clockInfo (always present for a verified quote).
    pub fn clock(&self) -> Option<ClockInfo> {
        self.clock
    }
    /// The event log, which replays to every PCR in [`Self::pcrs`] it extends.
    pub fn event_log(&self) -> Option<&'a EventLog<'a>> {
        self.event_log
    }
    /// The IMA list, which replays to PCR 10.
    pub fn ima(&self) -> Option<&'a MeasurementList> {
        self.ima
    }
    /// The SEV-SNP report's claims, for a confidential VM's evidence.
    pub fn snp(&self) -> Option<&'a SnpClaims> {
        self.snp
    }
}

/// Why captured evidence cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// A field of the capture is malformed (PCR values, sizes).
    #[error("evidence: {0}")]
    Proto(#[from] ProtoError),
    /// The IMA list does not parse.
    #[error("evidence: IMA log: {0}")]
    Ima(#[from] ImaError),
    /// The logs do not replay to the captured PCRs (edited log, or PCRs of another boot).
    #[error("evidence: {0}")]
    Inconsistent(#[from] ValidationError),
}

/// Captured evidence whose logs were parsed and replayed against its PCR values: the same
/// consistency checks validation applies, without a quote.
#[derive(Debug)]
pub struct UnverifiedCapture<'a> {
    pcrs: PcrValues,
    clock: Option<ClockInfo>,
    event_log: Option<EventLog<'a>>,
    ima: Option<MeasurementList>,
}

impl<'a> UnverifiedCapture<'a> {
    /// Parses the logs of `evidence` and checks that they replay to its PCRs.
    pub fn check(evidence: &'a CapturedEvidence) -> Result<Self, CaptureError> {
        use crate::proto::v1::Validate;
        evidence.validate()?;
        let pcrs = evidence.pcr_values()?;
        let event_log = match &evidence.event_log {
            Some(bytes) => {
                let log = EventLog::parse(bytes.as_bytes()).map_err(ValidationError::from)?;
                check_event_log(&log, &pcrs)?;
                Some(log)
            }
            None => None,
        };
        let ima = match &evidence.ima_log {
            Some(l) => {
                let list = l.parse()?;
                check_ima(&list, &pcrs)?;
                Some(list)
            }
            None => None,
        };
        Ok(Self {
            pcrs,
            clock: evidence.clock_info.map(ClockInfo::from),
            event_log,
            ima,
        })
    }

    /// The claims (see [`Claims::unverified_from_capture`]).
    pub fn claims(&'a self) -> Claims<'a> {
        Claims::unverified_from_capture(self)
    }
}
