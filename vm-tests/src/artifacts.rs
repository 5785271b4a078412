//! Everything a boot needs that does not change between scenarios, built once per run and
//! cached under `target/vm-tests/` by a hash of its inputs: release binaries, the TLS
//! identity of the test server, the pruned kernel module tree, the initramfs and the LUKS
//! root image.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::env::Env;

/// Where the guest reaches the server (QEMU user network `guestfwd`).
pub const GUEST_SERVER_IP: &str = "10.0.2.100";
/// The port the guest connects to.
pub const GUEST_SERVER_PORT: u16 = 8443;

/// Kernel modules the guest needs: virtio disk and NIC, dm-crypt with the LUKS1 cipher
/// (aes-xts-plain64, AF_ALG for the key slots), ext4, fw_cfg (test switches), efivarfs.
/// Only these and their dependencies go into the pruned module tree (VM-NOTES "SMALL=1").
const GUEST_MODULES: &[&str] = &[
    "virtio_blk",
    "virtio_pci",
    "virtio_net",
    "virtio_rng",
    "dm_crypt",
    "ext4",
    "xts",
    "ecb",
    "essiv",
    "aesni_intel",
    "crc32c_intel",
    "crc32c_generic",
    "algif_skcipher",
    "algif_hash",
    "qemu_fw_cfg",
    "efivarfs",
    "autofs4",
];

/// The dracut modules of the test initramfs (exact list: small and fast to build).
const DRACUT_MODULES: &str = "base systemd systemd-initrd dracut-systemd crypt dm rootfs-block \
kernel-modules udev-rules systemd-networkd network unlock unlock-test";
const DRACUT_OMIT: &str = "plymouth lvm mdraid multipath iscsi nfs nbd fcoe btrfs";
const DRACUT_DRIVERS: &str = "virtio_blk virtio_pci virtio_net dm_crypt ext4";

/// The agent configuration baked into the test initramfs. The server URL is not in it: it
/// comes from `rd.unlock.server=` (so the module's boot-time network switch is exercised).
const AGENT_CONFIG: &str = "\
# vm-tests: the server comes from rd.unlock.server= on the kernel command line.
# swtpm_setup certifies an RSA EK (its ECC certificate is for a P-384 EK).
ek = \"rsa\"
# The network comes up while the agent works with the TPM: retry connection errors.
retries = 10
";

/// Bump to rebuild the root image when the way it is made changes.
const ROOT_VERSION: &str = "root-v3";

/// The crypttab name of the root volume in the initramfs-tools image
/// (`root=/dev/mapper/root_crypt`).
pub const CRYPTTAB_NAME: &str = "root_crypt";
/// Where the initramfs-tools keyscript has the agent write the key (tmpfs) before it hands it
/// to cryptsetup on its standard output.
pub const KEYSCRIPT_KEY_FILE: &str = "/run/initrd-agent/key";

/// `/etc/initramfs-tools/initramfs.conf` of the test image: only the listed modules (the
/// virtio devices, dm-crypt and its ciphers, ext4, fw_cfg; cryptroot adds its own), busybox,
/// zstd. `RESUME=none`: the build host's swap has nothing to do with the guest.
const ITOOLS_CONF: &str = "\
MODULES=list
BUSYBOX=y
KEYMAP=n
COMPRESS=zstd
DEVICE=
NFSROOT=auto
RUNSIZE=10%
FSTYPE=ext4
RESUME=none
";

/// The encrypted root disk.
#[derive(Debug, Clone)]
pub struct RootImage {
    /// LUKS1 image (raw format for QEMU: the guest decrypts it).
    pub path: PathBuf,
    /// The LUKS UUID (`rd.luks.uuid=`).
    pub uuid: String,
    /// The passphrase, exactly as systemd-cryptsetup must read it (no newline): the payload
    /// that `unlockctl enroll` stores.
    pub passphrase: PathBuf,
    /// Printed by the root's init after `ROOT-UNLOCKED-OK`: only the decrypted disk has it.
    pub token: String,
}

/// The built inputs of every boot.
#[derive(Debug)]
pub struct Artifacts {
    /// The host environment.
    pub env: &'static Env,
    /// Release `initrd-agent` (the one in the initramfs; also run on the host to export
    /// the EK of an swtpm).
    pub agent: PathBuf,
    /// Release `unlock-server`.
    pub server: PathBuf,
    /// Release `unlockctl`.
    pub unlockctl: PathBuf,
    /// `vm-relay` (QEMU `guestfwd` command).
    pub relay: PathBuf,
    /// The server's TLS certificate (self-signed, SAN 10.0.2.100): the agent's CA bundle.
    pub tls_cert: PathBuf,
    /// Its key.
    pub tls_key: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The root disk.
    pub root: RootImage,
    /// How long preparing took (0 when everything came from the cache but the cargo check).
    pub prepare_time: Duration,
    /// The agent's `/etc/initrd-agent` (config.toml, ca.pem).
    pub agent_conf: PathBuf,
    /// The initramfs-tools initramfs, built on first use ([`Artifacts::initramfs_tools`]).
    itools_initrd: OnceLock<PathBuf>,
}

impl Artifacts {
    /// Builds (or finds in the cache) everything, once per process. `None` when the VM tests
    /// are skipped (see [`Env::get`]).
    pub fn get() -> Option<&'static Artifacts> {
        static ART: OnceLock<Option<Artifacts>> = OnceLock::new();
        ART.get_or_init(|| Env::get().map(Self::build)).as_ref()
    }

    fn build(env: &'static Env) -> Artifacts {
        let started = Instant::now();
        let bins = cargo_build(env);
        let (tls_cert, tls_key) = tls_identity(env, &bins.server);
        let conf = agent_confdir(env, &tls_cert);
        let kmods = pruned_modules(env);
        let initrd = initramfs(env, &bins.agent, &conf, &kmods);
        let root = root_image(env);
        let prepare_time = started.elapsed();
        eprintln!(
            "vm-tests: artifacts ready in {:.1} s (initramfs {}, {:.1} MB)",
            prepare_time.as_secs_f64(),
            initrd.display(),
            std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
        );
        Artifacts {
            env,
            agent: bins.agent,
            server: bins.server,
            unlockctl: bins.unlockctl,
            relay: bins.relay,
            tls_cert,
            tls_key,
            initrd,
            root,
            prepare_time,
            agent_conf: conf,
            itools_initrd: OnceLock::new(),
        }
    }

    /// The initramfs-tools initramfs (Debian's mkinitramfs with our hook, boot scripts and
    /// keyscript, `/etc/crypttab` naming the root disk with the keyscript), built on first
    /// use and cached like the dracut one.
    pub fn initramfs_tools(&self) -> &Path {
        self.itools_initrd
            .get_or_init(|| itools_initramfs(self.env, &self.agent, &self.agent_conf, &self.root))
    }
}

struct Bins {
    agent: PathBuf,
    server: PathBuf,
    unlockctl: PathBuf,
    relay: PathBuf,
}

/// Set to `1` to use the release binaries already in `target/release` without running
/// cargo (development: iterate on the harness while the workspace does not build).
pub const NO_BUILD_VAR: &str = "VM_TEST_NO_BUILD";

/// `cargo build --release` of the binaries the boots use (a no-op when up to date).
fn cargo_build(env: &Env) -> Bins {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t = Instant::now();
    let skip = std::env::var(NO_BUILD_VAR).as_deref() == Ok("1");
    if skip {
        eprintln!("vm-tests: {NO_BUILD_VAR}=1: using the release binaries as they are");
    }
    let status = if skip {
        std::process::ExitStatus::default()
    } else {
        Command::new(&cargo)
            .current_dir(&env.workspace)
            .args(["build", "--release", "--quiet"])
            .args([
                "-p",
                "initrd-agent",
                "-p",
                "unlock-server",
                "-p",
                "vm-tests",
            ])
            .args(["--bin", "initrd-agent", "--bin", "unlock-server"])
            .args(["--bin", "unlockctl", "--bin", "vm-relay"])
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"))
    };
    assert!(
        status.success(),
        "cargo build --release of initrd-agent, unlock-server, unlockctl, vm-relay failed"
    );
    // The agent in the initramfs is the static one (what `make agent-static` builds and
    // the dracut module installs alone, without any library beside it).
    let static_status = if skip {
        std::process::ExitStatus::default()
    } else {
        Command::new(env.workspace.join("scripts/build-agent-static.sh"))
            .current_dir(&env.workspace)
            .env("CARGO", &cargo)
            .arg("--quiet")
            .status()
            .unwrap_or_else(|e| panic!("cannot run scripts/build-agent-static.sh: {e}"))
    };
    assert!(
        static_status.success(),
        "scripts/build-agent-static.sh (the static initrd-agent) failed"
    );
    let dir = env.target.join("release");
    let static_dir = env.target.join(host_triple()).join("agent-static");
    let bin_in = |dir: &Path, n: &str| {
        let p = dir.join(n);
        assert!(p.is_file(), "{} missing after cargo build", p.display());
        p
    };
    let bin = |n: &str| bin_in(&dir, n);
    eprintln!(
        "vm-tests: release binaries ready ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Bins {
        agent: bin_in(&static_dir, "initrd-agent"),
        server: bin("unlock-server"),
        unlockctl: bin("unlockctl"),
        relay: bin("vm-relay"),
    }
}

/// The host's target triple (where the static agent's build puts it).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {rustc} -vV: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("{rustc} -vV names no host triple"))
}

/// Lowercase hex SHA-256 of `parts` (each length-prefixed, so boundaries count).
pub fn hash_parts(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file under `dir` (sorted), as (relative path, contents) parts for a hash.
fn tree_parts(dir: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .flat_map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            [rel.into_bytes(), std::fs::read(&p).unwrap()]
        })
        .collect()
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The server's TLS certificate and key, generated once (by the server itself, with the
/// guest-facing address in its SANs) and kept in the cache: the initramfs trusts it.
fn tls_identity(env: &Env, server: &Path) -> (PathBuf, PathBuf) {
    let dir = env.cache.join("tls");
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    if crt.is_file() && key.is_file() {
        return (crt, key);
    }
    let seed = tempfile::tempdir_in(&env.cache).unwrap();
    // An empty config file: the host's /etc/unlock-server must not leak into the tests.
    std::fs::write(seed.path().join("none.toml"), "").unwrap();
    let mut child = Command::new(server)
        .arg("--state-dir")
        .arg(seed.path())
        .args(["--listen", "127.0.0.1:0", "--tls-san", GUEST_SERVER_IP])
        .arg("--config")
        .arg(seed.path().join("none.toml"))
        .env("UNLOCK_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn unlock-server");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("https://"),
        "unlock-server did not start to generate its TLS identity: {line:?}"
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(seed.path().join("tls.key"), &key).unwrap();
    std::fs::copy(seed.path().join("tls.crt"), &crt).unwrap();
    (crt, key)
}

/// `/etc/initrd-agent/` of the initramfs: config.toml and the CA bundle.
fn agent_confdir(env: &Env, tls_cert: &Path) -> PathBuf {
    let dir = env.cache.join("agent-conf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), AGENT_CONFIG).unwrap();
    std::fs::copy(tls_cert, dir.join("ca.pem")).unwrap();
    dir
}

/// A module tree with only [`GUEST_MODULES`] and their dependencies (34 files instead of
/// ~3000): a smaller initramfs that builds and boots seconds faster.
fn pruned_modules(env: &Env) -> PathBuf {
    let key = hash_parts(&[env.kver.as_bytes(), GUEST_MODULES.join(" ").as_bytes()]);
    let root = env.cache.join(format!("kmods-{}", &key[..16]));
    let moddir = root.join("lib/modules").join(&env.kver);
    if moddir.join("modules.dep").is_file() {
        return root;
    }
    let tmp = env.cache.join(format!("kmods-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tmp_moddir = tmp.join("lib/modules").join(&env.kver);
    std::fs::create_dir_all(&tmp_moddir).unwrap();
    let src = env.moddir();
    for m in GUEST_MODULES {
        let out = run(
            Command::new("modprobe").args(["-S", &env.kver, "--show-depends", m]),
            &format!("modprobe --show-depends {m}"),
        );
        for line in out.lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue; // "builtin <name>": nothing to copy
            };
            let path = Path::new(path.split_whitespace().next().unwrap());
            let rel = path
                .strip_prefix(&src)
                .unwrap_or_else(|_| panic!("{} is outside {}", path.display(), src.display()));
            let dst = tmp_moddir.join(rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(path, &dst).unwrap();
        }
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), tmp_moddir.join(f)).unwrap();
        }
    }
    run(
        Command::new("depmod").arg("-b").arg(&tmp).arg(&env.kver),
        "depmod",
    );
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root).unwrap();
    root
}

/// Stages our dracut modules the way a user installs them (`make -C dracut-module
/// install-module`), plus the test-only module, into `stage/modules.d`.
fn stage_dracut_modules(env: &Env, stage: &Path) -> PathBuf {
    let modules = stage.join("modules.d");
    run(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env.workspace.join("dracut-module"))
            .arg("install-module")
            .arg(format!("DESTDIR={}", stage.join("root").display()))
            .arg("DRACUTMODDIR=/modules.d"),
        "make -C dracut-module install-module",
    );
    std::fs::rename(stage.join("root/modules.d"), &modules).unwrap();
    let test_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("dracut/99unlock-test");
    let test_dst = modules.join("99unlock-test");
    std::fs::create_dir_all(&test_dst).unwrap();
    for e in std::fs::read_dir(&test_src).unwrap().map(Result::unwrap) {
        std::fs::copy(e.path(), test_dst.join(e.file_name())).unwrap();
    }
    modules
}

/// dracut 059 has no option for an extra module directory, and the tests must not write
/// into the host's /usr/lib/dracut: a symlink copy of it with our modules added is used as
/// `dracutbasedir`.
fn dracut_base(stage: &Path, ours: &Path) -> PathBuf {
    let host = Path::new("/usr/lib/dracut");
    let base = stage.join("dracut-base");
    std::fs::create_dir_all(base.join("modules.d")).unwrap();
    for e in std::fs::read_dir(host).unwrap().map(Result::unwrap) {
        if e.file_name() != "modules.d" {
            std::os::unix::fs::symlink(e.path(), base.join(e.file_name())).unwrap();
        }
    }
    for dir in [host.join("modules.d"), ours.to_path_buf()] {
        for e in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let link = base.join("modules.d").join(e.file_name());
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(e.path(), link).unwrap();
        }
    }
    base
}

/// The initramfs: generic (not host-only), our module and the test module, the pruned
/// module tree, zstd.
fn initramfs(env: &Env, agent: &Path, conf: &Path, kmods: &Path) -> PathBuf {
    let stage = tempfile::tempdir_in(&env.cache).unwrap();
    let ours = stage_dracut_modules(env, stage.path());
    let agent_bytes = std::fs::read(agent).unwrap();
    let mut parts: Vec<Vec<u8>> = vec![
        env.kver.as_bytes().to_vec(),
        agent_bytes,
        DRACUT_MODULES.as_bytes().to_vec(),
        DRACUT_OMIT.as_bytes().to_vec(),
        DRACUT_DRIVERS.as_bytes().to_vec(),
        kmods.to_string_lossy().as_bytes().to_vec(),
    ];
    parts.extend(tree_parts(&ours));
    parts.extend(tree_parts(conf));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let key = hash_parts(&refs);
    let out = env.cache.join(format!("initrd-{}.img", &key[..16]));
    if out.is_file() {
        return out;
    }
    let base = dracut_base(stage.path(), &ours);
    let tmp = stage.path().join("initrd.img");
    let empty_confdir = stage.path().join("dracut.conf.d");
    std::fs::create_dir_all(&empty_confdir).unwrap();
    let t = Instant::now();
    run(
        Command::new("dracut")
            .env("dracutbasedir", &base)
            .env("INITRD_AGENT_BIN", agent)
            .env("INITRD_AGENT_CONFDIR", conf)
            .args([
                "--force",
                "--quiet",
                "--no-hostonly",
                "--no-hostonly-cmdline",
            ])
            .args(["--no-early-microcode", "--reproducible"])
            .arg("--conf")
            .arg("/dev/null")
            .arg("--confdir")
            .arg(&empty_confdir)
            .arg("--tmpdir")
            .arg(stage.path())
            .args(["--kver", &env.kver])
            .arg("--kmoddir")
            .arg(kmods.join("lib/modules").join(&env.kver))
            .args(["--modules", DRACUT_MODULES])
            .args(["--omit", DRACUT_OMIT])
            .args(["--add-drivers", DRACUT_DRIVERS])
            .args(["--compress", "zstd"])
            .arg(&tmp),
        "dracut",
    );
    eprintln!(
        "vm-tests: initramfs built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Older images are not needed any more.
    for e in std::fs::read_dir(&env.cache).unwrap().map(Result::unwrap) {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("initrd-") && n.ends_with(".img") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    std::fs::copy(&tmp, &out).unwrap();
    out
}

/// What an administrator installs before `update-initramfs -u`, staged as `usr/` and `etc/`
/// trees that `build-initramfs.sh` lays over the host's: `make -C initramfs-tools
/// install-hooks` (hook, boot scripts, keyscript), the agent in `/usr/bin`, its config,
/// `/etc/crypttab` with the keyscript, initramfs-tools' configuration and the test-only
/// hook `vm-tests/initramfs-tools`.
fn stage_itools(env: &Env, agent: &Path, conf: &Path, root: &RootImage, stage: &Path) {
    run(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env.workspace.join("initramfs-tools"))
            .arg("install-hooks")
            .arg(format!("DESTDIR={}", stage.display())),
        "make -C initramfs-tools install-hooks",
    );
    let bin = stage.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(agent, bin.join("initrd-agent")).unwrap();
    let etc = stage.join("etc");
    let agent_etc = etc.join("initrd-agent");
    std::fs::create_dir_all(&agent_etc).unwrap();
    for f in ["config.toml", "ca.pem"] {
        std::fs::copy(conf.join(f), agent_etc.join(f)).unwrap();
    }
    std::fs::write(
        etc.join("crypttab"),
        format!(
            "# vm-tests: the root disk, unlocked by initrd-agent through the keyscript\n\
             {CRYPTTAB_NAME} UUID={} none luks,initramfs,keyscript=/usr/lib/initrd-agent/keyscript\n",
            root.uuid
        ),
    )
    .unwrap();
    let it = etc.join("initramfs-tools");
    std::fs::create_dir_all(it.join("conf.d")).unwrap();
    std::fs::write(it.join("initramfs.conf"), ITOOLS_CONF).unwrap();
    let modules: String = GUEST_MODULES
        .iter()
        .filter(|m| !matches!(**m, "efivarfs" | "autofs4"))
        .map(|m| format!("{m}\n"))
        .collect();
    std::fs::write(it.join("modules"), modules).unwrap();
    let test_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("initramfs-tools");
    for f in ["hooks/unlock-test", "scripts/init-premount/unlock-test"] {
        let dst = it.join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(test_src.join(f), &dst).unwrap();
    }
}

/// The initramfs-tools initramfs, built by `vm-tests/initramfs-tools/build-initramfs.sh` in
/// a private mount namespace (initramfs-tools conflicts with the host's dracut, so its
/// unpacked packages are overlaid on /usr and /etc there), for the host kernel.
fn itools_initramfs(env: &Env, agent: &Path, conf: &Path, root: &RootImage) -> PathBuf {
    let stage = tempfile::tempdir_in(&env.cache).unwrap();
    let staged = stage.path().join("stage");
    stage_itools(env, agent, conf, root, &staged);
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("initramfs-tools/build-initramfs.sh");
    let packages = std::fs::read(env.initramfs_tools.join("packages")).unwrap_or_default();
    let mut parts: Vec<Vec<u8>> = vec![
        b"itools-v1".to_vec(),
        env.kver.as_bytes().to_vec(),
        packages,
        std::fs::read(&build).unwrap(),
    ];
    parts.extend(tree_parts(&staged));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let key = hash_parts(&refs);
    let out = env.cache.join(format!("itools-initrd-{}.img", &key[..16]));
    if out.is_file() {
        return out;
    }
    let tmp = stage.path().join("initrd.img");
    let t = Instant::now();
    run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(&build)
            .arg(&env.initramfs_tools)
            .arg(&staged)
            .arg(&env.kver)
            .arg(&tmp)
            .env("TMPDIR", stage.path()),
        "build-initramfs.sh (mkinitramfs)",
    );
    eprintln!(
        "vm-tests: initramfs-tools initramfs built in {:.1} s ({:.1} MB)",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    for e in std::fs::read_dir(&env.cache).unwrap().map(Result::unwrap) {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("itools-initrd-") && n.ends_with(".img") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    std::fs::copy(&tmp, &out).unwrap();
    out
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).expect("system RNG");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The root's `/sbin/init`: run what the initramfs staged for "later in this boot" (the
/// test module's `later` mode: `/run/unlock-test/later/run.sh`), print the marker (with the
/// disk's own token and the key files left in /run), then power off.
fn root_init(token: &str) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         if [ -f /run/unlock-test/later/run.sh ]; then /bin/busybox sh /run/unlock-test/later/run.sh; fi\n\
         keys=\"$(/bin/busybox find /run/cryptsetup-keys.d /run/initrd-agent -type f 2>/dev/null | /bin/busybox tr '\\n' ' ')\"\n\
         /bin/busybox echo \"ROOT-UNLOCKED-OK {token} keys=[$keys]\" > /dev/console\n\
         /bin/busybox sync\n\
         /bin/busybox poweroff -f\n"
    )
}

/// The LUKS root disk: an ext4 with busybox and an init that prints a marker, encrypted by
/// qemu-img (LUKS1; no device-mapper needed on the host). PBKDF2 is calibrated to 10 ms on
/// the host so that systemd-cryptsetup under TCG takes about a second, not ten.
fn root_image(env: &Env) -> RootImage {
    let busybox = std::fs::read(&env.busybox).unwrap();
    let key = hash_parts(&[ROOT_VERSION.as_bytes(), &busybox]);
    let dir = env.cache.join(format!("root-{}", &key[..16]));
    let meta = dir.join("uuid");
    if meta.is_file() {
        return RootImage {
            path: dir.join("root.luks"),
            uuid: std::fs::read_to_string(&meta).unwrap(),
            passphrase: dir.join("passphrase"),
            token: std::fs::read_to_string(dir.join("token")).unwrap(),
        };
    }
    let tmp = tempfile::tempdir_in(&env.cache).unwrap();
    let t = tmp.path();
    let rootfs = t.join("rootfs");
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "usr/lib",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&env.busybox, rootfs.join("bin/busybox")).unwrap();
    let token = random_hex(8);
    std::fs::write(rootfs.join("sbin/init"), root_init(&token)).unwrap();
    run(
        Command::new("chmod")
            .arg("0755")
            .arg(rootfs.join("sbin/init")),
        "chmod",
    );
    // systemd's switch-root refuses a root without os-release.
    std::fs::write(
        rootfs.join("usr/lib/os-release"),
        "NAME=\"unlock vm-tests root\"\nID=unlock-test\nVERSION_ID=1\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", rootfs.join("etc/os-release")).unwrap();

    let raw = t.join("root.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "testroot", "-d"])
            .arg(&rootfs)
            .arg(&raw),
        "mkfs.ext4",
    );
    let pass = t.join("passphrase");
    std::fs::write(&pass, random_hex(16)).unwrap();
    let luks = t.join("root.luks");
    let mut last = String::new();
    let ok = (0..6).any(|_| {
        let out = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "luks", "--object"])
            .arg(format!("secret,id=s0,file={}", pass.display()))
            .args(["-o", "key-secret=s0,iter-time=10"])
            .arg(&raw)
            .arg(&luks)
            .output()
            .unwrap();
        // qemu-img sometimes fails to calibrate such a short iteration time
        // ("Unable to get accurate CPU usage"): try again.
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(ok, "qemu-img convert to LUKS failed: {last}");
    let uuid = luks1_uuid(&luks);
    std::fs::write(t.join("token"), &token).unwrap();
    std::fs::write(t.join("uuid"), &uuid).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["root.luks", "passphrase", "token", "uuid"] {
        std::fs::rename(t.join(f), dir.join(f)).unwrap();
    }
    eprintln!("vm-tests: root image {} (LUKS UUID {uuid})", dir.display());
    RootImage {
        path: dir.join("root.luks"),
        uuid,
        passphrase: dir.join("passphrase"),
        token,
    }
}

/// The UUID field of a LUKS1 header (offset 168, 40 bytes, NUL-padded).
fn luks1_uuid(path: &Path) -> String {
    let mut hdr = [0u8; 208];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut hdr)
        .unwrap();
    assert_eq!(&hdr[..6], b"LUKS\xba\xbe", "{} is not LUKS", path.display());
    let uuid: String = hdr[168..208]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect();
    assert_eq!(uuid.len(), 36, "odd LUKS UUID {uuid:?}");
    uuid
}
