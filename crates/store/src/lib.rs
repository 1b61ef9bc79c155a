//! Storage for WireSocket: one object-safe [`Store`] trait, implemented for
//! embedded SQLite and for PostgreSQL from the same SQL, and one contract
//! test suite (`contract`) that every implementation must pass.
//!
//! # Layout
//! - [`records`]: the rows, as plain types (ids are domain ids, times are
//!   `OffsetDateTime` at whole-second precision).
//! - [`Store`]: every table access the server makes.
//! - [`sql`]: the implementations (`SqliteStore`, `PostgresStore`).
//! - `contract`: the generic contract tests (behind the `contract` feature
//!   or `cfg(test)`), run against both engines.
//!
//! Times are stored as Unix seconds (`BIGINT`), ids as text, JSON as text, so
//! one SQL text serves both engines.

pub mod records;
pub mod sql;

#[cfg(any(test, feature = "contract"))]
pub mod contract;

pub use records::*;

use async_trait::async_trait;
use domain::ids::{AppId, FamilyId, TenantId, UserId};
use domain::plan::PlanId;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or state rule held by the database refused the write.
    /// The payload is a stable code the API can answer with.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One page of a collection, ordered by id ascending (ids are time-ordered).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// Outcome of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    /// The presented token is now used; the new one is stored. Carries the
    /// presented token's record.
    Rotated(RefreshTokenRecord),
    /// The presented token had already been used (possibly concurrently):
    /// its whole family is now revoked.
    Reused(RefreshTokenRecord),
    /// Unknown, revoked or expired: nothing changed.
    Invalid,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<()>;

    // ---- users and sessions -------------------------------------------
    /// Creates the very first user, their tenant (with `owner` as
    /// `super_admin`) and the tenant's first signing key, atomically.
    /// `Conflict("setup_disabled")` if setup already ran or any user exists,
    /// also when called concurrently.
    async fn setup_first_user(&self, user: &UserRecord, tenant: &TenantRecord, key: &SigningKeyRecord) -> Result<()>;
    async fn create_user(&self, user: &UserRecord) -> Result<()>; // Conflict("email_taken")
    async fn get_user(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// `email` is already normalised (lowercase).
    async fn get_user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    async fn count_users(&self) -> Result<i64>;

    async fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// Returns the session even if expired; the caller checks `expires_at`.
    async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>>;
    /// Returns whether a session was deleted.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
    async fn delete_user_sessions(&self, user_id: UserId) -> Result<u64>;
    async fn delete_expired_sessions(&self, now: OffsetDateTime) -> Result<u64>;

    // ---- tenants and memberships --------------------------------------
    /// Creates the tenant, makes `owner` its `owner_role`, stores its first key.
    async fn create_tenant(
        &self,
        tenant: &TenantRecord,
        owner: UserId,
        owner_role: &str,
        key: &SigningKeyRecord,
    ) -> Result<()>;
    async fn get_tenant(&self, id: TenantId) -> Result<Option<TenantRecord>>;
    /// The user's role in the tenant, if a member.
    async fn get_membership(&self, tenant: TenantId, user: UserId) -> Result<Option<String>>;
    /// Every tenant the user belongs to, with the role, ordered by tenant id.
    async fn list_user_tenants(&self, user: UserId) -> Result<Vec<(TenantRecord, String)>>;

    // ---- signing keys -------------------------------------------------
    /// All keys of a tenant, newest first.
    async fn list_signing_keys(&self, tenant: TenantId) -> Result<Vec<SigningKeyRecord>>;
    async fn get_signing_key(&self, kid: &str) -> Result<Option<SigningKeyRecord>>;
    /// Atomically: every `active` key of the tenant becomes `retiring` with
    /// `retires_at`, and `new_key` (state `active`) is inserted.
    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        new_key: &SigningKeyRecord,
        retires_at: OffsetDateTime,
    ) -> Result<()>;
    /// Atomically: the key becomes `revoked` (with `revoked_at = now`) and,
    /// if given, `replacement` (state `active`) is inserted. `NotFound` if the
    /// tenant has no such key; revoking a revoked key is a no-op success.
    async fn revoke_signing_key(
        &self,
        tenant: TenantId,
        kid: &str,
        now: OffsetDateTime,
        replacement: Option<&SigningKeyRecord>,
    ) -> Result<()>;
    /// Every key of every tenant (for master-key re-wrapping).
    async fn list_all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Replaces the encrypted private key of `kid` (re-wrap under a new master key version).
    async fn rewrap_signing_key(&self, kid: &str, private_key_enc: &[u8], master_key_version: u32) -> Result<()>;

    // ---- apps, plans, invoices ----------------------------------------
    /// `Conflict("free_plan_limit")` if the tenant already has a free app
    /// (enforced by a unique index, so it holds under concurrency).
    async fn create_app(&self, app: &AppRecord) -> Result<()>;
    /// The app, only if it belongs to `tenant`.
    async fn get_app(&self, tenant: TenantId, app: AppId) -> Result<Option<AppRecord>>;
    async fn get_app_by_id(&self, app: AppId) -> Result<Option<AppRecord>>;
    async fn get_app_by_client_id(&self, client_id: &str) -> Result<Option<AppRecord>>;
    async fn list_apps(&self, tenant: TenantId, after: Option<&str>, limit: u32) -> Result<Page<AppRecord>>;
    /// Stores name, allowed_domains, environment and updated_at of `app` (matched by tenant and id).
    async fn update_app(&self, app: &AppRecord) -> Result<()>;
    /// Deletes the app and its refresh tokens and invoices. `NotFound` if absent.
    async fn delete_app(&self, tenant: TenantId, app: AppId) -> Result<()>;
    async fn set_app_secret(&self, app: AppId, client_secret_hash: &str, now: OffsetDateTime) -> Result<()>;
    /// Atomically sets the plan and stores the invoice. `Conflict("free_plan_limit")`.
    async fn change_app_plan(&self, app: AppId, plan: PlanId, invoice: &InvoiceRecord) -> Result<()>;
    async fn list_invoices(&self, app: AppId, after: Option<&str>, limit: u32) -> Result<Page<InvoiceRecord>>;

    // ---- refresh tokens and the access-token deny-list ----------------
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<()>;
    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRecord>>;
    /// Atomically marks `old_hash` used and stores `new_token` (same family).
    /// If `old_hash` was already used — even by a concurrent call — revokes
    /// the whole family and answers `Reused`. Expired (`expires_at <= now`)
    /// or revoked tokens answer `Invalid`. At most one concurrent call with
    /// the same token gets `Rotated`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_token: &RefreshTokenRecord,
        now: OffsetDateTime,
    ) -> Result<RotateOutcome>;
    async fn revoke_refresh_family(&self, family: FamilyId, now: OffsetDateTime) -> Result<u64>;
    /// Puts an access token's `jti` on the deny-list until `expires_at`.
    async fn deny_jti(&self, jti: &str, expires_at: OffsetDateTime) -> Result<()>;
    async fn is_jti_denied(&self, jti: &str, now: OffsetDateTime) -> Result<bool>;
    /// Removes expired deny-list entries, expired refresh tokens and expired sessions.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64>;

    // ---- audit --------------------------------------------------------
    /// Appends; there is no update or delete.
    async fn append_audit(&self, event: &AuditRecord) -> Result<()>;
    /// Newest first. `tenant = None` lists platform-level events.
    async fn list_audit(&self, tenant: Option<TenantId>, limit: u32) -> Result<Vec<AuditRecord>>;
}
