//! One swtpm per test, in a tempdir, killed on Drop.
//!
//! Test support: a failed unwrap here is a failed test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when the swtpm tests must be skipped (explicit opt-out only).
pub fn skip() -> bool {
    if which("swtpm").is_some() && which("swtpm_setup").is_some() {
        return false;
    }
    if std::env::var("UNLOCK_SKIP_SWTPM").as_deref() == Ok("1") {
        eprintln!("swtpm not installed and UNLOCK_SKIP_SWTPM=1: skipping");
        return true;
    }
    panic!(
        "swtpm and swtpm_setup are required for this test (apt-get install swtpm swtpm-tools); \
         set UNLOCK_SKIP_SWTPM=1 to skip explicitly"
    );
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// A running swtpm with its own state directory.
pub struct Swtpm {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    state: PathBuf,
}

impl Swtpm {
    /// A fresh, unprovisioned TPM.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir)
    }

    /// A TPM provisioned by swtpm_setup with an EK certificate (RSA, or ECC with `ecc`)
    /// issued by a fresh swtpm-localca under `dir/localca`. Returns the TPM and the CA root
    /// and intermediate (issuer) certificates in PEM.
    pub fn start_provisioned(ecc: bool) -> (Self, Vec<u8>, Vec<u8>) {
        Self::start_provisioned_with(ecc, None)
    }

    /// [`Swtpm::start_provisioned`] with `swtpm_setup --rsa-keysize` (3072: the RSA EK is
    /// the high-range H-6 one, its certificate at NV 0x01c0001c).
    pub fn start_provisioned_with(ecc: bool, rsa_keysize: Option<u32>) -> (Self, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = d.join("state");
        let ca = d.join("localca");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&ca).unwrap();
        std::fs::write(
            d.join("swtpm-localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("swtpm-localca.options"),
            "--platform-manufacturer Test\n--platform-version 2.1\n--platform-model QEMU\n",
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
        let mut cmd = Command::new("swtpm_setup");
        cmd.arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .arg("--config")
            .arg(d.join("swtpm_setup.conf"))
            .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
            .env("XDG_CONFIG_HOME", d);
        if ecc {
            cmd.arg("--ecc");
        }
        if let Some(bits) = rsa_keysize {
            cmd.arg("--rsa-keysize").arg(bits.to_string());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let root = std::fs::read(ca.join("swtpm-localca-rootca-cert.pem")).unwrap();
        let issuer = std::fs::read(ca.join("issuercert.pem")).unwrap();
        let tpm = Self::start_state(dir, state);
        (tpm, root, issuer)
    }

    /// A TPM with only the given PCR banks allocated (e.g. "sha256"), set up by swtpm_setup
    /// without certificates.
    pub fn start_with_banks(banks: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let out = Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .args(["--pcr-banks", banks, "--overwrite"])
            .env("XDG_CONFIG_HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swtpm_setup --pcr-banks failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_state(dir, state)
    }

    fn start_in(dir: tempfile::TempDir) -> Self {
        let state = dir.path().to_path_buf();
        Self::start_state(dir, state)
    }

    fn start_state(dir: tempfile::TempDir, state: PathBuf) -> Self {
        for _ in 0..20 {
            let port = free_port_pair();
            let child = Command::new("swtpm")
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
            let mut child = child;
            if wait_ready(&mut child, port) {
                return Swtpm {
                    child,
                    port,
                    dir,
                    state,
                };
            }
            // Lost a race for the port (or swtpm failed): try another pair.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start swtpm on a free port");
    }

    /// Power-cycles the TPM: kills swtpm (state on disk is kept) and starts it again, which
    /// is a TPM Reset (resetCount + 1, PCRs back to their initial values). The port changes.
    pub fn restart(self) -> Self {
        let (dir, state) = self.stop();
        Self::start_state(dir, state)
    }

    /// Stops swtpm and hands back its directories (to snapshot or restore the state).
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Drop would kill again; move the fields out instead.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let state = self.state.clone();
        (dir, state)
    }

    /// Starts swtpm on an existing state directory (after [`Swtpm::stop`]).
    pub fn resume(dir: tempfile::TempDir, state: PathBuf) -> Self {
        Self::start_state(dir, state)
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

/// Defines NV index `index` (owner-created, owner-writable, readable with its own empty
/// auth, as the agent reads EK certificate indices) and writes `data` into it: the EK
/// certificate chain indices a manufacturer would provision. Marshalled by hand, so the
/// test does not go through the code it tests; the connection is closed on return.
pub fn write_nv(tcti: &str, index: u32, data: &[u8]) {
    use initrd_agent::tpm::transport::Transport;
    const RH_OWNER: u32 = 0x4000_0001;
    // OWNERWRITE | OWNERREAD | AUTHREAD | NO_DA
    const ATTRS: u32 = 0x0000_0002 | 0x0002_0000 | 0x0004_0000 | 0x0200_0000;
    let pw_session: [u8; 13] = [0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0];
    let command = |cc: u32, handles: &[u32], params: &[u8]| {
        let mut body = Vec::new();
        for h in handles {
            body.extend_from_slice(&h.to_be_bytes());
        }
        body.extend_from_slice(&pw_session);
        body.extend_from_slice(params);
        let mut c = vec![0x80, 0x02];
        c.extend_from_slice(&u32::try_from(10 + body.len()).unwrap().to_be_bytes());
        c.extend_from_slice(&cc.to_be_bytes());
        c.extend_from_slice(&body);
        c
    };
    let mut t = Transport::open(tcti).unwrap();
    let mut run = |c: Vec<u8>, what: &str| {
        let r = t.transact(&c).unwrap();
        assert_eq!(r.get(6..10), Some(&[0u8, 0, 0, 0][..]), "{what}: {r:02x?}");
    };
    let mut nv_public = Vec::new();
    nv_public.extend_from_slice(&index.to_be_bytes());
    nv_public.extend_from_slice(&0x000bu16.to_be_bytes()); // SHA-256
    nv_public.extend_from_slice(&ATTRS.to_be_bytes());
    nv_public.extend_from_slice(&[0, 0]); // empty authPolicy
    nv_public.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    let mut params = vec![0, 0]; // empty auth
    params.extend_from_slice(&u16::try_from(nv_public.len()).unwrap().to_be_bytes());
    params.extend_from_slice(&nv_public);
    run(command(0x12a, &[RH_OWNER], &params), "NV_DefineSpace");
    for (i, chunk) in data.chunks(512).enumerate() {
        let mut params = u16::try_from(chunk.len()).unwrap().to_be_bytes().to_vec();
        params.extend_from_slice(chunk);
        params.extend_from_slice(&u16::try_from(i * 512).unwrap().to_be_bytes());
        run(command(0x137, &[RH_OWNER, index], &params), "NV_Write");
    }
}

/// Removes a platform-created NV index (TPM2_NV_UndefineSpace with the platform hierarchy's
/// empty auth, which swtpm keeps after startup): a provisioned TPM made to look like a
/// cloud vTPM that keeps no EK certificate in NV.
pub fn undefine_platform_nv(tcti: &str, index: u32) {
    use initrd_agent::tpm::transport::Transport;
    const RH_PLATFORM: u32 = 0x4000_000c;
    let mut body = RH_PLATFORM.to_be_bytes().to_vec();
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0]);
    let mut c = vec![0x80, 0x02];
    c.extend_from_slice(&u32::try_from(10 + body.len()).unwrap().to_be_bytes());
    c.extend_from_slice(&0x122u32.to_be_bytes());
    c.extend_from_slice(&body);
    let mut t = Transport::open(tcti).unwrap();
    let r = t.transact(&c).unwrap();
    assert_eq!(
        r.get(6..10),
        Some(&[0u8, 0, 0, 0][..]),
        "NV_UndefineSpace: {r:02x?}"
    );
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            // The port pair was free when chosen, but another test's swtpm may have taken it
            // since: only a listener that belongs to our child is our TPM.
            if answers_commands(stream) && listens_on(child.id(), port) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// True when process `pid` holds the TCP socket listening on 127.0.0.1:`port` (from
/// /proc/net/tcp and the process's descriptors).
fn listens_on(pid: u32, port: u16) -> bool {
    const TCP_LISTEN: &str = "0A";
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&TCP_LISTEN))
            .then(|| cols.get(9).map(|s| s.to_string()))
            .flatten()
    }) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == want.as_str())
    })
}

/// Sends TPM2_ReadClock and true when the TPM answers it with success.
///
/// swtpm listens before it has run (and stored) its own TPM2_Startup: a socket that accepts
/// is not yet a started TPM, and killing swtpm in that window loses the Startup, so the next
/// start does not count a TPM Reset (resetCount stays put). Commands are executed after the
/// Startup, so a successful answer proves it ran and its state is on disk.
fn answers_commands(mut stream: TcpStream) -> bool {
    use std::io::{Read, Write};
    const TPM_ST_NO_SESSIONS: u16 = 0x8001;
    const TPM_CC_READ_CLOCK: u32 = 0x0000_0181;
    let mut cmd = Vec::with_capacity(10);
    cmd.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    cmd.extend_from_slice(&10u32.to_be_bytes());
    cmd.extend_from_slice(&TPM_CC_READ_CLOCK.to_be_bytes());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = [0u8; 10];
    if stream.write_all(&cmd).is_err() || stream.read_exact(&mut head).is_err() {
        return false;
    }
    u32::from_be_bytes([head[6], head[7], head[8], head[9]]) == 0
}

/// A port P such that P and P+1 were both free a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Quiets ESYS's stderr logging.
pub fn quiet_tss() {
    std::env::set_var("TSS2_LOG", "all+NONE");
}
