//! Built-in roles and the permissions they grant (CONTRACT.md, "Roles").

use crate::DomainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Tenants,
    Apps,
    Keys,
    Billing,
    Members,
    Roles,
    Invites,
    Webhooks,
    Documents,
    Nodes,
    Audit,
}

impl Resource {
    pub const ALL: [Resource; 11] = [
        Self::Tenants,
        Self::Apps,
        Self::Keys,
        Self::Billing,
        Self::Members,
        Self::Roles,
        Self::Invites,
        Self::Webhooks,
        Self::Documents,
        Self::Nodes,
        Self::Audit,
    ];
}

impl Resource {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tenants => "tenants",
            Self::Apps => "apps",
            Self::Keys => "keys",
            Self::Billing => "billing",
            Self::Members => "members",
            Self::Roles => "roles",
            Self::Invites => "invites",
            Self::Webhooks => "webhooks",
            Self::Documents => "documents",
            Self::Nodes => "nodes",
            Self::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SuperAdmin,
    Admin,
    Editor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::SuperAdmin, Self::Admin, Self::Editor, Self::Viewer];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SuperAdmin => "super_admin",
            Self::Admin => "admin",
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DomainError::new("invalid_role", format!("unknown role {s:?}")))
    }

    /// The built-in permission table.
    pub fn permits(&self, resource: Resource, action: Action) -> bool {
        match self {
            Self::SuperAdmin => true,
            Self::Admin => resource != Resource::Keys || action == Action::Read,
            Self::Editor => {
                action == Action::Read
                    || (matches!(action, Action::Create | Action::Update)
                        && matches!(resource, Resource::Apps | Resource::Webhooks | Resource::Documents))
            }
            Self::Viewer => action == Action::Read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table() {
        for r in Resource::ALL {
            for a in [Action::Read, Action::Create, Action::Update, Action::Delete] {
                assert!(Role::SuperAdmin.permits(r, a));
                assert_eq!(Role::Admin.permits(r, a), r != Resource::Keys || a == Action::Read);
                assert_eq!(Role::Viewer.permits(r, a), a == Action::Read);
            }
        }
        assert!(Role::Editor.permits(Resource::Apps, Action::Create));
        assert!(Role::Editor.permits(Resource::Apps, Action::Update));
        assert!(!Role::Editor.permits(Resource::Apps, Action::Delete));
        assert!(!Role::Editor.permits(Resource::Keys, Action::Create));
        assert!(!Role::Editor.permits(Resource::Billing, Action::Update));
        assert!(Role::Editor.permits(Resource::Webhooks, Action::Create));
        assert!(Role::Editor.permits(Resource::Documents, Action::Update));
    }
}
