//! The OAuth 2 token service (RFC 6749 §4.4, §6 and the password grant for
//! the dashboard), introspection (RFC 7662), revocation (RFC 7009), and
//! client tokens for end users.

use crate::dataplane::close;
use crate::dataplane::registry::CloseReason;
use crate::error::{ApiError, OAuthError, OAuthErrorCode};
use crate::extract::{ApiBytes, ApiJson, AppToken, ClientIp};
use crate::mfa::{MfaError, Proof};
use crate::routes::ErrorSchema;
use crate::routes::human::check_credentials;
use crate::state::{Actor, AppState};
use crate::tokens::{ClientTokenSpec, REFRESH_PREFIX, looks_like_jwt};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use domain::audit::AuditAction;
use domain::claims::Access;
use domain::docname::validate_doc_pattern;
use domain::ids::{AppId, UserId};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use store::{AppRecord, RefreshKind, RotateOutcome};
use utoipa::ToSchema;

/// The client id of the human dashboard (a public client: no secret).
pub const DASHBOARD_CLIENT: &str = "dashboard";

/// Form parameters. RFC 6749 §3.2: parameters sent without a value are
/// treated as omitted, and none may appear twice.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Self, OAuthError> {
        let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("expected Content-Type: application/x-www-form-urlencoded"));
        }
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| OAuthError::invalid_request("malformed form body"))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter {k:?} appears more than once")));
            }
        }
        Ok(Self(map))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn require(&self, k: &str) -> Result<&str, OAuthError> {
        self.get(k).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {k:?}")))
    }
}

/// How the client presented itself.
enum Client {
    /// Authenticated with its secret (Basic or body).
    App(Box<AppRecord>),
    /// No secret; maybe a `client_id` (public clients such as `dashboard`).
    Public(Option<String>),
}

fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    Some((|| {
        let decoded = String::from_utf8(STANDARD.decode(rest.trim()).map_err(|_| ())?).map_err(|_| ())?;
        let (id, secret) = decoded.split_once(':').ok_or(())?;
        // RFC 6749 §2.3.1: both are form-urlencoded before base64.
        let id = form_decode(id)?;
        let secret = form_decode(secret)?;
        Ok((id, secret))
    })())
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a
/// space, `%XX` a byte, and the result must be UTF-8.
fn form_decode(s: &str) -> Result<String, ()> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().map(|c| c.into_owned()).map_err(|_| ())
}

async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Client, OAuthError> {
    let (client_id, secret, basic) = match basic_credentials(headers) {
        Some(Ok((id, secret))) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request("use one client authentication method, not two"));
            }
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_request("client_id in the body differs from the Basic credentials"));
            }
            (id, secret, true)
        }
        Some(Err(())) => return Err(OAuthError::invalid_client(true)),
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned(), false),
            (None, Some(_)) => return Err(OAuthError::invalid_request("client_secret without client_id")),
            (id, None) => return Ok(Client::Public(id.map(str::to_owned))),
        },
    };
    let app = state.store.get_app_by_client_id(&client_id).await?;
    let presented = auth::token::hash_token(&secret);
    let ok = match &app {
        Some(app) => auth::token::ct_eq(presented.as_bytes(), app.client_secret_hash.as_bytes()),
        None => {
            // Same work for an unknown client as for a known one.
            let _ = auth::token::ct_eq(presented.as_bytes(), presented.as_bytes());
            false
        }
    };
    match app {
        Some(app) if ok => Ok(Client::App(Box::new(app))),
        other => {
            // Record which app was targeted, but never the presented id of an
            // unknown client: it is attacker-chosen, and a swapped Basic pair
            // would put a secret into the trail.
            let (tenant, target) = match other {
                Some(app) => (Some(app.tenant_id), Some(("app", app.id.to_string()))),
                None => (None, None),
            };
            let details = json!({"reason": "invalid_client"});
            state.audit(tenant, &Actor::anonymous(ip), AuditAction::TokenFailed, target, details).await;
            Err(OAuthError::invalid_client(basic))
        }
    }
}

/// [`authenticate_client`] for the token endpoint: an authenticated app
/// also counts against its per-client_id limit. Only authenticated clients
/// count, so nobody can use up another app's quota by naming its client_id;
/// public clients (the dashboard) are limited per IP and per account instead.
async fn authenticate_token_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Client, OAuthError> {
    let client = authenticate_client(state, headers, params, ip).await?;
    if let Client::App(app) = &client {
        state.check_token_client(app, ip).await?;
    }
    Ok(client)
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    scope: String,
}

impl TokenResponse {
    fn new(access_token: String, lifetime: std::time::Duration, refresh: &auth::SecretString, scope: String) -> Self {
        Self {
            access_token,
            token_type: "Bearer",
            expires_in: lifetime.as_secs(),
            refresh_token: refresh.expose_secret().to_owned(),
            scope,
        }
    }
}

fn no_store(body: impl Serialize) -> Response {
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The scopes an app may ask for.
const APP_SCOPES: &[&str] = &[domain::DEFAULT_SCOPE];

/// `scope` must be a subset of `allowed`; absent means `default`.
fn requested_scope(params: &Params, allowed: &[&str], default: &str) -> Result<String, OAuthError> {
    let Some(raw) = params.get("scope") else {
        return Ok(default.to_owned());
    };
    let mut scopes: Vec<&str> = Vec::new();
    for s in raw.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.contains(&s) {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                format!("scope {s:?} is not available to this client"),
            ));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    if scopes.is_empty() {
        return Ok(default.to_owned());
    }
    Ok(scopes.join(" "))
}

/// The token endpoint (form-encoded, RFC 6749).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", content = String,
        description = "grant_type=client_credentials|refresh_token|password and the grant's parameters \
            (password: username, password, and totp or recovery_code when MFA is on)"),
    responses((status = 200, body = TokenResponse), (status = 400, description = "RFC 6749 §5.2 error"), (status = 401, description = "invalid_client"),
        (status = 429, description = "slow_down, with Retry-After: too many requests from the IP, for the client_id, or failed logins for the account")))]
pub async fn token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, OAuthError> {
    let params = Params::parse(&headers, &body)?;
    let grant = params.require("grant_type")?.to_owned();
    let result = match grant.as_str() {
        "client_credentials" => client_credentials(&state, &headers, &params, &ip).await,
        "refresh_token" => refresh(&state, &headers, &params, &ip).await,
        "password" => password(&state, &headers, &params, &ip).await,
        _ => {
            Err(OAuthError::new(OAuthErrorCode::UnsupportedGrantType, format!("grant_type {grant:?} is not supported")))
        }
    };
    let label = match grant.as_str() {
        g @ ("client_credentials" | "refresh_token" | "password") => g.to_owned(),
        _ => "other".to_owned(),
    };
    let outcome = if result.is_ok() { "issued" } else { "refused" };
    metrics::counter!("wiresocket_oauth_token_requests_total", "grant" => label, "outcome" => outcome).increment(1);
    result.map(no_store)
}

async fn client_credentials(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, OAuthError> {
    let Client::App(app) = authenticate_token_client(state, headers, params, ip).await? else {
        return Err(OAuthError::invalid_client(false));
    };
    let scope = requested_scope(params, APP_SCOPES, domain::DEFAULT_SCOPE)?;
    let (access_token, _) = state.issue_access_token(&app, &scope).await?;
    let refresh =
        state.new_refresh_token(RefreshKind::App, app.id.to_string(), app.client_id.clone(), scope.clone(), None);
    state.store.insert_refresh_token(&refresh.record).await?;
    Ok(TokenResponse::new(access_token, state.config.access_token_ttl, &refresh.token, scope))
}

async fn refresh(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, OAuthError> {
    let client = authenticate_token_client(state, headers, params, ip).await?;
    let presented = params.require("refresh_token")?;
    let hash = auth::token::hash_token(presented);
    let invalid = || OAuthError::invalid_grant("refresh token is invalid, expired or revoked");
    let record = state.store.get_refresh_token(&hash).await?.ok_or_else(invalid)?;
    // The client must be the one the token was issued to; a mismatch does
    // not consume the token (it is not reuse, just the wrong client).
    match (&client, record.kind) {
        (Client::App(app), RefreshKind::App) if app.client_id == record.client_id => {}
        (Client::Public(None), RefreshKind::App) => return Err(OAuthError::invalid_client(false)),
        (Client::Public(id), RefreshKind::User) if id.as_deref().is_none_or(|id| id == DASHBOARD_CLIENT) => {}
        _ => return Err(OAuthError::invalid_grant("refresh token was issued to another client")),
    }
    let allowed: Vec<&str> = record.scope.split(' ').collect();
    let scope = requested_scope(params, &allowed, &record.scope)?;
    let next = state.new_refresh_token(
        record.kind,
        record.subject.clone(),
        record.client_id.clone(),
        scope.clone(),
        Some(&record),
    );
    // What can fail is done before the rotation commits: a client that never
    // receives its new refresh token would retry with the old one and be
    // treated as a thief.
    let access = match record.kind {
        RefreshKind::App => {
            let app_id = AppId::parse(&record.subject).map_err(|_| invalid())?;
            let app = state.store.get_app_by_id(app_id).await?.ok_or_else(invalid)?;
            Some(state.issue_access_token(&app, &scope).await?.0)
        }
        RefreshKind::User => {
            let user_id = UserId::parse(&record.subject).map_err(|_| invalid())?;
            state.store.get_user(user_id).await?.ok_or_else(invalid)?;
            None
        }
    };
    match state.store.rotate_refresh_token(&hash, &next.record, state.now()).await? {
        RotateOutcome::Rotated(_) => {}
        RotateOutcome::Reused(old) => {
            let tenant = match &client {
                Client::App(app) => Some(app.tenant_id),
                Client::Public(_) => None,
            };
            // A stolen token's sessions die with its family.
            if old.kind == RefreshKind::User {
                state.store.delete_family_sessions(old.family_id).await?;
            }
            let target = Some(("refresh_family", old.family_id.to_string()));
            let details = json!({"kind": old.kind.as_str()});
            state.audit(tenant, &Actor::anonymous(ip), AuditAction::RefreshReuse, target, details).await;
            return Err(OAuthError::invalid_grant("refresh token was already used; its whole family is now revoked"));
        }
        RotateOutcome::Invalid => return Err(invalid()),
    }
    match access {
        Some(access_token) => Ok(TokenResponse::new(access_token, state.config.access_token_ttl, &next.token, scope)),
        None => {
            let user_id = UserId::parse(&record.subject).map_err(|_| invalid())?;
            let (session_token, _) = state.create_session(user_id, Some(record.family_id)).await?;
            let session = session_token.expose_secret().to_owned();
            Ok(TokenResponse::new(session, state.config.session_ttl, &next.token, scope))
        }
    }
}

async fn password(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, OAuthError> {
    match authenticate_token_client(state, headers, params, ip).await? {
        Client::Public(id) if id.as_deref().is_none_or(|id| id == DASHBOARD_CLIENT) => {}
        _ => {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "the password grant is only for the dashboard client",
            ));
        }
    }
    let username = params.require("username")?.to_owned();
    let pw = params.require("password")?.to_owned();
    requested_scope(params, &[domain::DASHBOARD_SCOPE], domain::DASHBOARD_SCOPE)?;
    let Some(user) = check_credentials(state, &username, pw, ip).await? else {
        return Err(OAuthError::invalid_grant("wrong username or password"));
    };
    // Only now, with the password right, may the answer tell that MFA is on.
    let proof = Proof::from_fields(params.get("totp"), params.get("recovery_code"));
    match crate::mfa::check(state, user.id, proof, ip).await {
        Ok(()) => {}
        Err(MfaError::Required) => {
            return Err(OAuthError::invalid_grant(
                "two-factor authentication is required: send a `totp` code (or a `recovery_code`)",
            )
            .with_extra("mfa", "required"));
        }
        Err(MfaError::Invalid) => {
            // Counts as a failed login against the account's limit.
            drop(state.check_account(&username, ip).await);
            return Err(OAuthError::invalid_grant("wrong or already used two-factor code").with_extra("mfa", "invalid"));
        }
        Err(MfaError::Internal(e)) => return Err(e.into()),
    }
    let refresh = state.new_refresh_token(
        RefreshKind::User,
        user.id.to_string(),
        DASHBOARD_CLIENT.to_owned(),
        domain::DASHBOARD_SCOPE.to_owned(),
        None,
    );
    let (session_token, _) = state.create_session(user.id, Some(refresh.record.family_id)).await?;
    state.store.insert_refresh_token(&refresh.record).await?;
    let target = Some(("user", user.id.to_string()));
    state.audit(None, &Actor::user_id(user.id, ip), AuditAction::Login, target, json!({"via": "password_grant"})).await;
    let session = session_token.expose_secret().to_owned();
    Ok(TokenResponse::new(session, state.config.session_ttl, &refresh.token, domain::DASHBOARD_SCOPE.to_owned()))
}

async fn require_app_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Box<AppRecord>, OAuthError> {
    match authenticate_client(state, headers, params, ip).await? {
        Client::App(app) => Ok(app),
        Client::Public(_) => Err(OAuthError::invalid_client(false)),
    }
}

/// RFC 7662. A client sees only its own app's tokens; anything else is
/// `{"active": false}`.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", content = String, description = "token=…&token_type_hint=…"),
    responses((status = 200, description = "RFC 7662 answer"), (status = 401, description = "invalid_client")))]
pub async fn introspect(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, OAuthError> {
    let params = Params::parse(&headers, &body)?;
    let app = require_app_client(&state, &headers, &params, &ip).await?;
    let token = params.require("token")?;
    let inactive = || no_store(json!({"active": false}));
    if looks_like_jwt(token) {
        return Ok(match state.verify_app_token(token).await {
            Ok(t) if t.app.id == app.id => {
                let c = t.claims;
                let mut body = json!({
                    "active": true, "token_type": "Bearer", "scope": c.scope, "client_id": c.client_id,
                    "sub": c.sub, "aud": c.aud, "iss": c.iss, "exp": c.exp, "iat": c.iat, "jti": c.jti,
                    "tid": c.tid, "app": c.app, "region": c.region, "origins": c.origins,
                });
                if let Some(docs) = c.docs {
                    body["docs"] = json!(docs);
                    body["access"] = json!(c.access.unwrap_or_default());
                }
                if let Some(name) = c.name {
                    body["name"] = json!(name);
                }
                no_store(body)
            }
            _ => inactive(),
        });
    }
    if token.starts_with(REFRESH_PREFIX) {
        let now = state.now();
        if let Some(r) = state.store.get_refresh_token(&auth::token::hash_token(token)).await? {
            let live = r.used_at.is_none() && r.revoked_at.is_none() && r.expires_at > now;
            if live && r.kind == RefreshKind::App && r.client_id == app.client_id {
                return Ok(no_store(json!({
                    "active": true, "token_type": "refresh_token", "scope": r.scope, "client_id": r.client_id,
                    "exp": r.expires_at.unix_timestamp(), "iat": r.created_at.unix_timestamp(),
                })));
            }
        }
    }
    Ok(inactive())
}

/// RFC 7009. Revoking another client's token, or an unknown one, is a no-op 200.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", content = String, description = "token=…&token_type_hint=…"),
    responses((status = 200, description = "revoked, or nothing to revoke"), (status = 401, description = "invalid_client")))]
pub async fn revoke(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, OAuthError> {
    let params = Params::parse(&headers, &body)?;
    let client = authenticate_client(&state, &headers, &params, &ip).await?;
    let token = params.require("token")?;
    let app = match client {
        Client::App(app) => app,
        // The dashboard (a public client) may revoke its own refresh tokens.
        Client::Public(Some(id)) if id == DASHBOARD_CLIENT => {
            if token.starts_with(REFRESH_PREFIX)
                && let Some(r) = state.store.get_refresh_token(&auth::token::hash_token(token)).await?
                && r.kind == RefreshKind::User
            {
                state.store.revoke_refresh_family(r.family_id, state.now()).await?;
                let target = Some(("refresh_family", r.family_id.to_string()));
                let details = json!({"type": "refresh_token"});
                state.audit(None, &Actor::anonymous(&ip), AuditAction::TokenRevoked, target, details).await;
            }
            return Ok(no_store(json!({})));
        }
        Client::Public(_) => return Err(OAuthError::invalid_client(false)),
    };
    let actor = Actor::app(&app, &ip);
    if looks_like_jwt(token) {
        if let Ok(t) = state.verify_app_token(token).await
            && t.app.id == app.id
        {
            let exp = time::OffsetDateTime::from_unix_timestamp(t.claims.exp).map_err(ApiError::internal)?;
            state.store.deny_jti(&t.claims.jti, exp).await?;
            state.denied.insert(&t.claims.jti, exp);
            let jti = t.claims.jti.clone();
            let reason = CloseReason { code: close::TOKEN, reason: "token revoked" };
            state.registry.close_where(reason, |c| c.jti == jti);
            let target = Some(("jti", t.claims.jti));
            state
                .audit(Some(app.tenant_id), &actor, AuditAction::TokenRevoked, target, json!({"type": "access_token"}))
                .await;
        }
    } else if token.starts_with(REFRESH_PREFIX)
        && let Some(r) = state.store.get_refresh_token(&auth::token::hash_token(token)).await?
        && r.kind == RefreshKind::App
        && r.client_id == app.client_id
    {
        state.store.revoke_refresh_family(r.family_id, state.now()).await?;
        let target = Some(("refresh_family", r.family_id.to_string()));
        state
            .audit(Some(app.tenant_id), &actor, AuditAction::TokenRevoked, target, json!({"type": "refresh_token"}))
            .await;
    }
    Ok(no_store(json!({})))
}

#[derive(Deserialize, ToSchema)]
pub struct ClientUser {
    id: String,
    name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ClientTokenRequest {
    /// Exact names, `prefix/*` or `*`.
    docs: Vec<String>,
    /// `rw` (default) or `r`.
    access: Option<String>,
    user: Option<ClientUser>,
    /// Capped at the access-token TTL (15 minutes by default).
    ttl_seconds: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ClientTokenResponse {
    pub(crate) token: String,
    pub(crate) expires_in: i64,
}

const MAX_DOC_PATTERNS: usize = 100;

fn check_text(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{field} must be 1–255 bytes without control characters"),
        ));
    }
    Ok(())
}

/// A narrower token for one end user of the app.
#[utoipa::path(post, path = "/v1/client-tokens", tag = "oauth", security(("app_token" = [])), request_body = ClientTokenRequest,
    responses((status = 200, body = ClientTokenResponse), (status = 400, body = ErrorSchema), (status = 401, body = ErrorSchema), (status = 403, body = ErrorSchema)))]
pub async fn client_token(
    State(state): State<AppState>,
    caller: AppToken,
    ApiJson(req): ApiJson<ClientTokenRequest>,
) -> Result<Json<ClientTokenResponse>, ApiError> {
    if caller.claims.is_client_token() {
        return Err(ApiError::forbidden("a client token cannot mint client tokens; use the app's M2M token"));
    }
    if !caller.claims.has_scope(domain::DEFAULT_SCOPE) {
        return Err(ApiError::forbidden(format!("the token lacks the {} scope", domain::DEFAULT_SCOPE)));
    }
    let spec = client_token_spec(req)?;
    let (token, claims) = state.issue_client_token(&caller.app, spec).await?;
    Ok(Json(ClientTokenResponse { token, expires_in: claims.exp - claims.iat }))
}

/// Checks a client-token request (`/v1/client-tokens`, and the dashboard's
/// per-app minting) and turns it into what the token will carry.
pub(crate) fn client_token_spec(req: ClientTokenRequest) -> Result<ClientTokenSpec, ApiError> {
    if req.docs.is_empty() || req.docs.len() > MAX_DOC_PATTERNS {
        return Err(ApiError::bad_request("invalid_docs", format!("docs must list 1–{MAX_DOC_PATTERNS} patterns")));
    }
    for p in &req.docs {
        validate_doc_pattern(p)?;
    }
    let access = match req.access.as_deref() {
        None => Access::ReadWrite,
        Some(a) => {
            Access::parse(a).ok_or_else(|| ApiError::bad_request("invalid_access", "access must be \"rw\" or \"r\""))?
        }
    };
    if let Some(user) = &req.user {
        check_text("user.id", &user.id)?;
        if let Some(name) = &user.name {
            check_text("user.name", name)?;
        }
    }
    let ttl_seconds = match req.ttl_seconds {
        Some(t) if t < 1 => return Err(ApiError::bad_request("invalid_ttl", "ttl_seconds must be positive")),
        Some(t) => Some(u64::try_from(t).unwrap_or(u64::MAX)),
        None => None,
    };
    let (user_id, name) = match req.user {
        Some(u) => (Some(u.id), u.name),
        None => (None, None),
    };
    Ok(ClientTokenSpec { sub: user_id, name, docs: req.docs, access, ttl_seconds, extra_origin: None })
}
