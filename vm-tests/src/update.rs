//! Updates without lockout in the VM: what the next boot measures, predicted from the files
//! (`verifier_core::predict`, QEMU direct boot or a unified kernel image under OVMF),
//! compared with what OVMF, systemd-stub and the kernel's EFI stub really logged, and a
//! changed initramfs to update to.

use std::path::{Path, PathBuf};
use std::process::Command;

use verifier_core::eventlog::{EventData, EventLog, EventType};
use verifier_core::predict::{predict, BootFiles, BootPath, Prediction};
use verifier_core::wire::{Digest, HashAlg};

use crate::artifacts::Artifacts;
use crate::env::SYSTEMD_STUB;
use crate::vm::GUEST_RAM_MIB;

/// What booting `initrd` with `cmdline` under OVMF (QEMU `-kernel`) measures, SHA-256.
pub fn predicted(art: &Artifacts, initrd: &Path, cmdline: &str) -> Prediction {
    let kernel = std::fs::read(&art.env.kernel).unwrap();
    let initrd = std::fs::read(initrd).unwrap();
    predict(
        &BootFiles {
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: Some(cmdline),
            efi_apps: &[],
        },
        BootPath::QemuDirect {
            ram_below_4g: GUEST_RAM_MIB << 20,
        },
        HashAlg::Sha256,
    )
    .unwrap()
}

/// What booting the unified kernel image `uki` under OVMF measures, SHA-256.
pub fn predicted_uki(uki: &Path) -> Prediction {
    let image = std::fs::read(uki).unwrap();
    predict(
        &BootFiles {
            kernel: &image,
            initrd: None,
            cmdline: None,
            efi_apps: &[],
        },
        BootPath::Uki,
        HashAlg::Sha256,
    )
    .unwrap()
}

/// A unified kernel image of the guest kernel, `initrd` and `cmdline`, built the way
/// systemd 252's documentation shows (objcopy adding `.osrel`, `.cmdline`, `.linux` and
/// `.initrd` to Debian's systemd-stub), as `dir/name.efi`.
pub fn build_uki(art: &Artifacts, initrd: &Path, cmdline: &str, dir: &Path, name: &str) -> PathBuf {
    let osrel = dir.join(format!("{name}.osrel"));
    std::fs::write(
        &osrel,
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"unlock vm-tests UKI\"\n",
    )
    .unwrap();
    let cmd = dir.join(format!("{name}.cmdline"));
    std::fs::write(&cmd, cmdline).unwrap();
    let out = dir.join(format!("{name}.efi"));
    // Section addresses above the stub's own (it ends below 0x20000), the kernel and the
    // initrd far enough apart for their sizes.
    let sections = [
        (".osrel", osrel.as_path(), "0x20000"),
        (".cmdline", cmd.as_path(), "0x30000"),
        (".linux", art.env.kernel.as_path(), "0x2000000"),
        (".initrd", initrd, "0x4000000"),
    ];
    let mut c = Command::new("objcopy");
    for (section, file, vma) in sections {
        c.arg("--add-section")
            .arg(format!("{section}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{section}={vma}"));
    }
    let o = c.arg(SYSTEMD_STUB).arg(&out).output().unwrap();
    assert!(
        o.status.success(),
        "objcopy (UKI {name}): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[derive(Debug)]
/// What a real UEFI event log recorded: PCR 4's boot applications, PCR 9's events (tag id or
/// none, digest) and PCR 9's replayed value, PCR 11's events and value, SHA-256.
pub struct Logged {
    /// `EV_EFI_BOOT_SERVICES_APPLICATION` digests in PCR 4.
    pub boot_applications: Vec<Digest>,
    /// PCR 9's events: (EV_EVENT_TAG id, digest).
    pub pcr9_events: Vec<(Option<u32>, Digest)>,
    /// PCR 9 replayed.
    pub pcr9: Option<Digest>,
    /// PCR 11's events: (event type, UTF-16 event data as text, digest).
    pub pcr11_events: Vec<(EventType, String, Digest)>,
    /// PCR 11 replayed.
    pub pcr11: Option<Digest>,
    /// PCR 12's event count (systemd-stub measures its command line there when a boot
    /// entry's load options override the embedded one).
    pub pcr12_events: usize,
}

/// Reads [`Logged`] from an event log.
pub fn logged(event_log: &[u8]) -> Logged {
    let log = EventLog::parse(event_log).unwrap();
    let digest =
        |e: &verifier_core::eventlog::Event<'_>| *e.digests().get(HashAlg::Sha256).unwrap();
    Logged {
        boot_applications: log
            .events()
            .iter()
            .filter(|e| {
                e.pcr() == 4 && e.event_type() == EventType::EV_EFI_BOOT_SERVICES_APPLICATION
            })
            .map(digest)
            .collect(),
        pcr9_events: log
            .events()
            .iter()
            .filter(|e| e.pcr() == 9 && e.is_extended())
            .map(|e| {
                let tag = match e.decode() {
                    EventData::EventTag { id, .. } => Some(id),
                    _ => None,
                };
                (tag, digest(e))
            })
            .collect(),
        pcr9: log.replay().get(HashAlg::Sha256, 9).copied(),
        pcr11_events: log
            .events()
            .iter()
            .filter(|e| e.pcr() == 11 && e.is_extended())
            .map(|e| (e.event_type(), utf16(e.data()), digest(e)))
            .collect(),
        pcr11: log.replay().get(HashAlg::Sha256, 11).copied(),
        pcr12_events: log.events().iter().filter(|e| e.pcr() == 12).count(),
    }
}

/// Event data read as UTF-16LE (lossy), for comparing labels in assertions.
fn utf16(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The artifacts' initramfs with a small uncompressed cpio in front (the layout of an early
/// microcode update): a different initramfs that boots the same way.
pub fn changed_initrd(art: &Artifacts, dir: &Path) -> PathBuf {
    let mut out = newc(&[("etc", None), ("etc/unlock-update-marker", Some(b"v2\n"))]);
    out.extend_from_slice(&std::fs::read(&art.initrd).unwrap());
    let p = dir.join("initrd-updated.img");
    std::fs::write(&p, out).unwrap();
    p
}

/// A newc cpio archive of `entries` (directory when the data is `None`), with its trailer.
fn newc(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        ino += 1;
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (name, data) in entries {
        match data {
            None => entry(&mut out, name, 0o040_755, &[]),
            Some(d) => entry(&mut out, name, 0o100_644, d),
        }
    }
    entry(&mut out, "TRAILER!!!", 0, &[]);
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}
