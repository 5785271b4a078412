//! One QEMU boot: `-kernel`/`-initrd` direct boot of the guest kernel with our initramfs,
//! the LUKS root on virtio, swtpm as `tpm-tis`, user networking that only reaches the test
//! server (`restrict=on` plus a `guestfwd` to 10.0.2.100:8443), the serial console captured
//! line by line with timestamps, and a hard timeout after which QEMU is killed.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::artifacts::{Artifacts, CRYPTTAB_NAME, GUEST_SERVER_IP, GUEST_SERVER_PORT};
use crate::console::{clean, Boot};
use crate::env::{OVMF_CODE, OVMF_VARS};
use crate::tpm::Tpm;

/// Limits concurrent VMs (`VM_TEST_JOBS`, default: half the CPUs, at least 1): TCG is CPU
/// bound, and an overloaded host only makes every boot slower.
pub const JOBS_VAR: &str = "VM_TEST_JOBS";

/// Default hard limit of one boot.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default): a short TCG2 event log in the ACPI TPM2 table.
    Bios,
    /// OVMF (UEFI): a full measured-boot log, PCRs 0-7 all meaningful.
    Uefi,
}

/// Which initramfs generator built the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generator {
    /// dracut with `dracut-module/91unlock` (systemd in the initramfs).
    Dracut,
    /// Debian's initramfs-tools with `initramfs-tools/` (the crypttab keyscript).
    InitramfsTools,
}

/// Guest memory, MiB (QEMU places the initrd below it, which the update scenarios' PCR 4
/// prediction models).
pub const GUEST_RAM_MIB: u64 = 768;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The initramfs: dracut's or initramfs-tools'.
    pub generator: Generator,
    /// Scenario name (console log `target/vm-tests/logs/<name>.log`).
    pub name: String,
    /// Firmware.
    pub firmware: Firmware,
    /// Port of the server on 127.0.0.1 the guest's 10.0.2.100:8443 is relayed to; `None`:
    /// no relay (nothing answers there).
    pub server_port: Option<u16>,
    /// The relay is down (closes every connection) until a console line contains this
    /// text; `None`: up from the start. Needs `server_port`.
    pub relay_opens_on: Option<&'static str>,
    /// `rd.unlock.timeout=` (seconds).
    pub unlock_timeout: u32,
    /// Kernel command line parameters appended to the standard ones.
    pub extra_cmdline: Vec<String>,
    /// Test switch of the `99unlock-test` module (fw_cfg, not measured): `capture`, `again`,
    /// `later` (see `dracut/99unlock-test/module-setup.sh`); of the initramfs-tools test hook:
    /// `capture`, `askpass` (see `initramfs-tools/hooks/unlock-test`).
    pub test_mode: Option<&'static str>,
    /// Hard limit.
    pub timeout: Duration,
    /// Print every console line as it arrives (default: `VM_TEST_CONSOLE=1`).
    pub echo: bool,
    /// Another initramfs than the artifacts' (an update scenario's changed one).
    pub initrd: Option<std::path::PathBuf>,
    /// Boot this unified kernel image from an ESP instead of QEMU's `-kernel` (OVMF only;
    /// the image carries its initrd and command line, so `initrd` and the command line
    /// fields do not apply).
    pub uki: Option<std::path::PathBuf>,
}

impl VmConfig {
    /// The standard boot of `name`: SeaBIOS, server at `server_port`, 30 s agent budget.
    pub fn new(name: &str, server_port: Option<u16>) -> Self {
        Self {
            name: name.to_owned(),
            generator: Generator::Dracut,
            firmware: Firmware::Bios,
            server_port,
            relay_opens_on: None,
            unlock_timeout: 30,
            // Development aid: extra parameters for every boot of the run.
            extra_cmdline: std::env::var("VM_TEST_CMDLINE")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            test_mode: None,
            timeout: BOOT_TIMEOUT,
            echo: std::env::var("VM_TEST_CONSOLE").as_deref() == Ok("1"),
            initrd: None,
            uki: None,
        }
    }

    /// The kernel command line.
    pub fn cmdline(&self, art: &Artifacts) -> String {
        if self.generator == Generator::InitramfsTools {
            return self.itools_cmdline();
        }
        let uuid = &art.root.uuid;
        let mut p = vec![
            "console=ttyS0".to_owned(),
            "quiet".into(),
            "panic=-1".into(),
            "rd.shell=0".into(),
            "rd.emergency=poweroff".into(),
            format!("rd.luks.uuid={uuid}"),
            // No passphrase prompt in tests: without the key, cryptsetup fails at once.
            format!("rd.luks.options={uuid}=headless=true"),
            format!("root=/dev/mapper/luks-{uuid}"),
            "rootfstype=ext4".into(),
            "ro".into(),
            "ip=dhcp".into(),
            format!("rd.unlock.server=https://{GUEST_SERVER_IP}:{GUEST_SERVER_PORT}"),
            format!("rd.unlock.timeout={}", self.unlock_timeout),
        ];
        p.extend(self.extra_cmdline.iter().cloned());
        p.join(" ")
    }

    /// initramfs-tools: the root volume comes from the image's crypttab (keyscript), so no
    /// `rd.luks.*`; `panic=-1` makes a failed boot reboot at once (QEMU `-no-reboot`: exit).
    fn itools_cmdline(&self) -> String {
        let mut p = vec![
            "console=ttyS0".to_owned(),
            "quiet".into(),
            "panic=-1".into(),
            format!("root=/dev/mapper/{CRYPTTAB_NAME}"),
            "rootfstype=ext4".into(),
            "ro".into(),
            "ip=dhcp".into(),
            format!("rd.unlock.server=https://{GUEST_SERVER_IP}:{GUEST_SERVER_PORT}"),
            format!("rd.unlock.timeout={}", self.unlock_timeout),
        ];
        p.extend(self.extra_cmdline.iter().cloned());
        p.join(" ")
    }
}

struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

fn slots() -> &'static Slots {
    static SLOTS: std::sync::OnceLock<Slots> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = std::env::var(JOBS_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or((cpus / 2).max(1));
        Slots {
            free: Mutex::new(jobs),
            cv: Condvar::new(),
        }
    })
}

struct Slot;

impl Slot {
    fn take() -> Slot {
        let s = slots();
        let mut free = s.free.lock().unwrap();
        while *free == 0 {
            free = s.cv.wait(free).unwrap();
        }
        *free -= 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let s = slots();
        *s.free.lock().unwrap() += 1;
        s.cv.notify_one();
    }
}

/// Boots `cfg` with `tpm` and waits until QEMU exits or the timeout kills it. Prints the
/// figures line. Panics only when QEMU cannot run at all.
pub fn boot(art: &Artifacts, tpm: &Tpm, cfg: &VmConfig) -> Boot {
    let _slot = Slot::take();
    let env = art.env;
    let running = tpm.start();
    let log = env.cache.join("logs").join(format!("{}.log", cfg.name));
    let mut logf = std::fs::File::create(&log).unwrap();
    let work = tempfile::Builder::new()
        .prefix("vm-")
        .tempdir_in(&env.cache)
        .unwrap();

    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args([
        "-machine",
        "pc",
        "-m",
        &GUEST_RAM_MIB.to_string(),
        "-smp",
        "1",
    ])
    .args(["-serial", "stdio"]);
    if env.kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        let cpu = std::env::var("VM_TEST_CPU").unwrap_or_else(|_| "max".into());
        cmd.args(["-accel", "tcg", "-cpu", &cpu]);
    }
    let initrd = match cfg.generator {
        Generator::Dracut => art.initrd.as_path(),
        Generator::InitramfsTools => art.initramfs_tools(),
    };
    match &cfg.uki {
        Some(uki) => {
            assert_eq!(
                cfg.firmware,
                Firmware::Uefi,
                "{}: a UKI needs OVMF",
                cfg.name
            );
            let esp = esp_image(uki, work.path());
            // The ESP first in the boot order: OVMF starts its removable-media path
            // EFI/BOOT/BOOTX64.EFI, unmodified (no QEMU kernel loader in between).
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=esp,format=raw,readonly=on,file={}",
                    esp.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=esp,bootindex=0"]);
        }
        None => {
            cmd.arg("-kernel")
                .arg(&env.kernel)
                .arg("-initrd")
                .arg(cfg.initrd.as_deref().unwrap_or(initrd))
                .arg("-append")
                .arg(cfg.cmdline(art));
        }
    }
    cmd.arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            art.root.path.display()
        ))
        .arg("-chardev")
        .arg(format!(
            "socket,id=chrtpm,path={}",
            running.socket.display()
        ))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"])
        .args(["-device", "virtio-rng-pci"]);
    let mut netdev = "user,id=n0,restrict=on".to_owned();
    let gate = work.path().join("relay-open");
    if let Some(port) = cfg.server_port {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{GUEST_SERVER_IP}:{GUEST_SERVER_PORT}-cmd:{} {port}",
            art.relay.display()
        ));
        if cfg.relay_opens_on.is_some() {
            netdev.push_str(&format!(" {}", gate.display()));
        }
    }
    // No option ROM: faster, and PCR 2 under SeaBIOS does not depend on iPXE.
    cmd.arg("-netdev")
        .arg(netdev)
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="]);
    if let Some(mode) = cfg.test_mode {
        cmd.arg("-fw_cfg")
            .arg(format!("name=opt/org.unlock-test/mode,string={mode}"));
        if mode == "later" || mode == "askpass" {
            // What a person would type at the passphrase prompt (the fallback of `later`).
            cmd.arg("-fw_cfg").arg(format!(
                "name=opt/org.unlock-test/passphrase,file={}",
                art.root.passphrase.display()
            ));
        }
    }
    if cfg.firmware == Firmware::Uefi {
        let vars = work.path().join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        cmd.arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
    }
    cmd.env("TMPDIR", work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let _ = writeln!(logf, "# {:?}", cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Duration, String)>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = clean(&String::from_utf8_lossy(&buf));
                    if tx.send((started.elapsed(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });

    let echo = cfg.echo;
    let mut lines = Vec::new();
    let mut timed_out = false;
    let exit = loop {
        while let Ok((t, line)) = rx.try_recv() {
            let _ = writeln!(logf, "[{:7.2}] {line}", t.as_secs_f64());
            if echo {
                eprintln!("[{}] [{:7.2}] {line}", cfg.name, t.as_secs_f64());
            }
            if cfg.relay_opens_on.is_some_and(|m| line.contains(m)) && !gate.exists() {
                std::fs::write(&gate, b"").unwrap();
                let _ = writeln!(logf, "# relay opened at {:.2} s", t.as_secs_f64());
            }
            lines.push((t, line));
        }
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > cfg.timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let _ = reader.join();
    while let Ok((t, line)) = rx.try_recv() {
        let _ = writeln!(logf, "[{:7.2}] {line}", t.as_secs_f64());
        lines.push((t, line));
    }
    let qemu_err = err_reader.join().unwrap_or_default();
    if !qemu_err.trim().is_empty() {
        let _ = writeln!(logf, "# qemu stderr:\n{qemu_err}");
    }
    let boot = Boot {
        name: cfg.name.clone(),
        lines,
        elapsed,
        timed_out,
        exit,
        log: log.clone(),
        token: art.root.token.clone(),
    };
    // QEMU that cannot run at all (no such machine, accel failure) must fail loudly.
    assert!(
        boot.timed_out || boot.lines.len() > 3,
        "{}: QEMU printed nothing and exited with {:?}: {qemu_err}\n(log: {})",
        cfg.name,
        boot.exit,
        log.display()
    );
    eprintln!("vm-tests: {}", boot.figures());
    drop(running);
    boot
}

/// The console log directory.
pub fn log_dir(art: &Artifacts) -> PathBuf {
    art.env.cache.join("logs")
}

/// Size of the FAT image holding a UKI: fixed, so that the firmware sees the same disk
/// (and measures the same boot variables) whichever UKI it holds.
const ESP_MIB: u64 = 96;

/// A FAT file system image (no partition table: OVMF mounts the whole disk) with `uki` as
/// the removable-media boot path `EFI/BOOT/BOOTX64.EFI`, made with mkfs.vfat and mtools
/// (no loop device, no mount).
fn esp_image(uki: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let len = std::fs::metadata(uki).unwrap().len();
    assert!(
        len < (ESP_MIB - 8) << 20,
        "{}: {len} bytes do not fit the {ESP_MIB} MiB ESP",
        uki.display()
    );
    let esp = dir.join("esp.img");
    let run = |c: &mut Command| {
        let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("mkfs.vfat")
        .args(["-n", "ESP", "-i", "12345678", "-C"])
        .arg(&esp)
        .arg((ESP_MIB << 10).to_string()));
    run(Command::new("mmd")
        .arg("-i")
        .arg(&esp)
        .args(["::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg(uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI"));
    esp
}
