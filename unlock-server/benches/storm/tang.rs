//! Tang under the same storm: Debian's `tang` serving `clevis decrypt` style key recoveries,
//! the network unlock users run today (it does no attestation), as the yardstick for the
//! attested boots.
//!
//! Deployment: Debian runs `tangd` inetd-style (`tangd.socket` has `Accept=yes`, so systemd
//! accepts each connection and starts one `tangd <keydir>` with the socket as stdin and
//! stdout; `tang-xinetd` does the same under xinetd). Without systemd the bench gets the same
//! process-per-connection shape from `socat TCP-LISTEN:…,fork EXEC:"tangd <keydir>",nofork`:
//! socat accepts, forks, and the child execs tangd on the accepted socket, with no relay
//! process in between. The listen backlog is the kernel's `somaxconn`, which is also what
//! systemd's `Backlog=` defaults to.
//!
//! Load: `clevis decrypt` makes one connection per recovery and sends `POST /rec/<kid>`
//! (`application/jwk+json`) with a blinded public point on the exchange key's curve; tangd
//! answers with that point times its private key. Bodies are built like clevis builds them
//! (`jose jwk exc` of a client key and an ephemeral key, P-521) into a small pool; tangd's
//! work is one point multiplication whatever the point. Every answer is compared with the
//! product `jose` computes from the private exchange key, so a wrong answer fails the bench
//! instead of counting as throughput.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Failure;

/// Distinct request bodies; enough that no single point is special.
const POOL: usize = 32;

/// The running Tang (socat + one tangd per connection), killed on drop.
pub struct Tang {
    child: Child,
    base: String,
    kid: String,
    sig_thp: String,
    /// `(body, expected x, expected y)`.
    pool: Vec<(Vec<u8>, String, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for Tang {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file of a Debian package, by name, from `dpkg -L`.
fn package_file(package: &str, name: &str) -> Option<PathBuf> {
    let out = Command::new("dpkg").args(["-L", package]).output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|f| f == name) && p.is_file())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn missing(what: &str) -> ! {
    panic!(
        "storm bench: {what} not found; the Tang comparison needs Debian's tang, jose and \
         socat: run scripts/install-deps.sh (or set UNLOCK_STORM_TANG=0 to skip Tang)"
    )
}

/// Runs `jose` with `args`, feeding `input`; its stdout, trimmed.
fn jose(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("jose")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|_| missing("jose"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jose {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The key of `dir` whose `alg` is `alg`: (file contents, S256 thumbprint).
fn key_with_alg(dir: &Path, alg: &str) -> (String, String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if field(&json(&text), "alg") == alg {
            let thp = jose(&["jwk", "thp", "-i-", "-a", "S256"], &text);
            return (text, thp);
        }
    }
    panic!("tangd-keygen made no {alg} key in {}", dir.display())
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tang {
    /// Generates keys with the package's keygen, starts tangd behind socat and builds the
    /// request pool. Panics (pointing at install-deps.sh) when a package is missing.
    pub fn start() -> Self {
        let tangd = package_file("tang-common", "tangd")
            .or_else(|| package_file("tang", "tangd"))
            .unwrap_or_else(|| missing("tangd (package tang)"));
        let keygen = package_file("tang-common", "tangd-keygen")
            .or_else(|| package_file("tang", "tangd-keygen"))
            .unwrap_or_else(|| missing("tangd-keygen (package tang)"));
        for program in ["jose", "socat"] {
            if !have(program) {
                missing(program);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        // The keygen warns when it cannot chown to _tang (not root); the keys are fine.
        let ok = Command::new(&keygen)
            .arg(&keys)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "{} failed", keygen.display());
        let (_, sig_thp) = key_with_alg(&keys, "ES512");
        let (exc, kid) = key_with_alg(&keys, "ECMR");
        let crv = field(&json(&exc), "crv").to_owned();

        let pool = (0..POOL)
            .map(|_| {
                let gen = format!(r#"{{"alg":"ECMR","crv":"{crv}"}}"#);
                let clt = jose(&["jwk", "gen", "-i", &gen], "");
                let eph = jose(&["jwk", "gen", "-i", &gen], "");
                // clevis-decrypt-tang: xfr = clt + eph, sent as is.
                let xfr = jose(
                    &["jwk", "exc", "-i", r#"{"alg":"ECMR"}"#, "-l-", "-r-"],
                    &format!("{clt}{eph}"),
                );
                let want = json(&jose(
                    &["jwk", "exc", "-i", r#"{"alg":"ECMR"}"#, "-l-", "-r-"],
                    &format!("{exc}{xfr}"),
                ));
                (
                    xfr.into_bytes(),
                    field(&want, "x").to_owned(),
                    field(&want, "y").to_owned(),
                )
            })
            .collect();

        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(4096);
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("tangd.log")).unwrap();
        let child = Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog={somaxconn}"
            ))
            .arg(format!(
                "EXEC:{} {},nofork",
                tangd.display(),
                keys.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|_| missing("socat"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            kid,
            sig_thp,
            pool,
            _dir: dir,
        }
    }

    /// Every pool body once, checked; then, if clevis is installed, one real
    /// `clevis encrypt tang | clevis decrypt` round trip. Panics on any mismatch.
    pub fn check(&self) {
        for i in 0..self.pool.len() {
            if let Err(Failure::Answer(e) | Failure::Transport(e)) = self.recover(i) {
                panic!("Tang sanity check failed: {e}");
            }
        }
        if !have("clevis") {
            println!("storm bench: clevis not installed, Tang answers checked against jose only");
            return;
        }
        let cfg = format!(r#"{{"url":"{}","thp":"{}"}}"#, self.base, self.sig_thp);
        let out = Command::new("sh")
            .args([
                "-c",
                r#"echo storm-check | clevis encrypt tang "$1" | clevis decrypt"#,
                "sh",
                &cfg,
            ])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout == b"storm-check\n",
            "clevis encrypt/decrypt against the bench's Tang failed: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        println!("storm bench: clevis encrypt tang | clevis decrypt round trip OK");
    }

    /// One key recovery as `clevis decrypt` makes it: a fresh connection, one POST.
    pub fn recover(&self, i: usize) -> Result<(), Failure> {
        let (body, want_x, want_y) = &self.pool[i % self.pool.len()];
        let client: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let url = format!("{}/rec/{}", self.base, self.kid);
        let resp = client
            .post(&url)
            .content_type("application/jwk+json")
            .send(&body[..])
            .map_err(|e| Failure::Transport(format!("{url}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .read_to_vec()
            .map_err(|e| Failure::Transport(format!("{url}: {e}")))?;
        if status.is_server_error() {
            return Err(Failure::Transport(format!("{url}: {status}")));
        }
        let text = String::from_utf8_lossy(&bytes);
        if status != 200 {
            return Err(Failure::Answer(format!("{url}: {status}: {text}")));
        }
        let got: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Answer(format!("{url}: answer is not JSON ({e}): {text}")))?;
        if field(&got, "kty") != "EC" || field(&got, "x") != want_x || field(&got, "y") != want_y {
            return Err(Failure::Answer(format!(
                "{url}: wrong point in the answer: {text}"
            )));
        }
        Ok(())
    }

    /// CPU seconds of socat and every tangd it has reaped (cutime/cstime).
    pub fn cpu_secs(&self, ticks_per_sec: f64) -> f64 {
        let f = crate::harness::proc_stat(self.child.id());
        let sum: f64 = f[11..15].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        sum / ticks_per_sec
    }

    /// Waits until socat has reaped every tangd, so their CPU is in `cpu_secs`.
    pub fn wait_idle(&self) {
        let pid = self.child.id();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&path).is_ok_and(|c| !c.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
