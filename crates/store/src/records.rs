//! Rows as plain types. Secrets appear only as hashes or ciphertexts, and
//! the records holding those print them as `[redacted]` (or a ciphertext's
//! length) in `Debug`, so a `{:?}` in a log line or a panic message cannot
//! leak them.

use domain::audit::{ChainBreak, ChainEntry, ChainVerifier};
use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use domain::proration::InvoiceLine;
use domain::role::{Action, Resource};
use std::fmt;
use time::OffsetDateTime;

/// Stands in for a secret-derived value (a hash) in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Stands in for a ciphertext in `Debug` output: its length only.
struct Encrypted(usize);

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes encrypted>", self.0)
    }
}

// The hand-written `Debug` impls below destructure the record, so a field
// added later cannot be left out of (or leak through) them unnoticed.

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { id, email, password_hash: _, is_operator, created_at, name } = self;
        f.debug_struct("UserRecord")
            .field("id", id)
            .field("email", email)
            .field("password_hash", &Redacted)
            .field("is_operator", is_operator)
            .field("created_at", created_at)
            .field("name", name)
            .finish()
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { token_hash: _, user_id, created_at, expires_at, family_id } = self;
        f.debug_struct("SessionRecord")
            .field("token_hash", &Redacted)
            .field("user_id", user_id)
            .field("created_at", created_at)
            .field("expires_at", expires_at)
            .field("family_id", family_id)
            .finish()
    }
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            kid,
            tenant_id,
            state,
            public_n,
            public_e,
            private_key_enc,
            master_key_version,
            created_at,
            retires_at,
            revoked_at,
        } = self;
        f.debug_struct("SigningKeyRecord")
            .field("kid", kid)
            .field("tenant_id", tenant_id)
            .field("state", state)
            .field("public_n", public_n)
            .field("public_e", public_e)
            .field("private_key_enc", &Encrypted(private_key_enc.len()))
            .field("master_key_version", master_key_version)
            .field("created_at", created_at)
            .field("retires_at", retires_at)
            .field("revoked_at", revoked_at)
            .finish()
    }
}

impl fmt::Debug for AppRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            tenant_id,
            name,
            client_id,
            client_secret_hash: _,
            region,
            plan,
            allowed_domains,
            environment,
            created_at,
            updated_at,
            secret_rotated_at,
        } = self;
        f.debug_struct("AppRecord")
            .field("id", id)
            .field("tenant_id", tenant_id)
            .field("name", name)
            .field("client_id", client_id)
            .field("client_secret_hash", &Redacted)
            .field("region", region)
            .field("plan", plan)
            .field("allowed_domains", allowed_domains)
            .field("environment", environment)
            .field("created_at", created_at)
            .field("updated_at", updated_at)
            .field("secret_rotated_at", secret_rotated_at)
            .finish()
    }
}

impl fmt::Debug for RefreshTokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            token_hash: _,
            family_id,
            kind,
            subject,
            client_id,
            scope,
            created_at,
            expires_at,
            used_at,
            revoked_at,
        } = self;
        f.debug_struct("RefreshTokenRecord")
            .field("token_hash", &Redacted)
            .field("family_id", family_id)
            .field("kind", kind)
            .field("subject", subject)
            .field("client_id", client_id)
            .field("scope", scope)
            .field("created_at", created_at)
            .field("expires_at", expires_at)
            .field("used_at", used_at)
            .field("revoked_at", revoked_at)
            .finish()
    }
}

impl fmt::Debug for InviteRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            tenant_id,
            email,
            role,
            token_hash: _,
            invited_by,
            created_at,
            expires_at,
            accepted_at,
            accepted_by,
        } = self;
        f.debug_struct("InviteRecord")
            .field("id", id)
            .field("tenant_id", tenant_id)
            .field("email", email)
            .field("role", role)
            .field("token_hash", &Redacted)
            .field("invited_by", invited_by)
            .field("created_at", created_at)
            .field("expires_at", expires_at)
            .field("accepted_at", accepted_at)
            .field("accepted_by", accepted_by)
            .finish()
    }
}

impl fmt::Debug for PasswordResetRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { token_hash: _, user_id, created_at, expires_at, used_at } = self;
        f.debug_struct("PasswordResetRecord")
            .field("token_hash", &Redacted)
            .field("user_id", user_id)
            .field("created_at", created_at)
            .field("expires_at", expires_at)
            .field("used_at", used_at)
            .finish()
    }
}

impl fmt::Debug for MfaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { user_id, secret_enc, master_key_version, created_at, enabled_at, last_step } = self;
        f.debug_struct("MfaRecord")
            .field("user_id", user_id)
            .field("secret_enc", &Encrypted(secret_enc.len()))
            .field("master_key_version", master_key_version)
            .field("created_at", created_at)
            .field("enabled_at", enabled_at)
            .field("last_step", last_step)
            .finish()
    }
}

impl fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { id, tenant_id, app_id, url, events, secret_enc, master_key_version, created_at, updated_at } = self;
        f.debug_struct("WebhookRecord")
            .field("id", id)
            .field("tenant_id", tenant_id)
            .field("app_id", app_id)
            .field("url", url)
            .field("events", events)
            .field("secret_enc", &Encrypted(secret_enc.len()))
            .field("master_key_version", master_key_version)
            .field("created_at", created_at)
            .field("updated_at", updated_at)
            .finish()
    }
}

#[derive(Clone, PartialEq)]
pub struct UserRecord {
    pub id: UserId,
    /// Normalised (lowercase).
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The platform operator (the user created by setup).
    pub is_operator: bool,
    pub created_at: OffsetDateTime,
    /// Display name, as given when accepting an invitation.
    pub name: Option<String>,
}

#[derive(Clone, PartialEq)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the opaque session token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// The refresh-token family issued with this session, if any: revoking
    /// the family (e.g. on refresh-token reuse) should end the session too
    /// (see `Store::delete_family_sessions`).
    pub family_id: Option<FamilyId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub tenant_id: TenantId,
    pub state: KeyState,
    /// RSA modulus and exponent, base64url without padding (JWK `n`, `e`).
    pub public_n: String,
    pub public_e: String,
    /// AES-256-GCM ciphertext of the PKCS#8 private key (see `auth::envelope`).
    pub private_key_enc: Vec<u8>,
    pub master_key_version: u32,
    pub created_at: OffsetDateTime,
    /// Set when rotated out: the end of the grace period.
    pub retires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Clone, PartialEq)]
pub struct AppRecord {
    pub id: AppId,
    pub tenant_id: TenantId,
    pub name: String,
    pub client_id: String,
    /// SHA-256 (hex) of the client secret.
    pub client_secret_hash: String,
    pub region: String,
    pub plan: PlanId,
    /// Normalised allowed domains, at most 3.
    pub allowed_domains: Vec<String>,
    pub environment: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub secret_rotated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceRecord {
    pub id: InvoiceId,
    pub app_id: AppId,
    pub tenant_id: TenantId,
    pub lines: Vec<InvoiceLine>,
    pub total_cents: i64,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshKind {
    /// Issued to an app by client_credentials; `subject` is the app id.
    App,
    /// Issued to a human by the password grant; `subject` is the user id.
    User,
}

impl RefreshKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::App => "app",
            Self::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "app" => Some(Self::App),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct RefreshTokenRecord {
    /// SHA-256 (hex) of the opaque refresh token.
    pub token_hash: String,
    pub family_id: FamilyId,
    pub kind: RefreshKind,
    /// App id or user id, per `kind`.
    pub subject: String,
    /// The client it was issued to (`dashboard` for humans).
    pub client_id: String,
    pub scope: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Assigned by the store on append (monotonic); ignored on input.
    pub seq: i64,
    pub tenant_id: Option<TenantId>,
    pub at: OffsetDateTime,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    /// Extra facts (never secrets), as JSON.
    pub details: serde_json::Value,
    /// Position in the entry's chain (its tenant's, or the platform chain
    /// for `tenant_id = None`): 1, 2, 3… Assigned by the store; ignored on input.
    pub chain_seq: i64,
    /// The previous entry's `hash` (`domain::audit::GENESIS_HASH` for the
    /// first). Assigned by the store; ignored on input.
    pub prev_hash: String,
    /// `ChainEntry::hash(prev_hash)` of this entry. Assigned by the store;
    /// ignored on input.
    pub hash: String,
}

impl AuditRecord {
    /// The hash this entry gets at `chain_seq` after `prev_hash`, over the
    /// canonical form of `domain::audit::ChainEntry` (the record's own
    /// `chain_seq`, `prev_hash` and `hash` are not read).
    pub fn chain_hash(&self, chain_seq: i64, prev_hash: &str) -> String {
        let tenant = self.tenant_id.map(|t| t.to_string());
        self.chain_entry(tenant.as_deref(), chain_seq).hash(prev_hash)
    }

    /// Feeds this stored entry (with its `chain_seq`, `prev_hash` and `hash`)
    /// to `verifier`: rows of one chain in `chain_seq` order, then
    /// `verifier.finish(head)` with `Store::audit_head`.
    pub fn verify_with(&self, verifier: &mut ChainVerifier) -> Result<(), ChainBreak> {
        let tenant = self.tenant_id.map(|t| t.to_string());
        verifier.push(&self.chain_entry(tenant.as_deref(), self.chain_seq), &self.prev_hash, &self.hash)
    }

    fn chain_entry<'a>(&'a self, tenant: Option<&'a str>, chain_seq: i64) -> ChainEntry<'a> {
        ChainEntry {
            tenant_id: tenant,
            chain_seq,
            at: self.at.unix_timestamp(),
            actor_type: &self.actor_type,
            actor_id: self.actor_id.as_deref(),
            action: &self.action,
            target_type: self.target_type.as_deref(),
            target_id: self.target_id.as_deref(),
            ip: self.ip.as_deref(),
            details: &self.details,
        }
    }
}

/// What `Store::list_audit_page` returns; every `Some` narrows the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// The tenant's entries; `None`: platform-level entries (no tenant).
    pub tenant: Option<TenantId>,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    /// Entries at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Entries at or before this instant.
    pub until: Option<OffsetDateTime>,
}

/// A member of a tenant, as the members list shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub user_id: UserId,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    /// Whether the user has MFA enabled (not merely pending).
    pub mfa_enabled: bool,
    pub joined_at: OffsetDateTime,
}

/// A tenant's own role: a name and the permissions it grants.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomRoleRecord {
    pub tenant_id: TenantId,
    /// Unique per tenant, never a built-in role's name.
    pub name: String,
    /// Stored as a JSON array of `{resource, action}` (snake_case).
    pub permissions: Vec<(Resource, Action)>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, PartialEq)]
pub struct InviteRecord {
    /// Text id (a UUIDv7 in practice), so listing order is creation order.
    pub id: String,
    pub tenant_id: TenantId,
    /// Normalised (lowercase).
    pub email: String,
    pub role: String,
    /// SHA-256 (hex) of the invite token; the token goes only to the invitee.
    pub token_hash: String,
    pub invited_by: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub accepted_at: Option<OffsetDateTime>,
    pub accepted_by: Option<UserId>,
}

/// Who accepts an invite (see `Store::accept_invite`).
#[derive(Debug, Clone, Copy)]
pub enum InviteAcceptor<'a> {
    /// Someone without an account: the user is created, then made a member.
    NewUser(&'a UserRecord),
    /// An existing account (whose password the caller checked).
    Existing(UserId),
}

impl InviteAcceptor<'_> {
    pub fn user_id(&self) -> UserId {
        match self {
            Self::NewUser(user) => user.id,
            Self::Existing(id) => *id,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct PasswordResetRecord {
    /// SHA-256 (hex) of the reset token.
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
}

/// A user's TOTP secret: pending from setup until verified (`enabled_at`).
#[derive(Clone, PartialEq)]
pub struct MfaRecord {
    pub user_id: UserId,
    /// The TOTP secret, encrypted under the master key (see `auth::envelope`).
    pub secret_enc: Vec<u8>,
    pub master_key_version: u32,
    pub created_at: OffsetDateTime,
    pub enabled_at: Option<OffsetDateTime>,
    /// The last TOTP time step accepted: a code is good at most once, and
    /// never one older than the last accepted.
    pub last_step: Option<i64>,
}

#[derive(Clone, PartialEq)]
pub struct WebhookRecord {
    /// Text id (a UUIDv7 in practice).
    pub id: String,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub url: String,
    /// Event types subscribed to (`*` for all); stored as a JSON array.
    pub events: Vec<String>,
    /// The signing secret, encrypted under the master key.
    pub secret_enc: Vec<u8>,
    pub master_key_version: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for its next attempt (or being attempted, under a lease).
    Pending,
    Delivered,
    /// Retries exhausted.
    Failed,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// An event written in the same transaction as the change it reports (the
/// transactional outbox): a crash right after the commit loses neither.
/// The dispatcher later turns it into one [`WebhookJobRecord`] per webhook
/// that takes it (`Store::fan_out_event`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event id (a UUIDv7): the `id` of the body and every job's `event_id`.
    pub id: String,
    pub tenant_id: TenantId,
    /// The app the event is about; `None` for tenant-wide events.
    pub app_id: Option<AppId>,
    pub event_type: String,
    /// The exact JSON body every delivery sends.
    pub payload: String,
    pub created_at: OffsetDateTime,
}

/// One event to deliver to one webhook (the durable outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookJobRecord {
    pub id: String,
    /// The event's id: the same for every webhook and every retry
    /// (`X-Webhook-Id`); a job is unique per (event, webhook).
    pub event_id: String,
    pub webhook_id: String,
    /// The webhook's tenant (set by the store on enqueue).
    pub tenant_id: TenantId,
    pub event_type: String,
    /// The exact JSON body to send (signed as is).
    pub payload: String,
    /// Attempts made so far (0 on enqueue).
    pub attempt: i64,
    pub status: JobStatus,
    pub next_attempt_at: OffsetDateTime,
    /// Set while a dispatcher holds the job; an expired lease frees it.
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One delivery attempt of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Assigned by the store (monotonic); ignored on input.
    pub seq: i64,
    /// `webhook_id`, `job_id`, `event_id`, `event_type` and `attempt` are the
    /// job's (set by the store from it); ignored on input.
    pub webhook_id: String,
    pub job_id: String,
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at: OffsetDateTime,
    /// The HTTP status answered, if any (none on timeout or connection error).
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobNext {
    Delivered,
    Retry { at: OffsetDateTime },
    Failed,
}

/// A document's identity: names are per app (two apps may both have `notes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub app_id: AppId,
    /// 1–255 bytes of UTF-8 (checked by the caller).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocRecord {
    pub app_id: AppId,
    pub name: String,
    /// Bytes stored for the doc (snapshot + log).
    pub size_bytes: i64,
    pub created_at: OffsetDateTime,
    /// The last append (compaction does not change the content, so not this).
    pub updated_at: OffsetDateTime,
}

/// What a document's content is made of, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DocState {
    /// Full-state v1 update from the last compaction, if any.
    pub snapshot: Option<Vec<u8>>,
    /// Updates after the snapshot, in append order.
    pub updates: Vec<Vec<u8>>,
    /// Seq of the last update included (snapshot or log); 0 if none.
    pub last_seq: i64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    /// Asserts `{:?}` and `{:#?}` of `record` leave out every `secret` and
    /// show `placeholder` and every `visible` value instead.
    fn assert_redacted(record: &impl fmt::Debug, secrets: &[&str], placeholder: &str, visible: &[&str]) {
        for text in [format!("{record:?}"), format!("{record:#?}")] {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} leaks in {text}");
            }
            assert!(text.contains(placeholder), "no {placeholder:?} in {text}");
            for value in visible {
                assert!(text.contains(value), "{value:?} missing from {text}");
            }
        }
    }

    #[test]
    fn debug_redacts_secret_derived_fields() {
        let user = UserRecord {
            id: UserId::new(),
            email: "alice@example.test".to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$U0VDUkVUSEFTSA".to_owned(),
            is_operator: true,
            created_at: at(),
            name: None,
        };
        assert_redacted(
            &user,
            &[&user.password_hash, "argon2", "U0VDUkVUSEFTSA"],
            "password_hash: [redacted]",
            &[&user.id.to_string(), &user.email],
        );

        let family = FamilyId::new();
        let session = SessionRecord {
            token_hash: "5e55101d5e55101d5e55101d5e55101d".to_owned(),
            user_id: user.id,
            created_at: at(),
            expires_at: at(),
            family_id: Some(family),
        };
        assert_redacted(
            &session,
            &[&session.token_hash, "5e55101d"],
            "token_hash: [redacted]",
            &[&user.id.to_string(), &family.to_string()],
        );

        let refresh = RefreshTokenRecord {
            token_hash: "4ef4e54ef4e54ef4e54ef4e54ef4e5".to_owned(),
            family_id: family,
            kind: RefreshKind::User,
            subject: user.id.to_string(),
            client_id: "dashboard".to_owned(),
            scope: "dashboard".to_owned(),
            created_at: at(),
            expires_at: at(),
            used_at: None,
            revoked_at: None,
        };
        assert_redacted(&refresh, &[&refresh.token_hash, "4ef4e5"], "token_hash: [redacted]", &["dashboard"]);

        let app = AppRecord {
            id: AppId::new(),
            tenant_id: TenantId::new(),
            name: "my app".to_owned(),
            client_id: "ws_client".to_owned(),
            client_secret_hash: "c0ffeec0ffeec0ffeec0ffeec0ffee".to_owned(),
            region: "eu-central-1".to_owned(),
            plan: PlanId::Pro,
            allowed_domains: vec!["example.com".to_owned()],
            environment: "production".to_owned(),
            created_at: at(),
            updated_at: at(),
            secret_rotated_at: None,
        };
        assert_redacted(
            &app,
            &[&app.client_secret_hash, "c0ffee"],
            "client_secret_hash: [redacted]",
            &["ws_client", "my app", "example.com"],
        );

        let key = SigningKeyRecord {
            kid: "kid-1".to_owned(),
            tenant_id: app.tenant_id,
            state: KeyState::Active,
            public_n: "modulus".to_owned(),
            public_e: "AQAB".to_owned(),
            private_key_enc: vec![0xde, 0xad, 0xbe, 0xef, 0x42],
            master_key_version: 3,
            created_at: at(),
            retires_at: None,
            revoked_at: None,
        };
        // Neither the bytes as a list nor any hex spelling of them.
        assert_redacted(
            &key,
            &["222, 173, 190, 239", "[222", "deadbeef", "DEADBEEF"],
            "private_key_enc: <5 bytes encrypted>",
            &["kid-1", "modulus", "AQAB"],
        );

        let invite = InviteRecord {
            id: "inv-1".to_owned(),
            tenant_id: app.tenant_id,
            email: "bob@example.test".to_owned(),
            role: "viewer".to_owned(),
            token_hash: "1abe11ed1abe11ed1abe11ed".to_owned(),
            invited_by: user.id,
            created_at: at(),
            expires_at: at(),
            accepted_at: None,
            accepted_by: None,
        };
        assert_redacted(&invite, &[&invite.token_hash, "1abe11"], "token_hash: [redacted]", &["inv-1", "bob@"]);

        let reset = PasswordResetRecord {
            token_hash: "7e5e77e5e77e5e77e5e7".to_owned(),
            user_id: user.id,
            created_at: at(),
            expires_at: at(),
            used_at: None,
        };
        assert_redacted(&reset, &[&reset.token_hash, "7e5e7"], "token_hash: [redacted]", &[&user.id.to_string()]);

        let mfa = MfaRecord {
            user_id: user.id,
            secret_enc: vec![0xca, 0xfe, 0xba, 0xbe],
            master_key_version: 2,
            created_at: at(),
            enabled_at: None,
            last_step: Some(7),
        };
        assert_redacted(&mfa, &["202, 254", "cafebabe"], "secret_enc: <4 bytes encrypted>", &[&user.id.to_string()]);

        let hook = WebhookRecord {
            id: "wh-1".to_owned(),
            tenant_id: app.tenant_id,
            app_id: app.id,
            url: "https://hooks.example.test/x".to_owned(),
            events: vec!["*".to_owned()],
            secret_enc: vec![0xfe, 0xed, 0xfa, 0xce, 1],
            master_key_version: 1,
            created_at: at(),
            updated_at: at(),
        };
        assert_redacted(
            &hook,
            &["254, 237", "feedface"],
            "secret_enc: <5 bytes encrypted>",
            &["wh-1", "hooks.example"],
        );

        // Debug of a wrapper goes through the records' impls.
        let outcome = format!("{:?}", crate::RotateOutcome::Rotated(refresh.clone()));
        assert!(!outcome.contains(&refresh.token_hash), "{outcome}");
    }

    #[test]
    fn redaction_keeps_equality_and_clone() {
        let key = SigningKeyRecord {
            kid: "kid-1".to_owned(),
            tenant_id: TenantId::new(),
            state: KeyState::Active,
            public_n: "n".to_owned(),
            public_e: "e".to_owned(),
            private_key_enc: vec![1, 2, 3],
            master_key_version: 1,
            created_at: at(),
            retires_at: None,
            revoked_at: None,
        };
        let other = SigningKeyRecord { private_key_enc: vec![3, 2, 1], ..key.clone() };
        assert_eq!(key.clone(), key);
        // Equal Debug output, yet the records differ: equality still sees the bytes.
        assert_eq!(format!("{key:?}"), format!("{other:?}"));
        assert_ne!(key, other);
    }
}

/// A data-plane node as the registry holds it (see migration 0006).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub region: String,
    /// Its public base URL (what discovery hands out, as `ws(s)://…/v1/sync`).
    pub url: String,
    /// Set by drain, cleared by undrain or by a new instance's first heartbeat.
    pub draining: bool,
    /// The process behind the id; a new one means the node restarted.
    pub instance: String,
    pub started_at: OffsetDateTime,
    pub last_heartbeat_at: OffsetDateTime,
    pub connections: i64,
    pub documents: i64,
}

/// What a node reports in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHeartbeat {
    pub id: String,
    pub region: String,
    pub url: String,
    pub instance: String,
    pub started_at: OffsetDateTime,
    pub connections: i64,
    pub documents: i64,
}

/// Rows removed by one [`crate::Store::purge_expired`], by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub denied_jtis: u64,
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub password_resets: u64,
    pub invites: u64,
    pub webhook_jobs: u64,
    pub webhook_deliveries: u64,
}

impl PurgeReport {
    /// `(kind, rows)` for each kind, as the metric labels them.
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("denied_jtis", self.denied_jtis),
            ("refresh_tokens", self.refresh_tokens),
            ("sessions", self.sessions),
            ("password_resets", self.password_resets),
            ("invites", self.invites),
            ("webhook_jobs", self.webhook_jobs),
            ("webhook_deliveries", self.webhook_deliveries),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}
