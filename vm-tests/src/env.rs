//! The host: tools, guest kernel, firmware, paths, and the opt-out switch.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Set to `1` to skip the VM tests when the host cannot run them (local development only;
/// CI must not set it).
pub const SKIP_VAR: &str = "UNLOCK_SKIP_VM";

/// `kvm` to use `-accel kvm -cpu host` (real hardware); anything else is TCG.
pub const ACCEL_VAR: &str = "VM_ACCEL";

/// Host programs the harness runs, with the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("swtpm", "swtpm"),
    ("swtpm_setup", "swtpm-tools"),
    ("dracut", "dracut"),
    ("mkfs.ext4", "e2fsprogs"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("unshare", "util-linux"),
    ("objcopy", "binutils"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
];

/// The initramfs-tools packages unpacked by `scripts/install-vm-deps.sh` (initramfs-tools
/// conflicts with dracut, so it is not installed); `VM_TEST_INITRAMFS_TOOLS` overrides it.
pub const INITRAMFS_TOOLS_VAR: &str = "VM_TEST_INITRAMFS_TOOLS";
const INITRAMFS_TOOLS_DEFAULT: &str = "/opt/unlock-vm-tests/initramfs-tools";

const BUSYBOX: &str = "/bin/busybox";
/// OVMF without Secure Boot keys (4 MB flash layout), Debian's `ovmf` package.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The matching variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// systemd-stub of Debian 12's `systemd-boot-efi` (systemd 252): the UKI scenario's stub.
pub const SYSTEMD_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// What the host provides.
#[derive(Debug, Clone)]
pub struct Env {
    /// The workspace root.
    pub workspace: PathBuf,
    /// Cargo's target directory.
    pub target: PathBuf,
    /// Our cache and log directory (`target/vm-tests`).
    pub cache: PathBuf,
    /// Guest kernel version (`/lib/modules/<kver>`).
    pub kver: String,
    /// Guest kernel image.
    pub kernel: PathBuf,
    /// Static busybox for the test root.
    pub busybox: PathBuf,
    /// Use KVM instead of TCG.
    pub kvm: bool,
    /// The unpacked initramfs-tools packages (`root/usr`, `root/etc`), see
    /// [`INITRAMFS_TOOLS_VAR`].
    pub initramfs_tools: PathBuf,
}

impl Env {
    /// The host's environment, checked once. `None` only when tools are missing and
    /// [`SKIP_VAR`] is `1`; otherwise missing tools panic with the install command.
    pub fn get() -> Option<&'static Env> {
        static ENV: OnceLock<Option<Env>> = OnceLock::new();
        ENV.get_or_init(Self::probe).as_ref()
    }

    fn probe() -> Option<Env> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("vm-tests lives in the workspace")
            .to_path_buf();
        let mut missing: Vec<String> = TOOLS
            .iter()
            .filter(|(bin, _)| which(bin).is_none())
            .map(|(bin, pkg)| format!("{bin} ({pkg})"))
            .collect();
        if !Path::new(BUSYBOX).is_file() {
            missing.push(format!("{BUSYBOX} (busybox-static)"));
        }
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                missing.push(format!("{f} (ovmf)"));
            }
        }
        if !Path::new(SYSTEMD_STUB).is_file() {
            missing.push(format!("{SYSTEMD_STUB} (systemd-boot-efi)"));
        }
        let initramfs_tools = std::env::var_os(INITRAMFS_TOOLS_VAR)
            .map_or_else(|| PathBuf::from(INITRAMFS_TOOLS_DEFAULT), PathBuf::from);
        let mkinitramfs = initramfs_tools.join("root/usr/sbin/mkinitramfs");
        if !mkinitramfs.is_file() {
            missing.push(format!(
                "{} (initramfs-tools, initramfs-tools-core, cryptsetup-initramfs, klibc-utils, \
                 libklibc unpacked by scripts/install-vm-deps.sh)",
                mkinitramfs.display()
            ));
        }
        let kernel = guest_kernel();
        if kernel.is_none() {
            missing.push("/boot/vmlinuz-* with /lib/modules/<version> (linux-image-amd64)".into());
        }
        if !missing.is_empty() {
            if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
                eprintln!(
                    "vm-tests: SKIPPED ({SKIP_VAR}=1) because these are missing: {}",
                    missing.join(", ")
                );
                return None;
            }
            panic!(
                "vm-tests cannot run, missing: {}.\nInstall them with scripts/install-vm-deps.sh \
                 (make vm-test does), or set {SKIP_VAR}=1 to skip the VM tests (local \
                 development only).",
                missing.join(", ")
            );
        }
        let (kver, kernel) = kernel.expect("checked above");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let cache = target.join("vm-tests");
        std::fs::create_dir_all(cache.join("logs")).expect("create target/vm-tests");
        Some(Env {
            workspace,
            target,
            cache,
            kver,
            kernel,
            busybox: PathBuf::from(BUSYBOX),
            kvm: std::env::var(ACCEL_VAR).as_deref() == Ok("kvm"),
            initramfs_tools,
        })
    }

    /// The host's modules directory of the guest kernel.
    pub fn moddir(&self) -> PathBuf {
        Path::new("/lib/modules").join(&self.kver)
    }
}

/// The newest `/boot/vmlinuz-<v>` that has `/lib/modules/<v>`.
fn guest_kernel() -> Option<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v = name.strip_prefix("vmlinuz-")?.to_owned();
            Path::new("/lib/modules")
                .join(&v)
                .join("modules.dep")
                .is_file()
                .then(|| (v, e.path()))
        })
        .collect();
    found.sort();
    found.pop()
}

/// `PATH` lookup (plus the sbin directories, which a non-root PATH may lack).
pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file());
    found
}
