//! Connections to the backing services, PostgreSQL and Redis, and the
//! private CA (`--ca-file`) they share when they speak TLS.
//!
//! PostgreSQL: `sslmode` in the URL decides (sqlx parses it: `disable`,
//! `prefer`, `require`, `verify-ca`, `verify-full`); the public roots are
//! webpki's, and `--ca-file` is added to them. Redis: `rediss://` means TLS,
//! verified against the system's roots plus `--ca-file`.

use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;
use std::time::Duration;

/// How long a Redis command may take before the caller treats Redis as
/// down (a rate-limit check then falls back to this node's counts). Short:
/// it is added to every auth request while Redis hangs.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The certificates of `--ca-file`, checked at start so a wrong path or a
/// file without a certificate stops the start instead of every connection.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Whether the store URL names PostgreSQL (else it is SQLite).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connects to PostgreSQL, adding `--ca-file` to the roots TLS verifies
/// against (it matters for `sslmode=verify-ca|verify-full`).
pub async fn connect_postgres(
    url: &SecretString,
    ca_file: Option<&Path>,
) -> Result<store::sql::PostgresStore, store::StoreError> {
    store::sql::PostgresStore::connect_with_ca(url.expose_secret(), ca_file).await
}

/// Appended to a TLS error that a missing or wrong `--ca-file` explains.
pub fn ca_hint(error: &str) -> &'static str {
    if error.contains("UnknownIssuer") {
        " (is --ca-file the CA that signed the server's certificate?)"
    } else if error.contains("NotValidForName") {
        " (the certificate does not name the host in the URL)"
    } else {
        ""
    }
}

/// A Redis connection that reconnects by itself. The first connection is
/// made here, so a wrong address, password or certificate stops the start
/// with the reason; later outages are the caller's to ride out.
pub async fn connect_redis(
    url: &SecretString,
    ca_file: Option<&Path>,
) -> Result<redis::aio::ConnectionManager, String> {
    let url = url.expose_secret();
    // The URL may hold a password: no message quotes it.
    let tls = url.starts_with("rediss://");
    let client = match (tls, ca_file) {
        (true, Some(ca)) => {
            let root_cert = Some(ca_bundle_with_system_roots(ca)?);
            redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert })
        }
        _ => redis::Client::open(url),
    }
    .map_err(|e| format!("bad Redis URL ({:?})", e.kind()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        // Reconnecting happens in the background; a caller never waits
        // through a retry schedule.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let conn = redis::aio::ConnectionManager::new_with_config(client, config).await.map_err(|e| {
        let e = e.to_string();
        format!("cannot connect to Redis{}: {e}{}", if tls { " over TLS" } else { "" }, ca_hint(&e))
    })?;
    Ok(conn)
}

/// redis-rs takes one PEM bundle that replaces the system roots; `--ca-file`
/// is meant to add to them, so the bundle is the CA file plus the system's
/// roots re-encoded.
fn ca_bundle_with_system_roots(ca: &Path) -> Result<Vec<u8>, String> {
    let mut bundle = Vec::new();
    let system = rustls_native_certs::load_native_certs();
    for cert in read_ca_file(ca)?.iter().chain(system.certs.iter()) {
        bundle.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            bundle.extend_from_slice(line);
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(bundle)
}
