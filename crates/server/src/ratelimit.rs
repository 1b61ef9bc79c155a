//! Rate limits on the authentication surface (CONTRACT "Rate limits"):
//! failed logins per account, requests per client IP to the auth endpoints,
//! and token requests per client_id.
//!
//! The decision is the pure GCRA of [`domain::ratelimit`]. This module owns
//! where its state lives ([`RateLimiter`], with [`InMemoryRateLimiter`] for
//! one node), which keys are counted, the middleware that guards the auth
//! paths ([`limit_auth_requests`]), and what a refusal leaves behind: the
//! metric `wiresocket_rate_limited_total{limit}` every time, an
//! `auth.rate_limited` audit event at most once per key per window.

use crate::config::RateLimitConfig;
use crate::error::{ApiError, OAuthError};
use crate::extract::ClientIp;
use crate::state::{Actor, AppState};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use domain::audit::AuditAction;
use domain::ids::{AppId, TenantId};
use domain::names::Email;
use domain::ratelimit::{Decision, Quota, gcra, refund, retry_after_secs};
use serde_json::json;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

mod shared;
pub use shared::RedisRateLimiter;

/// A refusal: the same request would pass after this long, if nothing else
/// is let through for its key in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn secs(&self) -> u64 {
        retry_after_secs(self.0)
    }
}

/// Where the GCRA state lives: one theoretical arrival time (TAT) per key.
/// `check` must decide and store atomically per key, so parallel requests
/// can never let more through than the quota; `now` comes from the caller
/// (the app's clock), never from the store, so tests can drive time.
///
/// [`InMemoryRateLimiter`] serves one node. A fleet shares the counts
/// through Redis with the same arithmetic in a script (atomic per key),
/// keyed `rl:{key}` (braces: a cluster hash tag) and expiring at the new TAT,
/// since a TAT in the past means the same as no state. Lua numbers are
/// doubles, so the script counts in microseconds (exact until the year
/// 2255); `T` and `τ` are [`Quota::emission_interval`] and
/// [`Quota::burst_tolerance`] in µs. `check`, with `KEYS[1] = rl:{key}` and
/// `ARGV = now, T, τ`:
///
/// ```lua
/// local now, t, tau = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
/// local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
/// if now < tat - tau then
///   return tat - tau - now                      -- refused: retry after, in µs
/// end
/// local new_tat = tat + t
/// redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
/// return 0                                      -- allowed
/// ```
///
/// and `refund`, with the same keys and arguments:
///
/// ```lua
/// local now, t = tonumber(ARGV[1]), tonumber(ARGV[2])
/// local tat = tonumber(redis.call('GET', KEYS[1]))
/// if tat and tat - t > now then
///   redis.call('SET', KEYS[1], tat - t, 'PX', math.ceil((tat - t - now) / 1000))
/// elseif tat then
///   redis.call('DEL', KEYS[1])
/// end
/// ```
///
/// Expiry (`PX`) is relative, so Redis's own clock only decides when a
/// stale key goes, never a decision. On a Redis error the implementation
/// falls back to a node-local [`InMemoryRateLimiter`] (limits then hold
/// per node) rather than refuse everyone or let everyone through: that is
/// [`RedisRateLimiter`], used when `--redis-url` is set.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request for `key` against `quota` at `now`, or refuses it
    /// (a refusal is not counted).
    async fn check(&self, key: &str, quota: &Quota, now: OffsetDateTime) -> Result<(), RetryAfter>;

    /// Gives back one request that `check` let through (a login that turned
    /// out to succeed, when only failures count).
    async fn refund(&self, key: &str, quota: &Quota, now: OffsetDateTime);

    /// Drops state that no longer matters. A store with expiry needs nothing.
    async fn sweep(&self, _now: OffsetDateTime) {}
}

fn nanos(t: OffsetDateTime) -> u64 {
    // Before 1970 or after 2554: neither happens with a working clock.
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

/// One node's limiter: key → TAT in a sharded map. The decision and the
/// store happen under the key's shard lock, so a check is atomic per key.
///
/// Memory is bounded twice: [`RateLimiter::sweep`] drops keys whose TAT has
/// passed (they mean "no state"), and at most `max_keys` are kept. When a
/// new key finds the map full, the expired keys go, and if that is not
/// enough, the live keys closest to expiring are forgotten until a
/// sixteenth of the room is free (one scan pays for many inserts).
/// Forgetting a key gives it a fresh burst, so the victims are the ones
/// that owe least: a flood of one-off keys cannot push out an account
/// that is being guessed at, whose TAT is far ahead. Refusing new keys
/// instead would let that flood lock out everyone; letting them through
/// untracked would let it switch every limit off. The cap is soft by the
/// number of inserts racing one scan.
pub struct InMemoryRateLimiter {
    tats: DashMap<String, u64>,
    max_keys: usize,
    /// Held by the one caller that is making room; the others go on rather
    /// than queue behind a scan. A std mutex: it is only ever try-locked,
    /// and never held across an await.
    evicting: Mutex<()>,
}

impl InMemoryRateLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self { tats: DashMap::new(), max_keys: max_keys.max(1), evicting: Mutex::new(()) }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    fn decide(&self, key: &str, quota: &Quota, now: u64) -> Result<(), RetryAfter> {
        // The common case, a known key, needs no allocation.
        if let Some(mut tat) = self.tats.get_mut(key) {
            return apply(Some(&mut *tat), quota, now).map(|_| ());
        }
        if self.tats.len() >= self.max_keys {
            self.make_room(now);
        }
        // The entry re-checks under the shard lock: another request may have
        // created the key since the lookup above.
        match self.tats.entry(key.to_owned()) {
            Entry::Occupied(mut e) => apply(Some(e.get_mut()), quota, now).map(|_| ()),
            Entry::Vacant(e) => {
                let new_tat = apply(None, quota, now)?;
                e.insert(new_tat);
                Ok(())
            }
        }
    }

    /// Removes keys whose TAT is at or before `now`; answers how many.
    fn sweep_at(&self, now: u64) -> usize {
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > now);
        before.saturating_sub(self.tats.len())
    }

    fn make_room(&self, now: u64) {
        let Ok(_scan) = self.evicting.try_lock() else { return };
        if self.tats.len() < self.max_keys {
            return;
        }
        self.sweep_at(now);
        let keep = self.max_keys - self.max_keys / 16;
        let len = self.tats.len();
        if len <= keep {
            return;
        }
        let mut tats: Vec<u64> = self.tats.iter().map(|e| *e.value()).collect();
        let excess = (len - keep).min(tats.len());
        let Some(nth) = excess.checked_sub(1) else { return };
        let (_, cutoff, _) = tats.select_nth_unstable(nth);
        let cutoff = *cutoff;
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > cutoff);
        let evicted = before.saturating_sub(self.tats.len());
        metrics::counter!("wiresocket_rate_limiter_evicted_total").increment(evicted as u64);
        tracing::warn!(evicted, max_keys = self.max_keys, "rate limiter full: forgot the keys closest to expiring");
    }
}

/// The GCRA step on a stored TAT (`None`: no state). Answers the new TAT
/// when allowed, having stored it in place.
fn apply(tat: Option<&mut u64>, quota: &Quota, now: u64) -> Result<u64, RetryAfter> {
    match (gcra(tat.as_deref().copied(), now, quota), tat) {
        (Decision::Allow { new_tat }, Some(slot)) => {
            *slot = new_tat;
            Ok(new_tat)
        }
        (Decision::Allow { new_tat }, None) => Ok(new_tat),
        (Decision::Deny { retry_after }, _) => Err(RetryAfter(retry_after)),
    }
}

#[async_trait::async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn check(&self, key: &str, quota: &Quota, now: OffsetDateTime) -> Result<(), RetryAfter> {
        self.decide(key, quota, nanos(now))
    }

    async fn refund(&self, key: &str, quota: &Quota, _now: OffsetDateTime) {
        // A TAT that falls to or before "now" means no state; the sweep
        // removes it, so there is nothing to delete here.
        if let Some(mut tat) = self.tats.get_mut(key) {
            *tat = refund(*tat, quota);
        }
    }

    async fn sweep(&self, now: OffsetDateTime) {
        let removed = self.sweep_at(nanos(now));
        if removed > 0 {
            tracing::debug!(removed, kept = self.tats.len(), "swept expired rate-limit keys");
        }
    }
}

/// Which limit refused: the metric label and the audit detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LoginFailures,
    AuthPerIp,
    TokenPerClient,
}

impl Limit {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::LoginFailures => "login_failures",
            Self::AuthPerIp => "auth_per_ip",
            Self::TokenPerClient => "token_per_client",
        }
    }
}

/// The configured quotas and the limiter that counts them.
pub struct AuthLimits {
    limiter: Arc<dyn RateLimiter>,
    config: RateLimitConfig,
}

impl AuthLimits {
    pub fn new(limiter: Arc<dyn RateLimiter>, config: RateLimitConfig) -> Self {
        Self { limiter, config }
    }

    /// For one node (or a fleet without Redis).
    pub fn in_memory(config: RateLimitConfig) -> Self {
        Self::new(Arc::new(InMemoryRateLimiter::new(config.max_keys)), config)
    }

    /// Counted in Redis, shared by every process using it.
    pub fn redis(conn: redis::aio::ConnectionManager, config: RateLimitConfig) -> Self {
        Self::new(Arc::new(RedisRateLimiter::new(conn, config.max_keys)), config)
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    pub async fn sweep(&self, now: OffsetDateTime) {
        self.limiter.sweep(now).await;
    }
}

/// Where a refusal is recorded.
enum Scope {
    /// The platform trail (per-IP limit).
    Platform,
    /// The app's tenant.
    App { tenant: TenantId, app: AppId },
    /// The platform trail and, for a known account, each of its tenants.
    /// The email is only looked up, never recorded: it is attacker-chosen.
    Account(String),
}

/// The per-account key: the normalised email, hashed so keys have a fixed
/// size and a shared store never holds addresses. Unknown and malformed
/// emails are counted alike, so refusals cannot tell which accounts exist.
fn account_key(email: &str) -> String {
    let normalised = Email::parse(email).map_or_else(|_| email.trim().to_lowercase(), Email::into_string);
    format!("login:{}", auth::token::hash_token(&normalised))
}

/// The per-IP key. An IPv6 client usually has a whole /64 to pick from, so
/// that is what counts as one address.
fn ip_key(addr: Option<IpAddr>) -> String {
    match addr {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("ip:{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        // Only when the server runs without connection info; then all
        // such requests share one bucket rather than go unlimited.
        None => "ip:unknown".to_owned(),
    }
}

/// One attempt counted against an account, before its password was even
/// looked at: a locked account answers 429 to the right password too, and
/// parallel guesses cannot overtake the count. Dropping it leaves the
/// attempt counted as a failure; [`AccountAttempt::succeeded`] gives it back.
#[must_use = "drop it for a failure, call succeeded() for a success"]
pub struct AccountAttempt {
    counted: Option<(String, Quota)>,
}

impl AccountAttempt {
    /// The attempt succeeded: only failures count against the account.
    pub async fn succeeded(self, state: &AppState) {
        if let Some((key, quota)) = self.counted {
            state.rate_limits.limiter.refund(&key, &quota, state.now()).await;
        }
    }
}

impl AppState {
    /// Counts a request to an auth endpoint against its client IP.
    pub async fn check_auth_ip(&self, ip: &ClientIp) -> Result<(), ApiError> {
        let Some(quota) = self.rate_limits.config.auth_per_ip else { return Ok(()) };
        self.enforce(Limit::AuthPerIp, &ip_key(ip.addr()), &quota, ip, Scope::Platform).await
    }

    /// Counts a token request against the authenticated app's client_id.
    pub async fn check_token_client(&self, app: &store::AppRecord, ip: &ClientIp) -> Result<(), ApiError> {
        let Some(quota) = self.rate_limits.config.token_per_client else { return Ok(()) };
        let key = format!("client:{}", app.client_id);
        self.enforce(Limit::TokenPerClient, &key, &quota, ip, Scope::App { tenant: app.tenant_id, app: app.id }).await
    }

    /// Counts an attempt to prove an account's password (login, password
    /// grant; MFA and invite acceptance for an existing account should too).
    /// 429 while the account is locked.
    pub async fn check_account(&self, email: &str, ip: &ClientIp) -> Result<AccountAttempt, ApiError> {
        let Some(quota) = self.rate_limits.config.login_failures else { return Ok(AccountAttempt { counted: None }) };
        let key = account_key(email);
        self.enforce(Limit::LoginFailures, &key, &quota, ip, Scope::Account(email.to_owned())).await?;
        Ok(AccountAttempt { counted: Some((key, quota)) })
    }

    async fn enforce(
        &self,
        limit: Limit,
        key: &str,
        quota: &Quota,
        ip: &ClientIp,
        scope: Scope,
    ) -> Result<(), ApiError> {
        let now = self.now();
        let Err(retry) = self.rate_limits.limiter.check(key, quota, now).await else { return Ok(()) };
        metrics::counter!("wiresocket_rate_limited_total", "limit" => limit.as_str()).increment(1);
        // The first refusal per key and window leaves a trace; recording
        // each one would let a flood flood the audit trail too.
        if let Ok(once) = Quota::new(1, quota.period())
            && self.rate_limits.limiter.check(&format!("audit:{key}"), &once, now).await.is_ok()
        {
            tracing::warn!(limit = limit.as_str(), ip = ?ip.0, retry_after = retry.secs(), "rate limit reached");
            let state = self.clone();
            let actor = Actor::anonymous(ip);
            // In the background: looking up the account's tenants must not
            // make refusals for real accounts slower than for unknown ones.
            tokio::spawn(async move { state.record_rate_limited(limit, scope, actor, retry).await });
        }
        Err(ApiError::too_many_requests(retry.0))
    }

    async fn record_rate_limited(&self, limit: Limit, scope: Scope, actor: Actor, retry: RetryAfter) {
        let action = AuditAction::RateLimited;
        let details = json!({"limit": limit.as_str(), "retry_after": retry.secs()});
        match scope {
            Scope::Platform => self.audit(None, &actor, action, None, details).await,
            Scope::App { tenant, app } => {
                self.audit(Some(tenant), &actor, action, Some(("app", app.to_string())), details).await;
            }
            Scope::Account(email) => {
                let user = match Email::parse(&email) {
                    Ok(e) => self.store.get_user_by_email(e.as_str()).await.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "could not look up a rate-limited account");
                        None
                    }),
                    Err(_) => None,
                };
                let target = user.as_ref().map(|u| ("user", u.id.to_string()));
                if let Some(user) = &user {
                    match self.store.list_user_tenants(user.id).await {
                        Ok(tenants) => {
                            for (tenant, _) in tenants {
                                self.audit(Some(tenant.id), &actor, action, target.clone(), details.clone()).await;
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "could not list tenants for a rate-limited account"),
                    }
                }
                self.audit(None, &actor, action, target, details).await;
            }
        }
    }
}

/// Paths under the per-IP limit: an entry ending in `/` covers everything
/// under it, so a new route there is limited by construction; the others
/// match exactly.
pub const AUTH_PATHS: &[&str] = &["/v1/auth/", "/oauth/", "/v1/me/mfa/verify", "/v1/invites/accept"];

pub fn is_auth_path(path: &str) -> bool {
    AUTH_PATHS.iter().any(|p| if p.ends_with('/') { path.starts_with(p) } else { path == *p })
}

/// Middleware: the per-IP limit on [`AUTH_PATHS`], before any handler runs
/// (so a refused request costs no password hash). OAuth endpoints refuse in
/// their own error shape (`slow_down`), the rest as `too_many_requests`.
pub async fn limit_auth_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !is_auth_path(path) {
        return next.run(req).await;
    }
    let oauth = path.starts_with("/oauth/");
    let ip = ClientIp::resolve(req.headers(), req.extensions(), &state.config.trusted_proxies);
    match state.check_auth_ip(&ip).await {
        Ok(()) => next.run(req).await,
        Err(e) if oauth => OAuthError::from(e).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use time::Duration as TimeDuration;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    fn per_minute(n: u32) -> Quota {
        Quota::new(n, Duration::from_secs(60)).unwrap()
    }

    #[tokio::test]
    async fn exactly_n_pass_then_retry_after() {
        let limiter = InMemoryRateLimiter::new(1000);
        let q = per_minute(5);
        for i in 0..5 {
            assert!(limiter.check("k", &q, t0()).await.is_ok(), "request {i}");
        }
        let refused = limiter.check("k", &q, t0()).await.unwrap_err();
        assert_eq!(refused, RetryAfter(Duration::from_secs(12)));
        assert_eq!(refused.secs(), 12);
        // Other keys are not affected.
        assert!(limiter.check("other", &q, t0()).await.is_ok());
        // Waiting as told lets exactly one more through.
        assert!(limiter.check("k", &q, t0() + TimeDuration::seconds(11)).await.is_err());
        assert!(limiter.check("k", &q, t0() + TimeDuration::seconds(12)).await.is_ok());
        assert!(limiter.check("k", &q, t0() + TimeDuration::seconds(12)).await.is_err());
    }

    #[tokio::test]
    async fn a_refund_gives_one_request_back() {
        let limiter = InMemoryRateLimiter::new(1000);
        let q = per_minute(2);
        limiter.check("k", &q, t0()).await.unwrap();
        limiter.check("k", &q, t0()).await.unwrap();
        assert!(limiter.check("k", &q, t0()).await.is_err());
        limiter.refund("k", &q, t0()).await;
        assert!(limiter.check("k", &q, t0()).await.is_ok());
        assert!(limiter.check("k", &q, t0()).await.is_err());
        // Refunding an unknown key is a no-op.
        limiter.refund("nobody", &q, t0()).await;
        assert_eq!(limiter.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_checks_never_exceed_the_limit() {
        let limiter = Arc::new(InMemoryRateLimiter::new(1000));
        let q = per_minute(5);
        let start = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (limiter, start) = (limiter.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    limiter.check("hot", &q, t0()).await.is_ok()
                })
            })
            .collect();
        let mut passed = 0;
        for t in tasks {
            passed += usize::from(t.await.unwrap());
        }
        assert_eq!(passed, 5);
    }

    #[tokio::test]
    async fn sweep_drops_only_keys_whose_tat_has_passed() {
        let limiter = InMemoryRateLimiter::new(1000);
        let q = per_minute(5);
        limiter.check("once", &q, t0()).await.unwrap(); // TAT t0 + 12 s
        for _ in 0..5 {
            limiter.check("busy", &q, t0()).await.unwrap(); // TAT t0 + 60 s
        }
        limiter.sweep(t0() + TimeDuration::seconds(11)).await;
        assert_eq!(limiter.len(), 2);
        limiter.sweep(t0() + TimeDuration::seconds(12)).await;
        assert_eq!(limiter.len(), 1);
        // The busy key kept its count: one more after 12 s, not a new burst.
        let at = t0() + TimeDuration::seconds(12);
        assert!(limiter.check("busy", &q, at).await.is_ok());
        assert!(limiter.check("busy", &q, at).await.is_err());
        limiter.sweep(t0() + TimeDuration::seconds(72)).await;
        assert!(limiter.is_empty());
    }

    #[tokio::test]
    async fn a_full_limiter_forgets_the_keys_closest_to_expiring() {
        let limiter = InMemoryRateLimiter::new(32);
        let q = per_minute(5);
        // An account being guessed at: locked, TAT a minute ahead.
        for _ in 0..5 {
            limiter.check("victim", &q, t0()).await.unwrap();
        }
        // A flood of one-off keys fills the map, and more keep coming.
        for i in 0..200 {
            limiter.check(&format!("flood-{i}"), &q, t0()).await.unwrap();
            assert!(limiter.len() <= 32, "{} keys", limiter.len());
        }
        assert!(limiter.check("victim", &q, t0()).await.is_err(), "the victim's count was evicted");
        // Expired keys go first, before any live one is forgotten.
        let limiter = InMemoryRateLimiter::new(16);
        for i in 0..16 {
            limiter.check(&format!("old-{i}"), &q, t0()).await.unwrap();
        }
        limiter.check("live", &q, t0() + TimeDuration::seconds(30)).await.unwrap();
        limiter.check("new", &q, t0() + TimeDuration::seconds(30)).await.unwrap();
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn keys_normalise_accounts_and_group_ipv6_by_64() {
        assert_eq!(account_key(" Ann@Example.com "), account_key("ann@example.com"));
        assert_ne!(account_key("ann@example.com"), account_key("bob@example.com"));
        assert_eq!(account_key("Not An Email"), account_key("not an email"));
        assert_eq!(account_key(&"x".repeat(10_000)).len(), "login:".len() + 64);
        assert_eq!(ip_key(Some("203.0.113.7".parse().unwrap())), "ip:203.0.113.7");
        assert_eq!(ip_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap())), "ip:2001:db8:1:2::/64");
        assert_eq!(
            ip_key(Some("2001:db8:1:2:ffff::9".parse().unwrap())),
            ip_key(Some("2001:db8:1:2::1".parse().unwrap()))
        );
        assert_eq!(ip_key(None), "ip:unknown");
    }

    #[test]
    fn auth_paths() {
        for p in ["/v1/auth/login", "/v1/auth/logout", "/v1/auth/password-reset", "/oauth/token", "/oauth/revoke"] {
            assert!(is_auth_path(p), "{p}");
        }
        assert!(is_auth_path("/v1/me/mfa/verify") && is_auth_path("/v1/invites/accept"));
        for p in ["/v1/me", "/v1/me/mfa/setup", "/v1/authx", "/v1/tenants", "/oauthx/token", "/v1/invites/accept/x"] {
            assert!(!is_auth_path(p), "{p}");
        }
    }
}
