//! One VM's TPM: an swtpm state directory provisioned by swtpm_setup with EK certificates
//! from a local CA, its EK exported on the host with `initrd-agent ek`, and an swtpm process
//! on a unix socket for QEMU (one per boot: swtpm exits when QEMU disconnects).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::artifacts::{run, Artifacts};

/// A TPM's state and identity; [`Tpm::start`] runs it for one boot.
#[derive(Debug)]
pub struct Tpm {
    dir: tempfile::TempDir,
    /// The CA certificates that the EK certificate chains to (a directory with the local
    /// CA's root and its intermediate), for `unlock-server --ek-ca`.
    pub ek_ca: PathBuf,
    /// The EK's TPMT_PUBLIC, for `unlockctl enroll --ek-pub`.
    pub ek_pub: PathBuf,
    /// The agent id (SHA-256 of the EK public area).
    pub agent_id: String,
    /// The agent's `ek` setting for this TPM (which of swtpm_setup's certified EKs is the
    /// machine's identity): `rsa` (RSA-2048) or `ecc-p384` (the high-range P-384 EK).
    pub ek: &'static str,
}

/// An swtpm serving QEMU; killed on drop.
#[derive(Debug)]
pub struct RunningTpm {
    child: Child,
    /// The control socket QEMU's `-chardev socket` connects to.
    pub socket: PathBuf,
    /// swtpm's log.
    pub log: PathBuf,
}

impl Drop for RunningTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tpm {
    /// A new TPM whose EK certificates are issued by the local CA in `ca_dir` (created by
    /// swtpm_localca on first use; share it between TPMs that one server must accept).
    pub fn provision(art: &Artifacts, ca_dir: &Path) -> Tpm {
        Self::provision_with_ek(art, ca_dir, "rsa")
    }

    /// [`Tpm::provision`] with the machine identified by another of the certified EKs
    /// (`ek` as in the agent's configuration; swtpm_setup certifies an RSA-2048 and a P-384
    /// EK). The boot must select the same one (`rd.unlock.ek=`).
    pub fn provision_with_ek(art: &Artifacts, ca_dir: &Path, ek: &'static str) -> Tpm {
        let dir = tempfile::Builder::new()
            .prefix("tpm-")
            .tempdir_in(&art.env.cache)
            .unwrap();
        let d = dir.path();
        let state = d.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(ca_dir).unwrap();
        std::fs::write(
            d.join("swtpm-localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca_dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("swtpm-localca.options"),
            "--platform-manufacturer vm-tests\n--platform-version 2.1\n--platform-model QEMU\n",
        )
        .unwrap();
        std::fs::write(
            d.join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {d}/swtpm-localca.conf\ncreate_certs_tool_options = {d}/swtpm-localca.options\n",
                d = d.display()
            ),
        )
        .unwrap();
        run(
            Command::new("swtpm_setup")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(&state)
                .arg("--config")
                .arg(d.join("swtpm_setup.conf"))
                .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
                .arg("--overwrite")
                .env("XDG_CONFIG_HOME", d),
            "swtpm_setup",
        );
        // Only the certificates: the CA directory also holds its private keys.
        let ek_ca = d.join("ek-ca");
        std::fs::create_dir_all(&ek_ca).unwrap();
        for f in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
            std::fs::copy(ca_dir.join(f), ek_ca.join(f))
                .unwrap_or_else(|e| panic!("swtpm_localca made no {f}: {e}"));
        }
        let (ek_pub, agent_id) = export_ek(art, d, &state, ek);
        Tpm {
            dir,
            ek_ca,
            ek_pub,
            agent_id,
            ek,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts swtpm for one boot (it exits when QEMU disconnects, as a powered-off TPM).
    /// Each start is a TPM Reset: resetCount goes up, PCRs start over.
    pub fn start(&self) -> RunningTpm {
        let socket = self.dir.path().join("swtpm.sock");
        let log = self.dir.path().join("swtpm.log");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--terminate"])
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state().display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn swtpm");
        let mut running = RunningTpm { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running.socket.exists() {
            if let Ok(Some(st)) = running.child.try_wait() {
                panic!(
                    "swtpm exited at start ({st}); see {}",
                    running.log.display()
                );
            }
            assert!(Instant::now() < deadline, "swtpm did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        running
    }
}

/// Runs swtpm on TCP for a moment and asks the release `initrd-agent` for the EK public
/// area, exactly as an operator would on the machine (`initrd-agent ek --out`). The EK is
/// derived from the endorsement seed, so the VM's agent will present the same key.
fn export_ek(art: &Artifacts, dir: &Path, state: &Path, ek: &str) -> (PathBuf, String) {
    let ek_pub = dir.join("ek.pub");
    let out = host_agent(
        art,
        dir,
        state,
        ek,
        "",
        &["ek", "--out", ek_pub.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "initrd-agent ek failed: {stderr}");
    let agent_id = stderr
        .split("agent id ")
        .nth(1)
        .and_then(|s| s.get(..64))
        .unwrap_or_else(|| panic!("no agent id in {stderr:?}"))
        .to_owned();
    (ek_pub, agent_id)
}

impl Tpm {
    /// Runs the release `initrd-agent` on the host against this TPM (swtpm on TCP over the
    /// same state, between boots): what the installed system would run on the machine, with
    /// `config` (TOML lines) added to the TPM settings. The TPM keeps what it kept at the last
    /// boot (the persistent AK the roles activated).
    pub fn host_agent(&self, art: &Artifacts, config: &str, args: &[&str]) -> std::process::Output {
        host_agent(art, self.dir.path(), &self.state(), self.ek, config, args)
    }
}

/// Runs `initrd-agent args` with swtpm serving `state` on TCP for the duration.
fn host_agent(
    art: &Artifacts,
    dir: &Path,
    state: &Path,
    ek: &str,
    config: &str,
    args: &[&str],
) -> std::process::Output {
    for _ in 0..20 {
        let port = free_port_pair();
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn swtpm");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut up = false;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        let cfg = dir.join("host-agent.toml");
        std::fs::write(
            &cfg,
            format!("tcti = \"swtpm:host=127.0.0.1,port={port}\"\nek = \"{ek}\"\n{config}"),
        )
        .unwrap();
        let cmdline = dir.join("host-cmdline");
        std::fs::write(&cmdline, "").unwrap();
        let out = Command::new(&art.agent)
            .arg("--config")
            .arg(&cfg)
            .arg("--cmdline-file")
            .arg(&cmdline)
            .args(args)
            .env("TSS2_LOG", "all+NONE")
            .output()
            .unwrap();
        // SIGTERM: swtpm saves its state on the way out.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        return out;
    }
    panic!("could not start swtpm on a free TCP port");
}

/// Two consecutive free ports (swtpm's server and control channels).
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
