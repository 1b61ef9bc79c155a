//! TLS on the listener (`--tls-cert`, `--tls-key`): HTTPS and WSS only,
//! TLS 1.2 and 1.3, rustls on aws-lc-rs.
//!
//! The certificate is served through a resolver that holds the current
//! pair, so a reload ([`TlsListener::reload`], on SIGHUP) only swaps what
//! the next handshake gets: open connections keep their session. A pair
//! that does not load (unreadable, not PEM, a key that does not match the
//! certificate) is refused and the old one stays.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pair being served, swapped by a reload.
#[derive(Debug)]
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// The listener's TLS: the acceptor and what a reload needs.
#[derive(Clone)]
pub struct TlsListener {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentPair>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl TlsListener {
    /// Loads the pair; any problem with it is the error, naming the file.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair = load_pair(cert_path, key_path, &provider)?;
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only (WebSocket needs it); a client offering h2 alone is refused.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads both files; on success the next handshake serves the new
    /// pair, on failure the old one stays and the reason is the error.
    pub fn reload(&self) -> Result<(), String> {
        let pair = load_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }
}

fn load_pair(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| format!("TLS certificate {}: {e}", cert_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: not PEM: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            cert_path.display()
        ));
    }
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|e| format!("TLS key {}: {e}", key_path.display()))?);
    // The error names the file, never its content.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        format!(
            "TLS key {}: no private key in it (expected PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            key_path.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("TLS key {} does not belong to the certificate {}", key_path.display(), cert_path.display())
        }
        e => format!("TLS key {}: {e}", key_path.display()),
    })
}

/// Reloads the pair on every SIGHUP until the process ends; logs each
/// outcome (an operator asked for it, so a refused pair is an ERROR).
#[cfg(unix)]
pub async fn reload_on_sighup(tls: TlsListener) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(cert = %tls.cert_path.display(), "TLS certificate reloaded"),
            Err(reason) => tracing::error!(%reason, "TLS certificate not reloaded; still serving the previous one"),
        }
    }
}

#[cfg(not(unix))]
pub async fn reload_on_sighup(_: TlsListener) {}
