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
use domain::audit::{ChainBreak, ChainVerifier, GENESIS_HASH};
use domain::ids::{AppId, FamilyId, TenantId, UserId};
use domain::plan::PlanId;
use domain::role::{Action, Resource};
use time::OffsetDateTime;

/// Rows per read when [`verify_audit_chain`] walks a chain.
pub const AUDIT_VERIFY_PAGE: u32 = 500;

/// Verifies one audit chain (`None`: the platform chain) with
/// `domain::audit::ChainVerifier`: reads the head first, then the rows up to
/// it, page by page, so entries appended meanwhile are simply not looked
/// at. The outer `Result` is the store's; the inner one is the verdict:
/// how many rows were checked, or where the chain breaks.
pub async fn verify_audit_chain(
    store: &dyn Store,
    tenant: Option<TenantId>,
    page: u32,
) -> Result<std::result::Result<u64, ChainBreak>> {
    let (head_seq, head_hash) = store.audit_head(tenant).await?.unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    while after < head_seq {
        let rows = store.audit_chain_rows(tenant, after, page).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows.iter().take_while(|r| r.chain_seq <= head_seq) {
            if let Err(broken) = row.verify_with(&mut verifier) {
                return Ok(Err(broken));
            }
            after = row.chain_seq;
        }
        if rows.last().is_some_and(|r| r.chain_seq > head_seq) {
            break;
        }
    }
    Ok(verifier.finish(head_seq, &head_hash))
}

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

/// One page of a collection, ordered by id ascending (ids are time-ordered),
/// or by name for documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id (or name) to pass as `after` for the next page; `None` on the last page.
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

/// Called once a batch submitted to a [`DocAppender`] is durable (with its
/// seqs, in batch order) or has failed. Runs on the appender's own thread:
/// it must be quick and must never block or await.
pub type Durable = Box<dyn FnOnce(Result<Vec<i64>>) + Send>;

/// An ordered, callback-style way into the document log, for stores that
/// have a writer of their own (SQLite on a file: its writer thread). The
/// data plane uses it so that an update goes from the connection to the
/// writer and from the writer straight to the room's broadcast, with no
/// task in between.
#[async_trait]
pub trait DocAppender: Send + Sync {
    /// Appends `batch` (not empty) as [`Store::append_doc_updates`] does,
    /// then calls `then` with the result. Callbacks run one at a time, in
    /// the order submissions were accepted, so seqs and callbacks follow
    /// the same order. Waits only while the writer's queue is full. An
    /// error means the writer is gone: `then` is dropped without a call.
    async fn submit(&self, batch: Vec<(DocKey, Vec<u8>)>, now: OffsetDateTime, then: Durable) -> Result<()>;
}

/// The store of everything but the bytes of live documents.
///
/// # Events ride with their change
/// A method that takes `events: &[OutboxEvent]` writes them into the event
/// outbox in the same transaction as its change: both commit or neither
/// does (a refusal such as `Conflict` or `NotFound` stores no event). Pass
/// `&[]` when nothing is to be reported.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's ordered document-log appender, if it has one (see
    /// [`DocAppender`]); otherwise use [`Store::append_doc_updates`].
    fn doc_appender(&self) -> Option<std::sync::Arc<dyn DocAppender>> {
        None
    }

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

    /// Stores the session, with the refresh-token family it belongs to, if any.
    async fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// Returns the session even if expired; the caller checks `expires_at`.
    async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>>;
    /// Returns whether a session was deleted.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
    async fn delete_user_sessions(&self, user_id: UserId) -> Result<u64>;
    /// Deletes every session whose `family_id` is `family` (the sessions
    /// issued with that refresh-token family), answering how many. Sessions
    /// of other families and sessions without a family are untouched. Call it
    /// when the family is revoked (logout, refresh-token reuse), so that a
    /// stolen family cannot outlive its revocation through a session.
    async fn delete_family_sessions(&self, family: FamilyId) -> Result<u64>;
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
    /// `retires_at`, then `new_key` (state `active`) is inserted — in that
    /// order, so a rotation on its own never finds another active key.
    ///
    /// A tenant has at most one `active` key, held by a partial unique index.
    /// When rotations (or a rotation and a revocation with a replacement) of
    /// one tenant race on PostgreSQL, one wins and the others answer
    /// `Conflict("key_conflict")` with nothing changed; the caller answers
    /// 409 and the client retries. `Conflict("kid_taken")` if `new_key.kid`
    /// is in use.
    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        new_key: &SigningKeyRecord,
        retires_at: OffsetDateTime,
        events: &[OutboxEvent],
    ) -> Result<()>;
    /// Atomically, in one write transaction: reads the key's state (locking
    /// its row on PostgreSQL; SQLite's write transaction is exclusive),
    /// makes it `revoked` (with `revoked_at = now`) and inserts
    /// `replacement` (state `active`) ONLY if the key was `active` at that
    /// moment. A `retiring` key — e.g. one a rotation committed between the
    /// caller's read and this call — is revoked and the replacement is
    /// ignored (the tenant already has the rotation's active key), so the
    /// tenant never ends up with two active keys. `NotFound` if the tenant has
    /// no such key; revoking a revoked key is a no-op success (replacement
    /// ignored too). `Conflict("key_conflict")` if, despite this, another
    /// active key of the tenant is in the way (nothing changes).
    async fn revoke_signing_key(
        &self,
        tenant: TenantId,
        kid: &str,
        now: OffsetDateTime,
        replacement: Option<&SigningKeyRecord>,
        events: &[OutboxEvent],
    ) -> Result<()>;
    /// Every key of every tenant (for master-key re-wrapping).
    async fn list_all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Replaces the encrypted private key of `kid` (re-wrap under a new master key version).
    async fn rewrap_signing_key(&self, kid: &str, private_key_enc: &[u8], master_key_version: u32) -> Result<()>;

    // ---- apps, plans, invoices ----------------------------------------
    /// Stores `app` and, if given, its first invoice, in one transaction:
    /// both or neither. The invoice is stored for `app` (its `app_id` and
    /// `tenant_id` are those of `app`, whatever the record says).
    /// `Conflict("free_plan_limit")` if the tenant already has a free app
    /// (enforced by a unique index, so it holds under concurrency);
    /// `Conflict("client_id_taken")`; any refusal stores neither.
    async fn create_app(
        &self,
        app: &AppRecord,
        initial_invoice: Option<&InvoiceRecord>,
        events: &[OutboxEvent],
    ) -> Result<()>;
    /// The app, only if it belongs to `tenant`.
    async fn get_app(&self, tenant: TenantId, app: AppId) -> Result<Option<AppRecord>>;
    async fn get_app_by_id(&self, app: AppId) -> Result<Option<AppRecord>>;
    async fn get_app_by_client_id(&self, client_id: &str) -> Result<Option<AppRecord>>;
    async fn list_apps(&self, tenant: TenantId, after: Option<&str>, limit: u32) -> Result<Page<AppRecord>>;
    /// Stores name, allowed_domains, environment and updated_at of `app` (matched by tenant and id).
    async fn update_app(&self, app: &AppRecord, events: &[OutboxEvent]) -> Result<()>;
    /// Deletes the app and its refresh tokens, invoices and documents. `NotFound` if absent.
    async fn delete_app(&self, tenant: TenantId, app: AppId, events: &[OutboxEvent]) -> Result<()>;
    async fn set_app_secret(
        &self,
        app: AppId,
        client_secret_hash: &str,
        now: OffsetDateTime,
        events: &[OutboxEvent],
    ) -> Result<()>;
    /// Compare-and-set: atomically changes the plan from `from` to `to` and
    /// stores the invoice (for `app`), only if the app's plan is still `from`
    /// — so of two concurrent changes priced from the same plan, one wins.
    /// `NotFound` if the app does not exist; `Conflict("plan_changed")` if
    /// its plan is no longer `from` (the caller re-reads and re-prices);
    /// `Conflict("free_plan_limit")` if `to` is free and the tenant already
    /// has another free app. On any refusal nothing changes and no invoice
    /// is stored.
    async fn change_app_plan(&self, app: AppId, from: PlanId, to: PlanId, invoice: &InvoiceRecord) -> Result<()>;
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
    /// Every deny-list entry still in force at `now`, with its expiry: the
    /// list is short (revoked, unexpired access tokens), so servers mirror it
    /// in memory and check it on every connect without a round trip.
    async fn list_denied_jtis(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>>;
    /// Removes what can no longer be used or shown (see [`PurgeReport`]):
    /// expired deny-list entries, refresh tokens (and so their families)
    /// and sessions; expired or used password resets; invites expired or
    /// accepted more than `retention` ago (the invite list shows expired
    /// ones until then); finished webhook jobs and delivery attempts older
    /// than `retention` (the delivery log keeps that much). One
    /// transaction; answers what went, by kind.
    async fn purge_expired(&self, now: OffsetDateTime, retention: time::Duration) -> Result<PurgeReport>;

    // ---- documents ----------------------------------------------------
    /// Group commit: appends every update of the batch, in order, in ONE
    /// transaction (creating each doc's row when absent, bumping `updated_at`
    /// and `size_bytes`). Answers the seq assigned to each entry, in batch
    /// order (monotonic per doc, starting at 1). All-or-nothing: an entry for
    /// an app that does not exist fails the whole batch with `NotFound`.
    async fn append_doc_updates(&self, batch: &[(DocKey, Vec<u8>)], now: OffsetDateTime) -> Result<Vec<i64>>;
    /// The stored state, or `None` if the doc was never written (or was deleted).
    /// Snapshot and log are read as of one instant, so a concurrent compaction
    /// cannot make entries go missing.
    async fn load_doc(&self, key: &DocKey) -> Result<Option<DocState>>;
    /// Atomically replaces the snapshot and every log entry with seq <=
    /// `upto_seq` by `snapshot` (which must contain all of them); entries
    /// appended after `upto_seq` stay. `size_bytes` is recomputed; `updated_at`
    /// is not touched (the content is the same). `NotFound` if the doc does not
    /// exist; `Conflict("stale_compaction")` if the stored snapshot already
    /// covers more than `upto_seq` (a concurrent compaction won; nothing
    /// changes); `Conflict("seq_out_of_range")` if `upto_seq` was never assigned.
    async fn compact_doc(&self, key: &DocKey, snapshot: &[u8], upto_seq: i64, now: OffsetDateTime) -> Result<()>;
    async fn get_doc(&self, key: &DocKey) -> Result<Option<DocRecord>>;
    /// Docs of an app ordered by name (byte order), `after` = exclusive lower
    /// bound name; same `Page`/`next_after` rules as `list_apps`.
    async fn list_docs(&self, app: AppId, after: Option<&str>, limit: u32) -> Result<Page<DocRecord>>;
    /// Deletes the doc and its log; answers whether it existed.
    async fn delete_doc(&self, key: &DocKey, events: &[OutboxEvent]) -> Result<bool>;
    async fn count_docs(&self, app: AppId) -> Result<i64>;
    /// Number of log entries after the snapshot and their total bytes (to
    /// decide when to compact); `(0, 0)` for a doc that does not exist.
    async fn doc_log_stats(&self, key: &DocKey) -> Result<(i64, i64)>;

    // ---- audit --------------------------------------------------------
    /// Appends `event` to its chain (its tenant's; `tenant_id = None`: the
    /// platform chain), in ONE transaction that holds the chain's head row
    /// from reading it to updating it: the entry gets `chain_seq = last + 1`,
    /// `prev_hash` = the head's hash (`GENESIS_HASH` for a chain's first
    /// entry) and `hash = ChainEntry::hash(prev_hash)`. Concurrent appends
    /// to one chain thus take consecutive positions and never fork. The
    /// event's `seq`, `chain_seq`, `prev_hash` and `hash` are ignored. There
    /// is no update or delete.
    async fn append_audit(&self, event: &AuditRecord) -> Result<()>;
    /// Appends every event, in order, in ONE transaction: all or none (e.g.
    /// one failed login recorded in each of a user's tenants). Chains are
    /// locked in chain order, so concurrent batches cannot deadlock; within a
    /// chain, entries keep the batch's order.
    async fn append_audit_many(&self, events: &[AuditRecord]) -> Result<()>;
    /// Chains the rows stored before the hash chain existed (NULL
    /// `chain_seq`), in `seq` order per chain, after whatever each chain
    /// already holds, creating the heads; answers how many rows it chained.
    /// Idempotent, and safe when several stores start together (the rows
    /// are locked). The stores call it when they open, after migrating.
    async fn backfill_audit_chain(&self) -> Result<u64>;
    /// Newest first. `tenant = None` lists platform-level events.
    async fn list_audit(&self, tenant: Option<TenantId>, limit: u32) -> Result<Vec<AuditRecord>>;
    /// One chain's entries that pass `filter`, newest first (by `seq`), with
    /// `seq < before_seq` when given. `next_after` is the last entry's `seq`
    /// (as text): parse it and pass it as `before_seq` for the next page.
    async fn list_audit_page(
        &self,
        filter: &AuditFilter,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Page<AuditRecord>>;
    /// One chain's entries with `chain_seq > after_chain_seq`, ascending by
    /// `chain_seq`, at most `limit` (clamped like pages): what a verifier
    /// reads, page after page.
    async fn audit_chain_rows(
        &self,
        tenant: Option<TenantId>,
        after_chain_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;
    /// The chain's head: its last `chain_seq` and hash; `None` for a chain
    /// never written.
    async fn audit_head(&self, tenant: Option<TenantId>) -> Result<Option<(i64, String)>>;
    /// Every chain that has a head (`None`: the platform chain first, then
    /// tenants by id), e.g. for `wiresocket audit verify`.
    async fn audit_chains(&self) -> Result<Vec<Option<TenantId>>>;

    // ---- members ------------------------------------------------------
    /// Makes `user` a member of `tenant` with `role`. `Conflict("already_member")`;
    /// `NotFound` if the tenant or user does not exist;
    /// `Conflict("unknown_role")` if `role` is neither built in nor one of
    /// the tenant's custom roles (checked with the tenant locked, so a
    /// concurrent `delete_role` cannot slip between).
    async fn add_membership(&self, tenant: TenantId, user: UserId, role: &str, now: OffsetDateTime) -> Result<()>;
    /// The tenant's members ordered by user id, `after` = exclusive lower
    /// bound user id; same `Page` rules as `list_apps`.
    async fn list_members(&self, tenant: TenantId, after: Option<&str>, limit: u32) -> Result<Page<MemberRecord>>;
    /// One member of the tenant, as `list_members` shows it; `None` if not a member.
    async fn get_member(&self, tenant: TenantId, user: UserId) -> Result<Option<MemberRecord>>;
    /// Atomically, with the tenant locked (on PostgreSQL its row; SQLite's
    /// write transaction is exclusive): changes the member's role, then
    /// refuses with `Conflict("last_super_admin")` — changing nothing — if
    /// the tenant would be left without a `super_admin`. So of two
    /// concurrent demotions of the last two super_admins, one fails.
    /// `NotFound` if not a member; `Conflict("unknown_role")` as in
    /// `add_membership`.
    async fn set_member_role(&self, tenant: TenantId, user: UserId, role: &str, events: &[OutboxEvent]) -> Result<()>;
    /// Removes the membership, under the same rules as `set_member_role`
    /// (`NotFound`, `Conflict("last_super_admin")`, atomic per tenant).
    async fn remove_membership(&self, tenant: TenantId, user: UserId, events: &[OutboxEvent]) -> Result<()>;

    // ---- custom roles -------------------------------------------------
    /// `Conflict("role_exists")` if the tenant has a role of that name or the
    /// name is a built-in role's; `NotFound` if the tenant does not exist.
    async fn create_role(&self, role: &CustomRoleRecord) -> Result<()>;
    async fn get_role(&self, tenant: TenantId, name: &str) -> Result<Option<CustomRoleRecord>>;
    /// The tenant's custom roles, by name.
    async fn list_roles(&self, tenant: TenantId) -> Result<Vec<CustomRoleRecord>>;
    /// Replaces the permissions. `NotFound` if there is no such role.
    async fn update_role_permissions(
        &self,
        tenant: TenantId,
        name: &str,
        permissions: &[(Resource, Action)],
        now: OffsetDateTime,
    ) -> Result<()>;
    /// Deletes the role, atomically with the tenant locked (see
    /// `add_membership`): `Conflict("role_in_use")` while a member holds it
    /// or an unaccepted invite with `expires_at > now` would grant it;
    /// `NotFound` if there is no such role.
    async fn delete_role(&self, tenant: TenantId, name: &str, now: OffsetDateTime) -> Result<()>;

    // ---- invites ------------------------------------------------------
    /// Stores a pending invite (its `accepted_*` fields are stored as given:
    /// pass `None`). `NotFound` if the tenant does not exist;
    /// `Conflict("unknown_role")` as in `add_membership`;
    /// `Conflict("token_taken")` if the token hash is in use.
    async fn create_invite(&self, invite: &InviteRecord) -> Result<()>;
    /// The tenant's unaccepted invites (expired ones included, so they can be
    /// seen and deleted), ordered by id; same `Page` rules as `list_apps`.
    async fn list_invites(&self, tenant: TenantId, after: Option<&str>, limit: u32) -> Result<Page<InviteRecord>>;
    /// Deletes an unaccepted invite; answers whether one was deleted.
    async fn delete_invite(&self, tenant: TenantId, id: &str) -> Result<bool>;
    async fn get_invite_by_token(&self, token_hash: &str) -> Result<Option<InviteRecord>>;
    /// In ONE transaction: marks the invite accepted by the acceptor (a
    /// compare-and-set that matches only if it is unaccepted and
    /// `expires_at > now`, so of concurrent accepts of one token exactly one
    /// gets past it), creates the user for `NewUser`, then adds the
    /// membership with the invite's role. Answers the invite as now stored.
    /// The store does not compare the acceptor's email with the invite's:
    /// the token proves the mailbox, and the caller decides which email a
    /// new account gets.
    /// `Conflict("invalid_token")` for an unknown, used or expired token;
    /// `Conflict("email_taken")`, `Conflict("already_member")` or
    /// `Conflict("unknown_role")` roll everything back, so the invite stays
    /// unused.
    async fn accept_invite(
        &self,
        token_hash: &str,
        acceptor: InviteAcceptor<'_>,
        // The display name given with the acceptance: a new account gets
        // it; an existing one only if it has none yet.
        name: Option<&str>,
        now: OffsetDateTime,
        events: &[OutboxEvent],
    ) -> Result<InviteRecord>;

    // ---- password resets ----------------------------------------------
    /// `NotFound` if the user does not exist.
    async fn create_password_reset(&self, reset: &PasswordResetRecord) -> Result<()>;
    /// In ONE transaction, only if the token is unused and `expires_at > now`
    /// (a compare-and-set, so a token works once even under concurrency;
    /// else `Conflict("invalid_token")`, nothing changed): marks it used,
    /// sets the user's password hash, deletes every session of the user,
    /// revokes (`revoked_at = now`) every unrevoked user refresh token whose
    /// subject is the user, and marks the user's other unused reset tokens
    /// used. Answers the user.
    async fn consume_password_reset(
        &self,
        token_hash: &str,
        new_password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<UserId>;
    /// Replaces the password hash only (sessions untouched). `NotFound` if no such user.
    async fn set_user_password(&self, user: UserId, password_hash: &str) -> Result<()>;

    // ---- MFA ----------------------------------------------------------
    /// Stores a pending (not yet enabled) TOTP secret, replacing a pending
    /// one. `Conflict("mfa_already_enabled")` if MFA is enabled (the
    /// enabled secret is kept; the check and the write are one statement);
    /// `NotFound` if the user does not exist.
    async fn put_pending_mfa(
        &self,
        user: UserId,
        secret_enc: &[u8],
        master_key_version: u32,
        now: OffsetDateTime,
    ) -> Result<()>;
    async fn get_mfa(&self, user: UserId) -> Result<Option<MfaRecord>>;
    /// Atomically, only if a pending secret exists (else
    /// `Conflict("mfa_not_pending")`, nothing changed; of concurrent calls
    /// one wins): sets `enabled_at = now`, `last_step = step` (the step of
    /// the code that proved the secret, so it cannot be replayed) and
    /// replaces the recovery codes by `recovery_code_hashes`.
    async fn enable_mfa(
        &self,
        user: UserId,
        step: i64,
        recovery_code_hashes: &[String],
        now: OffsetDateTime,
    ) -> Result<()>;
    /// Compare-and-set of `last_step` from below `step` to `step`, for an
    /// enabled secret: true if the code's step is accepted. A step is
    /// accepted at most once (of concurrent calls with one step, one wins),
    /// and never one at or below the last accepted.
    async fn consume_totp_step(&self, user: UserId, step: i64) -> Result<bool>;
    /// Marks the unused recovery code used; true if it was (single use, also
    /// under concurrency).
    async fn consume_recovery_code(&self, user: UserId, code_hash: &str, now: OffsetDateTime) -> Result<bool>;
    /// Deletes the secret (pending or enabled) and every recovery code;
    /// answers whether there was a secret.
    async fn disable_mfa(&self, user: UserId) -> Result<bool>;
    async fn unused_recovery_codes(&self, user: UserId) -> Result<i64>;
    /// Every stored secret (for master-key re-wrapping).
    async fn list_all_mfa_secrets(&self) -> Result<Vec<MfaRecord>>;
    /// Replaces the encrypted secret (re-wrap under a new master key
    /// version); `NotFound` if the user has none.
    async fn rewrap_mfa_secret(&self, user: UserId, secret_enc: &[u8], master_key_version: u32) -> Result<()>;

    // ---- webhooks -----------------------------------------------------
    /// Stores the webhook for `(webhook.tenant_id, webhook.app_id)`:
    /// `NotFound` unless the app exists and belongs to that tenant.
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<()>;
    /// The webhook, only if it belongs to that tenant and app.
    async fn get_webhook(&self, tenant: TenantId, app: AppId, id: &str) -> Result<Option<WebhookRecord>>;
    /// The app's webhooks by id; same `Page` rules as `list_apps`.
    async fn list_webhooks(&self, app: AppId, after: Option<&str>, limit: u32) -> Result<Page<WebhookRecord>>;
    /// Stores `url`, `events` and `updated_at` of `webhook` (matched by
    /// tenant, app and id). `NotFound` if absent.
    async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<()>;
    /// Replaces the encrypted secret (rotation). `NotFound` if absent.
    async fn set_webhook_secret(
        &self,
        id: &str,
        secret_enc: &[u8],
        master_key_version: u32,
        now: OffsetDateTime,
    ) -> Result<()>;
    /// Deletes the webhook with its jobs and deliveries; answers whether it existed.
    async fn delete_webhook(&self, tenant: TenantId, app: AppId, id: &str) -> Result<bool>;
    /// Every webhook of every app of the tenant, by id (the dispatcher
    /// matches the events).
    async fn webhooks_for_tenant(&self, tenant: TenantId) -> Result<Vec<WebhookRecord>>;
    /// Every webhook (for master-key re-wrapping).
    async fn list_all_webhook_secrets(&self) -> Result<Vec<WebhookRecord>>;
    /// Replaces the encrypted secret under a new master key version;
    /// `updated_at` is not touched. `NotFound` if absent.
    async fn rewrap_webhook_secret(&self, id: &str, secret_enc: &[u8], master_key_version: u32) -> Result<()>;

    // ---- webhook outbox -----------------------------------------------
    /// Stores the jobs (status `pending`, attempt 0, under their webhook's
    /// tenant; those fields of the records are ignored) in ONE transaction;
    /// answers how many were new. Idempotent on (event_id, webhook_id): a
    /// job already enqueued is skipped, as is a job for a webhook deleted
    /// meanwhile.
    async fn enqueue_webhook_jobs(&self, jobs: &[WebhookJobRecord]) -> Result<u64>;
    /// Stores events with no change of their own (a debounced
    /// `document.updated`) in the event outbox, in one transaction.
    async fn insert_events(&self, events: &[OutboxEvent]) -> Result<()>;
    /// Up to `limit` events of the outbox, oldest first.
    async fn pending_events(&self, limit: u32) -> Result<Vec<OutboxEvent>>;
    /// In ONE transaction: enqueues `jobs` (as `enqueue_webhook_jobs` does,
    /// idempotent on (event_id, webhook_id)) and removes the event from the
    /// outbox; answers how many jobs were new. An event another process has
    /// fanned out already adds nothing.
    async fn fan_out_event(&self, event_id: &str, jobs: &[WebhookJobRecord]) -> Result<u64>;
    /// Atomically leases up to `limit` due jobs — `pending`, with
    /// `next_attempt_at <= now` and no live lease (`locked_until` NULL or
    /// `<= now`) — by setting `locked_until = lease_until`; answers them
    /// (as stored after the lease), oldest due first. Concurrent claimers
    /// never get the same job (PostgreSQL: `FOR UPDATE SKIP LOCKED`;
    /// SQLite: one writer at a time). A crashed claimer's jobs come back
    /// when its lease runs out.
    async fn claim_webhook_jobs(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<WebhookJobRecord>>;
    /// In ONE transaction: bumps the job's `attempt`, sets its status
    /// (`Retry` keeps it pending with `next_attempt_at = at`), clears the
    /// lease, and appends `delivery` (its `at`, `status_code`, `latency_ms`
    /// and `error`; the other fields come from the job). `NotFound` if there
    /// is no such job; `Conflict("job_not_pending")` if it is already
    /// delivered or failed (nothing is stored). The job's `updated_at`
    /// becomes `delivery.at`.
    async fn finish_webhook_attempt(&self, job_id: &str, delivery: &DeliveryRecord, next: JobNext) -> Result<()>;
    /// The webhook's delivery attempts, newest first, with `seq < before_seq`
    /// when given; `next_after` is the last one's `seq` as text.
    async fn list_webhook_deliveries(
        &self,
        webhook: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Page<DeliveryRecord>>;
    async fn get_webhook_job(&self, id: &str) -> Result<Option<WebhookJobRecord>>;

    // ---- node registry ----------------------------------------------------
    /// Records a heartbeat at `now` and answers the node as stored: a new id
    /// is registered; the same instance keeps its `draining`; a new instance
    /// (a restart) starts undrained.
    async fn node_heartbeat(&self, beat: &NodeHeartbeat, now: OffsetDateTime) -> Result<NodeRecord>;
    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>>;
    /// By id.
    async fn list_nodes(&self, after: Option<&str>, limit: u32) -> Result<Page<NodeRecord>>;
    /// Drain (`true`) or undrain; `None` for an unknown id.
    async fn set_node_draining(&self, id: &str, draining: bool) -> Result<Option<NodeRecord>>;
}
