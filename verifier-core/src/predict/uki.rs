//! Unified kernel images: what systemd-stub measures when firmware starts one.
//!
//! A UKI is systemd-stub (a small PE/EFI application) with the kernel, the initrd, the
//! command line and os-release added as PE sections. Firmware measures the whole file into
//! PCR 4 like any EFI application (its Authenticode digest: nothing patches it). The stub of
//! systemd 252 (Debian 12's `systemd-boot-efi`, `linuxx64.efi.stub`) then measures into
//! PCR 11, for each section it knows in the fixed order [`MEASURED_SECTIONS`], two `EV_IPL`
//! events: first the section's name as ASCII with its NUL, then the section's bytes as
//! loaded (its `VirtualSize` bytes); both events' data is the name in UTF-16. `.pcrsig` is
//! not measured (it signs the result). PCR 11 therefore holds only static data of the file
//! and its value can be computed from the file: [`pcr11`].
//!
//! The stub then starts the embedded kernel through the firmware's LoadImage, so firmware
//! measures the `.linux` section into PCR 4 as a second `EV_EFI_BOOT_SERVICES_APPLICATION`
//! (its Authenticode digest, the same as the kernel file's), with the `.cmdline` text as its
//! load options and the `.initrd` section behind the `LINUX_EFI_INITRD_MEDIA` LoadFile2
//! protocol, so the kernel's own EFI stub measures both into PCR 9 exactly as on the
//! `efi-stub` path (the same digests: see `verifier_core::predict`). The stub measures nothing into PCR 12 when
//! the command line is the embedded one (it does when a boot entry's load options override
//! it, which systemd 252 allows without Secure Boot); credentials and system extensions
//! found beside the UKI would add PCR 12/13 events: not modelled.
//!
//! Confirmed against a real boot by `vm-tests` (`uki_update_preauthorized_unlocks`): OVMF
//! starting a UKI built with `objcopy` from the stub above.

use object::read::pe::PeFile64;
use object::LittleEndian as LE;

use super::{PredictError, Predicted};
use crate::wire::{Digest, HashAlg};

/// The sections systemd-stub 252 measures into PCR 11, in the order it measures them (its
/// `UnifiedSection` order without `.pcrsig`).
pub const MEASURED_SECTIONS: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// One section the stub measures: its name and its bytes as loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// One of [`MEASURED_SECTIONS`].
    pub name: &'static str,
    /// The `VirtualSize` bytes at the section's address once loaded.
    pub data: &'a [u8],
}

/// The sections of `image` the stub measures, in measurement order. An image without a
/// `.linux` section is no UKI. Refused as ambiguous or unmodelled rather than guessed: a
/// section named twice (which copy the stub uses depends on its search), and a section
/// larger in memory than in the file (the stub would measure zero fill).
pub fn sections(image: &[u8]) -> Result<Vec<Section<'_>>, PredictError> {
    let pe = PeFile64::parse(image).map_err(|e| PredictError::NotPe(e.to_string()))?;
    let mut found: [Option<&[u8]>; MEASURED_SECTIONS.len()] = [None; MEASURED_SECTIONS.len()];
    for header in pe.section_table().iter() {
        let raw = header.raw_name();
        let Some((&name, slot)) = MEASURED_SECTIONS
            .iter()
            .zip(found.iter_mut())
            .find(|(n, _)| n.as_bytes() == raw)
        else {
            continue;
        };
        if header.virtual_size.get(LE) > header.size_of_raw_data.get(LE) {
            return Err(PredictError::UkiSection {
                name,
                reason:
                    "its size in memory exceeds its data in the file (zero fill is not modelled)",
            });
        }
        let data = header
            .pe_data(image)
            .map_err(|_| PredictError::BadPeLayout)?;
        if slot.is_some() {
            return Err(PredictError::UkiSection {
                name,
                reason: "the image has two sections of that name",
            });
        }
        *slot = Some(data);
    }
    let out: Vec<Section<'_>> = MEASURED_SECTIONS
        .iter()
        .zip(found)
        // The stub skips a section of size zero as absent.
        .filter_map(|(&name, data)| {
            data.filter(|d| !d.is_empty())
                .map(|data| Section { name, data })
        })
        .collect();
    if out.first().map(|s| s.name) != Some(".linux") {
        return Err(PredictError::NotUki);
    }
    Ok(out)
}

/// The PCR 11 events of the stub, in order: for each section, its name's digest (ASCII with
/// the NUL) and then its bytes' digest.
pub fn pcr11_events(sections: &[Section<'_>], alg: HashAlg) -> Vec<Predicted> {
    sections
        .iter()
        .flat_map(|s| {
            [
                Predicted {
                    what: format!("{} (name)", s.name),
                    digest: alg.hash_parts(&[s.name.as_bytes(), b"\0"]),
                },
                Predicted {
                    what: s.name.to_owned(),
                    digest: alg.hash(s.data),
                },
            ]
        })
        .collect()
}

/// PCR 11 after the stub's events, from zero (nothing else extends it before the kernel).
pub fn pcr11(events: &[Predicted], alg: HashAlg) -> Digest {
    let mut pcr = Digest::zero(alg);
    for e in events {
        pcr.extend(e.digest.as_bytes());
    }
    pcr
}

/// The command line the stub passes the kernel from `.cmdline`: the text up to its first
/// NUL with every ASCII control character (a trailing newline included) turned into a
/// space, as systemd 252 does. Only ASCII is modelled: the stub's UTF-8 to UTF-16
/// conversion of other text is not, so it is an error rather than a guess.
pub fn stub_cmdline(section: &[u8]) -> Result<String, PredictError> {
    let text = section.split(|b| *b == 0).next().unwrap_or_default();
    if !text.is_ascii() {
        return Err(PredictError::UkiSection {
            name: ".cmdline",
            reason: "not ASCII (the stub's conversion of other text is not modelled)",
        });
    }
    Ok(text
        .iter()
        .map(|b| if *b <= 0x1f { ' ' } else { char::from(*b) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_control_characters_become_spaces() {
        assert_eq!(stub_cmdline(b"a\tb\n\0junk").unwrap(), "a b ");
        assert!(stub_cmdline("quiet é".as_bytes()).is_err());
    }

    #[test]
    fn junk_is_no_uki_and_does_not_panic() {
        for bytes in [&b""[..], b"MZ", &[0u8; 4096][..]] {
            assert!(sections(bytes).is_err());
        }
    }

    /// A minimal PE32+ image with `sections` (name, VirtualSize, raw data), no code.
    pub(crate) fn pe(sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        fn put(out: &mut [u8], at: usize, v: &[u8]) {
            out[at..at + v.len()].copy_from_slice(v);
        }
        let n = sections.len();
        let headers = 0x40 + 4 + 20 + 240 + 40 * n;
        let mut out = vec![0u8; headers];
        put(&mut out, 0, b"MZ");
        put(&mut out, 0x3c, &0x40u32.to_le_bytes());
        put(&mut out, 0x40, b"PE\0\0");
        let coff = 0x44;
        put(&mut out, coff, &0x8664u16.to_le_bytes());
        put(&mut out, coff + 2, &u16::try_from(n).unwrap().to_le_bytes());
        put(&mut out, coff + 16, &240u16.to_le_bytes());
        put(&mut out, coff + 18, &0x22u16.to_le_bytes());
        let opt = coff + 20;
        put(&mut out, opt, &0x20bu16.to_le_bytes());
        put(
            &mut out,
            opt + 60,
            &u32::try_from(headers).unwrap().to_le_bytes(),
        );
        put(&mut out, opt + 108, &16u32.to_le_bytes());
        for (i, (name, vsize, raw)) in sections.iter().enumerate() {
            let h = opt + 240 + 40 * i;
            let at = u32::try_from(out.len()).unwrap();
            put(&mut out, h, name.as_bytes());
            put(&mut out, h + 8, &vsize.to_le_bytes());
            put(
                &mut out,
                h + 12,
                &(0x10000 * (u32::try_from(i).unwrap() + 1)).to_le_bytes(),
            );
            put(
                &mut out,
                h + 16,
                &u32::try_from(raw.len()).unwrap().to_le_bytes(),
            );
            put(&mut out, h + 20, &at.to_le_bytes());
            out.extend_from_slice(raw);
        }
        out
    }

    #[test]
    fn reads_sections_in_the_stubs_order_not_the_files() {
        // File order differs from the stub's; .pcrsig and unknown sections are not measured;
        // VirtualSize below the raw size (file alignment padding) cuts the padding.
        let kernel = pe(&[(".text", 1, b"k")]);
        let klen = u32::try_from(kernel.len()).unwrap();
        let img = pe(&[
            (".initrd", 3, b"ini\0"),
            (".pcrsig", 2, b"{}"),
            (".text", 1, b"x"),
            (".cmdline", 8, b"ro\tquiet"),
            (".linux", klen, &kernel),
        ]);
        let s = sections(&img).unwrap();
        let names: Vec<_> = s.iter().map(|x| x.name).collect();
        assert_eq!(names, [".linux", ".cmdline", ".initrd"]);
        assert_eq!(s[2].data, b"ini");
        let files = super::super::BootFiles {
            kernel: &img,
            initrd: None,
            cmdline: None,
            efi_apps: &[],
        };
        let p =
            super::super::predict(&files, super::super::BootPath::Uki, HashAlg::Sha256).unwrap();
        assert_eq!(p.kernels[0].digest, HashAlg::Sha256.hash(&kernel));
        assert_eq!(p.initrds[0].digest, HashAlg::Sha256.hash(b"ini"));
        assert_eq!(p.cmdline.as_deref(), Some("ro quiet"));
        assert_eq!(p.pcr11_events.len(), 6);
        assert_eq!(p.pcr11, Some(pcr11(&p.pcr11_events, HashAlg::Sha256)));
        assert_eq!(
            p.boot_applications[0].digest,
            super::super::authenticode(&img, HashAlg::Sha256).unwrap()
        );
        // The kernel inside, started with LoadImage: firmware measures it too.
        assert_eq!(
            p.boot_applications[1].digest,
            super::super::authenticode(&kernel, HashAlg::Sha256).unwrap()
        );
        assert_eq!(p.boot_applications.len(), 2);
        // A .linux that is no PE cannot be started that way: an error, not a guess.
        let not_pe = pe(&[(".linux", 6, b"kernel")]);
        assert!(matches!(
            super::super::predict(
                &super::super::BootFiles {
                    kernel: &not_pe,
                    ..files
                },
                super::super::BootPath::Uki,
                HashAlg::Sha256
            ),
            Err(PredictError::UkiSection { name: ".linux", .. })
        ));
        // The UKI's own initrd and command line: separate ones are a mistake, not ignored.
        let with_initrd = super::super::BootFiles {
            initrd: Some(b"other"),
            ..files
        };
        assert_eq!(
            super::super::predict(&with_initrd, super::super::BootPath::Uki, HashAlg::Sha256),
            Err(PredictError::UkiWithSeparateFiles)
        );
    }

    #[test]
    fn ambiguous_or_unmodelled_images_are_refused() {
        let no_linux = pe(&[(".initrd", 3, b"ini")]);
        assert_eq!(sections(&no_linux), Err(PredictError::NotUki));
        let empty_linux = pe(&[(".linux", 0, b"")]);
        assert_eq!(sections(&empty_linux), Err(PredictError::NotUki));
        let twice = pe(&[(".linux", 1, b"a"), (".linux", 1, b"b")]);
        assert!(matches!(
            sections(&twice),
            Err(PredictError::UkiSection { name: ".linux", .. })
        ));
        let zero_fill = pe(&[(".linux", 100, b"a")]);
        assert!(matches!(
            sections(&zero_fill),
            Err(PredictError::UkiSection { .. })
        ));
        // Raw data past the end of the file.
        let mut cut = pe(&[(".linux", 6, b"kernel")]);
        cut.truncate(cut.len() - 3);
        assert_eq!(sections(&cut), Err(PredictError::BadPeLayout));
    }

    #[test]
    fn pcr11_is_the_replay_of_name_then_data() {
        let s = [Section {
            name: ".linux",
            data: b"kernel",
        }];
        let ev = pcr11_events(&s, HashAlg::Sha256);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].digest, HashAlg::Sha256.hash(b".linux\0"));
        assert_eq!(ev[1].digest, HashAlg::Sha256.hash(b"kernel"));
        let mut want = Digest::zero(HashAlg::Sha256);
        want.extend(ev[0].digest.as_bytes());
        want.extend(ev[1].digest.as_bytes());
        assert_eq!(pcr11(&ev, HashAlg::Sha256), want);
    }
}
