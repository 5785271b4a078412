//! A throwaway PostgreSQL cluster for tests: `initdb` in a tempdir, `postgres` on a free
//! loopback port, trust authentication, killed when dropped or when the test process exits
//! (it runs under a small shell that stops it once our end of its stdin closes, so even a
//! `static` cluster that is never dropped does not outlive the test binary).
//!
//! Needs Debian's `postgresql` package (`scripts/install-deps.sh`). When it is missing the
//! tests fail loudly, unless `UNLOCK_SKIP_POSTGRES=1` says to skip the PostgreSQL half.
//! As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct PgCluster {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    fsync: bool,
}

/// Whether the PostgreSQL half of the tests is switched off.
pub fn skipped() -> bool {
    std::env::var("UNLOCK_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("UNLOCK_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("postgres").is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run \
             scripts/install-deps.sh (package postgresql), set UNLOCK_PG_BIN, or set \
             UNLOCK_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cmd` as the `postgres` user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// A fresh cluster; `None` only when `UNLOCK_SKIP_POSTGRES=1`.
    pub fn start() -> Option<Self> {
        Self::start_with(true)
    }

    /// A fresh cluster; with `fsync = false` commits are not durable (faster unit tests).
    pub fn start_with(fsync: bool) -> Option<Self> {
        if skipped() {
            eprintln!("UNLOCK_SKIP_POSTGRES=1: skipping the PostgreSQL half of this test");
            return None;
        }
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("unlock-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the PostgreSQL tempdir failed");
        }
        let out = as_pg_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = PgCluster {
            child: None,
            dir,
            bin,
            port: free_port(),
            fsync,
        };
        c.spawn();
        Some(c)
    }

    fn spawn(&mut self) {
        // The shell starts postgres, then waits for its stdin to close (our end is dropped
        // with the Child, or the whole test process exits) and stops it immediately.
        let script = format!(
            "'{pg}' -D '{data}' -p {port} -h 127.0.0.1 -k '{sock}' -c fsync={fsync} \
             -c synchronous_commit={fsync} -c max_connections=300 -c log_min_messages=fatal \
             -c shared_buffers=64MB & pid=$!; read _ignored; kill -QUIT $pid; wait $pid",
            pg = self.bin.join("postgres").display(),
            data = self.dir.path().join("data").display(),
            port = self.port,
            sock = self.dir.path().display(),
            fsync = if self.fsync { "on" } else { "off" },
        );
        let child = as_pg_user(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.url(), postgres::NoTls) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!("PostgreSQL did not come up on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A schema name no other test of this process uses.
    pub fn fresh_schema(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Immediate shutdown (as a crash: recovery from the WAL on the next start).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = c.wait();
        }
    }

    /// Kills and starts again on the same data and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain client (for checks straight in the database).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}
