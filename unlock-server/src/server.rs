//! Startup: state directory, per-role stores and master keys, EK trust store, admin token,
//! TLS; then the accept loop until SIGTERM/SIGINT, finishing in-flight requests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use verifier_core::ekcert::TrustStore;
use verifier_core::keysplit::{MasterKey, NkPublic};
use verifier_core::proto::v1::Role;
use verifier_core::provider::batch::BatchConfig;
use zeroize::Zeroizing;

use crate::config::{Config, RoleSet};
use crate::http::{provider_router, router, AdminToken};
use crate::net::{accept, open_files_limit, Edge, Limits};
use crate::role::provider::{ProviderService, ProviderSettings};
use crate::role::tee::TeeTrust;
use crate::role::{RoleService, RoleSettings};
use crate::secrets::load_or_create_hex;
use crate::store::{DatabaseUrl, Store};
use verifier_core::attester::amd::AmdRoots;

/// Builds the roles this process serves, creating state on first start.
pub fn build_roles(config: &Config) -> anyhow::Result<Vec<Arc<RoleService>>> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", config.state_dir.display()))?;
    let trust = Arc::new(load_ek_store(&config.ek_ca, &config.ek_intermediates)?);
    let admission = Arc::new(crate::role::admission::Admission::load(
        &config.auto_enroll,
        load_trust,
    )?);
    if trust.is_empty() && !config.allow_ek_without_cert && admission.is_off() {
        tracing::warn!("no EK CA configured (--ek-ca) and EKs without certificates are not allowed: every registration will be refused");
    }
    if trust.is_empty() && (trust.intermediates_len() > 0 || config.ek_cert_command.is_some()) {
        tracing::warn!("--ek-intermediates and --ek-cert-command are unused without an EK CA (--ek-ca): intermediates and fetched certificates can only lead to a trusted root");
    }
    let iak_trust = Arc::new(load_trust(&config.iak_ca)?);
    let settings = RoleSettings {
        ek_trust: trust,
        iak_trust,
        allow_ek_without_cert: config.allow_ek_without_cert,
        ek_cert_hook: config.ek_cert_command.clone().map(Arc::new),
        challenge_ttl_secs: config.challenge_ttl_secs,
        registration_ttl_secs: 120,
    };
    let roles: &[Role] = match config.role {
        RoleSet::All => &[Role::Verifier, Role::Tenant],
        RoleSet::Verifier => &[Role::Verifier],
        RoleSet::Tenant => &[Role::Tenant],
        // No database and no master key: it stores nothing (see `provider_service`).
        RoleSet::Provider => &[],
    };
    let amd_roots = load_amd_roots(config.amd_roots.as_ref())?;
    let mut out = Vec::new();
    for &role in roles {
        let name = role.as_str();
        let store = Store::open_url(&config.database, name)
            .with_context(|| format!("opening the {name} role's database {:?}", config.database))?;
        if let DatabaseUrl::Sqlite(dir) = &config.database {
            // The state directory is 0700 already; the files say so too.
            for suffix in ["", "-wal", "-shm"] {
                let f = dir.join(format!("{name}.db{suffix}"));
                if f.exists() {
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("setting mode 0600 on {}", f.display()))?;
                }
            }
        }
        let key_path = config.state_dir.join(format!("{name}.key"));
        let (key, created) = load_or_create_hex(&key_path, 32)?;
        if created {
            tracing::warn!(path = %key_path.display(), "created the {name} role's master key; back it up: without it the stored halves are lost");
        }
        let master = MasterKey::from_slice(&key).context("master key")?;
        let mut service = RoleService::new(role, store, master, settings.clone())
            .with_admission(admission.clone());
        if let Some(key) = &config.test_attester_key {
            tracing::warn!(role = name, "TEST ONLY: evidence kind test-challenge-round enabled (--test-attester-key); never in production");
            service = service.with_test_round(NkPublic::from_bytes(*key));
        }
        if let Some(roots) = &amd_roots {
            service = service.with_tee_trust(TeeTrust::with_roots(roots.clone()));
        }
        out.push(Arc::new(service));
    }
    Ok(out)
}

/// The operator's AMD roots (`--amd-ark`, `--amd-ask`), checked now so that a bad file
/// stops the start rather than every confidential VM's unlock.
fn load_amd_roots(
    files: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> anyhow::Result<Option<AmdRoots>> {
    let Some((ark, ask)) = files else {
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).with_context(|| format!("reading AMD certificate {}", p.display()))
    };
    let (ark_pem, ask_pem) = (read(ark)?, read(ask)?);
    let roots = AmdRoots::from_pems(&[("operator", &ark_pem, &ask_pem)])
        .context("--amd-ark/--amd-ask: not PEM certificates")?;
    tracing::warn!(ark = %ark.display(), "confidential VMs: VCEKs must chain to the configured AMD root, not the shipped ones");
    Ok(Some(roots))
}

/// Loads CA certificates to trust (auto-enrollment rules' CAs, `--iak-ca`) from files or
/// directories (PEM bundles or DER).
pub fn load_trust(paths: &[std::path::PathBuf]) -> anyhow::Result<TrustStore> {
    load_ek_store(paths, &[])
}

/// Loads the EK trust anchors (`--ek-ca`) and the untrusted vendor intermediates
/// (`--ek-intermediates`, used only to build paths), each from files or directories of PEM
/// bundles or DER files (a vendor's certificate store as published: roots and issuing CAs
/// side by side go to `--ek-intermediates` and only the roots to `--ek-ca`).
pub fn load_ek_store(
    anchors: &[std::path::PathBuf],
    intermediates: &[std::path::PathBuf],
) -> anyhow::Result<TrustStore> {
    let mut trust = TrustStore::new();
    for (paths, what) in [
        (anchors, CertRole::Anchor),
        (intermediates, CertRole::Intermediate),
    ] {
        for p in paths {
            for f in cert_files(p, what)? {
                add_cert_file(&mut trust, &f, what)?;
            }
        }
    }
    Ok(trust)
}

#[derive(Debug, Clone, Copy)]
enum CertRole {
    Anchor,
    Intermediate,
}

impl CertRole {
    fn name(self) -> &'static str {
        match self {
            Self::Anchor => "EK CA",
            Self::Intermediate => "EK intermediate",
        }
    }
}

fn cert_files(p: &Path, what: CertRole) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if !p.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut v: Vec<_> = std::fs::read_dir(p)
        .with_context(|| format!("reading {} directory {}", what.name(), p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file())
        .collect();
    v.sort();
    Ok(v)
}

fn add_cert_file(trust: &mut TrustStore, f: &Path, what: CertRole) -> anyhow::Result<()> {
    let name = what.name();
    let bytes = std::fs::read(f).with_context(|| format!("reading {name} {}", f.display()))?;
    let pem = bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ");
    let n = match (pem, what) {
        (true, CertRole::Anchor) => trust.add_pem(&bytes),
        (true, CertRole::Intermediate) => trust.add_intermediate_pem(&bytes),
        (false, CertRole::Anchor) => trust.add_der(&bytes).map(|()| 1),
        (false, CertRole::Intermediate) => trust.add_intermediate_der(&bytes).map(|()| 1),
    }
    .with_context(|| format!("{name} {}", f.display()))?;
    tracing::info!(file = %f.display(), certificates = n, "{name} loaded");
    Ok(())
}

/// The provider role: the batching engine and the host agent's token (created on first
/// start like the admin token).
fn provider_service(config: &Config) -> anyhow::Result<(Arc<ProviderService>, AdminToken)> {
    let o = &config.provider;
    let (token, created) = load_or_create_hex(&o.host_token_file, 32)?;
    if created {
        tracing::warn!(path = %o.host_token_file.display(), "created the host agent token (give it to initrd-agent provider with --token-file)");
    }
    let settings = ProviderSettings {
        batch: BatchConfig {
            window: o.window,
            max_batch: o.max_batch,
            max_pending: o.max_pending,
        },
        quote_timeout: o.quote_timeout,
        poll: HOST_POLL,
        max_pending_per_source: o.max_pending_per_source,
    };
    let svc = ProviderService::start(settings).context("starting the provider engine")?;
    Ok((
        Arc::new(svc),
        AdminToken::new(Zeroizing::new(hex::encode(&*token))),
    ))
}

/// How long a host agent's poll is held open: under common proxy idle timeouts (30-60 s).
const HOST_POLL: Duration = Duration::from_secs(25);

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Opening a store may connect to PostgreSQL, whose sync client must not block a runtime
    // worker.
    let roles = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || build_roles(&config)).await??
    };
    // Expiry and purge of the roles' databases (purge.rs), until the runtime stops.
    let _purge = crate::purge::spawn(roles.clone(), config.purge);
    // Failure actions, delivered from the audit trail (webhook.rs), off the unlock path.
    let _webhook = match &config.webhook {
        Some(w) => {
            let (secret, created) = load_or_create_hex(&w.secret_file, 32)?;
            if created {
                tracing::warn!(path = %w.secret_file.display(), "created the webhook secret (give it to the receiver to check X-Unlock-Signature)");
            }
            Some(crate::webhook::spawn(roles.clone(), w.clone(), secret)?)
        }
        None => None,
    };
    let (token, created) = load_or_create_hex(&config.admin_token_file, 32)?;
    if created {
        tracing::warn!(path = %config.admin_token_file.display(), "created the admin token (give it to unlockctl with --token-file)");
    }
    let token = AdminToken::new(Zeroizing::new(hex::encode(&*token)));
    let edge = Arc::new(Edge::new(fit_limits(&config.limits)));
    let mut app = router(&roles, token.clone(), config.max_body_bytes, edge.clone());
    if !roles.is_empty() {
        let (read, created) = crate::dashboard::ReadToken::load_or_create(&config.state_dir)?;
        if created {
            tracing::warn!(path = %config.state_dir.join(crate::dashboard::TOKEN_FILE).display(), "created the read-only dashboard token (the password of /dashboard)");
        }
        app = app.merge(crate::dashboard::router(&roles, token, read, edge.clone()));
    }
    let mut names: Vec<&str> = roles.iter().map(|r| r.role().as_str()).collect();
    if config.role == RoleSet::Provider {
        let (svc, host_token) = provider_service(&config)?;
        app = app.merge(provider_router(
            svc,
            host_token,
            config.max_body_bytes,
            edge.clone(),
        ));
        names.push("provider");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let l = &edge.limits;
    tracing::info!(
        max_connections = l.max_connections,
        max_connections_per_source = l.max_connections_per_source,
        header_timeout_secs = l.header_timeout_secs,
        idle_timeout_secs = l.idle_timeout_secs,
        min_body_rate = l.min_body_rate,
        body_window_secs = l.body_window_secs,
        max_inflight_body_bytes = l.max_inflight_body_bytes,
        "connection limits"
    );

    let tls = match &config.tls {
        None => {
            println!(
                "unlock-server: listening on http://{addr} (roles: {}) -- PLAIN HTTP, tests only",
                names.join(", ")
            );
            tracing::warn!("serving plain HTTP (--insecure-http): for tests on loopback only");
            None
        }
        Some(files) => {
            let (tls, fingerprint) = crate::tls::server_config(files)?;
            println!(
                "unlock-server: listening on https://{addr} (roles: {}; TLS certificate sha256 {fingerprint})",
                names.join(", ")
            );
            Some(tokio_rustls::TlsAcceptor::from(tls))
        }
    };
    accept::serve(listener, tls, app, edge, shutdown_signal()).await;
    Ok(())
}

/// The limits with the connection cap lowered to what the descriptor limit can hold.
fn fit_limits(limits: &Limits) -> Limits {
    let mut l = limits.clone();
    let nofile = open_files_limit();
    let (cap, lowered) = l.fitted_max_connections(nofile);
    if lowered {
        tracing::warn!(
            configured = l.max_connections,
            open_files_limit = nofile,
            reserved = l.reserved_descriptors,
            max_connections = cap,
            "connection cap lowered to fit the descriptor limit (raise LimitNOFILE to serve more)"
        );
    }
    l.max_connections = cap;
    l.max_connections_per_source = l.max_connections_per_source.min(cap);
    l
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
