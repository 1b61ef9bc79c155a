//! The plan catalog and the license regions.

use crate::DomainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanId {
    Free,
    Starter,
    Pro,
    Enterprise,
}

impl PlanId {
    pub const ALL: [PlanId; 4] = [Self::Free, Self::Starter, Self::Pro, Self::Enterprise];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Starter => "starter",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| DomainError::new("invalid_plan", format!("unknown plan {s:?}; see GET /v1/plans")))
    }

    pub fn plan(&self) -> Plan {
        match self {
            Self::Free => Plan {
                id: *self,
                name: "Free",
                max_connections: Some(20),
                max_documents: Some(100),
                ops_per_minute: Some(1_000),
                price_cents_per_month: 0,
            },
            Self::Starter => Plan {
                id: *self,
                name: "Starter",
                max_connections: Some(200),
                max_documents: Some(10_000),
                ops_per_minute: Some(10_000),
                price_cents_per_month: 2_900,
            },
            Self::Pro => Plan {
                id: *self,
                name: "Pro",
                max_connections: Some(2_000),
                max_documents: Some(100_000),
                ops_per_minute: Some(100_000),
                price_cents_per_month: 29_900,
            },
            Self::Enterprise => Plan {
                id: *self,
                name: "Enterprise",
                max_connections: None,
                max_documents: None,
                ops_per_minute: None,
                price_cents_per_month: 199_900,
            },
        }
    }
}

impl std::fmt::Display for PlanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan's limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: &'static str,
    pub max_connections: Option<u64>,
    pub max_documents: Option<u64>,
    pub ops_per_minute: Option<u64>,
    pub price_cents_per_month: i64,
}

pub fn catalog() -> Vec<Plan> {
    PlanId::ALL.iter().map(PlanId::plan).collect()
}

/// A license region an app can be pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub id: String,
    pub name: String,
}

pub fn default_regions() -> Vec<Region> {
    [("aws-us-east-1", "AWS US East (N. Virginia)"), ("eu-central-1", "EU Central (Frankfurt)")]
        .into_iter()
        .map(|(id, name)| Region { id: id.to_owned(), name: name.to_owned() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_contract_defaults() {
        let free = PlanId::Free.plan();
        assert_eq!((free.max_connections, free.max_documents, free.ops_per_minute), (Some(20), Some(100), Some(1000)));
        let starter = PlanId::Starter.plan();
        assert_eq!(
            (starter.max_connections, starter.max_documents, starter.ops_per_minute),
            (Some(200), Some(10_000), Some(10_000))
        );
        let pro = PlanId::Pro.plan();
        assert_eq!(
            (pro.max_connections, pro.max_documents, pro.ops_per_minute),
            (Some(2000), Some(100_000), Some(100_000))
        );
        let ent = PlanId::Enterprise.plan();
        assert_eq!((ent.max_connections, ent.max_documents, ent.ops_per_minute), (None, None, None));
        for p in PlanId::ALL {
            assert_eq!(PlanId::parse(p.as_str()), Ok(p));
        }
        assert_eq!(PlanId::parse("gold").map_err(|e| e.code), Err("invalid_plan"));
    }
}
