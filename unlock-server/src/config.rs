//! The server's one typed configuration: a TOML file overlaid by command-line flags, parsed
//! once in `main` and passed down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::purge::PurgeSettings;
use crate::store::DatabaseUrl;

/// Which roles this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoleSet {
    /// Verifier and tenant in one process (each with its own database and master key).
    All,
    /// Only the verifier role (holds V and the payload ciphertext).
    Verifier,
    /// Only the tenant role (holds U).
    Tenant,
    /// Only the provider role: host quotes for many requesters, quoted by a host agent
    /// that connects out to this server (no database, no master key; see docs/provider.md).
    Provider,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration file (`/etc/unlock-server/config.toml`). Every field is optional; flags
/// override the file and defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Roles served.
    pub role: Option<RoleSet>,
    /// Directory for databases, master keys and generated credentials.
    pub state_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// File holding the admin bearer token.
    pub admin_token_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for a generated self-signed TLS certificate.
    pub tls_san: Option<Vec<String>>,
    /// EK CA certificates (PEM or DER files, or directories of them).
    pub ek_ca: Option<Vec<PathBuf>>,
    /// OEM CA certificates that issue IAK certificates (PEM or DER files, or directories).
    pub iak_ca: Option<Vec<PathBuf>>,
    /// Untrusted vendor intermediate CA certificates, for path building only.
    pub ek_intermediates: Option<Vec<PathBuf>>,
    /// Program run to fetch the EK certificate of an agent that sends none.
    pub ek_cert_command: Option<PathBuf>,
    /// Seconds the EK certificate program may run.
    pub ek_cert_command_timeout_secs: Option<u64>,
    /// Accept agents whose EK has no certificate (trust on first enrollment).
    pub allow_ek_without_cert: Option<bool>,
    /// Seconds a challenge stays valid.
    pub challenge_ttl_secs: Option<u64>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Threads for blocking work (database, evidence checks, sealing).
    pub blocking_threads: Option<usize>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Provider role: how long the first nonce of a batch waits for others, in ms.
    pub provider_window_ms: Option<u64>,
    /// Provider role: most requesters answered by one host quote.
    pub provider_max_batch: Option<usize>,
    /// Provider role: most requesters waiting at once; more get 503.
    pub provider_max_pending: Option<usize>,
    /// Provider role: most requesters waiting at once from one source; more get 503.
    pub provider_max_pending_per_source: Option<usize>,
    /// Provider role: seconds a batch waits for the host agent's quote.
    pub provider_quote_timeout_secs: Option<u64>,
    /// Provider role: file holding the host agent's bearer token.
    pub host_token_file: Option<PathBuf>,
    /// Database URL: `sqlite://<dir>` (files `<dir>/<role>.db`) or `postgres://...` (schema
    /// `<role>` in that database, shared by replicas).
    pub database: Option<String>,
    /// What a stranger can make the server hold: connections, timeouts, body bytes,
    /// unauthenticated failures (`[limits]`; every field optional, see `net::Limits`).
    pub limits: Option<crate::net::Limits>,
    /// Seconds between purges of expired rows; 0 switches the purge off.
    pub purge_interval_secs: Option<u64>,
    /// Seconds the failed-attempt log is kept.
    pub attempt_retention_secs: Option<u64>,
    /// Attempts kept per agent (newest first; 0: no cap).
    pub attempts_per_agent: Option<u32>,
    /// Seconds an old boot session is kept after its last release.
    pub session_retention_secs: Option<u64>,
    /// Seconds a used challenge (an identical retry's answer) is kept after it expired.
    pub used_challenge_retention_secs: Option<u64>,
    /// Failure actions: a webhook told of refusals, lockouts, TERMINATED sessions and
    /// revocations (`[webhook]`, see `webhook::WebhookConfig`).
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// Auto-enrollment rules (`[[auto_enroll]]`, opt-in; none: every machine is enrolled by
    /// an operator). See [`AutoEnrollRule`] and README "Auto-enrollment".
    pub auto_enroll: Option<Vec<AutoEnrollRule>>,
    /// Most admissions (all rules) waiting for their machine's deposit at once.
    pub auto_enroll_max_waiting: Option<u32>,
    /// Seconds an admitted machine has to make its deposit.
    pub auto_enroll_deposit_secs: Option<u64>,
}

/// How an auto-enrollment rule recognises the machines it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoEnrollMode {
    /// The EK certificate chains to one of the rule's own CAs (`ca`) and matches the rule's
    /// optional TPM manufacturer and model.
    EkCa,
    /// Trust on first use: any EK, certificate or not. Anyone who can reach the server can
    /// enroll a TPM of their own (a software TPM too); named explicitly, never implied.
    Tofu,
}

impl AutoEnrollMode {
    /// The spelling in the config file and in `admitted_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EkCa => "ek_ca",
            Self::Tofu => "tofu",
        }
    }
}

/// One `[[auto_enroll]]` rule: which machines may enroll themselves, and with what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoEnrollRule {
    /// The rule's name (recorded with every machine it admits).
    pub name: String,
    /// How machines are recognised.
    pub mode: AutoEnrollMode,
    /// `ek_ca`: the CA certificates (PEM or DER files, or directories) EK certificates must
    /// chain to. Separate from `ek_ca`, which only checks enrolled machines' certificates.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// `ek_ca`: the EK certificate's TPMManufacturer must be this (e.g. `id:49465800`).
    pub tpm_manufacturer: Option<String>,
    /// `ek_ca`: the EK certificate's TPMModel must be this.
    pub tpm_model: Option<String>,
    /// The named policy (its latest version at the deposit) the machine is enrolled with.
    pub policy: String,
    /// Releases allowed per boot [default: 1].
    #[serde(default = "one")]
    pub max_attestations: u32,
    /// Boots allowed in the enrollment's lifetime [default: unbounded].
    pub max_boots: Option<u32>,
    /// Most machines this rule admits per hour [default: 60].
    #[serde(default = "sixty")]
    pub max_per_hour: u32,
}

fn one() -> u32 {
    1
}

fn sixty() -> u32 {
    60
}

/// Auto-enrollment: the rules and the bounds every role applies to them.
#[derive(Debug, Clone, Default)]
pub struct AutoEnroll {
    /// The rules, tried in order (the first that admits a machine wins).
    pub rules: Vec<AutoEnrollRule>,
    /// Most admissions waiting for a deposit at once.
    pub max_waiting: u32,
    /// Seconds an admission waits for its deposit.
    pub deposit_secs: u64,
}

impl AutoEnroll {
    fn check(&self) -> Result<(), ConfigError> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.is_empty()
                || r.name.len() > 64
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::Invalid(
                    "auto_enroll: name must be 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            if self.rules.iter().take(i).any(|o| o.name == r.name) {
                return Err(ConfigError::Invalid("auto_enroll: two rules have one name"));
            }
            match r.mode {
                AutoEnrollMode::EkCa if r.ca.is_empty() => {
                    return Err(ConfigError::Invalid(
                        "auto_enroll: an ek_ca rule needs its own `ca` files",
                    ))
                }
                AutoEnrollMode::Tofu
                    if !r.ca.is_empty() || r.tpm_manufacturer.is_some() || r.tpm_model.is_some() =>
                {
                    return Err(ConfigError::Invalid(
                        "auto_enroll: a tofu rule checks nothing: ca, tpm_manufacturer and tpm_model belong to ek_ca rules",
                    ))
                }
                _ => {}
            }
            if r.max_attestations == 0 || r.max_boots == Some(0) || r.max_per_hour == 0 {
                return Err(ConfigError::Invalid(
                    "auto_enroll: max_attestations, max_boots and max_per_hour must be at least 1",
                ));
            }
        }
        if self.max_waiting == 0 {
            return Err(ConfigError::Invalid(
                "auto_enroll_max_waiting must be at least 1",
            ));
        }
        if !(10..=86_400).contains(&self.deposit_secs) {
            return Err(ConfigError::Invalid(
                "auto_enroll_deposit_secs must be between 10 and 86400",
            ));
        }
        Ok(())
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Roles served.
    pub role: RoleSet,
    /// State directory.
    pub state_dir: PathBuf,
    /// TLS certificate and key; `None` with `insecure_http` only.
    pub tls: Option<TlsFiles>,
    /// Plain HTTP (tests only).
    pub insecure_http: bool,
    /// Admin token file.
    pub admin_token_file: PathBuf,
    /// EK CA certificate files or directories.
    pub ek_ca: Vec<PathBuf>,
    /// OEM CA certificate files or directories for IAK certificates (empty: the IAK
    /// registration path refuses every certificate).
    pub iak_ca: Vec<PathBuf>,
    /// Untrusted vendor intermediates (path building only).
    pub ek_intermediates: Vec<PathBuf>,
    /// The EK certificate fetcher hook, when configured.
    pub ek_cert_command: Option<crate::ek_cert_hook::EkCertHook>,
    /// TOFU mode for EKs without certificate.
    pub allow_ek_without_cert: bool,
    /// AMD roots for confidential VMs replacing the shipped ones: (ARK PEM, ASK PEM).
    pub amd_roots: Option<(PathBuf, PathBuf)>,
    /// TESTS ONLY (`--test-attester-key`): the test attester's X25519 public key, which
    /// enables the `test-challenge-round` evidence kind.
    pub test_attester_key: Option<[u8; 32]>,
    /// Challenge lifetime.
    pub challenge_ttl_secs: u64,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Size of the blocking pool.
    pub blocking_threads: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Where the roles' data lives.
    pub database: DatabaseUrl,
    /// Provider role settings.
    pub provider: ProviderOptions,
    /// Connection, body and failure limits (the connection cap is fitted to the descriptor
    /// limit at start).
    pub limits: crate::net::Limits,
    /// When expired rows are purged and what is kept.
    pub purge: PurgeSettings,
    /// The failure-action webhook, if configured.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// Auto-enrollment rules and bounds (no rules: off).
    pub auto_enroll: AutoEnroll,
}

/// The provider role's settings.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// How long the first nonce of a batch waits for others.
    pub window: std::time::Duration,
    /// Most requesters per host quote.
    pub max_batch: usize,
    /// Most requesters waiting at once.
    pub max_pending: usize,
    /// Most requesters waiting at once from one source (IPv4 address or IPv6 /64).
    pub max_pending_per_source: usize,
    /// Longest a batch waits for the host agent's quote.
    pub quote_timeout: std::time::Duration,
    /// File holding the host agent's bearer token (generated, mode 0600, if absent).
    pub host_token_file: PathBuf,
}

/// Where the TLS certificate and key live. When the files do not exist, the server creates a
/// self-signed pair there on first start and prints the certificate's SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Extra subject alternative names when generating a self-signed certificate.
    pub extra_names: Vec<String>,
}

/// Command-line flags of `unlock-server`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "unlock-server",
    version,
    about = "TPM-attested network disk unlock server (registrar, verifier and tenant roles)",
    long_about = "Releases disk-key halves to machines whose TPM quote and measured boot satisfy \
their enrolled policy, at most max_attestations times per boot. Each role keeps its own \
SQLite database and master key under --state-dir. Options override the config file."
)]
pub struct Flags {
    /// Configuration file (TOML). Missing is fine when it is the default path.
    #[arg(long, short = 'c', default_value = "/etc/unlock-server/config.toml")]
    pub config: PathBuf,
    /// Address to listen on [default: 0.0.0.0:8443].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Roles this process serves [default: all].
    #[arg(long, value_enum)]
    pub role: Option<RoleSet>,
    /// Directory for databases (<role>.db), master keys (<role>.key) and generated TLS and
    /// admin-token files [default: /var/lib/unlock-server].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// TLS certificate chain, PEM [default: <state-dir>/tls.crt, generated self-signed if absent].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [default: <state-dir>/tls.key, generated if absent].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS name or IP address for the generated self-signed certificate (repeatable;
    /// localhost, 127.0.0.1 and the host name are always included). Ignored when the
    /// certificate files exist.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP instead of HTTPS. For tests on loopback only: halves are still sealed
    /// to the agent's key, but admin tokens would cross the network in clear.
    #[arg(long)]
    pub insecure_http: bool,
    /// File holding the admin bearer token [default: <state-dir>/admin.token, generated with
    /// mode 0600 if absent].
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// EK CA certificate (PEM/DER file or directory); repeatable. Agents whose EK certificate
    /// does not chain to one of these are refused at registration.
    #[arg(long = "ek-ca")]
    pub ek_ca: Vec<PathBuf>,
    /// OEM CA certificate (PEM/DER file or directory) trusted to issue IAK certificates
    /// (TCG device identity); repeatable. Machines whose enrollment is bound to an IAK
    /// identity may then register with their IAK certificate instead of MakeCredential.
    #[arg(long = "iak-ca")]
    pub iak_ca: Vec<PathBuf>,
    /// Vendor intermediate CA certificates (PEM/DER file or directory); repeatable.
    /// Untrusted: used only to find a path from an EK certificate to an --ek-ca root, so a
    /// vendor's published store (roots and issuing CAs together) can be given here whole.
    #[arg(long = "ek-intermediates")]
    pub ek_intermediates: Vec<PathBuf>,
    /// Program run when an agent sends no EK certificate (cloud vTPMs that keep none in
    /// NV): it gets the agent id as its argument and the EK public area in the environment
    /// (UNLOCK_EK_PUB, base64 TPMT_PUBLIC; UNLOCK_AGENT_ID) and prints the EK certificate
    /// (PEM, optionally followed by its chain, or DER) on stdout. What it prints is verified
    /// like a certificate from the TPM.
    #[arg(long = "ek-cert-command")]
    pub ek_cert_command: Option<PathBuf>,
    /// Seconds --ek-cert-command may run before it is killed [default: 10].
    #[arg(long)]
    pub ek_cert_command_timeout_secs: Option<u64>,
    /// Accept EKs without a certificate (trust on first enrollment: the enrolled EK public key
    /// is then the only anchor).
    #[arg(long)]
    pub allow_ek_without_cert: bool,
    /// AMD root key (ARK) certificate (PEM) that SEV-SNP VCEKs must chain to, replacing the
    /// shipped Milan and Genoa roots (a product line this build does not ship, or tests);
    /// requires --amd-ask.
    #[arg(long, requires = "amd_ask")]
    pub amd_ark: Option<PathBuf>,
    /// The AMD signing key (ASK) certificate (PEM) under --amd-ark.
    #[arg(long, requires = "amd_ark")]
    pub amd_ask: Option<PathBuf>,
    /// TESTS ONLY: enables the evidence kind `test-challenge-round` (a TPM quote plus the
    /// answer to verifier-made challenge parameters sealed to this X25519 public key, 64 hex
    /// characters). Without it that kind is refused at enrollment and at every step. Never
    /// in production: it proves the challenge round, not a machine's confidentiality.
    #[arg(long, value_parser = parse_test_attester_key)]
    pub test_attester_key: Option<[u8; 32]>,
    /// Seconds a challenge (nonce) stays valid [default: 60].
    #[arg(long)]
    pub challenge_ttl_secs: Option<u64>,
    /// Largest accepted request body in bytes [default: 4194304].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Threads for blocking work: database calls, evidence checks, sealing [default: 32].
    /// More threads than the database can use only add lock contention; with PostgreSQL
    /// and many replicas, match it to the connection pool.
    #[arg(long, env = "UNLOCK_BLOCKING_THREADS")]
    pub blocking_threads: Option<usize>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Provider role: how long the first nonce of a batch waits for others, in
    /// milliseconds [default: 50].
    #[arg(long)]
    pub provider_window_ms: Option<u64>,
    /// Provider role: most requesters answered by one host quote [default: 1000].
    #[arg(long)]
    pub provider_max_batch: Option<usize>,
    /// Provider role: most requesters waiting at once; more get 503 [default: 20000].
    #[arg(long)]
    pub provider_max_pending: Option<usize>,
    /// Provider role: most requesters waiting at once from one IPv4 address or IPv6 /64, so
    /// that one cannot starve the others; more get 503 [default: provider_max_pending / 8].
    #[arg(long)]
    pub provider_max_pending_per_source: Option<usize>,
    /// Provider role: seconds a batch waits for the host agent's quote [default: 10].
    #[arg(long)]
    pub provider_quote_timeout_secs: Option<u64>,
    /// Provider role: file holding the bearer token of the host agent
    /// (`initrd-agent provider --server URL --token-file F`) [default:
    /// <state-dir>/host.token, generated with mode 0600 if absent].
    #[arg(long)]
    pub host_token_file: Option<PathBuf>,
    /// Database URL [default: sqlite://<state-dir>]. `sqlite://DIR` keeps one file per role
    /// (DIR/verifier.db, DIR/tenant.db); `postgres://USER@HOST/DB` puts each role in its own
    /// schema (verifier, tenant) of a database that several replicas share. For split trust,
    /// give each role process its own database and credentials.
    #[arg(long, env = "UNLOCK_DATABASE")]
    pub database: Option<String>,
    /// Most connections open at once [default: 8192, lowered to the descriptor limit
    /// (LimitNOFILE) minus limits.reserved_descriptors]. More are closed at accept.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one IPv4 address or IPv6 /64 [default: 512].
    #[arg(long)]
    pub max_connections_per_source: Option<usize>,
    /// Seconds a kept-alive connection may wait for its next request head (and the first
    /// head, at most limits.header_timeout_secs) [default: 30].
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds between purges of expired registrations and challenges, aged attempts and
    /// old boot sessions; the first runs shortly after start. 0 switches the purge off
    /// [default: 300].
    #[arg(long)]
    pub purge_interval_secs: Option<u64>,
    /// Seconds the failed-attempt log is kept (the rate-limit window is always kept)
    /// [default: 604800, 7 days].
    #[arg(long)]
    pub attempt_retention_secs: Option<u64>,
    /// Attempts kept per agent, newest first, beyond the rate-limit window; 0: no cap
    /// [default: 1000].
    #[arg(long)]
    pub attempts_per_agent: Option<u32>,
    /// Seconds a boot session that is not its agent's latest is kept after its last release
    /// (the latest is always kept) [default: 2592000, 30 days].
    #[arg(long)]
    pub session_retention_secs: Option<u64>,
    /// Seconds a used challenge, whose stored answer an identical retry gets again, is kept
    /// after it expired; later retries are refused as unknown [default: 3600].
    #[arg(long)]
    pub used_challenge_retention_secs: Option<u64>,
}

/// A configuration problem a person can fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names line and field).
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message (with line, column and field).
        message: String,
    },
    /// Invalid combination.
    #[error("{0}")]
    Invalid(&'static str),
    /// The database URL is not one this server can use.
    #[error("database: {0}")]
    Database(#[from] crate::store::StoreError),
}

const DEFAULT_CONFIG: &str = "/etc/unlock-server/config.toml";

impl Config {
    /// Resolves flags over the config file over defaults.
    pub fn load(flags: Flags) -> Result<Self, ConfigError> {
        let file = read_file(&flags.config)?;
        let state_dir = flags
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/unlock-server"));
        let insecure_http = flags.insecure_http;
        let tls = if insecure_http {
            None
        } else {
            Some(TlsFiles {
                cert: flags
                    .tls_cert
                    .or(file.tls_cert)
                    .unwrap_or_else(|| state_dir.join("tls.crt")),
                key: flags
                    .tls_key
                    .or(file.tls_key)
                    .unwrap_or_else(|| state_dir.join("tls.key")),
                extra_names: if flags.tls_san.is_empty() {
                    file.tls_san.unwrap_or_default()
                } else {
                    flags.tls_san
                },
            })
        };
        let mut ek_ca = file.ek_ca.unwrap_or_default();
        ek_ca.extend(flags.ek_ca);
        let mut iak_ca = file.iak_ca.unwrap_or_default();
        iak_ca.extend(flags.iak_ca);
        let mut ek_intermediates = file.ek_intermediates.unwrap_or_default();
        ek_intermediates.extend(flags.ek_intermediates);
        let ek_cert_timeout = flags
            .ek_cert_command_timeout_secs
            .or(file.ek_cert_command_timeout_secs)
            .unwrap_or(10);
        if !(1..=300).contains(&ek_cert_timeout) {
            return Err(ConfigError::Invalid(
                "ek_cert_command_timeout_secs must be 1-300",
            ));
        }
        let ek_cert_command = flags
            .ek_cert_command
            .or(file.ek_cert_command)
            .map(|program| crate::ek_cert_hook::EkCertHook {
                program,
                timeout: std::time::Duration::from_secs(ek_cert_timeout),
            });
        let allow_ek_without_cert =
            flags.allow_ek_without_cert || file.allow_ek_without_cert.unwrap_or(false);
        let challenge_ttl_secs = flags
            .challenge_ttl_secs
            .or(file.challenge_ttl_secs)
            .unwrap_or(60);
        if challenge_ttl_secs == 0 || challenge_ttl_secs > 3600 {
            return Err(ConfigError::Invalid(
                "challenge_ttl_secs must be between 1 and 3600",
            ));
        }
        let max_body_bytes = flags
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(4 << 20);
        if max_body_bytes < 4096 {
            return Err(ConfigError::Invalid("max_body_bytes must be at least 4096"));
        }
        let blocking_threads = flags
            .blocking_threads
            .or(file.blocking_threads)
            .unwrap_or(32);
        if !(1..=1024).contains(&blocking_threads) {
            return Err(ConfigError::Invalid(
                "blocking_threads must be between 1 and 1024",
            ));
        }
        let database = match flags.database.or(file.database) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::Sqlite(state_dir.clone()),
        };
        let max_pending = flags
            .provider_max_pending
            .or(file.provider_max_pending)
            .unwrap_or(20_000);
        let provider = ProviderOptions {
            max_pending_per_source: flags
                .provider_max_pending_per_source
                .or(file.provider_max_pending_per_source)
                .unwrap_or((max_pending / 8).max(1)),
            window: std::time::Duration::from_millis(
                flags
                    .provider_window_ms
                    .or(file.provider_window_ms)
                    .unwrap_or(50),
            ),
            max_batch: flags
                .provider_max_batch
                .or(file.provider_max_batch)
                .unwrap_or(1000),
            max_pending,
            quote_timeout: std::time::Duration::from_secs(
                flags
                    .provider_quote_timeout_secs
                    .or(file.provider_quote_timeout_secs)
                    .unwrap_or(10),
            ),
            host_token_file: flags
                .host_token_file
                .or(file.host_token_file)
                .unwrap_or_else(|| state_dir.join("host.token")),
        };
        if provider.window > std::time::Duration::from_secs(10) {
            return Err(ConfigError::Invalid(
                "provider_window_ms must be at most 10000",
            ));
        }
        if provider.max_batch == 0 || provider.max_batch > verifier_core::merkle::MAX_LEAVES {
            return Err(ConfigError::Invalid(
                "provider_max_batch must be between 1 and 65536",
            ));
        }
        if provider.max_pending_per_source == 0 {
            return Err(ConfigError::Invalid(
                "provider_max_pending_per_source must be at least 1",
            ));
        }
        if provider.quote_timeout.is_zero() || provider.quote_timeout.as_secs() > 600 {
            return Err(ConfigError::Invalid(
                "provider_quote_timeout_secs must be between 1 and 600",
            ));
        }
        let mut limits = file.limits.unwrap_or_default();
        if let Some(n) = flags.max_connections {
            limits.max_connections = n;
        }
        if let Some(n) = flags.max_connections_per_source {
            limits.max_connections_per_source = n;
        }
        if let Some(n) = flags.idle_timeout_secs {
            limits.idle_timeout_secs = n;
        }
        limits.validate().map_err(ConfigError::Invalid)?;
        limits
            .validate_for_body(max_body_bytes)
            .map_err(ConfigError::Invalid)?;
        let defaults = PurgeSettings::default();
        let secs = |flag: Option<u64>, file: Option<u64>, default: std::time::Duration| {
            flag.or(file)
                .map_or(default, std::time::Duration::from_secs)
        };
        let purge = PurgeSettings {
            interval: secs(
                flags.purge_interval_secs,
                file.purge_interval_secs,
                defaults.interval,
            ),
            attempt_retention: secs(
                flags.attempt_retention_secs,
                file.attempt_retention_secs,
                defaults.attempt_retention,
            ),
            attempts_per_agent: flags
                .attempts_per_agent
                .or(file.attempts_per_agent)
                .unwrap_or(defaults.attempts_per_agent),
            session_retention: secs(
                flags.session_retention_secs,
                file.session_retention_secs,
                defaults.session_retention,
            ),
            used_challenge_retention: secs(
                flags.used_challenge_retention_secs,
                file.used_challenge_retention_secs,
                defaults.used_challenge_retention,
            ),
            ..defaults
        };
        if purge.interval.as_secs() > 86_400 {
            return Err(ConfigError::Invalid(
                "purge_interval_secs must be at most 86400 (0 switches the purge off)",
            ));
        }
        if let Some(w) = &file.webhook {
            w.validate().map_err(ConfigError::Invalid)?;
        }
        let auto_enroll = AutoEnroll {
            rules: file.auto_enroll.clone().unwrap_or_default(),
            max_waiting: file.auto_enroll_max_waiting.unwrap_or(64),
            deposit_secs: file.auto_enroll_deposit_secs.unwrap_or(600),
        };
        auto_enroll.check()?;
        Ok(Self {
            auto_enroll,
            webhook: file.webhook.clone(),
            limits,
            purge,
            provider,
            database,
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            role: flags.role.or(file.role).unwrap_or(RoleSet::All),
            admin_token_file: flags
                .admin_token_file
                .or(file.admin_token_file)
                .unwrap_or_else(|| state_dir.join("admin.token")),
            state_dir,
            tls,
            insecure_http,
            ek_ca,
            iak_ca,
            ek_intermediates,
            ek_cert_command,
            allow_ek_without_cert,
            amd_roots: flags.amd_ark.zip(flags.amd_ask),
            test_attester_key: flags.test_attester_key,
            challenge_ttl_secs,
            max_body_bytes,
            blocking_threads,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// `--test-attester-key`: 32 bytes in hex.
fn parse_test_attester_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes, expected 32 (an X25519 public key)", bytes.len()))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_CONFIG) => {
            return Ok(FileConfig::default())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn load(toml: &str, args: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv = vec!["unlock-server", "-c", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        Config::load(Flags::try_parse_from(argv).unwrap())
    }

    #[test]
    fn purge_settings_from_defaults_file_and_flags() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.purge, PurgeSettings::default());
        let c = load(
            "purge_interval_secs = 60\nattempt_retention_secs = 86400\nattempts_per_agent = 50\n\
             session_retention_secs = 3600\nused_challenge_retention_secs = 7200\n",
            &["--attempts-per-agent", "7", "--purge-interval-secs", "0"],
        )
        .unwrap();
        assert_eq!(c.purge.interval, std::time::Duration::ZERO, "the flag wins");
        assert_eq!(c.purge.attempts_per_agent, 7);
        assert_eq!(c.purge.attempt_retention.as_secs(), 86_400);
        assert_eq!(c.purge.session_retention.as_secs(), 3600);
        assert_eq!(c.purge.used_challenge_retention.as_secs(), 7200);
        assert!(matches!(
            load("purge_interval_secs = 100000\n", &[]),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn ek_store_and_hook_settings() {
        let c = load("", &[]).unwrap();
        assert!(c.ek_intermediates.is_empty() && c.ek_cert_command.is_none());
        let c = load(
            "ek_intermediates = [\"/etc/a\"]\nek_cert_command = \"/usr/bin/fetch\"\n\
             ek_cert_command_timeout_secs = 3\n",
            &["--ek-intermediates", "/etc/b"],
        )
        .unwrap();
        assert_eq!(
            c.ek_intermediates,
            [PathBuf::from("/etc/a"), PathBuf::from("/etc/b")]
        );
        let hook = c.ek_cert_command.unwrap();
        assert_eq!(hook.program, PathBuf::from("/usr/bin/fetch"));
        assert_eq!(hook.timeout.as_secs(), 3);
        assert!(matches!(
            load("ek_cert_command_timeout_secs = 0\n", &[]),
            Err(ConfigError::Invalid(_))
        ));
    }
}
