//! Built-in roles and the permissions they grant (CONTRACT.md, "Roles"),
//! tenants' custom roles, and the one rule for handing roles out: a grant
//! may only give what its giver holds.

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
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

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
    pub const ALL: [Action; 4] = [Self::Read, Self::Create, Self::Update, Self::Delete];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

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

    /// The built-in permission table as a list, in `Resource::ALL` ×
    /// `Action::ALL` order.
    pub fn permissions(&self) -> Vec<(Resource, Action)> {
        every_permission().filter(|&(r, a)| self.permits(r, a)).collect()
    }
}

/// Every `(resource, action)` pair there is.
pub fn every_permission() -> impl Iterator<Item = (Resource, Action)> {
    Resource::ALL.into_iter().flat_map(|r| Action::ALL.into_iter().map(move |a| (r, a)))
}

/// Longest custom role name.
pub const CUSTOM_ROLE_NAME_MAX: usize = 64;

/// A custom role's name: 1–64 of `[a-z0-9_-]`, and not a built-in role's.
pub fn check_custom_role_name(name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && name.len() <= CUSTOM_ROLE_NAME_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(DomainError::new(
            "invalid_role",
            format!("a role name is 1–{CUSTOM_ROLE_NAME_MAX} characters of a-z, 0-9, '_' and '-'"),
        ));
    }
    if Role::parse(name).is_ok() {
        return Err(DomainError::new("invalid_role", format!("{name:?} is a built-in role")));
    }
    Ok(())
}

/// One permission of a custom role, from its wire form. A custom role can
/// never grant more than `admin`: changing signing keys (keys create, update,
/// delete) is refused rather than silently dropped, so what a role says is
/// what it grants.
pub fn custom_permission(resource: &str, action: &str) -> Result<(Resource, Action), DomainError> {
    let invalid = |m: String| DomainError::new("invalid_permission", m);
    let r = Resource::parse(resource).ok_or_else(|| invalid(format!("unknown resource {resource:?}")))?;
    let a = Action::parse(action).ok_or_else(|| invalid(format!("unknown action {action:?}")))?;
    if !Role::Admin.permits(r, a) {
        return Err(invalid(format!(
            "a custom role may not {} {}: only super_admin changes signing keys",
            a.as_str(),
            r.as_str()
        )));
    }
    Ok((r, a))
}

/// What a membership grants: a built-in role, or a tenant's custom role with
/// its permission list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    BuiltIn(Role),
    Custom { name: String, permissions: Vec<(Resource, Action)> },
}

impl Grant {
    pub fn name(&self) -> &str {
        match self {
            Self::BuiltIn(r) => r.as_str(),
            Self::Custom { name, .. } => name,
        }
    }

    pub fn is_super_admin(&self) -> bool {
        *self == Self::BuiltIn(Role::SuperAdmin)
    }

    /// A custom role is also capped at `admin` here, so a row written before
    /// the cap (or by hand) cannot grant key changes.
    pub fn permits(&self, resource: Resource, action: Action) -> bool {
        match self {
            Self::BuiltIn(role) => role.permits(resource, action),
            Self::Custom { permissions, .. } => {
                permissions.contains(&(resource, action)) && Role::Admin.permits(resource, action)
            }
        }
    }

    /// Every permission granted, in `every_permission` order.
    pub fn permissions(&self) -> Vec<(Resource, Action)> {
        every_permission().filter(|&(r, a)| self.permits(r, a)).collect()
    }

    /// Whether the holder of `self` may hand out `other`, or manage (change,
    /// remove, reset) a member who holds it: `super_admin` may do anything;
    /// anyone else only what grants no more than they hold themselves, and
    /// never `super_admin`. So an `admin` manages admins, editors, viewers
    /// and custom roles, but no `super_admin`.
    pub fn covers(&self, other: &Grant) -> bool {
        if self.is_super_admin() {
            return true;
        }
        !other.is_super_admin() && self.covers_permissions(&other.permissions())
    }

    /// Whether every one of `permissions` is also granted by `self`.
    pub fn covers_permissions(&self, permissions: &[(Resource, Action)]) -> bool {
        permissions.iter().all(|&(r, a)| self.permits(r, a))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    #[test]
    fn wire_names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::parse(r.as_str()), Some(r));
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Resource::parse("Apps"), None);
        assert_eq!(Action::parse("write"), None);
        assert_eq!(every_permission().count(), 44);
    }

    #[test]
    fn custom_role_names() {
        for ok in ["support", "a", "read-only_2", &"x".repeat(64)] {
            assert!(check_custom_role_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "Support", "with space", "é", "a/b", &"x".repeat(65), "admin", "super_admin", "viewer"] {
            assert_eq!(check_custom_role_name(bad).unwrap_err().code, "invalid_role", "{bad:?}");
        }
    }

    #[test]
    fn custom_permissions_are_capped_at_admin() {
        assert_eq!(custom_permission("apps", "read").unwrap(), (Resource::Apps, Action::Read));
        assert_eq!(custom_permission("keys", "read").unwrap(), (Resource::Keys, Action::Read));
        for (r, a) in [("keys", "create"), ("keys", "update"), ("keys", "delete"), ("app", "read"), ("apps", "write")] {
            assert_eq!(custom_permission(r, a).unwrap_err().code, "invalid_permission", "{r}:{a}");
        }
        let planted = Grant::Custom {
            name: "x".into(),
            permissions: vec![(Resource::Keys, Action::Delete), (Resource::Apps, Action::Read)],
        };
        assert!(!planted.permits(Resource::Keys, Action::Delete));
        assert!(planted.permits(Resource::Apps, Action::Read));
    }

    #[test]
    fn covers_is_grant_no_more_than_you_hold() {
        let sa = Grant::BuiltIn(Role::SuperAdmin);
        let admin = Grant::BuiltIn(Role::Admin);
        let editor = Grant::BuiltIn(Role::Editor);
        let viewer = Grant::BuiltIn(Role::Viewer);
        let apps_reader = Grant::Custom { name: "r".into(), permissions: vec![(Resource::Apps, Action::Read)] };
        let member_manager = Grant::Custom {
            name: "m".into(),
            permissions: vec![(Resource::Members, Action::Read), (Resource::Members, Action::Update)],
        };
        for g in [&sa, &admin, &editor, &viewer, &apps_reader, &member_manager] {
            assert!(sa.covers(g));
            assert_eq!(admin.covers(g), !g.is_super_admin());
        }
        assert!(!editor.covers(&admin));
        assert!(editor.covers(&viewer));
        assert!(viewer.covers(&apps_reader));
        assert!(!member_manager.covers(&viewer));
        assert!(!member_manager.covers(&apps_reader));
        assert!(member_manager.covers(&member_manager));
        assert_eq!(Role::Admin.permissions().len(), 44 - 3);
        assert_eq!(Role::Viewer.permissions().len(), 11);
    }
}
