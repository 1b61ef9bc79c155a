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
            /// Parses the canonical textual form only (lowercase, hyphenated):
            /// one resource, one URL, so e.g. an issuer never differs from
            /// the path it was fetched from.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                Uuid::parse_str(s)
                    .ok()
                    .filter(|u| s.len() == 36 && u.hyphenated().to_string() == s)
                    .map(Self)
                    .ok_or_else(|| DomainError::new("invalid_id", concat!("not a valid ", $what, " id")))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_canonical_form_parses() {
        let id = TenantId::new();
        let text = id.to_string();
        assert_eq!(TenantId::parse(&text).unwrap(), id);
        assert!(TenantId::parse(&text.to_uppercase()).is_err());
        assert!(TenantId::parse(&format!("{{{text}}}")).is_err());
        assert!(TenantId::parse(&format!("urn:uuid:{text}")).is_err());
        assert!(TenantId::parse(&text.replace('-', "")).is_err());
    }
}
