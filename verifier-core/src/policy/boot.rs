//! The measured-boot reference state read from a decoded event log: Secure Boot, the key
//! databases, boot applications, kernels, initrds and command lines. Shared by evaluation
//! and `learn`, so what a learned policy names is exactly what evaluation looks at.
//!
//! Only events of covered PCRs are read (the caller checked those PCRs against the quote).
//! Event *data* is bound to what was measured only where the digest is a hash of it: the
//! variables (checked by the log's findings) and grub's and systemd's command lines (checked
//! here), and the Linux EFI stub's load options by hashing a rule's text. Which PCR-9 file is the kernel or the initrd comes from grub's order of events
//! across PCRs 8 and 9, which the quote does not attest: see `docs/policy.md`.

use std::borrow::Cow;
use std::fmt;

use crate::eventlog::{
    EventData, EventLog, EventType, Finding, Guid, IplForm, SignatureList, VariableValue,
};
use crate::predict::{STUB_INITRD_TAG, STUB_LOAD_OPTIONS_TAG};
use crate::wire::{Digest, HashAlg, PCR_COUNT};

/// PCRs the measured-boot rules read.
pub(crate) const PCR_BOOT_APPS: u8 = 4;
pub(crate) const PCR_SECURE_BOOT: u8 = 7;
pub(crate) const PCR_GRUB_CMD: u8 = 8;
pub(crate) const PCR_GRUB_FILES: u8 = 9;
pub(crate) const PCR_UKI: u8 = 11;
pub(crate) const PCR_SD_CMDLINE: u8 = 12;

/// The secure-boot key databases, in measurement order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDb {
    Pk,
    Kek,
    Db,
    Dbx,
}

impl KeyDb {
    pub(crate) const ALL: [KeyDb; 4] = [Self::Pk, Self::Kek, Self::Db, Self::Dbx];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pk => "pk",
            Self::Kek => "kek",
            Self::Db => "db",
            Self::Dbx => "dbx",
        }
    }

    fn from_variable(name: &str) -> Option<Self> {
        match name {
            "PK" => Some(Self::Pk),
            "KEK" => Some(Self::Kek),
            "db" => Some(Self::Db),
            "dbx" => Some(Self::Dbx),
            _ => None,
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::Pk => 0,
            Self::Kek => 1,
            Self::Db => 2,
            Self::Dbx => 3,
        }
    }
}

/// The identity of one EFI_SIGNATURE_DATA: an X.509 certificate by the SHA-256 of its DER,
/// a SHA-256 hash entry by itself, anything else by the SHA-256 of its data under its type.
/// Written `x509:<hex>`, `sha256:<hex>`, `<type guid>:<hex>`. Owners are not part of it:
/// anyone can claim any owner GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SigEntry {
    kind: SigKind,
    key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SigKind {
    X509,
    Sha256,
    Other([u8; 16]),
}

impl SigEntry {
    fn of(list: &SignatureList<'_>, data: &[u8]) -> Self {
        let hashed = || {
            let mut key = [0u8; 32];
            key.copy_from_slice(HashAlg::Sha256.hash(data).as_bytes());
            key
        };
        if list.signature_type == Guid::CERT_X509 {
            return Self {
                kind: SigKind::X509,
                key: hashed(),
            };
        }
        if list.signature_type == Guid::CERT_SHA256 {
            if let Ok(key) = <[u8; 32]>::try_from(data) {
                return Self {
                    kind: SigKind::Sha256,
                    key,
                };
            }
        }
        Self {
            kind: SigKind::Other(list.signature_type.0),
            key: hashed(),
        }
    }

    /// The identity of an authority event's entry, from the logged variable's data, and the
    /// entry's bytes. Firmware logs the db entry as an EFI_SIGNATURE_DATA (owner GUID, then
    /// the certificate or hash) without its list's signature type; shim logs its vendor
    /// certificate or a MOK as the bare DER. So the type is told from the bytes: a DER
    /// SEQUENCE spanning the data exactly is an X.509 certificate, 32 bytes after the owner
    /// are a SHA-256 entry, anything else is named by the hash of its bytes under an all-zero
    /// type.
    fn of_authority(value: &[u8]) -> (Self, &[u8]) {
        let x509 = |cert: &[u8]| {
            let mut key = [0u8; 32];
            key.copy_from_slice(HashAlg::Sha256.hash(cert).as_bytes());
            Self {
                kind: SigKind::X509,
                key,
            }
        };
        if is_der_sequence(value) {
            return (x509(value), value);
        }
        let after_owner = value.get(16..).unwrap_or_default();
        if is_der_sequence(after_owner) {
            return (x509(after_owner), after_owner);
        }
        if let Ok(key) = <[u8; 32]>::try_from(after_owner) {
            let kind = SigKind::Sha256;
            return (Self { kind, key }, after_owner);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(HashAlg::Sha256.hash(value).as_bytes());
        let kind = SigKind::Other([0; 16]);
        (Self { kind, key }, value)
    }

    /// Parses the notation of [`Self`]'s doc.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (kind, hex_part) = s.rsplit_once(':')?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut key).ok()?;
        if hex_part.bytes().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let kind = match kind {
            "x509" => SigKind::X509,
            "sha256" => SigKind::Sha256,
            guid => SigKind::Other(parse_guid(guid)?),
        };
        Some(Self { kind, key })
    }
}

impl fmt::Display for SigEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SigKind::X509 => f.write_str("x509:")?,
            SigKind::Sha256 => f.write_str("sha256:")?,
            SigKind::Other(g) => write!(f, "{}:", Guid(g))?,
        }
        f.write_str(&hex::encode(self.key))
    }
}

/// A DER SEQUENCE (tag 0x30) whose definite length spans `data` exactly.
fn is_der_sequence(data: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = data else {
        return false;
    };
    let (len, body) = match *first {
        n @ 0..=0x7f => (usize::from(n), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let Some((len_bytes, body)) = rest.split_at_checked(n) else {
                return false;
            };
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, body)
        }
        _ => return false,
    };
    body.len() == len
}

/// A hasher for [`SigEntry`] sets: the keys are SHA-256 outputs (or GUIDs), already
/// uniform, so folding their bytes is enough and much cheaper than SipHash over dbx's
/// hundreds of entries on every evaluation. Keys come from the policy and the measured
/// log, which cannot pick collisions that matter: a collision only costs a comparison.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

/// Registry-format GUID text back to its wire bytes (mixed endian, as [`Guid`] shows it).
fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = s.split('-').collect();
    let [a, b, c, d, e] = parts.as_slice() else {
        return None;
    };
    if a.len() != 8 || b.len() != 4 || c.len() != 4 || d.len() != 4 || e.len() != 12 {
        return None;
    }
    let a = u32::from_str_radix(a, 16).ok()?.to_le_bytes();
    let b = u16::from_str_radix(b, 16).ok()?.to_le_bytes();
    let c = u16::from_str_radix(c, 16).ok()?.to_le_bytes();
    let mut tail = [0u8; 8];
    hex::decode_to_slice(format!("{d}{e}"), &mut tail).ok()?;
    let mut out = [0u8; 16];
    for (dst, src) in out
        .iter_mut()
        .zip(a.iter().chain(&b).chain(&c).chain(&tail))
    {
        *dst = *src;
    }
    Some(out)
}

/// One measurement: the event it came from and its digest in the policy's bank.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) event: usize,
    pub(crate) digest: Digest,
}

/// A measured kernel command line.
#[derive(Debug, Clone)]
pub(crate) struct Cmdline<'a> {
    pub(crate) event: usize,
    pub(crate) text: Cow<'a, str>,
    /// The text is what was hashed into the PCR (otherwise it is only the log's word).
    pub(crate) bound: bool,
    /// The Linux EFI stub's load options (PCR 9): the log records only the digest (of the
    /// UTF-16LE text with its NUL), so `text` is empty and a rule matches by hashing its own
    /// exact text.
    pub(crate) stub_digest: Option<Digest>,
}

/// A key database as measured.
#[derive(Debug, Clone)]
pub(crate) struct KeyDbState {
    pub(crate) event: usize,
    pub(crate) entries: Vec<SigEntry>,
    pub(crate) bound: bool,
}

/// One `EV_EFI_VARIABLE_AUTHORITY` event: the signature-database entry (in practice a db
/// certificate, or shim's vendor certificate / a MOK) that verified a boot application.
/// Firmware logs each authority once, the first time it verifies an image.
#[derive(Debug, Clone)]
pub(crate) struct AuthorityUse {
    pub(crate) event: usize,
    /// The variable the entry came from (`db`, `Shim`, `MokList`...), as logged.
    pub(crate) variable: String,
    pub(crate) entry: SigEntry,
    /// The entry is what was hashed into PCR 7 (see [`authority_bound`]).
    pub(crate) bound: bool,
}

/// The reference state of one boot.
#[derive(Debug, Clone, Default)]
pub(crate) struct BootState<'a> {
    /// (event, value, bound) of the first SecureBoot variable.
    pub(crate) secure_boot: Option<(usize, Option<u8>, bool)>,
    pub(crate) keys: [Option<KeyDbState>; 4],
    /// The authorities that verified boot applications, in log order.
    pub(crate) authorities: Vec<AuthorityUse>,
    pub(crate) boot_apps: Vec<Measured>,
    pub(crate) kernels: Vec<Measured>,
    pub(crate) initrds: Vec<Measured>,
    pub(crate) cmdlines: Vec<Cmdline<'a>>,
}

impl<'a> BootState<'a> {
    pub(crate) fn key_db(&self, db: KeyDb) -> Option<&KeyDbState> {
        self.keys.get(db.slot()).and_then(Option::as_ref)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Kernel,
    Initrd,
}

/// Reads the reference state from the events of covered PCRs, digests in `bank`.
pub(crate) fn read<'a>(
    log: &'a EventLog<'a>,
    bank: HashAlg,
    covered: &[bool; PCR_COUNT as usize],
) -> BootState<'a> {
    let mismatched = |index: usize| {
        log.findings().iter().any(|f| {
            matches!(f, Finding::DigestMismatch { event_index, alg, .. }
                if *event_index == index && *alg == bank)
        })
    };
    let mut state = BootState::default();
    let mut pending = Pending::None;
    let uki_names: Vec<(&str, Digest)> = crate::predict::uki::MEASURED_SECTIONS
        .iter()
        .map(|n| (*n, bank.hash_parts(&[n.as_bytes(), b"\0"])))
        .collect();
    let mut uki_pending: Option<&str> = None;
    for e in log.events() {
        if !covered.get(usize::from(e.pcr())).copied().unwrap_or(false) || !e.is_extended() {
            continue;
        }
        let Some(digest) = e.digests().get(bank).copied() else {
            continue;
        };
        let measured = Measured {
            event: e.index(),
            digest,
        };
        match (e.pcr(), e.event_type()) {
            (PCR_SECURE_BOOT, EventType::EV_EFI_VARIABLE_AUTHORITY) => {
                let EventData::Variable(var) = e.decode() else {
                    continue;
                };
                if SHIM_STATE_VARIABLES.contains(&var.name.as_str()) {
                    continue;
                }
                let Some(value) = crate::eventlog::variable_data(e.data()) else {
                    continue;
                };
                let (entry, cert) = SigEntry::of_authority(value);
                state.authorities.push(AuthorityUse {
                    event: e.index(),
                    variable: var.name.clone(),
                    entry,
                    bound: authority_bound(&digest, e.data(), value, cert),
                });
            }
            (PCR_SECURE_BOOT, EventType::EV_EFI_VARIABLE_DRIVER_CONFIG) => {
                let EventData::Variable(var) = e.decode() else {
                    continue;
                };
                match var.value {
                    VariableValue::SecureBoot { value } if state.secure_boot.is_none() => {
                        state.secure_boot = Some((e.index(), value, !mismatched(e.index())));
                    }
                    VariableValue::SignatureDb { lists } => {
                        let Some(db) = KeyDb::from_variable(&var.name) else {
                            continue;
                        };
                        if let Some(slot @ None) = state.keys.get_mut(db.slot()) {
                            let entries = lists
                                .iter()
                                .flat_map(|l| l.signatures.iter().map(|s| SigEntry::of(l, s.data)))
                                .collect();
                            *slot = Some(KeyDbState {
                                event: e.index(),
                                entries,
                                bound: !mismatched(e.index()),
                            });
                        }
                    }
                    _ => {}
                }
            }
            (PCR_BOOT_APPS, EventType::EV_EFI_BOOT_SERVICES_APPLICATION) => {
                state.boot_apps.push(measured);
            }
            (PCR_GRUB_CMD | PCR_SD_CMDLINE, EventType::EV_IPL) => {
                let EventData::Ipl(ipl) = e.decode() else {
                    continue;
                };
                match ipl.form {
                    IplForm::GrubCommand => {
                        let cmd = ipl.text.split(' ').next().unwrap_or_default();
                        pending = match cmd {
                            "linux" | "linuxefi" | "linux16" => Pending::Kernel,
                            "initrd" | "initrdefi" | "initrd16" => Pending::Initrd,
                            _ => Pending::None,
                        };
                    }
                    IplForm::KernelCmdline => {
                        let bound = text_bound(&digest, ipl.text.as_bytes());
                        state.cmdlines.push(Cmdline {
                            event: e.index(),
                            text: ipl.text,
                            bound,
                            stub_digest: None,
                        });
                    }
                    IplForm::Utf16 => state.cmdlines.push(Cmdline {
                        event: e.index(),
                        text: ipl.text,
                        bound: !mismatched(e.index()),
                        stub_digest: None,
                    }),
                    IplForm::Text => {
                        if let Some(rest) = ipl.text.strip_prefix("grub_kernel_cmdline ") {
                            let bound = text_bound(&digest, rest.as_bytes());
                            state.cmdlines.push(Cmdline {
                                event: e.index(),
                                text: Cow::Owned(rest.to_owned()),
                                bound,
                                stub_digest: None,
                            });
                        }
                    }
                }
            }
            (PCR_GRUB_FILES, EventType::EV_IPL) => {
                let EventData::Ipl(ipl) = e.decode() else {
                    continue;
                };
                // RHEL's grub names them; upstream grub logs the path after the command.
                let kind = match ipl.text.as_ref() {
                    "grub_linuxefi Kernel" => Pending::Kernel,
                    "grub_linuxefi Initrd" => Pending::Initrd,
                    _ => pending,
                };
                match kind {
                    Pending::Kernel => {
                        state.kernels.push(measured);
                        pending = Pending::None;
                    }
                    Pending::Initrd => state.initrds.push(measured),
                    Pending::None => {}
                }
            }
            // The Linux EFI stub (started by firmware, systemd-boot or shim) measures what it
            // was given: the load options (the command line) and the initrd it loaded
            // through LoadFile2. The event data is only a label; the digest is of the data.
            (PCR_GRUB_FILES, EventType::EV_EVENT_TAG) => {
                let EventData::EventTag { id, .. } = e.decode() else {
                    continue;
                };
                match id {
                    STUB_INITRD_TAG => state.initrds.push(measured),
                    STUB_LOAD_OPTIONS_TAG => state.cmdlines.push(Cmdline {
                        event: e.index(),
                        text: Cow::Borrowed(""),
                        bound: true,
                        stub_digest: Some(digest),
                    }),
                    _ => {}
                }
            }
            // systemd-stub labels both events of a section with its name: first the name
            // (the digest of the ASCII name with its NUL), then the section's bytes. The
            // label is only the log's word, the name event's digest is not: the section's
            // bytes are the event after its name event (the quote attests PCR 11's order
            // of digests). The event type is the log's word too (systemd-stub writes
            // EV_IPL), so every extended PCR 11 event takes part whatever its type: a
            // forger relabelling the kernel's event as EV_ACTION still has it read.
            (PCR_UKI, _) => {
                if let Some(name) = uki_names.iter().find(|(_, d)| *d == digest) {
                    uki_pending = Some(name.0);
                    continue;
                }
                match uki_pending.take() {
                    Some(".linux") => state.kernels.push(measured),
                    Some(".initrd") => state.initrds.push(measured),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    state
}

/// Whether an authority event's entry is what was measured. The PC Client profile has the
/// firmware hash the whole UEFI_VARIABLE_DATA; shim hashes only the variable's data (its
/// vendor certificate, a MOK), and shim 15.x logs a few bytes more than it hashed (the
/// digest is of the event data without its last byte, in the shared test data's
/// `sb_cert_eventlog`). Every accepted input contains the header and the entry whole, so a
/// forger cannot change the entry without changing the digest. An event matching none of
/// them is only the log's word and must not satisfy a rule.
fn authority_bound(digest: &Digest, event_data: &[u8], value: &[u8], entry: &[u8]) -> bool {
    /// Extra bytes after the variable tried as unhashed slack: bounded, so a forged log
    /// with a long tail costs at most this many extra hashes of the event.
    const MAX_SLACK: usize = 16;
    let alg = digest.alg();
    if alg.hash(value) == *digest || alg.hash(entry) == *digest {
        return true;
    }
    let end_of_value = crate::eventlog::variable_end(event_data).unwrap_or(event_data.len());
    let shortest = end_of_value.max(event_data.len().saturating_sub(MAX_SLACK));
    (shortest..=event_data.len())
        .rev()
        .filter_map(|n| event_data.get(..n))
        .any(|prefix| alg.hash(prefix) == *digest)
}

/// Variables shim measures into PCR 7 as `EV_EFI_VARIABLE_AUTHORITY` that are its state,
/// not an authority that verified an image: the SBAT revocation level and whether MOKs are
/// trusted for the kernel's keyring. Any other name counts as an authority (so a new kind
/// of authority must be allowed, never passes unseen).
const SHIM_STATE_VARIABLES: [&str; 2] = ["SbatLevel", "MokListTrusted"];

/// grub hashes the text without its `kernel_cmdline: ` prefix, with or without the NUL.
fn text_bound(digest: &Digest, text: &[u8]) -> bool {
    let alg = digest.alg();
    alg.hash(text) == *digest || alg.hash_parts(&[text, b"\0"]) == *digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_entry_notation_round_trips() {
        for s in [
            format!("x509:{}", "ab".repeat(32)),
            format!("sha256:{}", "01".repeat(32)),
            format!("a5c059a1-94e4-4aa7-87b5-ab155c2bf072:{}", "ff".repeat(32)),
        ] {
            let e = SigEntry::parse(&s).unwrap();
            assert_eq!(e.to_string(), s);
        }
        assert!(SigEntry::parse("x509:00").is_none());
        assert!(SigEntry::parse(&format!("md5:{}", "00".repeat(32))).is_none());
        assert!(SigEntry::parse(&format!("x509:{}", "AB".repeat(32))).is_none());
    }
}
