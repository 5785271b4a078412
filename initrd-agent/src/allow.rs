//! `initrd-agent request-allow`: on the installed system, after a kernel or initramfs
//! update, ask both roles to allow the boot the new files will make.
//!
//! The machine predicts the measurements from the files ([`verifier_core::predict`], in the
//! SHA-1, SHA-256 and SHA-384 banks, since it does not know which its policy uses), and
//! submits them as a [`ProposedChange`] quoted by its AK: the same AK the roles activated at
//! its first unlock (persistent at its handle, or derived again from the endorsement seed).
//! The quote is the machine's signature of the change: the AK is a restricted key, so
//! only this TPM can make a quote whose qualifyingData is the change's digest. The roles
//! only store the change as pending; an operator approves it (`unlockctl policy approve`),
//! or the role approves it itself when the policy's `auto_approve` rule trusts the signer of
//! every boot application it adds: the change carries the images' Authenticode signatures
//! for that (the certificate-table bytes, ~1.5 KiB each; the agent does not parse them).
//!
//! Run by the kernel-install plugin `dracut-module/kernel-install/50-unlock.install` (and
//! usable by hand). Why here and not in `unlockctl`: this binary already holds the TPM code
//! (the AK, quotes checked with verifier-core before sending), the TLS client and the
//! configuration (`/etc/initrd-agent/config.toml`, `rd.unlock.server=` from /proc/cmdline)
//! the machine unlocks with, so the change reaches the same roles as the unlock does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use verifier_core::predict::{image_signatures, predict, BootFiles, BootPath};
use verifier_core::proto::v1::{
    AgentId, PcrBank, PendingSubmitRequest, PendingSubmitResponse, ProposedChange,
    MAX_IMAGE_SIGNATURE, MAX_IMAGE_SIGNATURES, PENDING_PATH,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::HashAlg;

use crate::config::Config;
use crate::flow::FlowError;
use crate::http::Client;
use crate::tpm::Tpm;

/// How the machine boots the kernel (see `verifier_core::predict::BootPath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPathArg {
    /// Firmware, systemd-boot or shim start the kernel's EFI stub.
    EfiStub,
    /// shim + grub.
    Grub,
    /// OVMF with QEMU's -kernel/-initrd/-append.
    QemuDirect,
    /// Firmware starts a unified kernel image (`--kernel` is the UKI; it carries its own
    /// initrd and command line).
    Uki,
}

/// `request-allow` arguments (parsed by `cli.rs`, see its usage text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowArgs {
    /// The kernel image the next boot starts (`--kernel FILE`, required).
    pub kernel: PathBuf,
    /// Its initrd (`--initrd FILE`).
    pub initrd: Option<PathBuf>,
    /// The command line the boot loader will pass (`--cmdline TEXT`; default: this boot's
    /// /proc/cmdline).
    pub cmdline: Option<String>,
    /// EFI applications started before the kernel (`--efi-app FILE`, repeatable).
    pub efi_apps: Vec<PathBuf>,
    /// How the machine boots the kernel (`--boot-path efi-stub|grub|qemu-direct|uki`).
    pub boot_path: BootPathArg,
    /// Guest memory in MiB (`--qemu-memory-mib N`, qemu-direct) [default: 768].
    pub qemu_memory_mib: u64,
    /// For the operator: what was installed (`--note TEXT`).
    pub note: String,
}

impl BootPathArg {
    /// Parses `efi-stub`, `grub`, `qemu-direct` or `uki`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "efi-stub" => Some(Self::EfiStub),
            "grub" => Some(Self::Grub),
            "qemu-direct" => Some(Self::QemuDirect),
            "uki" => Some(Self::Uki),
            _ => None,
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>, FlowError> {
    std::fs::read(p).map_err(|source| FlowError::Input {
        path: p.to_path_buf(),
        source,
    })
}

/// The banks predicted: those a policy may name (SHA-512 PCR banks are rare).
const BANKS: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];

/// The change for `args`, as this machine (`agent_id`) asks for it.
pub fn change(
    args: &AllowArgs,
    agent_id: AgentId,
    proc_cmdline: &str,
) -> Result<ProposedChange, FlowError> {
    let kernel = read(&args.kernel)?;
    let initrd = args.initrd.as_deref().map(read).transpose()?;
    let apps = args
        .efi_apps
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let app_refs: Vec<&[u8]> = apps.iter().map(Vec::as_slice).collect();
    let cmdline = args
        .cmdline
        .clone()
        .unwrap_or_else(|| proc_cmdline.trim_end().to_owned());
    // A UKI carries its initrd and command line: this boot's are not the next one's.
    let uki = args.boot_path == BootPathArg::Uki;
    let files = BootFiles {
        kernel: &kernel,
        initrd: initrd.as_deref(),
        cmdline: (!uki).then_some(cmdline.as_str()),
        efi_apps: &app_refs,
    };
    let path = match args.boot_path {
        BootPathArg::EfiStub => BootPath::EfiStub,
        BootPathArg::Grub => BootPath::Grub,
        BootPathArg::QemuDirect => BootPath::QemuDirect {
            ram_below_4g: args.qemu_memory_mib.saturating_mul(1 << 20),
        },
        BootPathArg::Uki => BootPath::Uki,
    };
    let preds = BANKS
        .into_iter()
        .map(|alg| predict(&files, path, alg))
        .collect::<Result<Vec<_>, _>>()
        .map_err(FlowError::Predict)?;
    Ok(ProposedChange::from_predictions(
        agent_id,
        args.note
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
        &preds,
        signatures(&kernel, &apps),
    ))
}

/// The Authenticode signatures of the images (the EFI applications, then the kernel), as
/// the bytes of their certificate tables: the roles verify them against a policy's
/// `auto_approve` signers; the agent only slices them out, it never decodes PKCS#7. An
/// unsigned image, or one whose table cannot be read, contributes none (the change then
/// waits for an operator); oversized ones are left out, and at most
/// [`MAX_IMAGE_SIGNATURES`] are sent.
fn signatures(kernel: &[u8], apps: &[Vec<u8>]) -> Vec<Vec<u8>> {
    apps.iter()
        .map(Vec::as_slice)
        .chain(std::iter::once(kernel))
        .flat_map(|img| image_signatures(img).unwrap_or_default())
        .filter(|s| s.len() <= MAX_IMAGE_SIGNATURE)
        .take(MAX_IMAGE_SIGNATURES)
        .collect()
}

/// Predicts, quotes the change with the AK and submits it to both roles. Returns each role's
/// answer (the change's id and state).
pub fn request(
    config: &Config,
    args: &AllowArgs,
    proc_cmdline: &str,
) -> Result<Vec<(&'static str, PendingSubmitResponse)>, FlowError> {
    let deadline = Instant::now() + config.timeout.max(Duration::from_secs(30));
    let mut tpm = Tpm::open(&config.tcti)?;
    let agent_id = match tpm.persistent_ek_id(config.ek)? {
        Some(id) => id,
        None => {
            let ek = tpm.create_ek(config.ek)?;
            let id = AgentId::of_ek(ek.public());
            let _ = tpm.flush_ek(ek);
            id
        }
    };
    let change = change(args, agent_id, proc_cmdline)?;
    let digest = change.digest().map_err(FlowError::Change)?;
    let (ak, _) = tpm.primary_ak()?;
    let quoted = tpm.sign_with_quote(&ak, &digest);
    let ak_name = ak.name().to_vec();
    let _ = tpm.flush_ak(ak);
    let (quoted, selection) = quoted?;
    let req = PendingSubmitRequest {
        change,
        ak_name: Base64Bytes::new(ak_name),
        quote: Base64Bytes::new(quoted.quote.attest),
        signature: Base64Bytes::new(quoted.quote.signature),
        pcrs: crate::flow::pcr_banks(&selection, &quoted.pcrs)
            .into_iter()
            .collect::<Vec<PcrBank>>(),
    };
    let client = Client::new(config, deadline)?;
    let mut out = Vec::new();
    for (role, base) in [
        ("verifier", config.verifier_url.as_str()),
        ("tenant", config.tenant_url.as_str()),
    ] {
        let r: PendingSubmitResponse = client
            .post(base, PENDING_PATH, &req)
            .map_err(|source| FlowError::Http { role, source })?;
        out.push((role, r));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../verifier-core/src/image_signature/testdata")
            .join(name)
    }

    /// The change carries each image's certificate-table signature, as the image holds it.
    #[test]
    fn the_change_carries_the_images_signatures() {
        let signed = testdata("fbx64.efi.signed");
        let image = std::fs::read(&signed).unwrap();
        let expected = image_signatures(&image).unwrap();
        assert_eq!(expected.len(), 1);
        // An unsigned copy: the certificate-table directory entry cleared.
        let mut unsigned = image.clone();
        let pe = u32::from_le_bytes(unsigned[0x3c..0x40].try_into().unwrap()) as usize;
        let dir = pe + 24 + 112 + 4 * 8;
        unsigned[dir..dir + 8].fill(0);
        let tmp = std::env::temp_dir().join(format!("unsigned-{}.efi", std::process::id()));
        std::fs::write(&tmp, &unsigned).unwrap();
        let args = AllowArgs {
            kernel: signed.clone(),
            initrd: None,
            cmdline: Some("quiet".into()),
            efi_apps: vec![tmp.clone(), signed],
            boot_path: BootPathArg::EfiStub,
            qemu_memory_mib: 768,
            note: String::new(),
        };
        let c = change(&args, AgentId::of_ek(b"ek"), "").unwrap();
        std::fs::remove_file(&tmp).unwrap();
        let sent: Vec<&[u8]> = c.signatures.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(sent, vec![expected[0].as_slice(), expected[0].as_slice()]);
    }
}
