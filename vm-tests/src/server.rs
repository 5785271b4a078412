//! The real `unlock-server` (both roles, HTTPS with the cached TLS identity) on
//! 127.0.0.1, and `unlockctl` against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::artifacts::Artifacts;

/// A running server with its own state directory; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
    art: &'static Artifacts,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The port (the guest's relay connects to it).
    pub port: u16,
}

impl Server {
    /// Starts a server that accepts EK certificates issued by `ek_ca`.
    pub fn start(art: &'static Artifacts, ek_ca: &Path) -> Server {
        Self::start_with_config(art, ek_ca, "")
    }

    /// Starts a server with `config` as its config file (e.g. `[[auto_enroll]]` rules).
    pub fn start_with_config(art: &'static Artifacts, ek_ca: &Path, config: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("server-")
            .tempdir_in(&art.env.cache)
            .unwrap();
        // Our own config file: the host's /etc/unlock-server must not leak into the tests.
        std::fs::write(dir.path().join("none.toml"), config).unwrap();
        let mut child = Command::new(&art.server)
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&art.tls_cert)
            .arg("--tls-key")
            .arg(&art.tls_key)
            .arg("--ek-ca")
            .arg(ek_ca)
            .env("UNLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn unlock-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("unlock-server did not print its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https URL in {line:?}"))
            .to_owned();
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        Server {
            child,
            dir,
            art,
            url,
            port,
        }
    }

    /// The server's log (stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs `unlockctl args...` against this server.
    pub fn unlockctl(&self, args: &[&str]) -> Output {
        Command::new(&self.art.unlockctl)
            .args(args)
            .env("UNLOCK_SERVER", &self.url)
            .env("UNLOCK_CA", &self.art.tls_cert)
            .env(
                "UNLOCK_TOKEN_FILE",
                self.dir.path().join("state/admin.token"),
            )
            .output()
            .unwrap()
    }

    /// Enrolls a TPM's EK with `policy` (JSON) and the root disk's passphrase as payload.
    pub fn enroll(&self, ek_pub: &Path, policy: &str, extra: &[&str]) {
        let pol = self.dir.path().join(format!(
            "policy-{}.json",
            crate::artifacts::hash_parts(&[policy.as_bytes()])
        ));
        std::fs::write(&pol, policy).unwrap();
        let mut args = vec![
            "enroll".to_owned(),
            "--ek-pub".into(),
            ek_pub.display().to_string(),
            "--payload".into(),
            self.art.root.passphrase.display().to_string(),
            "--policy".into(),
            pol.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.unlockctl(&refs);
        assert!(
            out.status.success(),
            "unlockctl enroll failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stores `policy` as the named policy `name` (v1) on both roles.
    pub fn create_policy(&self, name: &str, policy: &str) {
        let pol = self.dir.path().join(format!("named-{name}.json"));
        std::fs::write(&pol, policy).unwrap();
        let out = self.unlockctl(&["policy", "create", name, "--file", pol.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "unlockctl policy create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stores `policy` as the named policy `name` (v1) and enrolls a TPM's EK with it.
    pub fn enroll_named(&self, ek_pub: &Path, name: &str, policy: &str, extra: &[&str]) {
        self.create_policy(name, policy);
        let mut args = vec![
            "enroll".to_owned(),
            "--ek-pub".into(),
            ek_pub.display().to_string(),
            "--payload".into(),
            self.art.root.passphrase.display().to_string(),
            "--policy-name".into(),
            name.to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.unlockctl(&refs);
        assert!(
            out.status.success(),
            "unlockctl enroll failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The agent configuration lines that reach this server from the host (both roles).
    pub fn agent_config(&self) -> String {
        format!(
            "verifier_url = \"{u}/verifier\"\ntenant_url = \"{u}/tenant\"\nca_bundle = \"{}\"\n",
            self.art.tls_cert.display(),
            u = self.url
        )
    }

    /// `unlockctl status <agent_id> --json`: both roles' view of the agent.
    pub fn status(&self, agent_id: &str) -> serde_json::Value {
        let out = self.unlockctl(&["status", agent_id, "--json"]);
        assert!(
            out.status.success(),
            "unlockctl status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One boot session as a role recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The TPM's resetCount in that boot.
    pub reset_count: u64,
    /// Releases in that session.
    pub releases: u64,
    /// `ACTIVE` / `TERMINATED` as the server spells it.
    pub state: String,
}

/// The sessions `role` (`verifier` or `tenant`) recorded in a status document.
pub fn sessions(status: &serde_json::Value, role: &str) -> Vec<Session> {
    status[role]["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no {role}.sessions in {status}"))
        .iter()
        .map(|s| Session {
            reset_count: s["reset_count"].as_u64().unwrap(),
            releases: s["releases"].as_u64().unwrap(),
            state: s["state"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// The refusal reasons `role` recorded (attempts that released nothing).
pub fn refusals(status: &serde_json::Value, role: &str) -> Vec<String> {
    status[role]["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["released"].as_bool() == Some(false))
                .map(|x| x["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
