//! Framing: event headers, digest lists and the Spec ID event. One pass over the input that
//! also replays (see `replay.rs`), borrowing event data from the input instead of copying it.

use std::sync::OnceLock;

use serde::ser::SerializeMap;

use super::events::{EventData, SpecIdEvent};
use super::replay::{Finding, Replayer};
use super::{EventLogError, EventType};
use crate::wire::{Digest, HashAlg, PcrValues, Reader, PCR_COUNT};
use crate::ParseError;

/// Signature of the TCG_EfiSpecIdEvent that marks a crypto-agile log.
pub(super) const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// How the log's events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `TCG_PCR_EVENT` throughout, one SHA-1 digest per event (TPM 1.2 style).
    LegacySha1,
    /// A Spec ID event, then `TCG_PCR_EVENT2` with one digest per declared bank.
    CryptoAgile,
}

/// The digests of one event, one per bank, without a heap allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DigestList {
    len: u8,
    items: [Digest; 4],
}

impl DigestList {
    fn new() -> Self {
        Self {
            len: 0,
            items: [Digest::zero(HashAlg::Sha1); 4],
        }
    }

    /// Adds a digest; returns false when the bank is already present or the list is full.
    fn push(&mut self, digest: Digest) -> bool {
        if self.get(digest.alg()).is_some() {
            return false;
        }
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = digest;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The digests, in log order.
    pub fn as_slice(&self) -> &[Digest] {
        self.items.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The digest of bank `alg`.
    pub fn get(&self, alg: HashAlg) -> Option<&Digest> {
        self.as_slice().iter().find(|d| d.alg() == alg)
    }
}

impl std::fmt::Debug for DigestList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl serde::Serialize for DigestList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.as_slice().len()))?;
        for d in self.as_slice() {
            map.serialize_entry(d.alg().name(), &d.to_hex())?;
        }
        map.end()
    }
}

/// One event as framed in the log. Its data is borrowed from the input and decoded on demand.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    index: usize,
    offset: usize,
    /// The pcrIndex field as logged: below 24, or [`Event::TRUST_POINT`].
    pcr_index: u32,
    /// `pcr_index` as a PCR, or [`Event::NO_PCR`] for a trust point.
    pcr: u8,
    event_type: EventType,
    digests: DigestList,
    data: &'a [u8],
}

impl<'a> Event<'a> {
    /// The pcrIndex of a Windows trust-point event (`0xffffffff`, -1 as the boot manager
    /// writes it): a marker in the log that extends no PCR. Kept, decoded and shown; never
    /// replayed, never a digest finding.
    pub const TRUST_POINT: u32 = u32::MAX;
    /// What [`Event::pcr`] returns for a trust point: 255, which is no PCR, so a lookup in a
    /// 24-entry table by `usize::from(e.pcr())` misses instead of landing on a real PCR.
    pub const NO_PCR: u8 = u8::MAX;

    /// Position in the log; 0 is the first event (the Spec ID event of a crypto-agile log), the
    /// same numbering as tpm2_eventlog's `EventNum`.
    pub fn index(&self) -> usize {
        self.index
    }
    /// Offset of the event's first header byte in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// The PCR (or, in a CCEL log, the MR index) the event was measured into, below 24; for a
    /// trust point ([`Event::is_trust_point`]), [`Event::NO_PCR`].
    pub fn pcr(&self) -> u8 {
        self.pcr
    }
    /// The pcrIndex field as logged: the PCR, or [`Event::TRUST_POINT`].
    pub fn pcr_index(&self) -> u32 {
        self.pcr_index
    }
    /// Whether this is a trust-point event (pcrIndex `0xffffffff`), which extends no PCR.
    pub fn is_trust_point(&self) -> bool {
        self.pcr_index == Self::TRUST_POINT
    }
    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }
    /// The digests that were extended (or, for `EV_NO_ACTION`, that were not).
    pub fn digests(&self) -> &DigestList {
        &self.digests
    }
    /// The raw event data.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// Whether replay extends this event: everything but `EV_NO_ACTION` and trust points.
    pub fn is_extended(&self) -> bool {
        self.event_type != EventType::EV_NO_ACTION && !self.is_trust_point()
    }
    /// Decodes the event data by type. Never fails: undecodable content is
    /// [`EventData::Raw`] with the reason.
    pub fn decode(&self) -> EventData<'a> {
        super::decode::decode(self.event_type, self.data)
    }
}

impl serde::Serialize for Event<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("index", &self.index)?;
        map.serialize_entry("offset", &self.offset)?;
        // As logged, so a trust point shows 4294967295 (as tpm2_eventlog prints it), not 255.
        map.serialize_entry("pcr", &self.pcr_index)?;
        map.serialize_entry("type", &self.event_type)?;
        map.serialize_entry("digests", &self.digests)?;
        map.serialize_entry("size", &self.data.len())?;
        map.serialize_entry("data", &self.decode())?;
        map.end()
    }
}

/// A parsed and replayed event log.
#[derive(Debug, Clone)]
pub struct EventLog<'a> {
    format: LogFormat,
    spec_id: Option<SpecIdEvent>,
    banks: Vec<HashAlg>,
    events: Vec<Event<'a>>,
    pcrs: PcrValues,
    /// Findings of the replay itself (incomplete banks, ignored StartupLocality).
    replay_findings: Vec<Finding>,
    /// All findings, computed on first use: the digest checks hash every checked event's
    /// data once per bank, which would halve parse+replay throughput.
    findings: OnceLock<Vec<Finding>>,
    startup_locality: Option<u8>,
    padding: usize,
}

impl<'a> EventLog<'a> {
    /// Parses `bytes` and replays every event into every bank the log declares.
    ///
    /// Fails on anything that stops replay from being exact: bad framing, an unknown or
    /// undeclared algorithm, a PCR index of 24 or more (other than a trust point's
    /// `0xffffffff`), trailing bytes that are not padding.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EventLogError> {
        if bytes.is_empty() {
            return Err(EventLogError::Empty);
        }
        let mut r = Reader::new("TCG_PCR_EVENT", bytes);
        let (first, first_data) = read_legacy(&mut r, 0)?;
        let spec_id = if first.event_type == EventType::EV_NO_ACTION
            && first.data.starts_with(SPEC_ID_SIGNATURE)
        {
            let mut data = first_data;
            let spec = SpecIdEvent::parse(&mut data)
                .and_then(|s| data.finish().map(|()| s))
                .map_err(|e| EventLogError::malformed(0, 0, e))?;
            Some(spec)
        } else {
            None
        };
        let (format, banks) = match &spec_id {
            Some(spec) => (LogFormat::CryptoAgile, spec.banks()?),
            None => (LogFormat::LegacySha1, vec![HashAlg::Sha1]),
        };
        let mut replayer = Replayer::new(&banks);
        // Real events average well over 128 bytes; the cap keeps a padded buffer cheap.
        let mut events = Vec::with_capacity((bytes.len() / 128).min(1024));
        if spec_id.is_none() {
            replayer.event(&first);
        }
        events.push(first);
        let mut padding = 0;
        while !r.is_empty() {
            let rest = r.clone().rest();
            let index = events.len();
            match classify_rest(rest) {
                Rest::Padding => {
                    padding = rest.len();
                    break;
                }
                Rest::CutHeader => {
                    let structure = match format {
                        LogFormat::LegacySha1 => "TCG_PCR_EVENT",
                        LogFormat::CryptoAgile => "TCG_PCR_EVENT2",
                    };
                    return Err(EventLogError::malformed(
                        index,
                        r.offset(),
                        ParseError::TrailingData {
                            structure,
                            offset: r.offset(),
                            remaining: rest.len(),
                        },
                    ));
                }
                Rest::Events => {}
            }
            let event = match format {
                LogFormat::LegacySha1 => read_legacy(&mut r, index)?.0,
                LogFormat::CryptoAgile => read_agile(&mut r, index, &banks)?,
            };
            replayer.event(&event);
            events.push(event);
        }
        let (pcrs, replay_findings, startup_locality) = replayer.finish();
        Ok(Self {
            format,
            spec_id,
            banks,
            events,
            pcrs,
            replay_findings,
            findings: OnceLock::new(),
            startup_locality,
            padding,
        })
    }

    /// How the events are framed.
    pub fn format(&self) -> LogFormat {
        self.format
    }
    /// The Spec ID event of a crypto-agile log.
    pub fn spec_id(&self) -> Option<&SpecIdEvent> {
        self.spec_id.as_ref()
    }
    /// The banks the log carries (in Spec ID order; SHA-1 alone for a legacy log).
    pub fn banks(&self) -> &[HashAlg] {
        &self.banks
    }
    /// Every event, the Spec ID event included.
    pub fn events(&self) -> &[Event<'a>] {
        &self.events
    }
    /// The replayed values of every PCR that at least one event extended, in every bank
    /// whose digest every extended event carries (see [`Finding::IncompleteBank`]).
    pub fn replay(&self) -> &PcrValues {
        &self.pcrs
    }
    /// What a policy should know: digest-versus-data mismatches, incomplete banks, ignored
    /// StartupLocality events.
    ///
    /// Digest-versus-data mismatches come first, in event order, then the replay's own.
    pub fn findings(&self) -> &[Finding] {
        self.findings.get_or_init(|| {
            let mut all = super::replay::digest_findings(&self.events);
            all.extend_from_slice(&self.replay_findings);
            all
        })
    }
    /// The locality from a StartupLocality event that set PCR 0's initial value.
    pub fn startup_locality(&self) -> Option<u8> {
        self.startup_locality
    }
    /// Number of `0x00` or `0xff` padding bytes after the last event.
    pub fn padding(&self) -> usize {
        self.padding
    }
}

/// What the bytes after an event are, by the one padding rule (see the module docs).
enum Rest {
    /// Only `0x00` and `0xff` bytes: the log ends here.
    Padding,
    /// Only `0x00` and `0xff` bytes, starting with `0x00` and shorter than a TCG_PCR_EVENT
    /// header (32 bytes): a cut-off event (its PCR index) rather than padding, so an error.
    CutHeader,
    /// At least one other byte: an event must start here.
    Events,
}

/// Classifies the rest of the input from its bytes alone, never from what an event parsed
/// out of them would be. 32 zero bytes are also a well-formed TCG_PCR_EVENT (EV_PREBOOT_CERT
/// in PCR 0, zero digest) and 16 a digest-less TCG_PCR_EVENT2, so the old rule ("all 0xff, or
/// all 0x00") parsed such zeros as an event whenever 0xff bytes followed them, and called them
/// padding when nothing did: one log, two replays of PCR 0. With "only 0x00 and 0xff from here
/// on" the result is the same with the padding, without it, or with more appended.
///
/// Nothing is lost by never parsing such bytes: an event made only of 0x00 and 0xff bytes
/// carries no event data a policy could use, and if a TPM really extended one, the replay
/// without it will not match the quote and the evidence is refused (fail closed).
///
/// A leading `0xff` is padding at any length: CCEL buffers are `0xff`-filled, and
/// `CCEL_AAEL_alibabacloud.bin` ends with 8 such bytes. (A cut-off trust-point event, PCR
/// index `0xffffffff`, also looks like that; it would extend nothing.)
fn classify_rest(rest: &[u8]) -> Rest {
    if !rest.iter().all(|b| *b == 0 || *b == 0xff) {
        Rest::Events
    } else if rest.first() == Some(&0) && rest.len() < 32 {
        Rest::CutHeader
    } else {
        Rest::Padding
    }
}

/// Reads pcrIndex: a PCR below 24, or a trust point ([`Event::TRUST_POINT`], as `NO_PCR`).
fn pcr_index(r: &mut Reader<'_>, index: usize, offset: usize) -> Result<(u32, u8), EventLogError> {
    let pcr = r
        .u32_le("pcrIndex")
        .map_err(|e| EventLogError::malformed(index, offset, e))?;
    if pcr == Event::TRUST_POINT {
        return Ok((pcr, Event::NO_PCR));
    }
    match u8::try_from(pcr) {
        Ok(p) if p < PCR_COUNT => Ok((pcr, p)),
        _ => Err(EventLogError::PcrIndex { index, offset, pcr }),
    }
}

fn read_legacy<'a>(
    r: &mut Reader<'a>,
    index: usize,
) -> Result<(Event<'a>, Reader<'a>), EventLogError> {
    let offset = r.offset();
    r.set_structure("TCG_PCR_EVENT");
    let (pcr_index, pcr) = pcr_index(r, index, offset)?;
    let body = (|| -> Result<_, ParseError> {
        let event_type = EventType(r.u32_le("eventType")?);
        let digest = r.take(HashAlg::Sha1.size(), "digest")?;
        let size = r.u32_le("eventSize")?;
        let data = r.sub(usize::try_from(size).unwrap_or(usize::MAX), "event")?;
        Ok((event_type, digest, data))
    })();
    let (event_type, digest, data) =
        body.map_err(|e| EventLogError::malformed(index, offset, e))?;
    let mut digests = DigestList::new();
    if let Some(d) = Digest::from_slice(HashAlg::Sha1, digest) {
        digests.push(d);
    }
    let event = Event {
        index,
        offset,
        pcr_index,
        pcr,
        event_type,
        digests,
        data: data.clone().rest(),
    };
    Ok((event, data))
}

fn read_agile<'a>(
    r: &mut Reader<'a>,
    index: usize,
    banks: &[HashAlg],
) -> Result<Event<'a>, EventLogError> {
    let offset = r.offset();
    r.set_structure("TCG_PCR_EVENT2");
    let (pcr_index, pcr) = pcr_index(r, index, offset)?;
    let malformed = |e| EventLogError::malformed(index, offset, e);
    let event_type = EventType(r.u32_le("eventType").map_err(malformed)?);
    r.set_structure("TPML_DIGEST_VALUES");
    let count = r.u32_le("count").map_err(malformed)?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > banks.len() {
        return Err(malformed(ParseError::TooLarge {
            structure: "TPML_DIGEST_VALUES",
            field: "count",
            len: count,
            max: banks.len(),
        }));
    }
    let mut digests = DigestList::new();
    for _ in 0..count {
        let alg_id = r.u16_le("hashAlg").map_err(malformed)?;
        let alg = HashAlg::from_tpm(alg_id, "TPMT_HA", "hashAlg").map_err(malformed)?;
        if !banks.contains(&alg) {
            return Err(EventLogError::BankMismatch { index, offset, alg });
        }
        let bytes = r.take(alg.size(), "digest").map_err(malformed)?;
        let pushed = Digest::from_slice(alg, bytes).is_some_and(|d| digests.push(d));
        if !pushed {
            return Err(EventLogError::BankMismatch { index, offset, alg });
        }
    }
    r.set_structure("TCG_PCR_EVENT2");
    let size = r.u32_le("eventSize").map_err(malformed)?;
    let data = r
        .take(usize::try_from(size).unwrap_or(usize::MAX), "event")
        .map_err(malformed)?;
    Ok(Event {
        index,
        offset,
        pcr_index,
        pcr,
        event_type,
        digests,
        data,
    })
}
