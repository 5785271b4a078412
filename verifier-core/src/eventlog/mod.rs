//! UEFI measured-boot event log (TCG PC Client Platform Firmware Profile): parsing, typed
//! decoding of event contents, replay into PCR values, and digest-versus-data findings.
//!
//! The log is untrusted: only the digests it carries matter for replay, and the replayed PCR
//! values are worth something only once they equal quoted PCRs. The decoded event contents
//! are what policies look at, *after* replay matched; a content that does not decode never
//! makes the log unusable, it is kept as [`EventData::Raw`] with a note.
//!
//! Decisions, each covered by a test (`tests/eventlog_*.rs`):
//! - Format is chosen by the first event: a `TCG_PCR_EVENT` of type `EV_NO_ACTION` whose data
//!   starts with `"Spec ID Event03\0"` makes the log crypto-agile (`TCG_PCR_EVENT2` after it);
//!   anything else is a legacy SHA-1 log (`TCG_PCR_EVENT` throughout, SHA-1 bank only).
//! - The Spec ID event must declare only SHA-1/256/384/512 with their true sizes, each once: an
//!   unknown algorithm (SM3 included) is an error, since we could not replay that bank and
//!   could not trust its declared size. No test log declares another algorithm.
//! - Every `TCG_PCR_EVENT2` must carry exactly one digest per declared bank.
//! - PCR indexes must be below 24, or `0xffffffff`: the Windows boot manager logs trust-point
//!   events with that index (-1), which extend no PCR. They are kept in
//!   [`EventLog::events`] and decoded like any event, but never replayed and never checked
//!   for digest findings ([`Event::is_extended`] is false); [`Event::pcr`] is
//!   [`Event::NO_PCR`] for them and [`Event::pcr_index`] the value as logged. CCEL logs
//!   (TDX) use the same format with MR indexes (1-4 for RTMR0-3), which replay like PCRs with
//!   a zero initial value.
//! - `EV_NO_ACTION` events are never extended. `StartupLocality` (locality 3 or 4) sets the
//!   initial PCR 0 of every bank to `0..0 03` / `0..0 04` when it precedes every PCR 0
//!   extension. It changes only that initial value: PCR 0 is in [`EventLog::replay`] only
//!   once an event extends it, and since padding never holds events, bytes after the last
//!   event can neither extend PCR 0 nor carry a StartupLocality. PCRs 17-22 start at all `0xff` (their value after TPM2_Startup without a
//!   dynamic launch, PC Client Platform TPM Profile), all others at zero.
//! - Padding, one rule: where an event could start, if every remaining byte is `0x00` or
//!   `0xff`, the log ends there and those bytes are padding ([`EventLog::padding`]; CCEL
//!   buffers are `0xff`-filled, others zero-filled). They are never parsed as events, even
//!   when they would frame one (32 zero bytes are an EV_PREBOOT_CERT in PCR 0), so a log
//!   replays the same with its padding, without it, or with more appended. The one exception
//!   is an error, not events: fewer than 32 such bytes starting with `0x00` are a cut-off
//!   event header. Anything else must parse as events, so trailing garbage or a truncated
//!   event is an error naming the event index and offset where it starts.
//! - `specid-vendordata.bin` (tpm2-tools) declares 4 bytes of vendorInfo that lie outside its
//!   Spec ID event: refused (event 0, offset 69). An empty input is refused.

mod decode;
mod error;
mod events;
mod parse;
mod replay;
mod types;
mod uefi;

pub use error::EventLogError;
pub use events::{
    EventData, Guid, HandoffTable, IplEvent, IplForm, NoActionEvent, PostCode, SpecIdAlgorithm,
    SpecIdEvent,
};
pub use parse::{DigestList, Event, EventLog, LogFormat};
pub use replay::Finding;
pub use types::EventType;
#[cfg(feature = "policy")]
pub(crate) use uefi::{variable_data, variable_end};
pub use uefi::{
    DevicePathNode, GptEvent, GptPartition, ImageLoadEvent, LoadOption, SignatureData,
    SignatureList, UefiVariable, VariableValue,
};
