//! [`RedisRateLimiter`]: the fleet's limiter, the GCRA of
//! [`domain::ratelimit`] run in Redis as documented on [`RateLimiter`].

use super::{InMemoryRateLimiter, RateLimiter, RetryAfter};
use domain::ratelimit::Quota;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const CHECK: &str = r"
local now, t, tau = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
if now < tat - tau then
  return tat - tau - now
end
local new_tat = tat + t
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return 0
";

const REFUND: &str = r"
local now, t = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat - t > now then
  redis.call('SET', KEYS[1], tat - t, 'PX', math.ceil((tat - t - now) / 1000))
elseif tat then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// Counts in Redis, so every process sharing it enforces one limit. While
/// Redis fails, a node-local [`InMemoryRateLimiter`] decides (limits then
/// hold per node), with one WARN when that starts and one INFO when Redis
/// answers again; nothing is refused or let through for the outage alone.
/// Counts made locally during an outage are not carried over to Redis.
///
/// During an outage only one request per [`PROBE_INTERVAL`] tries Redis;
/// the others go straight to the local counts, so a Redis that hangs costs
/// one request its response timeout, not every request.
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    check: redis::Script,
    refund: redis::Script,
    fallback: InMemoryRateLimiter,
    degraded: AtomicBool,
    /// While degraded: when the next probe may go to Redis, in ms since `started`.
    next_probe: AtomicU64,
    started: Instant,
}

/// How often a degraded limiter tries Redis again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The Redis key of a limiter key: braces make the key its own cluster
/// hash tag, so a script's one key never spans slots.
fn redis_key(key: &str) -> String {
    format!("rl:{{{key}}}")
}

/// Microseconds since the epoch: Lua numbers are doubles, exact to 2^53 µs.
fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RedisRateLimiter {
    pub fn new(conn: ConnectionManager, max_local_keys: usize) -> Self {
        Self {
            conn,
            check: redis::Script::new(CHECK),
            refund: redis::Script::new(REFUND),
            fallback: InMemoryRateLimiter::new(max_local_keys),
            degraded: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this call should go to Redis: always while it is healthy,
    /// during an outage only the one call that wins the next probe slot.
    fn try_redis(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = self.elapsed_ms();
        let due = self.next_probe.load(Ordering::Acquire);
        let next = now.saturating_add(u64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(u64::MAX));
        now >= due && self.next_probe.compare_exchange(due, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether the last call found Redis failing.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn redis_failed(&self, e: &redis::RedisError) {
        metrics::counter!("wiresocket_rate_limiter_redis_errors_total").increment(1);
        let next = self.elapsed_ms().saturating_add(u64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(u64::MAX));
        self.next_probe.store(next, Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %e, "Redis is failing: rate limits fall back to this node's own counts until it answers");
        }
    }

    fn redis_answered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis answers again: rate limits are shared across the fleet again");
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: &Quota, now: OffsetDateTime) -> Result<(), RetryAfter> {
        if !self.try_redis() {
            return self.fallback.check(key, quota, now).await;
        }
        // ConnectionManager is a handle: cloning shares one multiplexed connection.
        let mut conn = self.conn.clone();
        let answer: Result<i64, _> = self
            .check
            .key(redis_key(key))
            .arg(micros(now))
            .arg(duration_micros(quota.emission_interval()))
            .arg(duration_micros(quota.burst_tolerance()))
            .invoke_async(&mut conn)
            .await;
        match answer {
            Ok(0) => {
                self.redis_answered();
                Ok(())
            }
            Ok(retry_us) => {
                self.redis_answered();
                Err(RetryAfter(Duration::from_micros(u64::try_from(retry_us).unwrap_or(1))))
            }
            Err(e) => {
                self.redis_failed(&e);
                self.fallback.check(key, quota, now).await
            }
        }
    }

    async fn refund(&self, key: &str, quota: &Quota, now: OffsetDateTime) {
        if !self.try_redis() {
            return self.fallback.refund(key, quota, now).await;
        }
        let mut conn = self.conn.clone();
        let answer: Result<i64, _> = self
            .refund
            .key(redis_key(key))
            .arg(micros(now))
            .arg(duration_micros(quota.emission_interval()))
            .invoke_async(&mut conn)
            .await;
        match answer {
            Ok(_) => self.redis_answered(),
            Err(e) => {
                self.redis_failed(&e);
                self.fallback.refund(key, quota, now).await;
            }
        }
    }

    async fn sweep(&self, now: OffsetDateTime) {
        // Redis expires its keys; the fallback's are swept like one node's.
        self.fallback.sweep(now).await;
    }
}
