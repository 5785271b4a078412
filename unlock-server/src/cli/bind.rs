//! `unlockctl bind`: on the machine itself, the `clevis luks bind` experience. (With
//! `--auto-enroll`, no admin token: see `bind_auto`.) Reads the EK
//! from the TPM (through `initrd-agent ek`, so unlockctl links no TPM stack), makes a fresh
//! random LUKS key, enrolls it with both roles, then adds it to a key slot of the LUKS
//! device or image. If adding the slot fails, the enrollment is rolled back. Last, it has
//! the agent register its AK (`initrd-agent register`), so both roles pin the AK at
//! enrollment.
//!
//! The new key exists on disk only in a 0400 file in a 0700 directory on tmpfs (`/run`, or
//! `/dev/shm`), for the moment cryptsetup reads it, and is removed right after.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use zeroize::Zeroizing;

use super::admin::{delete_both, enroll_bytes, read_ek, EnrollOptions};

/// `unlockctl bind`.
#[derive(Debug, Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub opts: EnrollOptions,
    /// The LUKS device or image file to add a key slot to.
    #[arg(long)]
    pub device: PathBuf,
    /// A key file that already opens the device (default: cryptsetup asks for a passphrase).
    #[arg(long)]
    pub existing_key_file: Option<PathBuf>,
    /// Length of the new random key in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(16..=512))]
    pub key_bytes: u16,
    /// The agent binary used to read the EK.
    #[arg(long, default_value = "initrd-agent")]
    pub agent: PathBuf,
    /// Config file for the agent (TPM device, EK type) [default: the agent's default].
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// Kernel command line file for the agent (tests) [default: /proc/cmdline].
    #[arg(long, hide = true)]
    pub agent_cmdline_file: Option<PathBuf>,
    /// Do not register the AK now (the first boot does, with the agent's configuration).
    #[arg(long)]
    pub no_register: bool,
    /// Auto-enrollment, without the admin token: the roles' `[[auto_enroll]]` rules must
    /// admit this TPM. Adds the key slot, then has the agent register, make K_b, split it and
    /// deposit each role's part (`initrd-agent deposit`); the slot is removed again if that
    /// fails. The roles' URLs and CA come from the agent's configuration; the enrollment's
    /// policy and bounds from the admitting rule (policy options here are refused).
    #[arg(long, conflicts_with_all = ["policy", "policy_name", "no_register"])]
    pub auto_enroll: bool,
    /// Extra argument for `cryptsetup luksAddKey` (repeatable), e.g. `--cryptsetup-arg=--pbkdf=pbkdf2`.
    #[arg(long = "cryptsetup-arg", allow_hyphen_values = true)]
    pub cryptsetup_args: Vec<String>,
}

/// The agent, with the config and command-line file `bind` was given.
fn agent_command(args: &BindArgs) -> Command {
    let mut cmd = Command::new(&args.agent);
    if let Some(c) = &args.agent_config {
        cmd.arg("--config").arg(c);
    }
    if let Some(c) = &args.agent_cmdline_file {
        cmd.arg("--cmdline-file").arg(c);
    }
    cmd
}

/// A private directory on tmpfs, removed (with its contents) on drop.
struct TmpfsDir(PathBuf);

impl TmpfsDir {
    fn new() -> anyhow::Result<Self> {
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).map_err(|_| anyhow::anyhow!("system RNG failed"))?;
        for base in ["/run", "/dev/shm"] {
            let dir = Path::new(base).join(format!("unlockctl-bind-{}", hex::encode(rnd)));
            if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
                return Ok(Self(dir));
            }
        }
        bail!("cannot create a private directory on tmpfs (/run or /dev/shm) for the new key")
    }
}

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bind(args: &BindArgs) -> anyhow::Result<()> {
    if !args.device.exists() {
        bail!("{}: no such device or image", args.device.display());
    }
    let dir = TmpfsDir::new()?;
    if args.auto_enroll {
        return bind_auto(args, &dir);
    }

    // 1. The EK, read by the agent from the TPM.
    let ek_file = dir.0.join("ek.pub");
    let mut cmd = agent_command(args);
    let out = cmd
        .arg("ek")
        .arg("--out")
        .arg(&ek_file)
        .env("TSS2_LOG", "all+NONE")
        .output()
        .with_context(|| format!("cannot run {}", args.agent.display()))?;
    if !out.status.success() {
        bail!(
            "reading the EK failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ek = read_ek(&ek_file)?;

    // 2. A fresh random key, only in memory and in a 0400 tmpfs file.
    let (key, key_file) = new_key(args, &dir)?;

    // 3. Enroll first: if the server refuses, the device is untouched.
    let agent_id = enroll_bytes(&args.opts, ek, &key)?;
    println!("{}", super::admin::enrolled_line(&agent_id, &args.opts));

    // 4. Add the key slot; on failure, undo the enrollment.
    let status = add_key_slot(args, &key_file)?;
    if !status.success() {
        let undo = delete_both(&args.opts.conn, &agent_id);
        bail!(
            "cryptsetup luksAddKey failed ({status}); {}",
            match undo {
                Ok(()) => "the enrollment was rolled back".to_owned(),
                Err(e) => format!("rolling back the enrollment failed too: {e:#}; run `unlockctl delete {agent_id}`"),
            }
        );
    }
    println!(
        "bound {}: a new key slot opens it, and agent {agent_id} receives that key at boot",
        args.device.display()
    );

    // 5. The AK: registered and activated now, so both roles pin it at enrollment and the
    //    first boot goes straight to the challenges. Not fatal: the first boot registers
    //    if this could not (the roles unreachable with the agent's configuration).
    if args.no_register {
        return Ok(());
    }
    let mut cmd = agent_command(args);
    match cmd.arg("register").env("TSS2_LOG", "all+NONE").output() {
        Ok(out) if out.status.success() => {
            println!("AK registered and pinned with both roles (as the agent is configured)");
        }
        Ok(out) => eprintln!(
            "unlockctl: note: the AK was not registered now ({}); the first boot registers it",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!(
            "unlockctl: note: cannot run {} register ({e}); the first boot registers the AK",
            args.agent.display()
        ),
    }
    Ok(())
}

/// A fresh random key of `--key-bytes`, in memory and in a 0400 file in `dir`.
fn new_key(args: &BindArgs, dir: &TmpfsDir) -> anyhow::Result<(Zeroizing<Vec<u8>>, PathBuf)> {
    let mut key = Zeroizing::new(vec![0u8; usize::from(args.key_bytes)]);
    aws_lc_rs::rand::fill(&mut key).map_err(|_| anyhow::anyhow!("system RNG failed"))?;
    let key_file = dir.0.join("new.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&key_file)
        .context("writing the new key to tmpfs")?;
    f.write_all(&key)?;
    Ok((key, key_file))
}

/// `cryptsetup luksAddKey` of `key_file` to the device.
fn add_key_slot(args: &BindArgs, key_file: &Path) -> anyhow::Result<std::process::ExitStatus> {
    let mut cs = Command::new("cryptsetup");
    cs.arg("luksAddKey").arg("-q");
    if let Some(k) = &args.existing_key_file {
        cs.arg("--key-file").arg(k);
    }
    cs.args(&args.cryptsetup_args)
        .arg(&args.device)
        .arg(key_file);
    cs.status()
        .context("cannot run cryptsetup (install cryptsetup-bin)")
}

/// `bind --auto-enroll`: the key slot first (nothing is deposited for a device that cannot
/// take the key), then the agent's deposit; a failed deposit removes the slot again, so the
/// device is left as it was.
fn bind_auto(args: &BindArgs, dir: &TmpfsDir) -> anyhow::Result<()> {
    if args.opts.policy_version.is_some() {
        bail!("--auto-enroll: the admitting rule names the policy; drop --policy-version");
    }
    let (_key, key_file) = new_key(args, dir)?;
    let status = add_key_slot(args, &key_file)?;
    if !status.success() {
        bail!("cryptsetup luksAddKey failed ({status}); nothing was deposited");
    }
    let mut cmd = agent_command(args);
    let out = cmd
        .arg("deposit")
        .arg("--payload")
        .arg(&key_file)
        .env("TSS2_LOG", "all+NONE")
        .output();
    let failure = match out {
        Ok(o) if o.status.success() => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            println!(
                "bound {}: a new key slot opens it, and this machine receives that key at boot (auto-enrolled)",
                args.device.display()
            );
            return Ok(());
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("cannot run {}: {e}", args.agent.display()),
    };
    // Undo the slot: the key file names the slot to remove.
    let undo = Command::new("cryptsetup")
        .arg("luksRemoveKey")
        .arg("-q")
        .arg(&args.device)
        .arg(&key_file)
        .status();
    bail!(
        "auto-enrollment failed: {failure}; {}",
        match undo {
            Ok(s) if s.success() => "the new key slot was removed again".to_owned(),
            Ok(s) => format!("removing the new key slot failed too ({s}): remove it with cryptsetup luksKillSlot"),
            Err(e) => format!("removing the new key slot failed too ({e}): remove it with cryptsetup luksKillSlot"),
        }
    )
}
