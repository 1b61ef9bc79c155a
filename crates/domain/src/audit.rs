//! The audit vocabulary: who did what to what.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    User,
    App,
    System,
    Anonymous,
}

impl ActorType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::App => "app",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Every security action WireSocket records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    #[serde(rename = "setup.completed")]
    SetupCompleted,
    #[serde(rename = "auth.login")]
    Login,
    #[serde(rename = "auth.logout")]
    Logout,
    #[serde(rename = "auth.login_failed")]
    LoginFailed,
    #[serde(rename = "auth.token_failed")]
    TokenFailed,
    #[serde(rename = "auth.refresh_reuse")]
    RefreshReuse,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    #[serde(rename = "tenant.created")]
    TenantCreated,
    #[serde(rename = "app.created")]
    AppCreated,
    #[serde(rename = "app.updated")]
    AppUpdated,
    #[serde(rename = "app.deleted")]
    AppDeleted,
    #[serde(rename = "app.secret_rotated")]
    AppSecretRotated,
    #[serde(rename = "plan.changed")]
    PlanChanged,
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "master_key.rotated")]
    MasterKeyRotated,
}

impl AuditAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SetupCompleted => "setup.completed",
            Self::Login => "auth.login",
            Self::Logout => "auth.logout",
            Self::LoginFailed => "auth.login_failed",
            Self::TokenFailed => "auth.token_failed",
            Self::RefreshReuse => "auth.refresh_reuse",
            Self::TokenRevoked => "token.revoked",
            Self::TenantCreated => "tenant.created",
            Self::AppCreated => "app.created",
            Self::AppUpdated => "app.updated",
            Self::AppDeleted => "app.deleted",
            Self::AppSecretRotated => "app.secret_rotated",
            Self::PlanChanged => "plan.changed",
            Self::KeyCreated => "key.created",
            Self::KeyRotated => "key.rotated",
            Self::KeyRevoked => "key.revoked",
            Self::MasterKeyRotated => "master_key.rotated",
        }
    }
}
