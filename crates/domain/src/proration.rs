//! Billing periods and prorated invoice lines for plan changes.

use crate::plan::PlanId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
