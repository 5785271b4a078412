//! What the next boot will measure, computed from the files an update installs.
//!
//! A policy learned from a boot can only describe boots that already happened; after a
//! kernel or initramfs update that boot is refused. This module computes, from the new files
//! alone, the event digests the next boot's log will carry, so that an operator can allow
//! them before the reboot (`unlockctl policy allow`, `docs/policy.md`).
//!
//! Boot paths modelled (each checked against a real event log where a test says so):
//! - [`BootPath::EfiStub`]: the kernel is started as an EFI application (a firmware boot
//!   entry, systemd-boot, or shim) and its Linux EFI stub (Linux 5.19 and later, Debian's
//!   6.1 included) measures the load options and the initrd it receives through the
//!   `LINUX_EFI_INITRD_MEDIA` LoadFile2 protocol. Firmware/shim measure the kernel into PCR 4
//!   as `EV_EFI_BOOT_SERVICES_APPLICATION` with its Authenticode digest; the stub measures
//!   into PCR 9, as `EV_EVENT_TAG` events, the load options (UTF-16LE with its NUL,
//!   tag [`STUB_LOAD_OPTIONS_TAG`]) and then the initrd's bytes (tag [`STUB_INITRD_TAG`]).
//! - [`BootPath::QemuDirect`]: the same under OVMF with QEMU's `-kernel`/`-initrd`/`-append`
//!   (the project's VM tests). QEMU patches the bzImage setup header before OVMF loads the
//!   image (loader type, heap end, command-line pointer, initrd address and size), so PCR 4
//!   carries the Authenticode digest of the patched image, and OVMF appends ` initrd=initrd`
//!   to the load options when an initrd is given. Verified by `vm-tests`' UEFI scenario.
//! - [`BootPath::Grub`]: shim verifies and measures the kernel's Authenticode digest into
//!   PCR 4; grub measures the kernel and initrd files (plain hashes) into PCR 9 and its
//!   `kernel_cmdline: ...` text into PCR 8. Modelled from grub's and shim's documented
//!   behaviour; no event log in the project's test data was made by booting these files.
//! - [`BootPath::Uki`]: firmware starts a unified kernel image (systemd-stub with the kernel,
//!   initrd and command line as sections): PCR 4 carries the UKI's Authenticode digest and
//!   then the embedded kernel's, PCR 11 the stub's section measurements, PCR 9 the kernel
//!   stub's as on `EfiStub` (see [`uki`]). Verified by `vm-tests`' UKI scenario.
//!
//! Nothing here reads files or clocks: callers pass the bytes. PE parsing of untrusted bytes
//! is `object`'s bounds-checked reader under the `authenticode` crate; neither panics on
//! malformed input (fuzz target `authenticode`).

use crate::wire::{Digest, HashAlg};

pub mod uki;

/// `taggedEventID` of the Linux EFI stub's initrd measurement (PCR 9, `EV_EVENT_TAG`).
pub const STUB_INITRD_TAG: u32 = 0x8F3B_22EC;
/// `taggedEventID` of the Linux EFI stub's load-options measurement (PCR 9, `EV_EVENT_TAG`).
pub const STUB_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;

/// QEMU's ACPI table reservation below 4 GiB on the `pc` and `q35` machine types (since
/// QEMU 2.x machine types: 0x20000 plus 0x8000 of slack), under which it places the initrd.
pub const QEMU_ACPI_DATA_SIZE: u64 = 0x2_8000;

/// Why a prediction could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// The file is not a PE/COFF image.
    #[error("not a PE/COFF image (an EFI application or an EFI-stub kernel): {0}")]
    NotPe(String),
    /// The PE headers point outside the file.
    #[error("the PE image cannot be hashed: its headers, sections or certificate table lie outside the file")]
    BadPeLayout,
    /// QEMU direct boot needs a bzImage with a boot protocol it patches the way we model.
    #[error("not a Linux bzImage QEMU loads the way modelled here: {0}")]
    NotBzImage(&'static str),
    /// The initrd does not fit below QEMU's initrd limit.
    #[error("the initrd ({0} bytes) does not fit below QEMU's initrd limit for this memory size")]
    InitrdTooLarge(u64),
    /// A PE image without the `.linux` section of a unified kernel image.
    #[error("not a unified kernel image: no non-empty .linux section (build it with ukify or objcopy and systemd-stub)")]
    NotUki,
    /// A UKI section the stub would measure in a way not modelled here.
    #[error("UKI section {name}: {reason}")]
    UkiSection {
        /// The section.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The UKI carries its own initrd and command line.
    #[error("a unified kernel image carries its own initrd and command line; give only the image")]
    UkiWithSeparateFiles,
}

/// How the machine boots the kernel: decides which events carry which digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// Firmware, systemd-boot or shim start the kernel's EFI stub (see the module docs).
    EfiStub,
    /// OVMF booting QEMU's `-kernel`/`-initrd`/`-append`; `ram_below_4g` is the guest's
    /// memory below 4 GiB in bytes (`-m` for guests smaller than 3 GiB).
    QemuDirect {
        /// Guest RAM below 4 GiB, bytes.
        ram_below_4g: u64,
    },
    /// shim + grub (see the module docs).
    Grub,
    /// Firmware (or a boot manager) starts a unified kernel image: `BootFiles::kernel` is
    /// the UKI (see [`uki`]).
    Uki,
}

/// The files of one boot configuration.
#[derive(Debug, Clone, Copy)]
pub struct BootFiles<'a> {
    /// The kernel image (a PE/EFI-stub bzImage).
    pub kernel: &'a [u8],
    /// The initrd, if the boot passes one.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line as the boot loader passes it (for grub: the text after
    /// `linux`, starting with the kernel's path, as grub measures it).
    pub cmdline: Option<&'a str>,
    /// Further EFI applications started before the kernel (shim, grub, systemd-boot).
    pub efi_apps: &'a [&'a [u8]],
}

/// One predicted measurement, with what it is for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicted {
    /// What was measured (`kernel`, `initrd`, `efi-app[0]`).
    pub what: String,
    /// Its digest.
    pub digest: Digest,
}

/// What one boot will measure, in one bank, in the places the policy language names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The bank.
    pub alg: HashAlg,
    /// PCR 4 `EV_EFI_BOOT_SERVICES_APPLICATION` digests (policy `boot_applications`).
    pub boot_applications: Vec<Predicted>,
    /// Kernel files grub measures into PCR 9 (policy `kernels`).
    pub kernels: Vec<Predicted>,
    /// initrds measured into PCR 9 (policy `initrds`).
    pub initrds: Vec<Predicted>,
    /// The command line as measured (policy `kernel_cmdline`, an `exact` rule).
    pub cmdline: Option<String>,
    /// PCR 9's value after the boot, where the path makes it predictable: the EFI-stub paths,
    /// where only the stub extends PCR 9 (load options, then initrd).
    pub pcr9: Option<Digest>,
    /// A UKI's PCR 11 events in order (each section's name, then its bytes); empty on the
    /// other paths.
    pub pcr11_events: Vec<Predicted>,
    /// PCR 11's value after a UKI's stub (its events replayed from zero).
    pub pcr11: Option<Digest>,
}

/// Adapts an aws-lc-rs hashing context to the `digest::Update` trait `authenticode` feeds.
struct Hasher(crate::crypto::digest::Context);

impl digest::Update for Hasher {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// The Authenticode digest of a PE image (PE32 or PE32+): the whole file in order, without
/// the checksum field, the certificate-table directory entry and the certificate table.
/// This is what UEFI firmware and shim extend into PCR 4 for an image they load, and what
/// a signature over the image signs.
pub fn authenticode(image: &[u8], alg: HashAlg) -> Result<Digest, PredictError> {
    let mut h = Hasher(crate::crypto::digest::Context::new(alg.ring()));
    with_pe(image, |pe| {
        authenticode::authenticode_digest(pe, &mut h).map_err(|_| PredictError::BadPeLayout)
    })?;
    Digest::from_slice(alg, h.0.finish().as_ref()).ok_or(PredictError::BadPeLayout)
}

/// Runs `f` on the image parsed as PE32+ or, failing that, PE32 (the error names the PE32+
/// failure: every image this project predicts for is 64-bit).
fn with_pe<T>(
    image: &[u8],
    f: impl FnOnce(&dyn authenticode::PeTrait) -> Result<T, PredictError>,
) -> Result<T, PredictError> {
    use object::read::pe::{PeFile32, PeFile64};
    match PeFile64::parse(image) {
        Ok(pe) => f(&pe),
        Err(e64) => match PeFile32::parse(image) {
            Ok(pe) => f(&pe),
            Err(_) => Err(PredictError::NotPe(e64.to_string())),
        },
    }
}

/// The digests the image's own Authenticode signatures sign (each signature's
/// `SpcIndirectDataContent` message digest, in the signature's algorithm), in table order.
/// An unsigned image has none. Comparing them with [`authenticode`] shows whether the file
/// was altered after signing; the signatures themselves are not verified here.
pub fn signed_digests(image: &[u8]) -> Result<Vec<Vec<u8>>, PredictError> {
    fn of(pe: &dyn authenticode::PeTrait) -> Result<Vec<Vec<u8>>, PredictError> {
        let mut out = Vec::new();
        let Some(iter) = authenticode::AttributeCertificateIterator::new(pe)
            .map_err(|_| PredictError::BadPeLayout)?
        else {
            return Ok(out);
        };
        for cert in iter {
            let cert = cert.map_err(|_| PredictError::BadPeLayout)?;
            if let Ok(sig) = cert.get_authenticode_signature() {
                out.push(sig.digest().to_vec());
            }
        }
        Ok(out)
    }
    with_pe(image, of)
}

/// Most signatures taken from one image's certificate table.
pub const MAX_IMAGE_SIGNATURES: usize = 4;

/// The PKCS#7 payloads of the image's `WIN_CERT_TYPE_PKCS_SIGNED_DATA` certificate-table
/// entries (its Authenticode signatures), in table order, at most
/// [`MAX_IMAGE_SIGNATURES`]; none for an unsigned image. Only slices the table, never
/// decodes the PKCS#7: the machine sends these bytes and the server verifies them
/// (`image_signature`), so the initramfs agent carries no CMS code.
pub fn image_signatures(image: &[u8]) -> Result<Vec<Vec<u8>>, PredictError> {
    const PKCS_SIGNED_DATA: u16 = 2;
    fn of(pe: &dyn authenticode::PeTrait) -> Result<Vec<Vec<u8>>, PredictError> {
        let Some(iter) = authenticode::AttributeCertificateIterator::new(pe)
            .map_err(|_| PredictError::BadPeLayout)?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cert in iter {
            let cert = cert.map_err(|_| PredictError::BadPeLayout)?;
            if cert.certificate_type == PKCS_SIGNED_DATA && out.len() < MAX_IMAGE_SIGNATURES {
                out.push(cert.data.to_vec());
            }
        }
        Ok(out)
    }
    with_pe(image, of)
}

/// The digest the Linux EFI stub extends for its load options: the UTF-16LE text with its
/// terminating NUL.
pub fn load_options_digest(cmdline: &str, alg: HashAlg) -> Digest {
    let mut bytes: Vec<u8> = cmdline.encode_utf16().flat_map(u16::to_le_bytes).collect();
    bytes.extend_from_slice(&[0, 0]);
    alg.hash(&bytes)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put32(b: &mut [u8], at: usize, v: u32) -> Option<()> {
    b.get_mut(at..at + 4)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

/// The image OVMF loads, and measures, when QEMU boots `kernel` with `-kernel`: the file
/// with QEMU's edits to the setup header (boot protocol 2.02 and later, QEMU 7.2's
/// `x86_load_linux`): loader type 0xB0, CAN_USE_HEAP with the heap end, the command line at
/// 0x20000, and with an initrd of `initrd_len` bytes its address (page-aligned, as high as
/// allowed below RAM minus the ACPI tables) and size.
pub fn qemu_direct_boot_image(
    kernel: &[u8],
    initrd_len: Option<u64>,
    ram_below_4g: u64,
) -> Result<Vec<u8>, PredictError> {
    const REAL_ADDR: u32 = 0x1_0000;
    const CMDLINE_ADDR: u32 = 0x2_0000;
    const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(PredictError::NotBzImage("no `HdrS` setup header"));
    }
    let protocol = le16(kernel, 0x206).ok_or(PredictError::NotBzImage("short header"))?;
    if protocol < 0x202 || kernel.len() < 0x250 {
        return Err(PredictError::NotBzImage(
            "boot protocol older than 2.02 (QEMU loads it differently)",
        ));
    }
    let mut image = kernel.to_vec();
    let short = PredictError::NotBzImage("short header");
    put32(&mut image, 0x228, CMDLINE_ADDR).ok_or(short.clone())?;
    *image.get_mut(0x210).ok_or(short.clone())? = 0xB0;
    *image.get_mut(0x211).ok_or(short.clone())? |= 0x80;
    let heap_end = u16::try_from(CMDLINE_ADDR - REAL_ADDR - 0x200).map_err(|_| short.clone())?;
    image
        .get_mut(0x224..0x226)
        .ok_or(short.clone())?
        .copy_from_slice(&heap_end.to_le_bytes());
    if let Some(len) = initrd_len {
        let xloadflags = le16(kernel, 0x236).ok_or(short.clone())?;
        let mut initrd_max: u64 =
            if protocol >= 0x20c && xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
                u64::from(u32::MAX)
            } else if protocol >= 0x203 {
                u64::from(le32(kernel, 0x22c).ok_or(short.clone())?)
            } else {
                0x37ff_ffff
            };
        let limit = ram_below_4g
            .checked_sub(QEMU_ACPI_DATA_SIZE)
            .ok_or(PredictError::InitrdTooLarge(len))?;
        if initrd_max >= limit {
            initrd_max = limit.saturating_sub(1);
        }
        let addr = initrd_max
            .checked_sub(len)
            .ok_or(PredictError::InitrdTooLarge(len))?
            & !4095;
        let addr = u32::try_from(addr).map_err(|_| PredictError::InitrdTooLarge(len))?;
        let size = u32::try_from(len).map_err(|_| PredictError::InitrdTooLarge(len))?;
        put32(&mut image, 0x218, addr).ok_or(short.clone())?;
        put32(&mut image, 0x21c, size).ok_or(short)?;
    }
    Ok(image)
}

/// PCR 9 after the EFI stub's two measurements (load options, then initrd), from zero.
fn stub_pcr9(load_options: Option<&Digest>, initrd: Option<&Digest>, alg: HashAlg) -> Digest {
    let mut pcr = Digest::zero(alg);
    for d in [load_options, initrd].into_iter().flatten() {
        pcr.extend(d.as_bytes());
    }
    pcr
}

/// What booting `files` along `path` will measure, in bank `alg`.
pub fn predict(
    files: &BootFiles<'_>,
    path: BootPath,
    alg: HashAlg,
) -> Result<Prediction, PredictError> {
    let mut boot_applications = Vec::new();
    for (i, app) in files.efi_apps.iter().enumerate() {
        boot_applications.push(Predicted {
            what: format!("efi-app[{i}]"),
            digest: authenticode(app, alg)?,
        });
    }
    let initrd = files.initrd.map(|b| Predicted {
        what: "initrd".into(),
        digest: alg.hash(b),
    });
    let mut out = Prediction {
        alg,
        boot_applications,
        kernels: Vec::new(),
        initrds: initrd.iter().cloned().collect(),
        cmdline: None,
        pcr9: None,
        pcr11_events: Vec::new(),
        pcr11: None,
    };
    match path {
        BootPath::EfiStub | BootPath::QemuDirect { .. } => {
            let kernel = match path {
                BootPath::QemuDirect { ram_below_4g } => {
                    let len = files.initrd.map(|b| b.len() as u64);
                    authenticode(
                        &qemu_direct_boot_image(files.kernel, len, ram_below_4g)?,
                        alg,
                    )?
                }
                _ => authenticode(files.kernel, alg)?,
            };
            out.boot_applications.push(Predicted {
                what: "kernel".into(),
                digest: kernel,
            });
            // OVMF appends the initrd's name to the load options it passes (X86QemuLoadImageLib).
            let cmdline = match (path, files.cmdline, files.initrd) {
                (BootPath::QemuDirect { .. }, Some(c), Some(_)) => {
                    Some(format!("{c} initrd=initrd"))
                }
                (_, c, _) => c.map(str::to_owned),
            };
            let options = cmdline.as_deref().map(|c| load_options_digest(c, alg));
            out.pcr9 = Some(stub_pcr9(
                options.as_ref(),
                initrd.as_ref().map(|p| &p.digest),
                alg,
            ));
            out.cmdline = cmdline;
        }
        BootPath::Grub => {
            out.boot_applications.push(Predicted {
                what: "kernel".into(),
                digest: authenticode(files.kernel, alg)?,
            });
            out.kernels.push(Predicted {
                what: "kernel".into(),
                digest: alg.hash(files.kernel),
            });
            out.cmdline = files.cmdline.map(str::to_owned);
        }
        BootPath::Uki => predict_uki(files, &mut out)?,
    }
    Ok(out)
}

/// The UKI path of [`predict`]: PCR 4 the image and the kernel in it, PCR 11 its sections,
/// PCR 9 what the kernel's own EFI stub measures of the embedded command line and initrd.
fn predict_uki(files: &BootFiles<'_>, out: &mut Prediction) -> Result<(), PredictError> {
    if files.initrd.is_some() || files.cmdline.is_some() {
        return Err(PredictError::UkiWithSeparateFiles);
    }
    let alg = out.alg;
    let sections = uki::sections(files.kernel)?;
    out.boot_applications.push(Predicted {
        what: "uki".into(),
        digest: authenticode(files.kernel, alg)?,
    });
    let of = |name: &str| sections.iter().find(|s| s.name == name).map(|s| s.data);
    // systemd 252 starts the embedded kernel with LoadImage, so firmware measures it into
    // PCR 4 as a second application (as loaded: the section's bytes).
    if let Some(linux) = of(".linux") {
        out.boot_applications.push(Predicted {
            what: "uki .linux".into(),
            digest: authenticode(linux, alg).map_err(|_| PredictError::UkiSection {
                name: ".linux",
                reason: "not a PE image the firmware can load (systemd 252 starts the kernel with LoadImage)",
            })?,
        });
    }
    let digest = |what: &str, data: &[u8]| Predicted {
        what: what.into(),
        digest: alg.hash(data),
    };
    out.kernels = of(".linux")
        .map(|d| digest("uki .linux", d))
        .into_iter()
        .collect();
    out.initrds = of(".initrd")
        .map(|d| digest("uki .initrd", d))
        .into_iter()
        .collect();
    let cmdline = of(".cmdline").map(uki::stub_cmdline).transpose()?;
    let options = cmdline.as_deref().map(|c| load_options_digest(c, alg));
    let initrd = out.initrds.first().map(|p| p.digest);
    out.pcr9 = Some(stub_pcr9(options.as_ref(), initrd.as_ref(), alg));
    out.cmdline = cmdline;
    out.pcr11_events = uki::pcr11_events(&sections, alg);
    out.pcr11 = Some(uki::pcr11(&out.pcr11_events, alg));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_are_utf16_with_nul() {
        let d = load_options_digest("a b", HashAlg::Sha256);
        assert_eq!(d, HashAlg::Sha256.hash(&[b'a', 0, b' ', 0, b'b', 0, 0, 0]));
    }

    #[test]
    fn junk_is_not_pe_and_does_not_panic() {
        for bytes in [&b""[..], b"MZ", &[0u8; 4096][..], &[0xffu8; 512][..]] {
            assert!(authenticode(bytes, HashAlg::Sha256).is_err());
        }
        let mut hdr = vec![0u8; 0x300];
        assert!(qemu_direct_boot_image(&hdr, None, 768 << 20).is_err());
        hdr[0x202..0x206].copy_from_slice(b"HdrS");
        hdr[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        // initrd_addr_max 0: no initrd fits.
        assert!(qemu_direct_boot_image(&hdr, Some(1), 768 << 20).is_err());
        hdr[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let img = qemu_direct_boot_image(&hdr, Some(1 << 20), 768 << 20).unwrap();
        assert_eq!(img.len(), hdr.len());
        assert_eq!(img[0x210], 0xB0);
        // An initrd larger than the memory is refused, not wrapped around.
        assert_eq!(
            qemu_direct_boot_image(&hdr, Some(1 << 40), 768 << 20),
            Err(PredictError::InitrdTooLarge(1 << 40))
        );
        assert!(qemu_direct_boot_image(&hdr, Some(1), 0).is_err());
    }
}
