//! The state every handler shares, and the checks several of them need:
//! who is calling, and recording what they did.

use crate::config::Config;
use crate::error::ApiError;
use crate::extract::{AppToken, HumanSession};
use crate::keys::KeyService;
use auth::password::PasswordPolicy;
use domain::audit::{ActorType, AuditAction};
use domain::clock::Clock;
use domain::ids::{AppId, TenantId, UserId};
use domain::role::{Action, Grant, Resource, Role};
use std::sync::Arc;
use store::{AuditRecord, Store, TenantRecord};
use time::OffsetDateTime;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    /// `--public-url`, or `http://<bound address>`.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub keys: KeyService,
    pub password_policy: PasswordPolicy,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// This process as a data-plane node (id, drain state, heartbeat).
    pub node: crate::dataplane::node::LocalNode,
    /// The registry's nodes, in memory, for discovery.
    pub directory: crate::fleet::NodeDirectory,
    pub docs: Arc<crate::dataplane::docs::Docs>,
    pub registry: Arc<crate::dataplane::registry::Registry>,
    pub limits: crate::dataplane::limits::Limits,
    /// Apps named by tokens, cached for connects.
    pub apps: crate::cache::AppCache,
    /// Mirror of the access-token deny-list.
    pub denied: crate::cache::DenyList,
    /// Failed logins, auth requests per IP, token requests per client.
    pub rate_limits: crate::ratelimit::AuthLimits,
    /// Webhook events: `events.emit(…)` after a change (see [`crate::webhooks`]).
    pub events: Arc<crate::webhooks::events::Events>,
    /// Invites and password resets: SMTP, or the data dir's outbox.
    pub mailer: Arc<dyn crate::mail::Mailer>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Why an app token was refused; said in the 401 message (never secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("malformed token")]
    Malformed,
    #[error("unknown, retired or revoked signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    WrongAudience,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("token revoked")]
    Revoked,
    #[error("the app no longer exists")]
    AppGone,
    #[error("token does not match its issuer")]
    WrongIssuer,
    #[error("verification unavailable")]
    Unavailable,
}

impl From<auth::signing::JwtError> for TokenRejection {
    fn from(e: auth::signing::JwtError) -> Self {
        use auth::signing::JwtError as J;
        match e {
            J::Malformed => Self::Malformed,
            J::UnsupportedAlgorithm => Self::UnsupportedAlgorithm,
            J::BadSignature => Self::BadSignature,
            J::Expired => Self::Expired,
            J::NotYetValid => Self::NotYetValid,
            J::WrongAudience => Self::WrongAudience,
        }
    }
}

/// Who did something, for the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: ActorType,
    pub id: Option<String>,
    pub ip: Option<String>,
}

impl Actor {
    pub fn user(session: &HumanSession, ip: &crate::extract::ClientIp) -> Self {
        Self { kind: ActorType::User, id: Some(session.user.id.to_string()), ip: ip.0.clone() }
    }
    /// A user known by id (before a session exists).
    pub fn user_id(id: domain::ids::UserId, ip: &crate::extract::ClientIp) -> Self {
        Self { kind: ActorType::User, id: Some(id.to_string()), ip: ip.0.clone() }
    }
    pub fn app(app: &store::AppRecord, ip: &crate::extract::ClientIp) -> Self {
        Self { kind: ActorType::App, id: Some(app.id.to_string()), ip: ip.0.clone() }
    }
    pub fn anonymous(ip: &crate::extract::ClientIp) -> Self {
        Self { kind: ActorType::Anonymous, id: None, ip: ip.0.clone() }
    }
}

/// Runs `work` to completion even if the request that started it is
/// cancelled (the client hung up): a change that committed must also reach
/// the caches, the live sockets and the audit trail.
pub async fn run_detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(ApiError::internal)?
}

impl AppState {
    /// A handle that does not keep the state alive (for background loops).
    pub fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.0)
    }

    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// `iss` of the tenant's tokens.
    pub fn issuer(&self, tenant: TenantId) -> String {
        format!("{}/{}", self.public_url, tenant)
    }

    pub async fn session_from_token(&self, token: &str) -> Result<Option<HumanSession>, ApiError> {
        let token_hash = auth::token::hash_token(token);
        let Some(session) = self.store.get_session(&token_hash).await? else {
            return Ok(None);
        };
        if session.expires_at <= self.now() {
            return Ok(None);
        }
        let Some(user) = self.store.get_user(session.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(HumanSession {
            user,
            token_hash,
            expires_at: session.expires_at,
            family_id: session.family_id,
            verdict: None,
        }))
    }

    /// Verifies an app's JWT completely: signature by a key that still
    /// verifies, expiry, audience, issuer, deny-list, and that the app still
    /// exists and has not rotated its secret since the token was issued.
    pub async fn verify_app_token(&self, token: &str) -> Result<AppToken, TokenRejection> {
        let now = self.now();
        let kid = auth::signing::token_kid(token)?;
        let (key, tenant) = self
            .keys
            .verifier(&kid, now)
            .await
            .map_err(|_| TokenRejection::Unavailable)?
            .ok_or(TokenRejection::UnknownKey)?;
        let claims = auth::signing::verify(token, &key, now)?;
        if claims.tid != tenant.to_string() || claims.iss != self.issuer(tenant) {
            return Err(TokenRejection::WrongIssuer);
        }
        if self
            .denied
            .is_denied(self.store.as_ref(), &claims.jti, now)
            .await
            .map_err(|_| TokenRejection::Unavailable)?
        {
            return Err(TokenRejection::Revoked);
        }
        let app_id = AppId::parse(&claims.app).map_err(|_| TokenRejection::Malformed)?;
        let app = self
            .apps
            .get(self.store.as_ref(), app_id)
            .await
            .map_err(|_| TokenRejection::Unavailable)?
            .filter(|a| a.tenant_id == tenant && a.client_id == claims.client_id)
            .ok_or(TokenRejection::AppGone)?;
        if app.secret_rotated_at.is_some_and(|t| claims.iat < t.unix_timestamp()) {
            return Err(TokenRejection::Revoked);
        }
        Ok(AppToken { claims, app, kid })
    }

    /// The tenant, if the user is a member whose role grants `(resource,
    /// action)`, and what the membership grants. Not a member (or no such
    /// tenant): 404, so existence does not leak. A member without the
    /// permission: 403. Read from the store once per request (the route's
    /// guard leaves what it read in the session's `verdict`), so a changed
    /// role or a removed member takes effect at once.
    pub async fn authorize(
        &self,
        session: &HumanSession,
        tenant: &str,
        resource: Resource,
        action: Action,
    ) -> Result<(TenantRecord, Grant), ApiError> {
        // The route's guard already read this membership for this request.
        let cached = session.verdict.as_deref().filter(|v| v.tid == tenant);
        let (record, grant) = match cached {
            Some(v) => (Some(v.tenant.clone()), v.grant.clone()),
            None => {
                let tenant = TenantId::parse(tenant).map_err(|_| ApiError::not_found())?;
                let role = self.store.get_membership(tenant, session.user.id).await?.ok_or_else(ApiError::not_found)?;
                (None, self.grant_for(tenant, &role).await?)
            }
        };
        let tenant = TenantId::parse(tenant).map_err(|_| ApiError::not_found())?;
        if !grant.permits(resource, action) {
            return Err(ApiError::forbidden(format!(
                "role {} may not {} {}",
                grant.name(),
                action.as_str(),
                resource.as_str()
            )));
        }
        let record = match record {
            Some(r) => r,
            None => self.store.get_tenant(tenant).await?.ok_or_else(ApiError::not_found)?,
        };
        Ok((record, grant))
    }

    /// What a role name grants in a tenant: a built-in role, or the
    /// tenant's custom role of that name with its permissions.
    pub async fn grant_for(&self, tenant: TenantId, role: &str) -> Result<Grant, ApiError> {
        if let Ok(role) = Role::parse(role) {
            return Ok(Grant::BuiltIn(role));
        }
        match self.store.get_role(tenant, role).await? {
            Some(custom) => Ok(Grant::Custom { name: custom.name, permissions: custom.permissions }),
            None => {
                // The store refuses to delete a role in use, so this is a
                // hand-edited database: fail closed, grant nothing.
                tracing::warn!(%tenant, role, "membership names a role that does not exist; granting nothing");
                Ok(Grant::Custom { name: role.to_owned(), permissions: Vec::new() })
            }
        }
    }

    /// Hands a message to the mailer without waiting for it.
    pub fn send_mail(&self, mail: crate::mail::Mail) {
        crate::mail::send_detached(self.mailer.clone(), mail);
    }

    /// Records an event about a user's own account (MFA, password) in the
    /// platform chain and in the chain of every tenant the user belongs to,
    /// so each tenant's admins see what happened to their members.
    pub async fn audit_user(&self, user: UserId, actor: &Actor, action: AuditAction, details: serde_json::Value) {
        let target = ("user", user.to_string());
        match self.store.list_user_tenants(user).await {
            Ok(tenants) => {
                for (tenant, _) in tenants {
                    self.audit(Some(tenant.id), actor, action, Some(target.clone()), details.clone()).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, action = action.as_str(), "could not list a user's tenants for audit")
            }
        }
        self.audit(None, actor, action, Some(target), details).await;
    }

    /// Appends to the audit trail. A failure to record is logged loudly but
    /// does not undo the action that already happened.
    pub async fn audit(
        &self,
        tenant: Option<TenantId>,
        actor: &Actor,
        action: AuditAction,
        target: Option<(&str, String)>,
        details: serde_json::Value,
    ) {
        let event = AuditRecord {
            seq: 0,
            tenant_id: tenant,
            at: self.now(),
            actor_type: actor.kind.as_str().to_owned(),
            actor_id: actor.id.clone(),
            action: action.as_str().to_owned(),
            target_type: target.as_ref().map(|(t, _)| (*t).to_owned()),
            target_id: target.map(|(_, id)| id),
            ip: actor.ip.clone(),
            details,
            chain_seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        };
        if let Err(e) = self.store.append_audit(&event).await {
            tracing::error!(error = %e, action = action.as_str(), "failed to append audit event");
        }
    }
}
