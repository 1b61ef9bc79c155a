//! Pure WireSocket types and rules. No I/O, no async, no HTTP, no SQL.
//!
//! # Layout
//! - [`ids`]: typed identifiers (parse, don't validate).
//! - [`names`]: tenant/app names, emails, environment labels, password policy.
//! - [`domains`]: allowed domains of an app and browser `Origin` matching.
//! - [`docname`]: document names and the `docs` claim patterns.
//! - [`node`]: data-plane node status (up, draining, down).
//! - [`plan`]: the plan catalog, limits and regions.
//! - [`proration`]: billing periods and prorated invoice lines for plan changes.
//! - [`role`]: built-in and custom roles, resources, actions, who may grant what.
//! - [`claims`]: the JWT claims WireSocket issues.
//! - [`keys`]: signing-key lifecycle (active → retiring → retired, or revoked).
//! - [`clock`]: time as a parameter, so expiry is testable.
//! - [`audit`]: the audit action vocabulary and the tamper-evident hash chain.
//! - [`webhook`]: webhook events and subscriptions, target URLs, which
//!   addresses are public (SSRF defence), the retry schedule.
//! - [`ratelimit`]: GCRA, the rate-limit decision shared by the in-memory
//!   and the Redis-backed limiters.

pub mod audit;
pub mod claims;
pub mod clock;
pub mod docname;
pub mod domains;
pub mod ids;
pub mod keys;
pub mod names;
pub mod node;
pub mod plan;
pub mod proration;
pub mod ratelimit;
pub mod role;
pub mod webhook;

use std::fmt;

/// A rule of the domain was broken by some input. `code` is the stable,
/// machine-readable error code the API answers with (e.g. `invalid_domain`);
/// `message` is for humans and never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    pub code: &'static str,
    pub message: String,
}

impl DomainError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DomainError {}

/// The default OAuth scope of app tokens.
pub const DEFAULT_SCOPE: &str = "WireSocket.API";
/// The scope of human dashboard sessions handed out by the password grant.
pub const DASHBOARD_SCOPE: &str = "dashboard";
/// The `aud` of every access token WireSocket issues.
pub const AUDIENCE: &str = "wiresocket";
