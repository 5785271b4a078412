//! Replay (extend every event's digests into its PCR, per bank) and digest-versus-data checks.
//!
//! Replay always follows the digests in the log: that is what the TPM extended. Whether a
//! digest is the hash of the event's data is a separate question, answered only for event
//! types whose digest the PC Client profile (or, for EV_IPL, systemd-boot) defines as exactly
//! that, and reported as a [`Finding`] for a policy to weigh.

use super::parse::Event;
use super::types::EventType;
use super::uefi;
use crate::wire::{Digest, HashAlg, PcrValues, PCR_COUNT};

const PCRS: usize = PCR_COUNT as usize;

/// Something a policy should know about a log that nevertheless replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// The digest of an event whose digest is defined as the hash of its data differs from that
    /// hash: the data shown for this event is not what was measured.
    DigestMismatch {
        /// Index of the event.
        event_index: usize,
        /// Its PCR.
        pcr: u8,
        /// Its type.
        event_type: EventType,
        /// The bank whose digest differs.
        #[serde(serialize_with = "alg_name")]
        alg: HashAlg,
    },
    /// An extended event carries no digest for a bank the Spec ID event declared (tpm2-tools'
    /// event-uefiaction.bin declares four banks and logs two). The bank cannot be replayed,
    /// so [`super::EventLog::replay`] leaves it out rather than offer wrong values.
    IncompleteBank {
        /// The bank.
        #[serde(serialize_with = "alg_name")]
        alg: HashAlg,
        /// The first event without it.
        event_index: usize,
    },
    /// A StartupLocality event came after PCR 0 was extended, so it could not have described
    /// PCR 0's initial value, and was ignored.
    LateStartupLocality {
        /// Index of the event.
        event_index: usize,
    },
}

fn alg_name<S: serde::Serializer>(alg: &HashAlg, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(alg.name())
}

/// Replay state: one fixed array of PCRs per bank, so extending allocates nothing.
pub(super) struct Replayer {
    banks: Vec<(HashAlg, [Digest; PCRS])>,
    /// Per bank, the first extended event that lacked its digest.
    incomplete: Vec<Option<usize>>,
    extended: [bool; PCRS],
    findings: Vec<Finding>,
    startup_locality: Option<u8>,
}

impl Replayer {
    pub(super) fn new(banks: &[HashAlg]) -> Self {
        let banks: Vec<(HashAlg, [Digest; PCRS])> = banks
            .iter()
            .map(|&alg| {
                let mut pcrs = [Digest::zero(alg); PCRS];
                for pcr in pcrs.iter_mut().take(23).skip(17) {
                    *pcr = Digest::filled(alg, 0xff);
                }
                (alg, pcrs)
            })
            .collect();
        Self {
            incomplete: vec![None; banks.len()],
            banks,
            extended: [false; PCRS],
            findings: Vec::new(),
            startup_locality: None,
        }
    }

    pub(super) fn event(&mut self, event: &Event<'_>) {
        // A trust point extends no PCR; whatever its type and data, it is no StartupLocality.
        if event.is_trust_point() {
            return;
        }
        let pcr = usize::from(event.pcr());
        if !event.is_extended() {
            self.no_action(event);
            return;
        }
        for ((alg, _), first) in self.banks.iter().zip(self.incomplete.iter_mut()) {
            if first.is_none() && event.digests().get(*alg).is_none() {
                *first = Some(event.index());
            }
        }
        for d in event.digests().as_slice() {
            if let Some((_, pcrs)) = self.banks.iter_mut().find(|(a, _)| *a == d.alg()) {
                if let Some(value) = pcrs.get_mut(pcr) {
                    *value = extend(value, d);
                }
            }
        }
        if let Some(flag) = self.extended.get_mut(pcr) {
            *flag = true;
        }
    }

    fn no_action(&mut self, event: &Event<'_>) {
        let Some(locality) = startup_locality(event) else {
            return;
        };
        if self.extended.first().copied().unwrap_or(true) || self.startup_locality.is_some() {
            self.findings.push(Finding::LateStartupLocality {
                event_index: event.index(),
            });
            return;
        }
        self.startup_locality = Some(locality);
        for (alg, pcrs) in &mut self.banks {
            let mut bytes = [0u8; crate::wire::MAX_DIGEST_SIZE];
            let size = alg.size();
            if let Some(last) = bytes.get_mut(size - 1) {
                *last = locality;
            }
            if let (Some(pcr0), Some(init)) = (
                pcrs.first_mut(),
                bytes.get(..size).and_then(|b| Digest::from_slice(*alg, b)),
            ) {
                *pcr0 = init;
            }
        }
    }

    pub(super) fn finish(mut self) -> (PcrValues, Vec<Finding>, Option<u8>) {
        let mut values = PcrValues::new();
        for ((alg, pcrs), incomplete) in self.banks.iter().zip(&self.incomplete) {
            if let Some(event_index) = *incomplete {
                self.findings.push(Finding::IncompleteBank {
                    alg: *alg,
                    event_index,
                });
                continue;
            }
            for (index, value) in pcrs.iter().enumerate() {
                if self.extended.get(index).copied().unwrap_or(false) {
                    if let Ok(i) = u8::try_from(index) {
                        values.insert(i, *value);
                    }
                }
            }
        }
        (values, self.findings, self.startup_locality)
    }
}

/// Digest-versus-data findings for every event, in event order. Kept out of parsing because
/// it hashes event data once per bank, which costs more than the replay itself.
pub(super) fn digest_findings(events: &[Event<'_>]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for event in events.iter().filter(|e| e.is_extended()) {
        let Some(inputs) = expected_digest_input(event.pcr(), event.event_type(), event.data())
        else {
            continue;
        };
        for d in event.digests().as_slice() {
            let matches = inputs
                .iter()
                .flatten()
                .any(|input| d.alg().hash(input) == *d);
            if !matches {
                findings.push(Finding::DigestMismatch {
                    event_index: event.index(),
                    pcr: event.pcr(),
                    event_type: event.event_type(),
                    alg: d.alg(),
                });
            }
        }
    }
    findings
}

/// PCR extend with one contiguous hash input on the stack: half the cost of a streaming
/// context for these two-block inputs, and extending is most of a replay's time.
fn extend(pcr: &Digest, measurement: &Digest) -> Digest {
    let mut buf = [0u8; 2 * crate::wire::MAX_DIGEST_SIZE];
    let (a, b) = (pcr.as_bytes(), measurement.as_bytes());
    let n = a.len() + b.len();
    if let Some(head) = buf.get_mut(..a.len()) {
        head.copy_from_slice(a);
    }
    if let Some(tail) = buf.get_mut(a.len()..n) {
        tail.copy_from_slice(b);
    }
    pcr.alg().hash(buf.get(..n).unwrap_or_default())
}

/// The StartupLocality locality of an `EV_NO_ACTION` event in PCR 0, if it is one with a
/// locality the profile allows for the initial value (3, or 4 for an H-CRTM).
fn startup_locality(event: &Event<'_>) -> Option<u8> {
    if event.pcr() != 0 {
        return None;
    }
    match event.data() {
        [sig @ .., locality] if sig == b"StartupLocality\0" && matches!(locality, 0 | 3 | 4) => {
            Some(*locality)
        }
        _ => None,
    }
}

/// For event types whose digest is the hash of (part of) the data, the acceptable hash inputs.
///
/// - EV_SEPARATOR, EV_ACTION, EV_EFI_ACTION, EV_S_CRTM_VERSION, EV_EFI_GPT_EVENT,
///   EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT2: the whole event data (PC Client
///   profile 10.4.1 and 10.4.4).
/// - EV_EFI_VARIABLE_BOOT: the whole UEFI_VARIABLE_DATA per the profile, but EDK2-derived
///   firmware hashes the variable's data only (every test log does); both are accepted.
/// - EV_IPL holding UTF-16 text: systemd-boot's kernel command line, hashed as logged. Other
///   EV_IPL data is defined by the boot loader (grub hashes the command without its
///   `grub_cmd: ` prefix, file events hash the file), so it is not checked. Nor is PCR 11's:
///   systemd-stub labels a UKI's section events with the section's name in UTF-16, their
///   digests are of the name in ASCII and of the section's bytes.
/// - EV_EFI_VARIABLE_AUTHORITY is not checked: shim logs its vendor certificate with a digest
///   of other bytes than the event data (sb_cert, debian-10, event-postcode logs), so the
///   check would only produce false findings.
fn expected_digest_input(
    pcr: u8,
    event_type: EventType,
    data: &[u8],
) -> Option<[Option<&[u8]>; 2]> {
    match event_type {
        EventType::EV_SEPARATOR
        | EventType::EV_ACTION
        | EventType::EV_EFI_ACTION
        | EventType::EV_S_CRTM_VERSION
        | EventType::EV_EFI_GPT_EVENT
        | EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT2 => Some([Some(data), None]),
        EventType::EV_EFI_VARIABLE_BOOT => Some([uefi::variable_data(data), Some(data)]),
        // systemd-stub labels its PCR 11 events with the section's name in UTF-16 while the
        // digest is of the name in ASCII or of the section's bytes: nothing to compare.
        EventType::EV_IPL if pcr == SYSTEMD_STUB_SECTIONS_PCR => None,
        EventType::EV_IPL if is_utf16_text(data) => Some([Some(data), None]),
        _ => None,
    }
}

/// The PCR systemd-stub measures a unified kernel image's sections into.
const SYSTEMD_STUB_SECTIONS_PCR: u8 = 11;

/// UTF-16LE of ASCII characters, as systemd-boot logs the command line. An odd size with one
/// extra NUL byte is accepted: arch-linux-workstation.bin logs 365 bytes, the terminator
/// being a single byte.
pub(super) fn is_utf16_text(data: &[u8]) -> bool {
    let body = match data.len() % 2 {
        0 => data,
        _ => match data.split_last() {
            Some((0, body)) => body,
            _ => return false,
        },
    };
    body.len() >= 4
        && body.chunks_exact(2).all(|c| {
            matches!(c, [lo, 0] if *lo == 0 || lo.is_ascii_graphic() || lo.is_ascii_whitespace())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_detection() {
        assert!(is_utf16_text(b"a\0b\0\0\0"));
        assert!(!is_utf16_text(b"grub_cmd: x\0"));
        assert!(is_utf16_text(b"a\0b\0"));
        assert!(!is_utf16_text(b"a\0"));
        assert!(is_utf16_text(b"a\0b\0\0\0\0"));
        assert!(!is_utf16_text(b"a\0b\0\0\0x"));
    }
}
