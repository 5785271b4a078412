//! The servers under test: one or more `unlock-server` processes (the real binary, HTTPS on
//! loopback) on one fresh database, SQLite or PostgreSQL, as a fleet's replicas behind a
//! load balancer.
//!
//! Replicas share what a fleet's replicas must share (the role master keys, the admin token
//! and the TLS identity): the first replica creates them in its state directory and the
//! others start with copies, so the one certificate is accepted for every replica. SQLite
//! replicas point `--database sqlite://DIR` at one directory (two processes on the same
//! files, contending for SQLite's write lock); PostgreSQL replicas share one URL of a
//! throwaway cluster (`tests/support/pg.rs`) started for this configuration alone.
//!
//! Requests are spread like a load balancer that balances per request: each one goes to
//! the next replica in turn, so one boot's challenge and attest may hit different replicas.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verifier_core::proto::v1::Role;

use crate::harness::{cpu_secs, descendants_cpu_secs};
use crate::pg::PgCluster;

/// The files a replica shares with the first one (what `start_replica` in the tests copies).
const SHARED: [&str; 5] = [
    "verifier.key",
    "tenant.key",
    "admin.token",
    "tls.crt",
    "tls.key",
];

/// Where the replicas keep their data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One configuration of the storm.
#[derive(Clone, Copy)]
pub struct Setup {
    /// As in `UNLOCK_STORM_CONFIGS`: `sqlite1`, `pg2`, ...
    pub name: &'static str,
    pub backend: Backend,
    pub replicas: usize,
}

impl Setup {
    pub const ALL: [Setup; 4] = [
        Setup::new("sqlite1", Backend::Sqlite, 1),
        Setup::new("sqlite2", Backend::Sqlite, 2),
        Setup::new("pg1", Backend::Postgres, 1),
        Setup::new("pg2", Backend::Postgres, 2),
    ];

    const fn new(name: &'static str, backend: Backend, replicas: usize) -> Self {
        Self {
            name,
            backend,
            replicas,
        }
    }

    pub fn describe(&self) -> String {
        let db = match self.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        match self.replicas {
            1 => format!("one replica on {db}"),
            n => format!("{n} replicas on one {db} database"),
        }
    }
}

/// One `unlock-server` process, killed on drop.
struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replicas of one configuration and their database, stopped on drop (replicas first).
pub struct Fleet {
    replicas: Vec<Replica>,
    next: AtomicUsize,
    cert_der: Vec<u8>,
    pub token: String,
    /// After `replicas`: dropped once they are stopped.
    pg: Option<PgCluster>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts `setup`'s replicas on a fresh database; `None` when PostgreSQL is skipped
    /// explicitly (`UNLOCK_SKIP_POSTGRES=1`). Without PostgreSQL installed it panics,
    /// telling to run scripts/install-deps.sh.
    pub fn start(setup: Setup) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (pg, database) = match setup.backend {
            Backend::Sqlite => {
                let db = dir.path().join("db");
                std::fs::create_dir(&db).unwrap();
                (None, format!("sqlite://{}", db.display()))
            }
            Backend::Postgres => {
                let pg = PgCluster::start()?;
                let url = pg.url();
                (Some(pg), url)
            }
        };
        let config = dir.path().join("config.toml");
        // The load generator is one address standing for N machines: its connections and
        // bodies get the whole server, not one source's share (the per-source limits are for
        // strangers, and tested in tests/e2e_edge.rs).
        std::fs::write(
            &config,
            "[limits]\nmax_connections_per_source = 8192\nmax_body_bytes_per_source = 67108864\n",
        )
        .unwrap();
        let first_state = dir.path().join("r0/state");
        let mut replicas = Vec::with_capacity(setup.replicas);
        for i in 0..setup.replicas {
            let state = dir.path().join(format!("r{i}/state"));
            std::fs::create_dir_all(dir.path().join(format!("r{i}"))).unwrap();
            if i > 0 {
                std::fs::create_dir(&state).unwrap();
                for f in SHARED {
                    // `fs::copy` keeps the 0600 mode the server insists on.
                    std::fs::copy(first_state.join(f), state.join(f)).unwrap();
                }
            }
            replicas.push(Replica::spawn(
                &config,
                &state,
                &database,
                &dir.path().join(format!("r{i}/server.log")),
            ));
        }
        let cert_pem = std::fs::read(first_state.join("tls.crt")).unwrap();
        let cert_der = ureq::tls::Certificate::from_pem(&cert_pem)
            .unwrap()
            .der()
            .to_vec();
        let token = std::fs::read_to_string(first_state.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Some(Self {
            replicas,
            next: AtomicUsize::new(0),
            cert_der,
            token,
            pg,
            _dir: dir,
        })
    }

    /// A new client: its first request to each replica makes a fresh TLS handshake.
    pub fn client(&self) -> ureq::Agent {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[
                ureq::tls::Certificate::from_der(&self.cert_der).to_owned(),
            ]))
            .unversioned_rustls_crypto_provider(provider)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    }

    /// The URL of `p` for `role` on the next replica in turn.
    pub fn url(&self, role: Role, p: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
        format!("{}/{}{p}", self.replicas[i].base, role.as_str())
    }

    /// The URL of `p` for `role` on the first replica (enrollment).
    pub fn first_url(&self, role: Role, p: &str) -> String {
        format!("{}/{}{p}", self.replicas[0].base, role.as_str())
    }

    /// CPU seconds (user + system) of all replicas together.
    pub fn cpu_secs(&self, ticks_per_sec: f64) -> f64 {
        self.replicas
            .iter()
            .map(|r| cpu_secs(r.child.id(), ticks_per_sec))
            .sum()
    }

    /// CPU seconds of the PostgreSQL cluster (all its processes); `None` on SQLite, whose
    /// work is inside the replicas.
    pub fn db_cpu_secs(&self, ticks_per_sec: f64) -> Option<f64> {
        // Only this configuration's cluster runs below the bench process.
        self.pg
            .as_ref()
            .map(|_| descendants_cpu_secs("postgres", ticks_per_sec))
    }

    /// Each replica's peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Vec<f64> {
        self.replicas
            .iter()
            .map(|r| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", r.child.id())).unwrap();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    .map_or(0.0, |kib| kib / 1024.0)
            })
            .collect()
    }
}

impl Replica {
    fn spawn(config: &Path, state: &Path, database: &str, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_unlock-server"))
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--allow-ek-without-cert"])
            .arg("--state-dir")
            .arg(state)
            .args(["--database", database])
            .env("UNLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("starting unlock-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line from unlock-server: {line:?}; its log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_owned();
        Self {
            child,
            base: format!("https://localhost:{port}"),
        }
    }
}
