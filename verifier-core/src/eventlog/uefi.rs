//! UEFI structures found in event data: UEFI_VARIABLE_DATA and the variables policies look at
//! (SecureBoot, PK/KEK/db/dbx signature lists, BootOrder, Boot####), UEFI_IMAGE_LOAD_EVENT,
//! UEFI_GPT_DATA and device paths. All parsing is bounded by the event's own bytes.

use super::decode::utf16;
use super::events::{hex_bytes, Guid};
use crate::wire::Reader;
use crate::ParseError;

/// UEFI_VARIABLE_DATA, with the variable's value decoded when we know its name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UefiVariable<'a> {
    /// VariableName (the vendor GUID).
    pub guid: Guid,
    /// UnicodeName.
    pub name: String,
    /// VariableData.
    #[serde(serialize_with = "hex_bytes")]
    pub data: &'a [u8],
    /// VariableData decoded by name.
    pub value: VariableValue<'a>,
    /// Bytes after VariableData. shim logs its vendor certificate with a VariableDataLength
    /// shorter than what follows (sb_cert_eventlog.bin: 6 bytes).
    #[serde(serialize_with = "hex_bytes")]
    pub trailing: &'a [u8],
}

/// A variable's value, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum VariableValue<'a> {
    /// SecureBoot: `None` when the variable is empty (arch-linux-workstation logs that).
    SecureBoot {
        /// The value byte (1 means enabled).
        value: Option<u8>,
    },
    /// PK, KEK, db, dbx, dbt, dbr: EFI_SIGNATURE_LIST entries.
    SignatureDb {
        /// The lists.
        lists: Vec<SignatureList<'a>>,
    },
    /// An EV_EFI_VARIABLE_AUTHORITY entry: one EFI_SIGNATURE_DATA (the certificate used).
    Authority(SignatureData<'a>),
    /// BootOrder: Boot#### numbers.
    BootOrder {
        /// The numbers.
        order: Vec<u16>,
    },
    /// Boot####: EFI_LOAD_OPTION.
    LoadOption(LoadOption<'a>),
    /// A variable we do not decode; its bytes are in `data`.
    Other,
}

/// EFI_SIGNATURE_LIST.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureList<'a> {
    /// SignatureType ([`Guid::CERT_X509`], [`Guid::CERT_SHA256`], ...).
    pub signature_type: Guid,
    /// SignatureHeader (empty for the standard types).
    #[serde(serialize_with = "hex_bytes")]
    pub header: &'a [u8],
    /// The entries.
    pub signatures: Vec<SignatureData<'a>>,
}

/// EFI_SIGNATURE_DATA: an owner and a certificate (DER) or hash, by the list's type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureData<'a> {
    /// SignatureOwner.
    pub owner: Guid,
    /// SignatureData.
    #[serde(serialize_with = "hex_bytes")]
    pub data: &'a [u8],
}

/// EFI_LOAD_OPTION (Boot####).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadOption<'a> {
    /// Attributes (bit 0: active).
    pub attributes: u32,
    /// Description.
    pub description: String,
    /// FilePathList (device path bytes).
    #[serde(serialize_with = "hex_bytes")]
    pub device_path: &'a [u8],
    /// The file path, when the device path holds media file-path nodes.
    pub file_path: Option<String>,
    /// OptionalData.
    #[serde(serialize_with = "hex_bytes")]
    pub optional_data: &'a [u8],
}

/// UEFI_IMAGE_LOAD_EVENT.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageLoadEvent<'a> {
    /// ImageLocationInMemory.
    pub image_location: u64,
    /// ImageLengthInMemory.
    pub image_length: u64,
    /// ImageLinkTimeAddress.
    pub link_time_address: u64,
    /// DevicePath bytes.
    #[serde(serialize_with = "hex_bytes")]
    pub device_path: &'a [u8],
    /// The file path, when the device path holds media file-path nodes.
    pub file_path: Option<String>,
    /// Bytes after DevicePath (some firmware logs them; rhel8-uefi.bin has 8).
    #[serde(serialize_with = "hex_bytes")]
    pub trailing: &'a [u8],
}

/// UEFI_GPT_DATA: the disk's partition table as the firmware saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GptEvent {
    /// DiskGUID.
    pub disk_guid: Guid,
    /// The partitions (NumberOfPartitions entries).
    pub partitions: Vec<GptPartition>,
}

/// One GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GptPartition {
    /// PartitionTypeGUID.
    pub type_guid: Guid,
    /// UniquePartitionGUID.
    pub unique_guid: Guid,
    /// StartingLBA.
    pub starting_lba: u64,
    /// EndingLBA.
    pub ending_lba: u64,
    /// Attributes.
    pub attributes: u64,
    /// PartitionName.
    pub name: String,
}

/// One EFI_DEVICE_PATH_PROTOCOL node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePathNode<'a> {
    /// Type (4 = media).
    pub node_type: u8,
    /// SubType (4 = file path under media).
    pub sub_type: u8,
    /// The node's data after its 4-byte header.
    pub data: &'a [u8],
}

impl DevicePathNode<'_> {
    /// Splits a device path into nodes, stopping at the end-of-path node.
    pub fn parse(bytes: &[u8]) -> Result<Vec<DevicePathNode<'_>>, ParseError> {
        let mut r = Reader::new("EFI_DEVICE_PATH_PROTOCOL", bytes);
        let mut nodes = Vec::new();
        while !r.is_empty() {
            let node_type = r.u8("Type")?;
            let sub_type = r.u8("SubType")?;
            let len = r.u16_le("Length")?;
            let Some(data_len) = usize::from(len).checked_sub(4) else {
                return Err(r.invalid("Length", u64::from(len)));
            };
            let data = r.take(data_len, "Data")?;
            if node_type == 0x7f && sub_type == 0xff {
                break;
            }
            nodes.push(DevicePathNode {
                node_type,
                sub_type,
                data,
            });
        }
        Ok(nodes)
    }
}

/// The path of the media file-path nodes of a device path, joined; `None` if there are none
/// or the path does not parse (the bytes are still available to the caller).
pub(super) fn file_path(device_path: &[u8]) -> Option<String> {
    let nodes = DevicePathNode::parse(device_path).ok()?;
    let parts: Vec<String> = nodes
        .iter()
        .filter(|n| n.node_type == 4 && n.sub_type == 4)
        .map(|n| utf16(n.data))
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("\\").replace("\\\\", "\\"))
}

fn variable_header<'a>(r: &mut Reader<'a>) -> Result<(Guid, &'a [u8], &'a [u8]), ParseError> {
    r.set_structure("UEFI_VARIABLE_DATA");
    let guid = Guid::read(r, "VariableName")?;
    let name_len = r.u64_le("UnicodeNameLength")?;
    let data_len = r.u64_le("VariableDataLength")?;
    let name_bytes = usize::try_from(name_len)
        .ok()
        .and_then(|n| n.checked_mul(2))
        .unwrap_or(usize::MAX);
    let name = r.take(name_bytes, "UnicodeName")?;
    let data = r.take(
        usize::try_from(data_len).unwrap_or(usize::MAX),
        "VariableData",
    )?;
    Ok((guid, name, data))
}

/// The VariableData part of a UEFI_VARIABLE_DATA (what EDK2 hashes for EV_EFI_VARIABLE_BOOT).
pub(crate) fn variable_data(event: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new("UEFI_VARIABLE_DATA", event);
    variable_header(&mut r).ok().map(|(_, _, data)| data)
}

/// Where the UEFI_VARIABLE_DATA ends in `event` (bytes after it are trailing data).
#[cfg(feature = "policy")]
pub(crate) fn variable_end(event: &[u8]) -> Option<usize> {
    let mut r = Reader::new("UEFI_VARIABLE_DATA", event);
    variable_header(&mut r).ok()?;
    event.len().checked_sub(r.rest().len())
}

pub(super) fn variable(bytes: &[u8], authority: bool) -> Result<UefiVariable<'_>, ParseError> {
    let mut r = Reader::new("UEFI_VARIABLE_DATA", bytes);
    let (guid, name, data) = variable_header(&mut r)?;
    let trailing = r.rest();
    let name = utf16(name);
    let value = if authority {
        let mut r = Reader::new("EFI_SIGNATURE_DATA", data);
        match Guid::read(&mut r, "SignatureOwner") {
            Ok(owner) => VariableValue::Authority(SignatureData {
                owner,
                data: r.rest(),
            }),
            Err(_) => VariableValue::Other,
        }
    } else {
        match name.as_str() {
            "SecureBoot" => VariableValue::SecureBoot {
                value: match data {
                    [] => None,
                    [v] => Some(*v),
                    _ => {
                        return Err(ParseError::TrailingData {
                            structure: "SecureBoot",
                            offset: 1,
                            remaining: data.len().saturating_sub(1),
                        })
                    }
                },
            },
            "PK" | "KEK" | "db" | "dbx" | "dbt" | "dbr" => VariableValue::SignatureDb {
                lists: signature_lists(data)?,
            },
            "BootOrder" => VariableValue::BootOrder {
                order: boot_order(data)?,
            },
            n if is_boot_option(n) => VariableValue::LoadOption(load_option(data)?),
            _ => VariableValue::Other,
        }
    };
    Ok(UefiVariable {
        guid,
        name,
        data,
        value,
        trailing,
    })
}

fn is_boot_option(name: &str) -> bool {
    name.len() == 8
        && name.starts_with("Boot")
        && name.chars().skip(4).all(|c| c.is_ascii_hexdigit())
}

fn boot_order(data: &[u8]) -> Result<Vec<u16>, ParseError> {
    let mut r = Reader::new("BootOrder", data);
    let mut order = Vec::with_capacity(data.len() / 2);
    while !r.is_empty() {
        order.push(r.u16_le("BootOptionNumber")?);
    }
    Ok(order)
}

fn signature_lists(data: &[u8]) -> Result<Vec<SignatureList<'_>>, ParseError> {
    let mut r = Reader::new("EFI_SIGNATURE_LIST", data);
    let mut lists = Vec::new();
    while !r.is_empty() {
        r.set_structure("EFI_SIGNATURE_LIST");
        let signature_type = Guid::read(&mut r, "SignatureType")?;
        let list_size = r.u32_le("SignatureListSize")?;
        let header_size = r.u32_le("SignatureHeaderSize")?;
        let sig_size = r.u32_le("SignatureSize")?;
        let body_len = usize::try_from(list_size)
            .ok()
            .and_then(|n| n.checked_sub(28))
            .ok_or_else(|| r.invalid("SignatureListSize", u64::from(list_size)))?;
        let mut body = r.sub(body_len, "EFI_SIGNATURE_LIST")?;
        let header = body.take(
            usize::try_from(header_size).unwrap_or(usize::MAX),
            "SignatureHeader",
        )?;
        let sig_size = usize::try_from(sig_size).unwrap_or(usize::MAX);
        let Some(data_len) = sig_size.checked_sub(16) else {
            return Err(body.invalid("SignatureSize", sig_size as u64));
        };
        let mut signatures = Vec::new();
        while !body.is_empty() {
            let mut entry = body.sub(sig_size, "EFI_SIGNATURE_DATA")?;
            let owner = Guid::read(&mut entry, "SignatureOwner")?;
            let data = entry.take(data_len, "SignatureData")?;
            signatures.push(SignatureData { owner, data });
        }
        lists.push(SignatureList {
            signature_type,
            header,
            signatures,
        });
    }
    Ok(lists)
}

fn load_option(data: &[u8]) -> Result<LoadOption<'_>, ParseError> {
    let mut r = Reader::new("EFI_LOAD_OPTION", data);
    let attributes = r.u32_le("Attributes")?;
    let path_len = r.u16_le("FilePathListLength")?;
    let start = r.clone();
    let mut units = 0usize;
    while r.u16_le("Description")? != 0 {
        units += 1;
    }
    let description = utf16(start.clone().take_prefix(units * 2));
    let device_path = r.take(usize::from(path_len), "FilePathList")?;
    Ok(LoadOption {
        attributes,
        description,
        device_path,
        file_path: file_path(device_path),
        optional_data: r.rest(),
    })
}

trait TakePrefix<'a> {
    fn take_prefix(self, n: usize) -> &'a [u8];
}

impl<'a> TakePrefix<'a> for Reader<'a> {
    fn take_prefix(mut self, n: usize) -> &'a [u8] {
        self.take(n, "prefix").unwrap_or_default()
    }
}

pub(super) fn image_load(data: &[u8]) -> Result<ImageLoadEvent<'_>, ParseError> {
    let mut r = Reader::new("UEFI_IMAGE_LOAD_EVENT", data);
    let image_location = r.u64_le("ImageLocationInMemory")?;
    let image_length = r.u64_le("ImageLengthInMemory")?;
    let link_time_address = r.u64_le("ImageLinkTimeAddress")?;
    let path_len = r.u64_le("LengthOfDevicePath")?;
    let device_path = r.take(
        usize::try_from(path_len).unwrap_or(usize::MAX),
        "DevicePath",
    )?;
    Ok(ImageLoadEvent {
        image_location,
        image_length,
        link_time_address,
        device_path,
        file_path: file_path(device_path),
        trailing: r.rest(),
    })
}

pub(super) fn gpt(data: &[u8]) -> Result<GptEvent, ParseError> {
    let mut r = Reader::new("UEFI_PARTITION_TABLE_HEADER", data);
    let signature = r.u64_le("Signature")?;
    if &signature.to_le_bytes() != b"EFI PART" {
        return Err(r.invalid("Signature", signature));
    }
    r.take(4 + 4 + 4 + 4 + 8 + 8 + 8 + 8, "Revision..LastUsableLBA")?;
    let disk_guid = Guid::read(&mut r, "DiskGUID")?;
    r.take(8 + 4, "PartitionEntryLBA..NumberOfPartitionEntries")?;
    let entry_size = r.u32_le("SizeOfPartitionEntry")?;
    r.take(4, "PartitionEntryArrayCRC32")?;
    r.set_structure("UEFI_GPT_DATA");
    let count = r.u64_le("NumberOfPartitions")?;
    let entry_size = usize::try_from(entry_size).unwrap_or(usize::MAX);
    if entry_size < 128 {
        return Err(r.invalid("SizeOfPartitionEntry", entry_size as u64));
    }
    let mut partitions = Vec::new();
    for _ in 0..count {
        let mut e = r.sub(entry_size, "UEFI_PARTITION_ENTRY")?;
        partitions.push(GptPartition {
            type_guid: Guid::read(&mut e, "PartitionTypeGUID")?,
            unique_guid: Guid::read(&mut e, "UniquePartitionGUID")?,
            starting_lba: e.u64_le("StartingLBA")?,
            ending_lba: e.u64_le("EndingLBA")?,
            attributes: e.u64_le("Attributes")?,
            name: utf16(e.take(72, "PartitionName")?),
        });
    }
    r.finish()?;
    Ok(GptEvent {
        disk_guid,
        partitions,
    })
}
