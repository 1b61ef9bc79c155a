//! Billing periods and prorated invoice lines for plan changes.

use crate::DomainError;
use crate::plan::PlanId;
use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// One line of an invoice. A credit is a negative amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    pub plan: PlanId,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub period_end: OffsetDateTime,
    pub amount_cents: i64,
}

/// `t` moved `months` calendar months ahead, at the same time of day and in
/// the same offset, with the day clamped to the target month's length
/// (Jan 31 + 1 month is Feb 28, or Feb 29 in a leap year).
///
/// Saturates at the last representable date instead of failing: a period
/// thousands of years out is never billed, and callers need a total
/// function.
pub fn add_months(t: OffsetDateTime, months: u32) -> OffsetDateTime {
    let index = i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1 + i64::from(months);
    let year = i32::try_from(index.div_euclid(12));
    let month = u8::try_from(index.rem_euclid(12) + 1).ok().and_then(|m| Month::try_from(m).ok());
    let (Ok(year), Some(month)) = (year, month) else {
        return t.replace_date(Date::MAX);
    };
    let day = t.day().min(month.length(year));
    Date::from_calendar_date(year, month, day).map_or_else(|_| t.replace_date(Date::MAX), |d| t.replace_date(d))
}

/// The billing period `[start, end)` that contains `now`. Period `k` starts
/// at `add_months(anchor, k)`, always counted from the anchor: chaining
/// (`add_months(start_of_previous, 1)`) would let a clamp stick, so an app
/// created on Jan 31 would be billed on the 28th forever after February.
/// Before the anchor (clock skew), the first period.
pub fn billing_period(anchor: OffsetDateTime, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    if now < anchor {
        return (anchor, add_months(anchor, 1));
    }
    // Guess k from the calendar months between the two, then settle it: the
    // guess is off by at most one (day-of-month and time-of-day), a little
    // more only if the offsets differ, and add_months is monotonic, so a
    // fixed few steps each way suffice, even for anchors years back.
    let local_now = now.checked_to_offset(anchor.offset()).unwrap_or(now);
    let guess = (i64::from(local_now.year()) - i64::from(anchor.year())) * 12
        + (i64::from(u8::from(local_now.month())) - i64::from(u8::from(anchor.month())));
    let mut k = u32::try_from(guess.max(0)).unwrap_or(u32::MAX);
    for _ in 0..4 {
        if k > 0 && add_months(anchor, k) > now {
            k -= 1;
        }
    }
    for _ in 0..4 {
        let next = k.saturating_add(1);
        if next > k && add_months(anchor, next) <= now {
            k = next;
        }
    }
    (add_months(anchor, k), add_months(anchor, k.saturating_add(1)))
}

/// The invoice lines of switching an app from `old` to `new` at `now`:
/// a credit for the unused rest of the current period on the old plan and a
/// charge for the same span on the new one (`plan_unchanged` if they are the
/// same plan).
///
/// Both lines are always present, even at 0 cents (a free plan, or the last
/// seconds of a period), so the invoice shows what happened. Amounts are
/// the plan price times remaining/length of the period in whole seconds,
/// computed in i128 and rounded half away from zero, so neither the credit
/// nor the charge can exceed a month's price.
pub fn prorate(
    anchor: OffsetDateTime,
    now: OffsetDateTime,
    old: PlanId,
    new: PlanId,
) -> Result<Vec<InvoiceLine>, DomainError> {
    if old == new {
        return Err(DomainError::new("plan_unchanged", format!("the app is already on the {} plan", old.plan().name)));
    }
    let (start, end) = billing_period(anchor, now);
    // Before the anchor there is nothing to credit for the time before the
    // app existed; bill from the start of its first period.
    let from = now.max(start);
    let length = (end - start).whole_seconds();
    let remaining = (end - from).whole_seconds().clamp(0, length.max(0));
    let span = format!("{} to {}", utc_date(from), utc_date(end));
    let old_plan = old.plan();
    let new_plan = new.plan();
    let credit = InvoiceLine {
        description: format!("Unused time on {} ({span})", old_plan.name),
        plan: old,
        period_start: from,
        period_end: end,
        amount_cents: prorated(old_plan.price_cents_per_month, remaining, length).saturating_neg(),
    };
    let charge = InvoiceLine {
        description: format!("Remaining time on {} ({span})", new_plan.name),
        plan: new,
        period_start: from,
        period_end: end,
        amount_cents: prorated(new_plan.price_cents_per_month, remaining, length),
    };
    Ok(vec![credit, charge])
}

/// The sum of the lines' amounts; saturating so a corrupt stored amount
/// cannot panic the server.
pub fn invoice_total(lines: &[InvoiceLine]) -> i64 {
    lines.iter().fold(0i64, |total, l| total.saturating_add(l.amount_cents))
}

/// `price * remaining / length`, rounded half away from zero. With
/// `0 <= remaining <= length` the result lies between 0 and `price`, so it
/// fits an i64; a zero-length period (only at the end of representable
/// time) bills nothing.
fn prorated(price: i64, remaining: i64, length: i64) -> i64 {
    if length <= 0 {
        return 0;
    }
    let amount = div_round_half_away(i128::from(price) * i128::from(remaining), i128::from(length));
    i64::try_from(amount).unwrap_or(if amount < 0 { i64::MIN } else { i64::MAX })
}

/// `n / d` for `d > 0`, rounded half away from zero (`2.5 → 3`,
/// `-2.5 → -3`), unlike `/` which truncates.
fn div_round_half_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if r.unsigned_abs() * 2 >= d.unsigned_abs() { q + n.signum() } else { q }
}

fn utc_date(t: OffsetDateTime) -> Date {
    t.checked_to_offset(UtcOffset::UTC).unwrap_or(t).date()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;
    use time::Duration;
    use time::macros::{datetime, offset};

    fn amounts(lines: &[InvoiceLine]) -> (i64, i64) {
        assert_eq!(lines.len(), 2);
        (lines[0].amount_cents, lines[1].amount_cents)
    }

    #[test]
    fn add_months_clamps_the_day() {
        assert_eq!(add_months(datetime!(2023-01-31 10:30 UTC), 1), datetime!(2023-02-28 10:30 UTC));
        assert_eq!(add_months(datetime!(2024-01-31 10:30 UTC), 1), datetime!(2024-02-29 10:30 UTC));
        assert_eq!(add_months(datetime!(2023-01-31 10:30 UTC), 2), datetime!(2023-03-31 10:30 UTC));
        assert_eq!(add_months(datetime!(2023-03-31 00:00 UTC), 1), datetime!(2023-04-30 00:00 UTC));
        assert_eq!(add_months(datetime!(2023-12-15 08:00 UTC), 1), datetime!(2024-01-15 08:00 UTC));
        assert_eq!(add_months(datetime!(2023-05-15 08:00 UTC), 0), datetime!(2023-05-15 08:00 UTC));
        assert_eq!(add_months(datetime!(2020-02-29 00:00 UTC), 12), datetime!(2021-02-28 00:00 UTC));
        assert_eq!(add_months(datetime!(2020-02-29 00:00 UTC), 48), datetime!(2024-02-29 00:00 UTC));
        assert_eq!(add_months(datetime!(2023-01-31 23:00 +02:00), 1), datetime!(2023-02-28 23:00 +02:00));
    }

    #[test]
    fn add_months_saturates_instead_of_panicking() {
        let far = add_months(datetime!(2023-01-31 10:30 UTC), u32::MAX);
        assert_eq!(far.date(), Date::MAX);
        assert_eq!(far.time(), datetime!(2023-01-31 10:30 UTC).time());
    }

    #[test]
    fn billing_periods_are_counted_from_the_anchor() {
        let anchor = datetime!(2023-01-31 10:00 UTC);
        let jan = (anchor, datetime!(2023-02-28 10:00 UTC));
        let feb = (datetime!(2023-02-28 10:00 UTC), datetime!(2023-03-31 10:00 UTC));
        let mar = (datetime!(2023-03-31 10:00 UTC), datetime!(2023-04-30 10:00 UTC));
        assert_eq!(billing_period(anchor, anchor), jan);
        assert_eq!(billing_period(anchor, datetime!(2023-02-28 09:59:59 UTC)), jan);
        assert_eq!(billing_period(anchor, datetime!(2023-02-28 10:00 UTC)), feb);
        assert_eq!(billing_period(anchor, datetime!(2023-03-31 09:59:59 UTC)), feb);
        assert_eq!(billing_period(anchor, datetime!(2023-03-31 10:00 UTC)), mar);
        // A leap February.
        let anchor = datetime!(2024-01-31 10:00 UTC);
        assert_eq!(
            billing_period(anchor, datetime!(2024-03-01 00:00 UTC)),
            (datetime!(2024-02-29 10:00 UTC), datetime!(2024-03-31 10:00 UTC))
        );
    }

    #[test]
    fn billing_period_years_later_and_across_offsets() {
        let anchor = datetime!(2020-01-31 10:00 UTC);
        assert_eq!(
            billing_period(anchor, datetime!(2030-06-30 12:00 UTC)),
            (datetime!(2030-06-30 10:00 UTC), datetime!(2030-07-31 10:00 UTC))
        );
        // Same instant as 2030-07-01 01:00 local in +14:00; still the June period.
        let now = datetime!(2030-06-30 11:00 UTC).to_offset(offset!(+14));
        assert_eq!(billing_period(anchor, now).0, datetime!(2030-06-30 10:00 UTC));
    }

    #[test]
    fn before_the_anchor_is_the_first_period() {
        let anchor = datetime!(2024-05-10 00:00 UTC);
        let now = datetime!(2024-05-09 00:00 UTC);
        assert_eq!(billing_period(anchor, now), (anchor, datetime!(2024-06-10 00:00 UTC)));
        // No credit for time before the app existed: full period, from the anchor.
        let lines = prorate(anchor, now, PlanId::Starter, PlanId::Pro).unwrap();
        assert_eq!(amounts(&lines), (-2_900, 29_900));
        assert_eq!(lines[0].period_start, anchor);
    }

    #[test]
    fn same_plan_is_refused() {
        let t = datetime!(2024-01-01 00:00 UTC);
        for p in PlanId::ALL {
            assert_eq!(prorate(t, t, p, p).unwrap_err().code, "plan_unchanged");
        }
    }

    #[test]
    fn change_at_the_start_of_a_period_is_a_full_month() {
        let anchor = datetime!(2024-01-15 12:00 UTC);
        let now = datetime!(2024-03-15 12:00 UTC);
        let lines = prorate(anchor, now, PlanId::Starter, PlanId::Pro).unwrap();
        assert_eq!(amounts(&lines), (-2_900, 29_900));
        assert_eq!(invoice_total(&lines), 27_000);
        for l in &lines {
            assert_eq!((l.period_start, l.period_end), (now, datetime!(2024-04-15 12:00 UTC)));
        }
        assert_eq!((lines[0].plan, lines[1].plan), (PlanId::Starter, PlanId::Pro));
        assert!(lines[0].description.starts_with("Unused time on Starter ("), "{}", lines[0].description);
        assert!(lines[1].description.contains("Pro"), "{}", lines[1].description);
        assert!(lines[0].description.contains("2024-03-15 to 2024-04-15"), "{}", lines[0].description);
    }

    #[test]
    fn change_in_the_last_second_keeps_both_lines() {
        let anchor = datetime!(2024-01-15 12:00 UTC);
        let now = datetime!(2024-04-15 11:59:59 UTC);
        let lines = prorate(anchor, now, PlanId::Starter, PlanId::Enterprise).unwrap();
        // 1 s of a 30-day month is far below a cent on every plan.
        assert_eq!(amounts(&lines), (0, 0));
        assert_eq!(lines[0].period_start, now);
        assert_eq!(lines[1].period_end, datetime!(2024-04-15 12:00 UTC));
    }

    #[test]
    fn downgrade_mid_period_nets_a_credit() {
        // April has 30 days; the 16th at midnight leaves exactly half.
        let anchor = datetime!(2024-04-01 00:00 UTC);
        let now = datetime!(2024-04-16 00:00 UTC);
        let lines = prorate(anchor, now, PlanId::Pro, PlanId::Starter).unwrap();
        assert_eq!(amounts(&lines), (-14_950, 1_450));
        assert_eq!(invoice_total(&lines), -13_500);
    }

    #[test]
    fn free_to_paid_shows_a_zero_credit() {
        let anchor = datetime!(2024-04-01 00:00 UTC);
        let now = datetime!(2024-04-16 00:00 UTC);
        let lines = prorate(anchor, now, PlanId::Free, PlanId::Starter).unwrap();
        assert_eq!(amounts(&lines), (0, 1_450));
        assert_eq!(lines[0].plan, PlanId::Free);
        assert!(lines[0].description.contains("Free"));
        let back = prorate(anchor, now, PlanId::Starter, PlanId::Free).unwrap();
        assert_eq!(amounts(&back), (-1_450, 0));
    }

    #[test]
    fn anchor_on_jan_31_across_february() {
        // Non-leap: the period is Jan 31 → Feb 28 (28 days); Feb 14 leaves 14.
        let lines =
            prorate(datetime!(2023-01-31 00:00 UTC), datetime!(2023-02-14 00:00 UTC), PlanId::Starter, PlanId::Pro)
                .unwrap();
        assert_eq!(amounts(&lines), (-1_450, 14_950));
        assert_eq!(lines[0].period_end, datetime!(2023-02-28 00:00 UTC));
        // Leap: Jan 31 → Feb 29 (29 days); Feb 14 leaves 15.
        // 2900 * 15/29 = 1500 exactly; 29900 * 15/29 = 15465.52 → 15466.
        let lines =
            prorate(datetime!(2024-01-31 00:00 UTC), datetime!(2024-02-14 00:00 UTC), PlanId::Starter, PlanId::Pro)
                .unwrap();
        assert_eq!(amounts(&lines), (-1_500, 15_466));
        assert_eq!(lines[0].period_end, datetime!(2024-02-29 00:00 UTC));
        // The next period goes back to the 31st.
        let lines =
            prorate(datetime!(2024-01-31 00:00 UTC), datetime!(2024-03-01 00:00 UTC), PlanId::Starter, PlanId::Pro)
                .unwrap();
        assert_eq!(lines[0].period_end, datetime!(2024-03-31 00:00 UTC));
    }

    #[test]
    fn amounts_round_half_away_from_zero() {
        // February 2024 is 2,505,600 s; Starter for 432 s of it is exactly 0.5 ¢.
        let anchor = datetime!(2024-02-01 00:00 UTC);
        let end = datetime!(2024-03-01 00:00 UTC);
        let at =
            |secs_left: i64| prorate(anchor, end - Duration::seconds(secs_left), PlanId::Starter, PlanId::Pro).unwrap();
        assert_eq!(amounts(&at(432)), (-1, 5));
        assert_eq!(amounts(&at(431)), (0, 5));
        assert_eq!(amounts(&at(3 * 432)), (-2, 15));
        assert_eq!(amounts(&at(4 * 432)), (-2, 21));
    }

    #[test]
    fn division_rounding() {
        for (n, d, q) in [
            (5, 2, 3),
            (-5, 2, -3),
            (7, 2, 4),
            (-7, 2, -4),
            (1, 3, 0),
            (2, 3, 1),
            (-2, 3, -1),
            (-1, 3, 0),
            (0, 7, 0),
            (6, 3, 2),
        ] {
            assert_eq!(div_round_half_away(n, d), q, "{n}/{d}");
        }
    }

    #[test]
    fn totals() {
        assert_eq!(invoice_total(&[]), 0);
        let t = datetime!(2024-01-01 00:00 UTC);
        let line = |amount_cents| InvoiceLine {
            description: String::new(),
            plan: PlanId::Pro,
            period_start: t,
            period_end: t,
            amount_cents,
        };
        assert_eq!(invoice_total(&[line(-100), line(250)]), 150);
        assert_eq!(invoice_total(&[line(i64::MAX), line(1)]), i64::MAX);
    }

    fn plan_pair() -> impl Strategy<Value = (PlanId, PlanId)> {
        (0..4usize, 1..4usize).prop_map(|(a, step)| (PlanId::ALL[a], PlanId::ALL[(a + step) % 4]))
    }

    proptest! {
        #[test]
        fn prorate_stays_within_the_period_and_the_prices(
            anchor_secs in 0i64..4_000_000_000,
            delta in -100_000_000i64..400_000_000,
            (old, new) in plan_pair(),
        ) {
            let anchor = OffsetDateTime::from_unix_timestamp(anchor_secs).unwrap();
            let now = anchor + Duration::seconds(delta);
            let (start, end) = billing_period(anchor, now);
            prop_assert!(start < end);
            if now >= anchor {
                prop_assert!(start <= now && now < end);
            } else {
                prop_assert_eq!(start, anchor);
            }
            let lines = prorate(anchor, now, old, new).unwrap();
            prop_assert_eq!(lines.len(), 2);
            let (credit, charge) = (lines[0].amount_cents, lines[1].amount_cents);
            prop_assert!(credit <= 0 && -credit <= old.plan().price_cents_per_month);
            prop_assert!(charge >= 0 && charge <= new.plan().price_cents_per_month);
            for l in &lines {
                prop_assert_eq!(l.period_end, end);
                prop_assert!(start <= l.period_start && l.period_start <= end);
            }
        }

        #[test]
        fn add_months_keeps_time_and_never_moves_the_day_up(secs in -2_000_000_000i64..4_000_000_000, months in 0u32..1_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let later = add_months(t, months);
            prop_assert_eq!(later.time(), t.time());
            prop_assert!(later.day() <= t.day());
            prop_assert!(later >= t);
        }
    }
}

/// The charge for the first billing period of an app created on `plan` at
/// `anchor` (the subscription starts paid; without it, a later downgrade
/// would credit time that was never charged). `None` for a free plan.
pub fn first_period_line(anchor: OffsetDateTime, plan: PlanId) -> Option<InvoiceLine> {
    let price = plan.plan().price_cents_per_month;
    if price == 0 {
        return None;
    }
    let end = add_months(anchor, 1);
    Some(InvoiceLine {
        description: format!("{} plan ({} to {})", plan.plan().name, anchor.date(), end.date()),
        plan,
        period_start: anchor,
        period_end: end,
        amount_cents: price,
    })
}

#[cfg(test)]
mod first_period_tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn paid_plans_charge_a_full_first_period_and_free_charges_nothing() {
        let anchor = datetime!(2024-01-31 10:00:00 UTC);
        let line = first_period_line(anchor, PlanId::Pro);
        assert_eq!(line.as_ref().map(|l| l.amount_cents), Some(29_900));
        assert_eq!(line.map(|l| l.period_end), Some(datetime!(2024-02-29 10:00:00 UTC)));
        assert_eq!(first_period_line(anchor, PlanId::Free), None);
    }
}
