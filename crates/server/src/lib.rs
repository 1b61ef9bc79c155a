//! The WireSocket server: the only crate that knows axum.
//!
//! # Layout
//! - [`config`]: flags → env → TOML file → defaults.
//! - [`app`]: `Application::build` (binds; port 0 in tests) and `run_until`.
//! - [`backends`]: connections to PostgreSQL and Redis, TLS and `--ca-file`.
//! - [`state`]: shared state, principal checks, audit helper.
//! - [`cache`]: the app records and deny-list a connect needs, kept in memory.
//! - [`fleet`]: the node directory discovery picks from (rendezvous hashing).
//! - [`extract`]: JSON/query extractors with our error shape; principals.
//! - [`error`]: `ApiError` (stable codes, opaque 500s) and `OAuthError` (RFC 6749 §5.2).
//! - [`headers`]: security headers on every answer, CORS for `--cors-origin`.
//! - [`keys`]: tenant signing keys at run time (caches, generation).
//! - [`mail`]: outgoing mail: SMTP, or `.eml` files in the data dir's outbox.
//! - [`masterkey`]: the master key ring (file, env or vault command) and its rotation.
//! - [`mfa`]: TOTP secrets sealed per user, the second-factor check of every login path.
//! - [`tokens`]: minting access, client and refresh tokens and sessions.
//! - [`dataplane`]: Yjs rooms, the group-commit persister, live connections, plan limits.
//! - [`routes`]: the HTTP surface and its OpenAPI document.
//! - [`observe`]: Prometheus metrics.
//! - [`ratelimit`]: limits on the auth surface (per account, IP, client) and the limiters behind them
//!   (in memory, or shared through Redis).
//! - [`webhooks`]: webhook events, the durable outbox's dispatcher, SSRF guard.

pub mod app;
pub mod backends;
pub mod cache;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod headers;
pub mod keys;
pub mod mail;
pub mod masterkey;
pub mod mfa;
pub mod observe;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod webhooks;

pub use app::{Application, StartupError, open_admin_store, open_store};
pub use config::{Config, ConfigLayer};
