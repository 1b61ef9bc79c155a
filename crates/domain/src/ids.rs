//! Typed identifiers. Entity ids are UUIDv7 (time-ordered, so id order is
//! creation order and cursors are cheap); they print as hyphenated UUIDs.

use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
            /// Parses the textual form; anything else is a `not_found`-worthy id.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| DomainError::new("invalid_id", concat!("not a valid ", $what, " id")))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// A tenant (an organisation using WireSocket).
    TenantId, "tenant"
);
uuid_id!(
    /// An app of a tenant.
    AppId, "app"
);
uuid_id!(
    /// A human user.
    UserId, "user"
);
uuid_id!(
    /// An invoice.
    InvoiceId, "invoice"
);
uuid_id!(
    /// A refresh-token family (all tokens descending from one grant).
    FamilyId, "family"
);
