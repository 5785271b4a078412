//! Provider mode (`initrd-agent provider`): the host side of VMs whose vTPM cannot quote the
//! host's TPM. Runs on the host, keeps running, and answers `POST /v1/provider/quote` from
//! many requesters (tenant verifiers of guests) with ONE host quote per short window, each
//! requester getting its own inclusion proof. See `docs/provider.md`.
//!
//! The batching engine (window, batch size, one quote, fan-out; no I/O) is
//! [`verifier_core::provider::batch`], shared with `unlock-server --role provider`.
//! Submodules: `tpm` (the host TPM as the engine's quoter), [`http`] (the HTTP/1.1 server
//! of listen mode) and [`connect`] (connect mode: the host TPM serving a provider server).

pub mod connect;
pub mod http;
mod tpm;

pub use verifier_core::provider::batch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use verifier_core::wire::{BankSelection, HashAlg, PcrSelection, Public};

pub use batch::{
    Answer, BatchConfig, BatchError, BatchQuote, Batcher, HostIdentity, HostQuote, HostQuoter,
    Stats,
};
pub use http::Service;
pub use tpm::TpmQuoter;

use crate::tpm::{EkKind, TpmError};

/// Everything the provider runs with (from the command line and the agent's local config).
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Batching.
    pub batch: BatchConfig,
    /// Most open connections.
    pub max_connections: usize,
    /// TCTI of the host TPM.
    pub tcti: String,
    /// EK template the AK is created under.
    pub ek: EkKind,
    /// PCRs every host quote covers.
    pub selection: PcrSelection,
    /// The host's UEFI event log, sent with every answer when the file exists.
    pub event_log: Option<PathBuf>,
}

/// The provider could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The host TPM failed at startup.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The event log could not be read.
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The AK the TPM made does not parse (a bug or a broken TPM).
    #[error("the host AK does not parse: {0}")]
    Ak(verifier_core::ParseError),
    /// The agent's local configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `--pcrs` is not a list of PCR indexes.
    #[error("--pcrs: {0}")]
    Pcrs(&'static str),
    /// The host token file could not be read.
    #[error("cannot read the host token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The CA bundle for the provider server is unusable.
    #[error(transparent)]
    Tls(crate::http::TlsSetupError),
    /// The provider server refused the host token.
    #[error("the provider server refused the host token in {0} (401): check --token-file")]
    Unauthorized(PathBuf),
    /// Connect mode needs a token file.
    #[error("--server needs --token-file (the server's host.token)")]
    NoToken,
}

/// A running provider.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The service (engine counters through [`Service::batcher`]).
    pub service: Arc<Service>,
}

/// Parses `sha256:0-7,14` style selections (one bank, indexes and ranges).
pub fn parse_selection(text: &str) -> Result<PcrSelection, ProviderError> {
    let (bank, list) = text.split_once(':').unwrap_or(("sha256", text));
    let alg = HashAlg::from_name(bank).ok_or(ProviderError::Pcrs("unknown bank"))?;
    let mut indexes = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u8 = lo
            .trim()
            .parse()
            .map_err(|_| ProviderError::Pcrs("bad index"))?;
        let hi: u8 = hi
            .trim()
            .parse()
            .map_err(|_| ProviderError::Pcrs("bad index"))?;
        if lo > hi {
            return Err(ProviderError::Pcrs("range runs backwards"));
        }
        indexes.extend(lo..=hi);
    }
    indexes.sort_unstable();
    indexes.dedup();
    let bank =
        BankSelection::new(alg, &indexes).ok_or(ProviderError::Pcrs("index must be 0-23"))?;
    PcrSelection::new(vec![bank]).ok_or(ProviderError::Pcrs("empty selection"))
}

/// The default window: short against a hardware quote (200-700 ms), long against the
/// arrival spread of a burst of requesters.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);

/// Starts the engine on the host TPM and the HTTP server; returns once both run.
pub fn start(config: &ProviderConfig) -> Result<Running, ProviderError> {
    let event_log = match &config.event_log {
        Some(p) => crate::logs::read_event_log(p)?,
        None => None,
    };
    let (tcti, ek, selection) = (config.tcti.clone(), config.ek, config.selection.clone());
    let batcher = Batcher::spawn(config.batch, move || TpmQuoter::open(&tcti, ek, selection))?;
    let ak_name = Public::parse(batcher.ak_public())
        .map_err(ProviderError::Ak)?
        .name();
    let service = Arc::new(Service::new(
        batcher,
        &ak_name,
        event_log,
        config.max_connections,
    ));
    let addr = service
        .spawn(config.listen)
        .map_err(|source| ProviderError::Listen {
            addr: config.listen,
            source,
        })?;
    Ok(Running { addr, service })
}

/// `initrd-agent provider` arguments.
#[derive(Debug, Clone)]
pub struct ProviderArgs {
    /// Connect mode: instead of listening, connect out to `unlock-server --role provider`
    /// at this URL and quote the batches it collects (see docs/provider.md).
    pub server: Option<String>,
    /// Connect mode: file holding the host bearer token (the server's host.token).
    pub token_file: Option<PathBuf>,
    /// Connect mode: CA bundle (PEM) to trust for an https server.
    pub ca: Option<PathBuf>,
    /// Address to listen on (plain HTTP; see docs/provider.md). Ignored with --server.
    pub listen: SocketAddr,
    /// How long the first nonce of a batch waits for others, in milliseconds.
    pub window_ms: u64,
    /// Most requesters answered by one quote (1 turns batching off).
    pub max_batch: u32,
    /// Most requests waiting for a quote; more get 503.
    pub max_pending: u32,
    /// Most open connections; more get 503.
    pub max_connections: u32,
    /// PCRs every host quote covers, `bank:indexes` (e.g. sha256:0-7,14).
    pub pcrs: String,
    /// Do not send the host's event log with the answers.
    pub no_event_log: bool,
}

impl Default for ProviderArgs {
    /// The defaults `initrd-agent provider --help` names.
    fn default() -> Self {
        Self {
            server: None,
            token_file: None,
            ca: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8450)),
            window_ms: 50,
            max_batch: 1000,
            max_pending: 20_000,
            max_connections: 4096,
            pcrs: "sha256:0-7".to_owned(),
            no_event_log: false,
        }
    }
}

/// Runs `initrd-agent provider` until killed. The first stdout line names the URL and the
/// AK name (tests and operators read it).
pub fn run_cli(
    args: &ProviderArgs,
    local: &crate::config::LocalConfig,
) -> Result<std::convert::Infallible, ProviderError> {
    if let Some(server) = &args.server {
        return run_connect(args, server, local);
    }
    let config = ProviderConfig {
        listen: args.listen,
        batch: BatchConfig {
            window: Duration::from_millis(args.window_ms),
            max_batch: usize::try_from(args.max_batch).unwrap_or(MAX_BATCH),
            max_pending: usize::try_from(args.max_pending).unwrap_or(usize::MAX),
        },
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        tcti: local.tcti.clone(),
        ek: local.ek,
        selection: parse_selection(&args.pcrs)?,
        event_log: (!args.no_event_log).then(|| local.event_log.clone()),
    };
    let running = start(&config)?;
    let name = Public::parse(running.service.batcher().ak_public())
        .map(|p| {
            p.name()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    println!(
        "initrd-agent: provider listening on http://{} (AK name {name})",
        running.addr
    );
    loop {
        std::thread::park();
    }
}

/// Connect mode: the TPM and the loop live on this thread (the context is not `Send`).
fn run_connect(
    args: &ProviderArgs,
    server: &str,
    local: &crate::config::LocalConfig,
) -> Result<std::convert::Infallible, ProviderError> {
    let token_file = args.token_file.clone().ok_or(ProviderError::NoToken)?;
    let selection = parse_selection(&args.pcrs)?;
    let event_log = if args.no_event_log {
        None
    } else {
        crate::logs::read_event_log(&local.event_log)?
    };
    let mut quoter = TpmQuoter::open(&local.tcti, local.ek, selection)?;
    let name = Public::parse(&quoter.ak_public())
        .map_err(ProviderError::Ak)?
        .name();
    let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
    let config = connect::ConnectConfig {
        server: server.to_owned(),
        token_file,
        ca: args.ca.clone(),
    };
    connect::run(&config, &mut quoter, event_log, &name)
}

const MAX_BATCH: usize = verifier_core::merkle::MAX_LEAVES;
