//! Dispatch from event type to content decoder. A decoder failing leaves the event as
//! [`EventData::Raw`] with the reason: content is never a reason to refuse a log.

use std::borrow::Cow;

use super::events::{
    EventData, HandoffTable, IplEvent, IplForm, NoActionEvent, PostCode, SpecIdEvent,
};
use super::parse::SPEC_ID_SIGNATURE;
use super::types::EventType;
use super::uefi;
use crate::wire::Reader;
use crate::ParseError;

pub(super) fn decode(event_type: EventType, data: &[u8]) -> EventData<'_> {
    match decode_inner(event_type, data) {
        Ok(d) => d,
        Err(e) => EventData::Raw { note: Some(e) },
    }
}

fn decode_inner(event_type: EventType, data: &[u8]) -> Result<EventData<'_>, ParseError> {
    Ok(match event_type {
        EventType::EV_NO_ACTION => EventData::NoAction(no_action(data)?),
        EventType::EV_SEPARATOR => {
            let mut r = Reader::new("EV_SEPARATOR", data);
            let value = r.u32_le("value")?;
            r.finish()?;
            EventData::Separator { value }
        }
        EventType::EV_ACTION | EventType::EV_EFI_ACTION => EventData::Action { text: ascii(data) },
        EventType::EV_POST_CODE => EventData::PostCode(post_code(data)?),
        EventType::EV_S_CRTM_VERSION => EventData::SCrtmVersion {
            version: crtm_version(data),
        },
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB => {
            let (base, length) = blob(data)?;
            EventData::FirmwareBlob { base, length }
        }
        EventType::EV_S_CRTM_CONTENTS => match blob(data) {
            Ok((base, length)) => EventData::FirmwareBlob { base, length },
            Err(_) => EventData::Text { text: ascii(data) },
        },
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2 => {
            let mut r = Reader::new("UEFI_PLATFORM_FIRMWARE_BLOB2", data);
            let len = r.u8("BlobDescriptionSize")?;
            let description = ascii(r.take(usize::from(len), "BlobDescription")?);
            let base = r.u64_le("BlobBase")?;
            let length = r.u64_le("BlobLength")?;
            r.finish()?;
            EventData::FirmwareBlob2 {
                description,
                base,
                length,
            }
        }
        EventType::EV_EFI_HANDOFF_TABLES => {
            let mut r = Reader::new("UEFI_HANDOFF_TABLE_POINTERS", data);
            EventData::HandoffTables {
                description: Cow::Borrowed(""),
                tables: tables(&mut r)?,
            }
        }
        EventType::EV_EFI_HANDOFF_TABLES2 => {
            let mut r = Reader::new("UEFI_HANDOFF_TABLE_POINTERS2", data);
            let len = r.u8("TableDescriptionSize")?;
            let description = ascii(r.take(usize::from(len), "TableDescription")?);
            EventData::HandoffTables {
                description,
                tables: tables(&mut r)?,
            }
        }
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT
        | EventType::EV_EFI_VARIABLE_BOOT2 => EventData::Variable(uefi::variable(data, false)?),
        EventType::EV_EFI_VARIABLE_AUTHORITY => EventData::Variable(uefi::variable(data, true)?),
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION
        | EventType::EV_EFI_BOOT_SERVICES_DRIVER
        | EventType::EV_EFI_RUNTIME_SERVICES_DRIVER => {
            EventData::ImageLoad(uefi::image_load(data)?)
        }
        EventType::EV_EFI_GPT_EVENT => EventData::Gpt(uefi::gpt(data)?),
        EventType::EV_IPL => EventData::Ipl(ipl(data)),
        EventType::EV_COMPACT_HASH => EventData::CompactHash { data },
        EventType::EV_EVENT_TAG => {
            let mut r = Reader::new("TCG_PCClientTaggedEvent", data);
            let id = r.u32_le("taggedEventID")?;
            let len = r.u32_le("taggedEventDataSize")?;
            let tagged = r.take(
                usize::try_from(len).unwrap_or(usize::MAX),
                "taggedEventData",
            )?;
            r.finish()?;
            EventData::EventTag { id, data: tagged }
        }
        EventType::EV_EFI_HCRTM_EVENT => EventData::Text { text: ascii(data) },
        _ => EventData::Raw { note: None },
    })
}

fn no_action(data: &[u8]) -> Result<NoActionEvent<'_>, ParseError> {
    if data.starts_with(SPEC_ID_SIGNATURE) {
        let mut r = Reader::new("TCG_EfiSpecIdEvent", data);
        let spec = SpecIdEvent::parse(&mut r)?;
        r.finish()?;
        return Ok(NoActionEvent::SpecId(spec));
    }
    if let [sig @ .., locality] = data {
        if sig == b"StartupLocality\0" {
            return Ok(NoActionEvent::StartupLocality {
                locality: *locality,
            });
        }
    }
    if data.starts_with(b"SP800-155 Event") {
        let mut r = Reader::new("TCG_Sp800_155_PlatformId_Event", data);
        let signature = ascii(r.take(16, "Signature")?);
        let platform_manufacturer_id = r.u32_le("PlatformManufacturerId")?;
        let reference_manifest_guid = super::events::Guid::read(&mut r, "ReferenceManifestGuid")?;
        let mut string = |field| -> Result<Cow<'_, str>, ParseError> {
            let len = r.u8(field)?;
            Ok(ascii(r.take(usize::from(len), field)?))
        };
        let platform_manufacturer = string("PlatformManufacturerStr")?;
        let platform_model = string("PlatformModel")?;
        let platform_version = string("PlatformVersion")?;
        let firmware_manufacturer = string("FirmwareManufacturerStr")?;
        return Ok(NoActionEvent::Sp800155 {
            signature,
            platform_manufacturer_id,
            reference_manifest_guid,
            platform_manufacturer,
            platform_model,
            platform_version,
            firmware_manufacturer,
            rest: r.rest(),
        });
    }
    Ok(NoActionEvent::Other {
        signature: ascii(data.get(..16).unwrap_or(data)),
    })
}

/// The profile allows a UTF-16 string or an EFI_GUID (arch-linux-workstation.bin logs a GUID).
fn crtm_version(data: &[u8]) -> String {
    if super::replay::is_utf16_text(data) {
        return utf16(data);
    }
    match <[u8; 16]>::try_from(data) {
        Ok(guid) => super::events::Guid(guid).to_string(),
        Err(_) => hex::encode(data),
    }
}

fn post_code(data: &[u8]) -> Result<PostCode<'_>, ParseError> {
    if data.len() == 16 && !data.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let (base, length) = blob(data)?;
        return Ok(PostCode::Blob { base, length });
    }
    Ok(PostCode::Text { text: ascii(data) })
}

fn blob(data: &[u8]) -> Result<(u64, u64), ParseError> {
    let mut r = Reader::new("UEFI_PLATFORM_FIRMWARE_BLOB", data);
    let base = r.u64_le("BlobBase")?;
    let length = r.u64_le("BlobLength")?;
    r.finish()?;
    Ok((base, length))
}

fn tables(r: &mut Reader<'_>) -> Result<Vec<HandoffTable>, ParseError> {
    let count = r.u64_le("NumberOfTables")?;
    let mut tables = Vec::new();
    for _ in 0..count {
        tables.push(HandoffTable {
            vendor_guid: super::events::Guid::read(r, "VendorGuid")?,
            address: r.u64_le("VendorTable")?,
        });
    }
    r.clone().finish()?;
    Ok(tables)
}

fn ipl(data: &[u8]) -> IplEvent<'_> {
    if super::replay::is_utf16_text(data) {
        return IplEvent {
            form: IplForm::Utf16,
            text: Cow::Owned(utf16(data)),
        };
    }
    let text = ascii(data);
    for (prefix, form) in [
        ("grub_cmd: ", IplForm::GrubCommand),
        ("grub_cmd ", IplForm::GrubCommand),
        ("kernel_cmdline: ", IplForm::KernelCmdline),
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return IplEvent {
                form,
                text: Cow::Owned(rest.to_owned()),
            };
        }
    }
    IplEvent {
        form: IplForm::Text,
        text,
    }
}

/// Text as logged, without trailing NULs; invalid UTF-8 is replaced, not refused.
pub(super) fn ascii(bytes: &[u8]) -> Cow<'_, str> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default())
}

/// UTF-16LE text up to the first NUL; unpaired surrogates are replaced.
pub(super) fn utf16(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|u| *u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
