//! Rows as plain types. Secrets appear only as hashes or ciphertexts, and
//! the records holding those print them as `[redacted]` (or a ciphertext's
//! length) in `Debug`, so a `{:?}` in a log line or a panic message cannot
//! leak them.

use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use domain::proration::InvoiceLine;
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
        let Self { id, email, password_hash: _, is_operator, created_at } = self;
        f.debug_struct("UserRecord")
            .field("id", id)
            .field("email", email)
            .field("password_hash", &Redacted)
            .field("is_operator", is_operator)
            .field("created_at", created_at)
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
