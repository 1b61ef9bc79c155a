//! The rate-limit decision: GCRA (generic cell rate algorithm), as a pure
//! function of the stored state and "now", so the in-memory limiter (a
//! compare-and-swap per key) and the Redis-backed one (the same arithmetic
//! in a script, atomic per key) decide alike, and tests need no clock.
//!
//! # Semantics
//! A [`Quota`] of `N` per `period` has
//! - emission interval `T = period / N`: the steady spacing of requests;
//! - burst tolerance `τ = (N − 1)·T` (which is `period − T`): how far ahead
//!   of the steady schedule a client may run, so `N` requests may come at
//!   once after a quiet period.
//!
//! The only state per key is the theoretical arrival time (TAT): when the
//! next request would be due if every allowed request so far had come
//! exactly on schedule. A request at `now` with stored `tat` (or none) is
//! allowed iff `max(tat, now) − now ≤ τ`; then the new TAT is
//! `max(tat, now) + T`. Otherwise it is refused, the TAT is left as it was,
//! and the request would be allowed after `max(tat, now) − τ − now`.
//!
//! Consequences: after quiet, exactly `N` requests pass at once; then one
//! per `T`; over any window of length `W` at most `N + ⌊W/T⌋` pass. A TAT
//! at or before `now` means the same as no state, so the stored key may
//! expire at its TAT.
//!
//! Time is nanoseconds since the Unix epoch in a `u64` (enough until 2554).

use std::time::Duration;

use crate::DomainError;

/// `per_period` requests per `period`, in a burst or spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    per_period: u32,
    period: Duration,
    /// `T`, in nanoseconds; at least 1.
    emission_nanos: u64,
    /// `τ`, in nanoseconds.
    tolerance_nanos: u64,
}

impl Quota {
    /// Refused with `invalid_quota`: zero requests, a period shorter than
    /// one nanosecond per request, or a period over 500 years.
    pub fn new(per_period: u32, period: Duration) -> Result<Self, DomainError> {
        let invalid = |message: &str| DomainError::new("invalid_quota", message);
        if per_period == 0 {
            return Err(invalid("a rate limit must allow at least one request per period"));
        }
        let period_nanos = u64::try_from(period.as_nanos()).map_err(|_| invalid("the period is too long"))?;
        // T is rounded down to whole nanoseconds, so the rate is at most a
        // nanosecond per request faster than asked: far below anything a
        // client could exploit.
        let emission_nanos = period_nanos / u64::from(per_period);
        if emission_nanos == 0 {
            return Err(invalid("the period must be at least one nanosecond per request"));
        }
        // Defined as (N - 1)·T rather than period - T so that exactly N pass
        // in a burst even when T was rounded. Never larger than the period.
        let tolerance_nanos = emission_nanos * u64::from(per_period - 1);
        Ok(Self { per_period, period, emission_nanos, tolerance_nanos })
    }

    pub fn per_period(&self) -> u32 {
        self.per_period
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// `T`: the steady spacing between requests.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos)
    }

    /// `τ`: how far ahead of the steady schedule a client may run.
    pub fn burst_tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance_nanos)
    }
}

/// What [`gcra`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through and store `new_tat` for the key (it may
    /// expire at `new_tat`).
    Allow { new_tat: u64 },
    /// Refuse; keep the stored TAT. The same request would pass after
    /// `retry_after`, if nothing else is allowed in between.
    Deny { retry_after: Duration },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// Decides one request at `now_nanos` against the key's stored TAT (`None`
/// for a key never seen or expired). See the module docs for the rule.
pub fn gcra(tat: Option<u64>, now_nanos: u64, quota: &Quota) -> Decision {
    let tat = tat.map_or(now_nanos, |tat| tat.max(now_nanos));
    let allow_at = tat.saturating_sub(quota.tolerance_nanos);
    if now_nanos < allow_at {
        Decision::Deny { retry_after: Duration::from_nanos(allow_at - now_nanos) }
    } else {
        Decision::Allow { new_tat: tat.saturating_add(quota.emission_nanos) }
    }
}

/// Gives back one request that [`gcra`] allowed (say, a login that turned
/// out to succeed, when only failures should count): the TAT moves back by
/// one emission interval. A result at or before "now" means the same as no
/// state, so nothing needs clamping; giving back more than was taken only
/// makes the TAT stale sooner.
pub fn refund(tat: u64, quota: &Quota) -> u64 {
    tat.saturating_sub(quota.emission_nanos)
}

/// The `Retry-After` header value for a refusal: whole seconds, rounded up
/// so a client that waits that long is let through; at least 1, since
/// "retry after 0 seconds" would invite a busy loop.
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1_000_000_000;
    /// Some instant in 2023, so nothing is near zero.
    const T0: u64 = 1_700_000_000 * SEC;

    fn five_per_minute() -> Quota {
        Quota::new(5, Duration::from_secs(60)).unwrap()
    }

    /// Feeds requests at `times` through one key; answers the decisions.
    fn run(quota: &Quota, times: &[u64]) -> Vec<Decision> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let decision = gcra(tat, now, quota);
                if let Decision::Allow { new_tat } = decision {
                    tat = Some(new_tat);
                }
                decision
            })
            .collect()
    }

    #[test]
    fn quota_parameters() {
        let q = five_per_minute();
        assert_eq!(q.per_period(), 5);
        assert_eq!(q.period(), Duration::from_secs(60));
        assert_eq!(q.emission_interval(), Duration::from_secs(12));
        assert_eq!(q.burst_tolerance(), Duration::from_secs(48));
        let one = Quota::new(1, Duration::from_secs(1)).unwrap();
        assert_eq!(one.burst_tolerance(), Duration::ZERO);
    }

    #[test]
    fn invalid_quotas() {
        for (n, period) in [
            (0, Duration::from_secs(60)),
            (1, Duration::ZERO),
            (10, Duration::from_nanos(9)),
            (1, Duration::from_secs(600 * 365 * 24 * 3600)),
            (1, Duration::MAX),
        ] {
            assert_eq!(Quota::new(n, period).unwrap_err().code, "invalid_quota", "{n} per {period:?}");
        }
        assert!(Quota::new(10, Duration::from_nanos(10)).is_ok());
        assert!(Quota::new(u32::MAX, Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn exactly_n_in_a_burst_then_one_per_interval() {
        let q = five_per_minute();
        let mut tat = None;
        for i in 0..5 {
            match gcra(tat, T0, &q) {
                Decision::Allow { new_tat } => tat = Some(new_tat),
                other => panic!("request {i} refused: {other:?}"),
            }
        }
        assert_eq!(tat, Some(T0 + 60 * SEC));
        let Decision::Deny { retry_after } = gcra(tat, T0, &q) else { panic!("sixth request allowed") };
        assert_eq!(retry_after, Duration::from_secs(12));
        assert_eq!(retry_after_secs(retry_after), 12);
        // Refusals do not move the state: asking again changes nothing.
        assert_eq!(gcra(tat, T0 + 5 * SEC, &q), Decision::Deny { retry_after: Duration::from_secs(7) });
        // One nanosecond early is still too early.
        assert!(!gcra(tat, T0 + 12 * SEC - 1, &q).is_allowed());
        // Waiting as told lets exactly one more through.
        let Decision::Allow { new_tat } = gcra(tat, T0 + 12 * SEC, &q) else { panic!("refused after waiting") };
        assert_eq!(gcra(Some(new_tat), T0 + 12 * SEC, &q), Decision::Deny { retry_after: Duration::from_secs(12) });
    }

    #[test]
    fn steady_rate_is_always_allowed() {
        let q = five_per_minute();
        let times: Vec<u64> = (0..100).map(|i| T0 + i * 12 * SEC).collect();
        assert!(run(&q, &times).iter().all(Decision::is_allowed));
        // Twice the rate: the burst, then every other request.
        let times: Vec<u64> = (0..100).map(|i| T0 + i * 6 * SEC).collect();
        let allowed = run(&q, &times).iter().filter(|d| d.is_allowed()).count();
        // 594 s of requests: 5 at once plus one per 12 s after the first.
        assert_eq!(allowed, 5 + 594 / 12);
    }

    #[test]
    fn quiet_time_refills_the_burst_but_no_further() {
        let q = five_per_minute();
        let mut times = vec![T0; 5];
        times.extend([T0 + 3600 * SEC; 7]);
        let decisions = run(&q, &times);
        assert!(decisions[..10].iter().all(Decision::is_allowed));
        assert!(!decisions[10].is_allowed() && !decisions[11].is_allowed());
        // A stale TAT is as good as none.
        assert_eq!(gcra(Some(T0 - SEC), T0, &q), gcra(None, T0, &q));
        assert_eq!(gcra(None, T0, &q), Decision::Allow { new_tat: T0 + 12 * SEC });
    }

    #[test]
    fn burst_of_one() {
        let q = Quota::new(1, Duration::from_secs(1)).unwrap();
        let d = run(&q, &[T0, T0, T0 + SEC - 1, T0 + SEC]);
        assert!(d[0].is_allowed() && !d[1].is_allowed() && !d[2].is_allowed() && d[3].is_allowed());
        assert_eq!(d[2], Decision::Deny { retry_after: Duration::from_nanos(1) });
    }

    #[test]
    fn extremes_do_not_overflow() {
        let q = five_per_minute();
        assert!(gcra(None, 0, &q).is_allowed());
        assert!(gcra(None, u64::MAX, &q).is_allowed());
        assert_eq!(gcra(Some(u64::MAX), u64::MAX, &q), Decision::Allow { new_tat: u64::MAX });
        assert!(!gcra(Some(u64::MAX), 0, &q).is_allowed());
    }

    #[test]
    fn a_refund_undoes_exactly_one_allowed_request() {
        let q = five_per_minute();
        let mut tat = None;
        for _ in 0..4 {
            let Decision::Allow { new_tat } = gcra(tat, T0, &q) else { panic!("refused in the burst") };
            tat = Some(new_tat);
        }
        // The fifth is taken and given back: a fifth and no sixth still pass.
        let Decision::Allow { new_tat } = gcra(tat, T0, &q) else { panic!("fifth refused") };
        tat = Some(refund(new_tat, &q));
        let Decision::Allow { new_tat } = gcra(tat, T0, &q) else { panic!("refund did not give back") };
        assert!(!gcra(Some(new_tat), T0, &q).is_allowed());
        // A refund of the only request leaves a TAT that means "no state".
        let Decision::Allow { new_tat } = gcra(None, T0, &q) else { panic!("first refused") };
        assert_eq!(refund(new_tat, &q), T0);
        assert_eq!(gcra(Some(refund(new_tat, &q)), T0, &q), gcra(None, T0, &q));
        assert_eq!(refund(3, &q), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(999)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(12)), 12);
        assert_eq!(retry_after_secs(Duration::new(59, 1)), 60);
    }

    proptest! {
        /// The GCRA guarantee: between any two allowed requests at most
        /// `N + ⌊Δt / T⌋` are allowed (both ends included).
        #[test]
        fn never_more_than_burst_plus_rate(
            n in 1u32..8,
            period_ms in 1u64..10_000,
            gaps in proptest::collection::vec(0u64..3_000_000_000, 1..60),
        ) {
            let q = Quota::new(n, Duration::from_millis(period_ms)).unwrap();
            let t = q.emission_interval().as_nanos() as u64;
            let mut now = T0;
            let times: Vec<u64> = gaps.iter().map(|g| { now += g; now }).collect();
            let allowed: Vec<u64> =
                run(&q, &times).iter().zip(&times).filter(|(d, _)| d.is_allowed()).map(|(_, &at)| at).collect();
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    let count = (j - i + 1) as u64;
                    prop_assert!(count <= u64::from(n) + (allowed[j] - allowed[i]) / t);
                }
            }
        }

        /// Retry-After is exact: waiting it out passes, a nanosecond less does not.
        #[test]
        fn retry_after_is_exact(
            n in 1u32..8,
            period_ms in 1u64..10_000,
            gaps in proptest::collection::vec(0u64..1_000_000_000, 1..40),
        ) {
            let q = Quota::new(n, Duration::from_millis(period_ms)).unwrap();
            let mut tat = None;
            let mut now = T0;
            for gap in gaps {
                now += gap;
                match gcra(tat, now, &q) {
                    Decision::Allow { new_tat } => {
                        prop_assert!(new_tat > now);
                        tat = Some(new_tat);
                    }
                    Decision::Deny { retry_after } => {
                        let wait = retry_after.as_nanos() as u64;
                        prop_assert!(wait > 0);
                        prop_assert!(gcra(tat, now + wait, &q).is_allowed());
                        prop_assert!(!gcra(tat, now + wait - 1, &q).is_allowed());
                    }
                }
            }
        }

        #[test]
        fn gcra_never_panics(tat in proptest::option::of(any::<u64>()), now in any::<u64>(), n in 1u32.., period in any::<u64>()) {
            if let Ok(q) = Quota::new(n, Duration::from_nanos(period)) {
                let _ = gcra(tat, now, &q);
            }
        }
    }
}
