//! Minting credentials: app access tokens (JWT), client tokens (narrower
//! JWTs for end users), refresh tokens and human sessions (both opaque; only
//! their SHA-256 is stored).

use crate::error::ApiError;
use crate::state::AppState;
use auth::SecretString;
use domain::claims::{Access, Claims};
use domain::ids::{FamilyId, UserId};
use secrecy::ExposeSecret;
use store::{AppRecord, RefreshKind, RefreshTokenRecord, SessionRecord};
use time::Duration;

pub const SESSION_PREFIX: &str = "wss_";
pub const REFRESH_PREFIX: &str = "wsr_";
pub const CLIENT_SECRET_PREFIX: &str = "wscs_";
pub const CLIENT_ID_PREFIX: &str = "wsc_";

/// Compact JWS has exactly three dot-separated parts; our opaque tokens have none.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// What a client token may carry beyond an access token.
#[derive(Debug, Clone, Default)]
pub struct ClientTokenSpec {
    pub sub: Option<String>,
    pub name: Option<String>,
    pub docs: Vec<String>,
    pub access: Access,
    pub ttl_seconds: Option<u64>,
    /// One more browser origin (`host[:port]`) the token may connect from,
    /// besides the app's allowed domains: the dashboard's own, for its
    /// playground. Ignored for an app without allowed domains, which
    /// accepts any origin already (adding one would restrict it).
    pub extra_origin: Option<String>,
}

pub struct IssuedRefresh {
    pub token: SecretString,
    pub record: RefreshTokenRecord,
}

impl AppState {
    fn access_ttl(&self) -> i64 {
        i64::try_from(self.config.access_token_ttl.as_secs()).unwrap_or(900)
    }

    fn base_claims(&self, app: &AppRecord, scope: &str, ttl: i64) -> Claims {
        let now = self.now().unix_timestamp();
        Claims {
            iss: self.issuer(app.tenant_id),
            sub: app.client_id.clone(),
            aud: domain::AUDIENCE.to_owned(),
            exp: now + ttl,
            iat: now,
            jti: auth::token::random_id(16),
            client_id: app.client_id.clone(),
            tid: app.tenant_id.to_string(),
            app: app.id.to_string(),
            region: app.region.clone(),
            scope: scope.to_owned(),
            origins: app.allowed_domains.clone(),
            docs: None,
            access: None,
            name: None,
            nbf: None,
        }
    }

    /// An app's (M2M) access token.
    pub async fn issue_access_token(&self, app: &AppRecord, scope: &str) -> Result<(String, Claims), ApiError> {
        let claims = self.base_claims(app, scope, self.access_ttl());
        let signer = self.keys.signer(app.tenant_id).await?;
        let jwt = signer.sign(&claims)?;
        metrics::counter!("wiresocket_tokens_issued_total", "kind" => "access").increment(1);
        Ok((jwt, claims))
    }

    /// A narrower token for one end user; never outlives the access-token TTL.
    pub async fn issue_client_token(
        &self,
        app: &AppRecord,
        spec: ClientTokenSpec,
    ) -> Result<(String, Claims), ApiError> {
        let max = self.access_ttl();
        let ttl = spec.ttl_seconds.map_or(max, |t| i64::try_from(t).unwrap_or(max).min(max));
        let mut claims = self.base_claims(app, domain::DEFAULT_SCOPE, ttl);
        if let Some(sub) = spec.sub {
            claims.sub = sub;
        }
        claims.name = spec.name;
        claims.docs = Some(spec.docs);
        claims.access = Some(spec.access);
        if let Some(origin) = spec.extra_origin
            && !claims.origins.is_empty()
            && !claims.origins.contains(&origin)
        {
            claims.origins.push(origin);
        }
        let signer = self.keys.signer(app.tenant_id).await?;
        let jwt = signer.sign(&claims)?;
        metrics::counter!("wiresocket_tokens_issued_total", "kind" => "client").increment(1);
        Ok((jwt, claims))
    }

    /// A fresh refresh token; not stored yet. Without `rotating`, it starts
    /// a new family that lives for the refresh-token TTL. When `rotating` an
    /// existing token, it joins that family and inherits its expiry, so a
    /// family has a hard end however often it is refreshed.
    pub fn new_refresh_token(
        &self,
        kind: RefreshKind,
        subject: String,
        client_id: String,
        scope: String,
        rotating: Option<&RefreshTokenRecord>,
    ) -> IssuedRefresh {
        let now = self.now();
        let token = auth::token::generate_token(REFRESH_PREFIX);
        let ttl = i64::try_from(self.config.refresh_token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let (family_id, expires_at) = match rotating {
            Some(old) => (old.family_id, old.expires_at),
            None => (FamilyId::new(), now.saturating_add(Duration::seconds(ttl))),
        };
        let record = RefreshTokenRecord {
            token_hash: auth::token::hash_token(token.expose_secret()),
            family_id,
            kind,
            subject,
            client_id,
            scope,
            created_at: now,
            expires_at,
            used_at: None,
            revoked_at: None,
        };
        IssuedRefresh { token, record }
    }

    /// Starts a human session: the token goes to the user, its hash to the
    /// store. `family` links a dashboard session to the refresh-token family
    /// that minted it, so logout and reuse detection can end them together.
    pub async fn create_session(
        &self,
        user: UserId,
        family: Option<FamilyId>,
    ) -> Result<(SecretString, SessionRecord), ApiError> {
        let now = self.now();
        let token = auth::token::generate_token(SESSION_PREFIX);
        let ttl = i64::try_from(self.config.session_ttl.as_secs()).unwrap_or(12 * 3600);
        let record = SessionRecord {
            token_hash: auth::token::hash_token(token.expose_secret()),
            user_id: user,
            family_id: family,
            created_at: now,
            expires_at: now.saturating_add(Duration::seconds(ttl)),
        };
        self.store.create_session(&record).await?;
        Ok((token, record))
    }
}
