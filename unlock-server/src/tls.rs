//! TLS for the server: the operator's certificate, or a self-signed one created on first
//! start (its fingerprint is logged so it can be pinned in the agent's CA bundle).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::secrets::{write_new, SecretFileError};

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("TLS file {path}: {message}")]
    File {
        /// File.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed pair failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// Writing the generated files failed.
    #[error(transparent)]
    Write(#[from] SecretFileError),
}

/// Loads (or creates) the server's certificate and key and builds a TLS 1.3/1.2 config with
/// the aws-lc-rs provider. Returns the config and the SHA-256 fingerprint of the leaf.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<rustls::ServerConfig>, String), TlsError> {
    if !files.cert.exists() && !files.key.exists() {
        generate_self_signed(&files.cert, &files.key, &files.extra_names)?;
        tracing::warn!(
            cert = %files.cert.display(),
            "created a self-signed TLS certificate; give it to agents as their CA bundle"
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_err(&files.cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: files.cert.display().to_string(),
            message: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
    let fingerprint = certs
        .first()
        .map(|c| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c)))
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((Arc::new(config), fingerprint))
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`, this host's
/// name and `extra_names`.
pub fn generate_self_signed(
    cert_path: &Path,
    key_path: &Path,
    extra_names: &[String],
) -> Result<(), TlsError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(extra_names.iter().cloned());
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_owned());
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    write_new(key_path, key_pem.as_bytes())?;
    write_new(cert_path, cert.pem().as_bytes())?;
    Ok(())
}

/// An HTTP client agent trusting `ca` (PEM; or the web PKI roots), rustls on aws-lc-rs,
/// `timeout_secs` per request, statuses returned rather than raised (for `unlockctl` and the
/// webhook deliverer).
pub fn client_agent(ca: Option<&Path>, timeout_secs: u64) -> anyhow::Result<ureq::Agent> {
    use anyhow::Context as _;
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read CA file {}", ca.display()))?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            anyhow::bail!("{}: no PEM certificate found", ca.display());
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(std::time::Duration::from_secs(timeout_secs)))
        .build()
        .new_agent())
}
