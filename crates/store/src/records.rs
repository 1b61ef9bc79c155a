//! Rows as plain types. Secrets appear only as hashes or ciphertexts.

use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use domain::proration::InvoiceLine;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: UserId,
    /// Normalised (lowercase).
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The platform operator (the user created by setup).
    pub is_operator: bool,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the opaque session token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
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
}
