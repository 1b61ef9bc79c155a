//! Configuration: command-line flags, then `WIRESOCKET_*` environment
//! variables (both through clap), then an optional TOML file, then defaults.

use auth::password::PasswordPolicy;
use domain::plan::Region;
use domain::ratelimit::Quota;
use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One layer of settings; every field optional so layers can be merged.
/// The same struct is filled by clap (flags and env) and by the TOML file.
/// Its `Debug` redacts the URLs that may carry credentials.
#[derive(Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "WIRESOCKET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the embedded SQLite database and the generated master key live [default: ./wiresocket-data]
    #[arg(long, env = "WIRESOCKET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of the embedded SQLite database
    #[arg(long, env = "WIRESOCKET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// redis://… or rediss://… (TLS) for the fleet: the auth rate limits are counted there, so they
    /// hold across processes
    #[arg(long, env = "WIRESOCKET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PEM file of a private CA trusted, besides the public roots, for the TLS connections to
    /// PostgreSQL (sslmode=verify-ca|verify-full) and Redis (rediss://)
    #[arg(long, env = "WIRESOCKET_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain for the listener: with --tls-key it speaks HTTPS and WSS only
    /// (TLS 1.2+); both files are re-read on SIGHUP
    #[arg(long, env = "WIRESOCKET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or EC)
    #[arg(long, env = "WIRESOCKET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Base URL used in token issuers and discovery answers [default: http://<listen>, https:// with TLS]
    #[arg(long, env = "WIRESOCKET_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the master key ring (lines `<version>:<base64 key>`). Without it (and without
    /// WIRESOCKET_MASTER_KEY) a key is generated into the data dir: fine for trying out, not for production.
    #[arg(long, env = "WIRESOCKET_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Shell command (run with `sh -c`) whose stdout is the master key ring, e.g.
    /// `vault kv get -field=ring secret/wiresocket`; run at start and whenever the ring is re-read.
    /// Excludes --master-key-file and WIRESOCKET_MASTER_KEY
    #[arg(long, env = "WIRESOCKET_MASTER_KEY_COMMAND", hide_env_values = true)]
    pub master_key_command: Option<String>,
    /// Lifetime of access tokens, in seconds [default: 900]
    #[arg(long, env = "WIRESOCKET_ACCESS_TOKEN_TTL")]
    pub access_token_ttl: Option<u64>,
    /// Lifetime of refresh tokens, in seconds [default: 2592000 = 30 days]
    #[arg(long, env = "WIRESOCKET_REFRESH_TOKEN_TTL")]
    pub refresh_token_ttl: Option<u64>,
    /// Lifetime of human sessions, in seconds; absolute, not sliding [default: 43200 = 12 h]
    #[arg(long, env = "WIRESOCKET_SESSION_TTL")]
    pub session_ttl: Option<u64>,
    /// License regions served, comma-separated ids [default: aws-us-east-1,eu-central-1]
    #[arg(long, env = "WIRESOCKET_REGIONS", value_delimiter = ',')]
    pub regions: Option<Vec<String>>,
    /// Largest WebSocket message or REST document update accepted, in bytes [default: 33554432 = 32 MiB]
    #[arg(long, env = "WIRESOCKET_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// This node's id in discovery answers [default: node-<random>]
    #[arg(long, env = "WIRESOCKET_NODE_ID")]
    pub node_id: Option<String>,
    /// Failed logins allowed per account per minute before 429; 0 turns the limit off [default: 5]
    #[arg(long, env = "WIRESOCKET_RATE_LIMIT_LOGIN_FAILURES")]
    pub rate_limit_login_failures: Option<u32>,
    /// Requests per minute per client IP to the auth endpoints (/v1/auth/*, /oauth/*, MFA verify,
    /// invite accept); 0 turns the limit off [default: 300]
    #[arg(long, env = "WIRESOCKET_RATE_LIMIT_AUTH_PER_IP")]
    pub rate_limit_auth_per_ip: Option<u32>,
    /// Token requests per minute per authenticated client_id; 0 turns the limit off [default: 600]
    #[arg(long, env = "WIRESOCKET_RATE_LIMIT_TOKEN_PER_CLIENT")]
    pub rate_limit_token_per_client: Option<u32>,
    /// Most rate-limit keys (accounts, IPs, clients) tracked in memory; when full, the keys
    /// closest to expiring are forgotten first [default: 1000000]
    #[arg(long, env = "WIRESOCKET_RATE_LIMIT_MAX_KEYS")]
    pub rate_limit_max_keys: Option<usize>,
    /// Reverse proxies whose X-Forwarded-For is believed, comma-separated CIDRs or addresses
    /// (e.g. 10.0.0.0/8,::1). Without any, X-Forwarded-For is ignored [default: none]
    #[arg(long, env = "WIRESOCKET_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Deliver webhooks to loopback and private addresses too. Without it they are refused
    /// (SSRF defence) unless the server itself listens on a loopback address [default: false]
    #[arg(long, env = "WIRESOCKET_ALLOW_PRIVATE_WEBHOOKS", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_webhooks: Option<bool>,
    /// At most one `document.updated` webhook event per document per this many milliseconds [default: 2000]
    #[arg(long, env = "WIRESOCKET_WEBHOOK_DEBOUNCE_MS")]
    pub webhook_debounce_ms: Option<u64>,
    /// Multiplies the webhook retry schedule (5 s, 30 s, 2 min, 10 min, 1 h, 6 h); for testing only,
    /// e.g. 0.01 [default: 1.0]
    #[arg(long, env = "WIRESOCKET_WEBHOOK_RETRY_SCALE")]
    pub webhook_retry_scale: Option<f64>,
    /// smtp://user:pass@host:587?tls=required or smtps://…:465 to send invite and password-reset mail.
    /// Without it, each message is written to <data-dir>/outbox/ as an .eml file
    #[arg(long, env = "WIRESOCKET_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of outgoing mail [default: WireSocket <no-reply@localhost>]
    #[arg(long, env = "WIRESOCKET_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Seconds between purges of expired sessions, tokens, resets, invites and old webhook jobs [default: 300]
    #[arg(long, env = "WIRESOCKET_PURGE_INTERVAL")]
    pub purge_interval: Option<u64>,
    /// Seconds between a node's heartbeats to the registry [default: 5]
    #[arg(long, env = "WIRESOCKET_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Seconds without a heartbeat after which the registry shows a node `down` [default: 15]
    #[arg(long, env = "WIRESOCKET_NODE_TIMEOUT")]
    pub node_timeout: Option<u64>,
    /// A browser origin (scheme://host[:port]) allowed to call /v1/*, /oauth/* and the OAuth discovery
    /// documents cross-origin; repeatable, comma-separated in the environment [default: none]
    #[arg(long = "cors-origin", env = "WIRESOCKET_CORS_ORIGINS", value_delimiter = ',')]
    #[serde(alias = "cors_origin")]
    pub cors_origins: Option<Vec<String>>,
}

impl std::fmt::Debug for ConfigLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("ConfigLayer")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redacted(&self.database_url))
            .field("redis_url", &redacted(&self.redis_url))
            .field("ca_file", &self.ca_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("public_url", &self.public_url)
            .field("master_key_file", &self.master_key_file)
            .field("master_key_command", &redacted(&self.master_key_command))
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("regions", &self.regions)
            .field("max_message_size", &self.max_message_size)
            .field("node_id", &self.node_id)
            .field("smtp_url", &redacted(&self.smtp_url))
            .field("mail_from", &self.mail_from)
            .field("rate_limit_login_failures", &self.rate_limit_login_failures)
            .field("rate_limit_auth_per_ip", &self.rate_limit_auth_per_ip)
            .field("rate_limit_token_per_client", &self.rate_limit_token_per_client)
            .field("rate_limit_max_keys", &self.rate_limit_max_keys)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_private_webhooks", &self.allow_private_webhooks)
            .field("webhook_debounce_ms", &self.webhook_debounce_ms)
            .field("webhook_retry_scale", &self.webhook_retry_scale)
            .field("purge_interval", &self.purge_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_timeout", &self.node_timeout)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl ConfigLayer {
    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            redis_url: self.redis_url.or(lower.redis_url),
            ca_file: self.ca_file.or(lower.ca_file),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            public_url: self.public_url.or(lower.public_url),
            master_key_file: self.master_key_file.or(lower.master_key_file),
            master_key_command: self.master_key_command.or(lower.master_key_command),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            refresh_token_ttl: self.refresh_token_ttl.or(lower.refresh_token_ttl),
            session_ttl: self.session_ttl.or(lower.session_ttl),
            regions: self.regions.or(lower.regions),
            max_message_size: self.max_message_size.or(lower.max_message_size),
            node_id: self.node_id.or(lower.node_id),
            rate_limit_login_failures: self.rate_limit_login_failures.or(lower.rate_limit_login_failures),
            rate_limit_auth_per_ip: self.rate_limit_auth_per_ip.or(lower.rate_limit_auth_per_ip),
            rate_limit_token_per_client: self.rate_limit_token_per_client.or(lower.rate_limit_token_per_client),
            rate_limit_max_keys: self.rate_limit_max_keys.or(lower.rate_limit_max_keys),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            allow_private_webhooks: self.allow_private_webhooks.or(lower.allow_private_webhooks),
            webhook_debounce_ms: self.webhook_debounce_ms.or(lower.webhook_debounce_ms),
            webhook_retry_scale: self.webhook_retry_scale.or(lower.webhook_retry_scale),
            smtp_url: self.smtp_url.or(lower.smtp_url),
            mail_from: self.mail_from.or(lower.mail_from),
            purge_interval: self.purge_interval.or(lower.purge_interval),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            node_timeout: self.node_timeout.or(lower.node_timeout),
            cors_origins: self.cors_origins.or(lower.cors_origins),
        }
    }

    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The listener's certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the master key ring comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A file (created with a fresh key if missing and inside the data dir).
    File(PathBuf),
    /// The ring's text itself (from `WIRESOCKET_MASTER_KEY`).
    Inline(SecretString),
    /// The stdout of a shell command (`--master-key-command`), see
    /// [`crate::masterkey::run_ring_command`].
    Command(MasterKeyCommand),
}

/// `--master-key-command`. The command is kept as a secret: it is not the
/// ring, but a vault CLI invocation may carry a token inline
/// (`VAULT_TOKEN=… vault kv get …`), so it is never logged or Debug-printed.
#[derive(Clone)]
pub struct MasterKeyCommand {
    pub command: SecretString,
    /// [`crate::masterkey::MASTER_KEY_COMMAND_TIMEOUT`] unless a test shortens it.
    pub timeout: Duration,
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Inline(_) => f.write_str("Inline([redacted])"),
            Self::Command(c) => write!(f, "Command([redacted], timeout {:?})", c.timeout),
        }
    }
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<SecretString>,
    pub redis_url: Option<SecretString>,
    /// `--ca-file`: a private CA for PostgreSQL and Redis over TLS.
    pub ca_file: Option<PathBuf>,
    /// `--tls-cert`/`--tls-key`: the listener speaks TLS only.
    pub tls: Option<TlsFiles>,
    pub public_url: Option<String>,
    pub master_key: MasterKeySource,
    /// True when the master key was not supplied and lives in the data dir.
    pub master_key_generated: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_ttl: Duration,
    pub regions: Vec<Region>,
    pub password_policy: PasswordPolicy,
    pub max_message_bytes: usize,
    /// `--node-id`; without it the id kept in the data dir (see
    /// [`crate::dataplane::node::resolve_id`]).
    pub node_id: Option<String>,
    /// How long a document stays in memory after its last connection left.
    pub doc_idle_unload: Duration,
    pub rate_limits: RateLimitConfig,
    /// Peers whose `X-Forwarded-For` names the client (see [`crate::extract::ClientIp`]).
    pub trusted_proxies: Vec<IpNet>,
    /// `--allow-private-webhooks`: deliver to non-public addresses even when
    /// not listening on loopback.
    pub allow_private_webhooks: bool,
    /// The `document.updated` window per document.
    pub webhook_debounce: Duration,
    /// Factor on the webhook retry schedule (1.0 in production).
    pub webhook_retry_scale: f64,
    /// Outgoing mail over SMTP; `None`: `.eml` files in `<data-dir>/outbox/`.
    pub smtp_url: Option<SecretString>,
    /// The `From:` of outgoing mail (an RFC 5322 mailbox).
    pub mail_from: String,
    /// How often expired rows are purged.
    pub purge_interval: Duration,
    /// How often this node heartbeats to the registry.
    pub heartbeat_interval: Duration,
    /// A node without a heartbeat for this long is `down`.
    pub node_timeout: Duration,
    /// Browser origins allowed cross-origin (see [`crate::headers`]), as
    /// browsers send them: `scheme://host[:port]`, lowercase, no default port.
    pub cors_origins: Vec<String>,
}

/// The limits on the authentication surface; `None` turns one off.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Failed logins per account (normalised email).
    pub login_failures: Option<Quota>,
    /// Requests to the auth endpoints per client IP (per /64 for IPv6).
    pub auth_per_ip: Option<Quota>,
    /// Token requests per authenticated client_id.
    pub token_per_client: Option<Quota>,
    /// Most keys the in-memory limiter tracks.
    pub max_keys: usize,
}

pub const DEFAULT_LOGIN_FAILURES_PER_MINUTE: u32 = 5;
pub const DEFAULT_AUTH_PER_IP_PER_MINUTE: u32 = 300;
pub const DEFAULT_TOKEN_PER_CLIENT_PER_MINUTE: u32 = 600;
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 1_000_000;

/// `n` per minute; 0 means no limit.
pub fn per_minute(n: u32) -> Option<Quota> {
    // A minute split into at most u32::MAX requests is never under a
    // nanosecond each, so this cannot fail for n > 0.
    Quota::new(n, Duration::from_secs(60)).ok()
}

/// Each origin as a browser sends it in `Origin` (RFC 6454 serialization),
/// so a list entry matches byte for byte: `https://App.example:443` is kept
/// as `https://app.example`. Anything that is not just an origin (a path, a
/// query, credentials, `*`, `null`) is refused rather than silently never
/// matching.
fn parse_cors_origins(items: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ConfigError(format!("bad CORS origin {item:?}: {why}; expected scheme://host[:port]"));
        let url = url::Url::parse(item).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials are not part of an origin"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a path, query or fragment is not part of an origin"));
        }
        let origin = url.origin().ascii_serialization();
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

fn parse_trusted_proxies(items: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let net = match (item.parse::<IpNet>(), item.parse::<IpAddr>()) {
            (Ok(net), _) => net.trunc(),
            (_, Ok(addr)) => IpNet::from(addr.to_canonical()),
            _ => return Err(ConfigError(format!("bad trusted proxy {item:?}: expected a CIDR or an IP address"))),
        };
        out.push(net);
    }
    Ok(out)
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "[redacted]"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .field("tls", &self.tls)
            .field("public_url", &self.public_url)
            .field("master_key", &self.master_key)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("regions", &self.regions)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("node_id", &self.node_id)
            .field("rate_limits", &self.rate_limits)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_private_webhooks", &self.allow_private_webhooks)
            .field("webhook_debounce", &self.webhook_debounce)
            .field("webhook_retry_scale", &self.webhook_retry_scale)
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("mail_from", &self.mail_from)
            .field("purge_interval", &self.purge_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_timeout", &self.node_timeout)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

pub const DEFAULT_MAIL_FROM: &str = "WireSocket <no-reply@localhost>";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./wiresocket-data";
/// Access tokens live at most this long (CONTRACT: 15 minutes by default;
/// client tokens are capped at it).
pub const MAX_ACCESS_TOKEN_TTL: u64 = 900;
/// One year.
pub const MAX_REFRESH_TOKEN_TTL: u64 = 365 * 24 * 3600;
/// Thirty days.
pub const MAX_SESSION_TTL: u64 = 30 * 24 * 3600;
pub const DEFAULT_WEBHOOK_DEBOUNCE_MS: u64 = 2000;
/// One hour: a longer window would make `document.updated` useless.
pub const MAX_WEBHOOK_DEBOUNCE_MS: u64 = 3_600_000;

impl Config {
    /// Resolves a merged layer plus the `WIRESOCKET_MASTER_KEY` value (read
    /// separately so the secret never becomes a command-line flag).
    pub fn resolve(layer: ConfigLayer, master_key_env: Option<SecretString>) -> Result<Config, ConfigError> {
        let listen = match layer.listen {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().map_err(|_| ConfigError("bad default listen address".into()))?,
        };
        let data_dir = layer.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let command = layer.master_key_command.filter(|c| !c.trim().is_empty());
        let (master_key, master_key_generated) = match (layer.master_key_file, master_key_env, command) {
            (Some(path), None, None) => (MasterKeySource::File(path), false),
            (None, Some(text), None) => (MasterKeySource::Inline(text), false),
            (None, None, Some(command)) => (
                MasterKeySource::Command(MasterKeyCommand {
                    command: SecretString::from(command),
                    timeout: crate::masterkey::MASTER_KEY_COMMAND_TIMEOUT,
                }),
                false,
            ),
            (None, None, None) => (MasterKeySource::File(data_dir.join("master.key")), true),
            _ => {
                return Err(ConfigError(
                    "give only one of --master-key-file, WIRESOCKET_MASTER_KEY and --master-key-command".into(),
                ));
            }
        };
        let access_token_ttl = layer.access_token_ttl.unwrap_or(MAX_ACCESS_TOKEN_TTL);
        if !(30..=MAX_ACCESS_TOKEN_TTL).contains(&access_token_ttl) {
            return Err(ConfigError(format!("access token TTL must be between 30 and {MAX_ACCESS_TOKEN_TTL} seconds")));
        }
        let refresh_token_ttl = layer.refresh_token_ttl.unwrap_or(30 * 24 * 3600);
        let session_ttl = layer.session_ttl.unwrap_or(12 * 3600);
        if !(60..=MAX_REFRESH_TOKEN_TTL).contains(&refresh_token_ttl) {
            return Err(ConfigError(format!(
                "refresh token TTL must be between 60 and {MAX_REFRESH_TOKEN_TTL} seconds"
            )));
        }
        if !(60..=MAX_SESSION_TTL).contains(&session_ttl) {
            return Err(ConfigError(format!("session TTL must be between 60 and {MAX_SESSION_TTL} seconds")));
        }
        let known = domain::plan::default_regions();
        let regions = match layer.regions {
            None => known,
            Some(ids) => {
                let mut out = Vec::new();
                for id in ids.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || id.len() > 64 {
                        return Err(ConfigError(format!("bad region id {id:?}")));
                    }
                    let name = known.iter().find(|r| r.id == id).map_or_else(|| id.to_owned(), |r| r.name.clone());
                    out.push(Region { id: id.to_owned(), name });
                }
                if out.is_empty() {
                    return Err(ConfigError("at least one region is needed".into()));
                }
                out
            }
        };
        if let Some(url) = &layer.public_url {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError(format!("bad public URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError("public URL must be http or https".into()));
            }
        }
        let tls = match (layer.tls_cert, layer.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError("--tls-cert and --tls-key go together".into())),
        };
        let max_message_bytes = layer.max_message_size.unwrap_or(32 * 1024 * 1024);
        if max_message_bytes < 1024 {
            return Err(ConfigError("max message size must be at least 1024 bytes".into()));
        }
        let node_id = match layer.node_id {
            Some(id) if crate::dataplane::node::valid_id(&id) => Some(id),
            Some(id) => return Err(ConfigError(format!("bad node id {id:?}"))),
            None => None,
        };
        let max_keys = layer.rate_limit_max_keys.unwrap_or(DEFAULT_RATE_LIMIT_MAX_KEYS);
        if max_keys < 1000 {
            return Err(ConfigError("the rate limiter must be allowed at least 1000 keys".into()));
        }
        let rate_limits = RateLimitConfig {
            login_failures: per_minute(layer.rate_limit_login_failures.unwrap_or(DEFAULT_LOGIN_FAILURES_PER_MINUTE)),
            auth_per_ip: per_minute(layer.rate_limit_auth_per_ip.unwrap_or(DEFAULT_AUTH_PER_IP_PER_MINUTE)),
            token_per_client: per_minute(
                layer.rate_limit_token_per_client.unwrap_or(DEFAULT_TOKEN_PER_CLIENT_PER_MINUTE),
            ),
            max_keys,
        };
        let trusted_proxies = parse_trusted_proxies(layer.trusted_proxies.as_deref().unwrap_or_default())?;
        let cors_origins = parse_cors_origins(layer.cors_origins.as_deref().unwrap_or_default())?;
        let webhook_debounce_ms = layer.webhook_debounce_ms.unwrap_or(DEFAULT_WEBHOOK_DEBOUNCE_MS);
        if !(10..=MAX_WEBHOOK_DEBOUNCE_MS).contains(&webhook_debounce_ms) {
            return Err(ConfigError(format!(
                "webhook debounce must be between 10 and {MAX_WEBHOOK_DEBOUNCE_MS} milliseconds"
            )));
        }
        let webhook_retry_scale = layer.webhook_retry_scale.unwrap_or(1.0);
        if !(0.0..=1000.0).contains(&webhook_retry_scale) {
            return Err(ConfigError("webhook retry scale must be between 0 and 1000".into()));
        }
        let purge_interval = layer.purge_interval.unwrap_or(300);
        if !(1..=86_400).contains(&purge_interval) {
            return Err(ConfigError("the purge interval must be between 1 and 86400 seconds".into()));
        }
        let heartbeat_interval = layer.heartbeat_interval.unwrap_or(5);
        let node_timeout = layer.node_timeout.unwrap_or(15);
        if heartbeat_interval == 0 || heartbeat_interval > 3600 {
            return Err(ConfigError("the heartbeat interval must be between 1 and 3600 seconds".into()));
        }
        if node_timeout <= heartbeat_interval {
            return Err(ConfigError(format!(
                "the node timeout ({node_timeout} s) must be longer than the heartbeat interval ({heartbeat_interval} s)"
            )));
        }
        let mail_from = layer.mail_from.unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError(format!("bad mail sender {mail_from:?}: expected e.g. \"Name <addr@host>\"")));
        }
        if let Some(url) = &layer.smtp_url {
            // The URL may hold a password: the message never quotes it.
            let scheme = url::Url::parse(url).map(|u| u.scheme().to_owned()).unwrap_or_default();
            if !matches!(scheme.as_str(), "smtp" | "smtps") {
                return Err(ConfigError("the SMTP URL must be smtp://… or smtps://…".into()));
            }
        }
        if let Some(url) = &layer.redis_url {
            // The URL may hold a password: the message never quotes it.
            let scheme = url::Url::parse(url).map(|u| u.scheme().to_owned()).unwrap_or_default();
            if !matches!(scheme.as_str(), "redis" | "rediss") {
                return Err(ConfigError("the Redis URL must be redis://… or rediss://… (TLS)".into()));
            }
        }
        Ok(Config {
            listen,
            data_dir,
            database_url: layer.database_url.map(SecretString::from),
            redis_url: layer.redis_url.map(SecretString::from),
            ca_file: layer.ca_file,
            tls,
            public_url: layer.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            master_key,
            master_key_generated,
            access_token_ttl: Duration::from_secs(access_token_ttl),
            refresh_token_ttl: Duration::from_secs(refresh_token_ttl),
            session_ttl: Duration::from_secs(session_ttl),
            regions,
            password_policy: PasswordPolicy::recommended(),
            max_message_bytes,
            node_id,
            doc_idle_unload: Duration::from_secs(30),
            rate_limits,
            trusted_proxies,
            allow_private_webhooks: layer.allow_private_webhooks.unwrap_or(false),
            webhook_debounce: Duration::from_millis(webhook_debounce_ms),
            webhook_retry_scale,
            smtp_url: layer.smtp_url.map(SecretString::from),
            mail_from,
            purge_interval: Duration::from_secs(purge_interval),
            heartbeat_interval: Duration::from_secs(heartbeat_interval),
            node_timeout: Duration::from_secs(node_timeout),
            cors_origins,
        })
    }

    /// Defaults with a given data dir; what tests start from.
    pub fn for_data_dir(data_dir: &Path) -> Result<Config, ConfigError> {
        Self::resolve(ConfigLayer { data_dir: Some(data_dir.to_path_buf()), ..ConfigLayer::default() }, None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let file: ConfigLayer =
            toml::from_str("listen = \"0.0.0.0:9000\"\nsession_ttl = 600\nregions = [\"eu-central-1\"]").unwrap();
        let cli = ConfigLayer { listen: Some("127.0.0.1:7000".parse().unwrap()), ..Default::default() };
        let cfg = Config::resolve(cli.over(file), None).unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.session_ttl, Duration::from_secs(600));
        assert_eq!(cfg.regions.len(), 1);
        assert_eq!(cfg.regions[0].name, "EU Central (Frankfurt)");
        assert_eq!(cfg.access_token_ttl, Duration::from_secs(900));
        assert!(cfg.master_key_generated);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("listn = \"x\"").is_err());
        let bad = ConfigLayer { access_token_ttl: Some(3600), ..Default::default() };
        assert!(Config::resolve(bad, None).is_err());
        let both = ConfigLayer { master_key_file: Some("k".into()), ..Default::default() };
        assert!(Config::resolve(both, Some(SecretString::from("1:abc"))).is_err());
    }

    #[test]
    fn rate_limits_default_to_the_contract_and_zero_turns_one_off() {
        let cfg = Config::resolve(ConfigLayer::default(), None).unwrap();
        let per_min = |q: Option<Quota>| q.map(|q| (q.per_period(), q.period().as_secs()));
        assert_eq!(per_min(cfg.rate_limits.login_failures), Some((5, 60)));
        assert_eq!(per_min(cfg.rate_limits.auth_per_ip), Some((300, 60)));
        assert_eq!(per_min(cfg.rate_limits.token_per_client), Some((600, 60)));
        assert!(cfg.trusted_proxies.is_empty());
        let file: ConfigLayer =
            toml::from_str("rate_limit_login_failures = 0\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]").unwrap();
        let cfg = Config::resolve(file, None).unwrap();
        assert!(cfg.rate_limits.login_failures.is_none());
        let nets: Vec<String> = cfg.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn bad_trusted_proxies_are_refused() {
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/x"] {
            let layer = ConfigLayer { trusted_proxies: Some(vec![bad.into()]), ..Default::default() };
            assert!(Config::resolve(layer, None).is_err(), "{bad}");
        }
        // Host bits are dropped; a mapped IPv4 address is an IPv4 address.
        let layer = ConfigLayer {
            trusted_proxies: Some(vec!["10.1.2.3/8".into(), "::ffff:127.0.0.1".into()]),
            ..Default::default()
        };
        let cfg = Config::resolve(layer, None).unwrap();
        let nets: Vec<String> = cfg.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32"]);
    }

    #[test]
    fn webhook_settings_have_defaults_and_bounds() {
        let cfg = Config::resolve(ConfigLayer::default(), None).unwrap();
        assert!(!cfg.allow_private_webhooks);
        assert_eq!(cfg.webhook_debounce, Duration::from_millis(2000));
        assert_eq!(cfg.webhook_retry_scale, 1.0);
        let file: ConfigLayer =
            toml::from_str("allow_private_webhooks = true\nwebhook_debounce_ms = 250\nwebhook_retry_scale = 0.01")
                .unwrap();
        let cfg = Config::resolve(file, None).unwrap();
        assert!(cfg.allow_private_webhooks);
        assert_eq!(cfg.webhook_debounce, Duration::from_millis(250));
        assert_eq!(cfg.webhook_retry_scale, 0.01);
        for bad in [
            ConfigLayer { webhook_debounce_ms: Some(0), ..Default::default() },
            ConfigLayer { webhook_retry_scale: Some(-1.0), ..Default::default() },
            ConfigLayer { webhook_retry_scale: Some(f64::NAN), ..Default::default() },
        ] {
            assert!(Config::resolve(bad, None).is_err());
        }
    }

    #[test]
    fn allow_private_webhooks_is_a_switch_or_an_env_boolean() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            layer: ConfigLayer,
        }
        let on = Cli::try_parse_from(["x", "--allow-private-webhooks"]).unwrap();
        assert_eq!(on.layer.allow_private_webhooks, Some(true));
        let off = Cli::try_parse_from(["x", "--allow-private-webhooks=false"]).unwrap();
        assert_eq!(off.layer.allow_private_webhooks, Some(false));
        let unset = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(unset.layer.allow_private_webhooks, None);
    }

    #[test]
    fn master_key_sources_are_exclusive_and_the_command_is_redacted() {
        let command = || Some("VAULT_TOKEN=s.tok3n vault kv get -field=ring secret/ws".to_owned());
        let ring = || Some(SecretString::from("1:c2VjcmV0"));
        let cmd = ConfigLayer { master_key_command: command(), ..Default::default() };
        let cfg = Config::resolve(cmd.clone(), None).unwrap();
        let MasterKeySource::Command(c) = &cfg.master_key else { panic!("{:?}", cfg.master_key) };
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(!cfg.master_key_generated);
        for dbg in [format!("{cfg:?}"), format!("{cmd:?}")] {
            assert!(!dbg.contains("tok3n") && !dbg.contains("vault"), "{dbg}");
        }
        let file_and_cmd = ConfigLayer { master_key_file: Some("k".into()), ..cmd.clone() };
        let all = ConfigLayer { master_key_file: Some("k".into()), ..cmd.clone() };
        for (layer, env) in [(cmd, ring()), (file_and_cmd, None), (all, ring())] {
            let err = Config::resolve(layer, env).unwrap_err().to_string();
            assert!(err.contains("only one of") && err.contains("--master-key-command"), "{err}");
        }
        // An empty command (an unset variable in a unit file) is no command.
        let empty = ConfigLayer { master_key_command: Some("  ".into()), ..Default::default() };
        assert!(Config::resolve(empty, None).unwrap().master_key_generated);
    }

    #[test]
    fn redis_urls_are_redis_or_rediss_and_never_quoted() {
        for ok in ["redis://127.0.0.1:6379", "rediss://:pw@redis.internal:6380/0"] {
            let layer =
                ConfigLayer { redis_url: Some(ok.into()), ca_file: Some("ca.pem".into()), ..Default::default() };
            let cfg = Config::resolve(layer, None).unwrap();
            assert_eq!(cfg.ca_file.as_deref(), Some(Path::new("ca.pem")));
        }
        let bad = ConfigLayer { redis_url: Some("http://:s3cret@h".into()), ..Default::default() };
        let err = Config::resolve(bad, None).unwrap_err().to_string();
        assert!(err.contains("rediss://") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let layer = ConfigLayer {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            smtp_url: Some("smtp://mail:smtp-pass@mail.example.com:587".into()),
            ..Default::default()
        };
        let dbg = format!("{layer:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("smtp-pass"), "{dbg}");
        let cfg = Config::resolve(layer, Some(SecretString::from("1:c2VjcmV0"))).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("c2VjcmV0") && !dbg.contains("smtp-pass"), "{dbg}");
        assert!(dbg.contains("no-reply@localhost"), "{dbg}");
    }

    #[test]
    fn mail_settings_are_checked() {
        let bad_from = ConfigLayer { mail_from: Some("not a mailbox".into()), ..Default::default() };
        assert!(Config::resolve(bad_from, None).is_err());
        let bad_url = ConfigLayer { smtp_url: Some("http://u:secret@h".into()), ..Default::default() };
        let err = Config::resolve(bad_url, None).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        let ok = ConfigLayer {
            smtp_url: Some("smtps://u:p@mail.example.com:465".into()),
            mail_from: Some("Acme <ops@acme.test>".into()),
            ..Default::default()
        };
        let cfg = Config::resolve(ok, None).unwrap();
        assert_eq!(cfg.mail_from, "Acme <ops@acme.test>");
        assert!(cfg.smtp_url.is_some());
    }

    #[test]
    fn cors_origins_layer_and_are_kept_as_browsers_send_them() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            layer: ConfigLayer,
        }
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "x",
            "--cors-origin",
            "https://App.example:443",
            "--cors-origin",
            "http://localhost:3000",
        ])
        .unwrap();
        let file: ConfigLayer = toml::from_str("cors_origins = [\"https://file.example\"]").unwrap();
        let cfg = Config::resolve(cli.layer.over(file.clone()), None).unwrap();
        assert_eq!(cfg.cors_origins, ["https://app.example", "http://localhost:3000"]);
        // The file fills in when no flag (or env) gives any; the flag's own name works there too.
        assert_eq!(Config::resolve(file, None).unwrap().cors_origins, ["https://file.example"]);
        let file: ConfigLayer = toml::from_str("cors_origin = [\"https://[::1]:8443/\"]").unwrap();
        assert_eq!(Config::resolve(file, None).unwrap().cors_origins, ["https://[::1]:8443"]);
        assert!(Config::resolve(ConfigLayer::default(), None).unwrap().cors_origins.is_empty());
    }

    #[test]
    fn a_cors_origin_that_is_not_an_origin_is_a_startup_error() {
        for bad in [
            "*",
            "null",
            "app.example",
            "ftp://app.example",
            "https://app.example/path",
            "https://app.example?x=1",
            "https://user:pw@app.example",
            "https://",
        ] {
            let layer = ConfigLayer { cors_origins: Some(vec![bad.into()]), ..Default::default() };
            let err = Config::resolve(layer, None).unwrap_err().to_string();
            assert!(err.contains("bad CORS origin") && err.contains("scheme://host[:port]"), "{bad}: {err}");
        }
    }
}
