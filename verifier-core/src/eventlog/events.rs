//! Typed event contents, for policies and for people. Decoding is lazy ([`super::Event::decode`])
//! and borrows from the log where it can; nothing here affects replay.

use std::borrow::Cow;
use std::fmt;

use super::uefi::{GptEvent, ImageLoadEvent, UefiVariable};
use super::EventLogError;
use crate::wire::{HashAlg, Reader};
use crate::ParseError;

/// Serializes bytes as lowercase hex.
pub(super) fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// A UEFI GUID (EFI_GUID), kept in its wire byte order and shown in the registry format.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, BootOrder, Boot####).
    pub const EFI_GLOBAL_VARIABLE: Guid = Guid([
        0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b,
        0x8c,
    ]);
    /// EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx).
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid([
        0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65,
        0x6f,
    ]);
    /// EFI_CERT_X509_GUID.
    pub const CERT_X509: Guid = Guid([
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ]);
    /// EFI_CERT_SHA256_GUID.
    pub const CERT_SHA256: Guid = Guid([
        0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43,
        0x28,
    ]);

    pub(super) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, ParseError> {
        Ok(Self(r.take_array(field)?))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d2 = u16::from_le_bytes([b[4], b[5]]);
        let d3 = u16::from_le_bytes([b[6], b[7]]);
        write!(f, "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-", b[8], b[9])?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One entry of the Spec ID event's digest-size table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpecIdAlgorithm {
    /// TPM_ALG_ID.
    pub algorithm_id: u16,
    /// Digest size the log uses for it.
    pub digest_size: u16,
}

/// TCG_EfiSpecIdEvent: declares the banks of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecIdEvent {
    /// platformClass (0 client, 1 server).
    pub platform_class: u32,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specVersionMajor.
    pub spec_version_major: u8,
    /// specErrata.
    pub spec_errata: u8,
    /// uintnSize (1 for 32-bit, 2 for 64-bit UINTN).
    pub uintn_size: u8,
    /// The declared algorithms and digest sizes, in log order.
    pub algorithms: Vec<SpecIdAlgorithm>,
    /// vendorInfo.
    #[serde(serialize_with = "hex_bytes")]
    pub vendor_info: Vec<u8>,
}

/// Bound on numberOfAlgorithms (TCG's HASH_COUNT); only four are accepted anyway.
const MAX_SPEC_ID_ALGORITHMS: usize = 16;

impl SpecIdEvent {
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        r.set_structure("TCG_EfiSpecIdEvent");
        r.take(16, "signature")?;
        let platform_class = r.u32_le("platformClass")?;
        let spec_version_minor = r.u8("specVersionMinor")?;
        let spec_version_major = r.u8("specVersionMajor")?;
        let spec_errata = r.u8("specErrata")?;
        let uintn_size = r.u8("uintnSize")?;
        let count = r.u32_le("numberOfAlgorithms")?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_SPEC_ID_ALGORITHMS {
            return Err(ParseError::TooLarge {
                structure: "TCG_EfiSpecIdEvent",
                field: "numberOfAlgorithms",
                len: count,
                max: MAX_SPEC_ID_ALGORITHMS,
            });
        }
        if count == 0 {
            return Err(r.invalid("numberOfAlgorithms", 0));
        }
        let mut algorithms = Vec::with_capacity(count);
        for _ in 0..count {
            algorithms.push(SpecIdAlgorithm {
                algorithm_id: r.u16_le("algorithmId")?,
                digest_size: r.u16_le("digestSize")?,
            });
        }
        let vendor_size = r.u8("vendorInfoSize")?;
        let vendor_info = r.take(usize::from(vendor_size), "vendorInfo")?.to_vec();
        Ok(Self {
            platform_class,
            spec_version_minor,
            spec_version_major,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    }

    /// The declared banks, refusing unknown algorithms, wrong sizes and repeats.
    pub(super) fn banks(&self) -> Result<Vec<HashAlg>, EventLogError> {
        let mut banks = Vec::with_capacity(self.algorithms.len());
        for a in &self.algorithms {
            let alg = HashAlg::from_tpm(a.algorithm_id, "TCG_EfiSpecIdEvent", "algorithmId")
                .map_err(|e| EventLogError::malformed(0, 0, e))?;
            if usize::from(a.digest_size) != alg.size() {
                return Err(EventLogError::DigestSize {
                    alg,
                    size: a.digest_size,
                });
            }
            if banks.contains(&alg) {
                return Err(EventLogError::DuplicateBank { alg });
            }
            banks.push(alg);
        }
        Ok(banks)
    }
}

/// Decoded content of an `EV_NO_ACTION` event (never extended).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum NoActionEvent<'a> {
    /// The Spec ID event.
    SpecId(SpecIdEvent),
    /// "StartupLocality": the locality TPM2_Startup ran at, which sets PCR 0's initial value.
    StartupLocality {
        /// 0, 3, or 4 (H-CRTM).
        locality: u8,
    },
    /// NIST SP800-155 reference-manifest information ("SP800-155 Event" / "SP800-155 Event3").
    Sp800155 {
        /// The signature string.
        signature: Cow<'a, str>,
        /// platformManufacturerId (an IANA enterprise number).
        platform_manufacturer_id: u32,
        /// referenceManifestGuid.
        reference_manifest_guid: Guid,
        /// platformManufacturerStr.
        platform_manufacturer: Cow<'a, str>,
        /// platformModel.
        platform_model: Cow<'a, str>,
        /// platformVersion.
        platform_version: Cow<'a, str>,
        /// firmwareManufacturerStr.
        firmware_manufacturer: Cow<'a, str>,
        /// Remaining fields (firmware id and version, RIM and certificate locators), raw.
        #[serde(serialize_with = "hex_bytes")]
        rest: &'a [u8],
    },
    /// Any other `EV_NO_ACTION` content (NvIndexInstance, vendor data...).
    Other {
        /// The leading 16 bytes read as text (the signature, when there is one).
        signature: Cow<'a, str>,
    },
}

/// Decoded content of an `EV_IPL` event: boot loaders log text there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IplEvent<'a> {
    /// Which convention the text follows.
    pub form: IplForm,
    /// The text without the convention's prefix and trailing NULs.
    pub text: Cow<'a, str>,
}

/// The conventions boot loaders use for `EV_IPL` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IplForm {
    /// grub: `grub_cmd: <command>` (PCR 8; RHEL's grub writes `grub_cmd <command>`).
    GrubCommand,
    /// grub: `kernel_cmdline: <command line>` (PCR 8).
    KernelCmdline,
    /// systemd-boot: the kernel command line in UTF-16 (PCR 8 or 12).
    Utf16,
    /// Any other text (file names in PCR 9, shim's MokList names in PCR 14...).
    Text,
}

/// Decoded content of an `EV_POST_CODE` event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum PostCode<'a> {
    /// A description ("POST CODE", "ACPI DATA", "SMM CODE"...).
    Text {
        /// The text.
        text: Cow<'a, str>,
    },
    /// UEFI_PLATFORM_FIRMWARE_BLOB.
    Blob {
        /// BlobBase.
        base: u64,
        /// BlobLength.
        length: u64,
    },
}

/// One EFI_CONFIGURATION_TABLE entry of a handoff-tables event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HandoffTable {
    /// VendorGuid.
    pub vendor_guid: Guid,
    /// VendorTable (address).
    pub address: u64,
}

/// An event's content decoded by type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventData<'a> {
    /// `EV_NO_ACTION`.
    NoAction(NoActionEvent<'a>),
    /// `EV_SEPARATOR`: 0 normally, 0xFFFFFFFF (or 1 on some firmware) after an error.
    Separator {
        /// The 4-byte value.
        value: u32,
    },
    /// `EV_ACTION` / `EV_EFI_ACTION`: an ASCII string.
    Action {
        /// The string.
        text: Cow<'a, str>,
    },
    /// `EV_POST_CODE`.
    PostCode(PostCode<'a>),
    /// `EV_S_CRTM_VERSION`: a UTF-16 version string, or a GUID.
    SCrtmVersion {
        /// The version (a GUID in registry format, or hex if neither).
        version: String,
    },
    /// `EV_EFI_PLATFORM_FIRMWARE_BLOB` (and `EV_S_CRTM_CONTENTS` when it holds one).
    FirmwareBlob {
        /// BlobBase.
        base: u64,
        /// BlobLength.
        length: u64,
    },
    /// `EV_EFI_PLATFORM_FIRMWARE_BLOB2`.
    FirmwareBlob2 {
        /// BlobDescription.
        description: Cow<'a, str>,
        /// BlobBase.
        base: u64,
        /// BlobLength.
        length: u64,
    },
    /// `EV_EFI_HANDOFF_TABLES` / `EV_EFI_HANDOFF_TABLES2` (description empty for the former).
    HandoffTables {
        /// TableDescription (HANDOFF_TABLES2 only).
        description: Cow<'a, str>,
        /// The tables.
        tables: Vec<HandoffTable>,
    },
    /// `EV_EFI_VARIABLE_*`.
    Variable(UefiVariable<'a>),
    /// `EV_EFI_BOOT_SERVICES_APPLICATION` / `_DRIVER`, `EV_EFI_RUNTIME_SERVICES_DRIVER`.
    ImageLoad(ImageLoadEvent<'a>),
    /// `EV_EFI_GPT_EVENT`.
    Gpt(GptEvent),
    /// `EV_IPL`.
    Ipl(IplEvent<'a>),
    /// `EV_COMPACT_HASH`: vendor bytes.
    CompactHash {
        /// The data.
        #[serde(serialize_with = "hex_bytes")]
        data: &'a [u8],
    },
    /// `EV_EVENT_TAG`: TCG_PCClientTaggedEvent.
    EventTag {
        /// taggedEventID.
        id: u32,
        /// taggedEventData.
        #[serde(serialize_with = "hex_bytes")]
        data: &'a [u8],
    },
    /// `EV_EFI_HCRTM_EVENT`, `EV_S_CRTM_CONTENTS` and other types whose data is a string.
    Text {
        /// The string.
        text: Cow<'a, str>,
    },
    /// Any other type, or content that did not decode (then `note` says why).
    Raw {
        /// Why the content was not decoded, if it should have been.
        #[serde(serialize_with = "ser_note")]
        note: Option<ParseError>,
    },
}

fn ser_note<S: serde::Serializer>(note: &Option<ParseError>, s: S) -> Result<S::Ok, S::Error> {
    match note {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}
