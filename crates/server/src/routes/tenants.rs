//! Tenants, their signing keys, JWKS and RFC 8414 metadata; the catalogs.

use crate::dataplane::close;
use crate::dataplane::registry::CloseReason;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession, OptionalJson};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::audit::AuditAction;
use domain::ids::TenantId;
use domain::keys::{KeyState, KeyStatus};
use domain::names::TenantName;
use domain::role::{Action, Resource, Role};
use domain::webhook::WebhookEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{SigningKeyRecord, TenantRecord};
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    #[schema(value_type = String)]
    id: TenantId,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
}

impl From<TenantRecord> for TenantView {
    fn from(t: TenantRecord) -> Self {
        Self { id: t.id, name: t.name, created_at: t.created_at }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTenant {
    name: String,
}

/// Creates a tenant with its own RSA-2048 signing key; the caller becomes its `super_admin`.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant, security(("session" = [])),
    responses((status = 201, body = TenantView), (status = 400, body = ErrorSchema), (status = 401, body = ErrorSchema)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiJson(req): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let name = TenantName::parse(&req.name)?;
    let now = state.now();
    let tenant = TenantRecord { id: TenantId::new(), name: name.into_string(), created_at: now };
    let (key, signer) = state.keys.new_key(tenant.id, now).await?;
    state.store.create_tenant(&tenant, session.user.id, Role::SuperAdmin.as_str(), &key).await?;
    state.keys.install_signer(tenant.id, signer);
    record_tenant_created(&state, &Actor::user(&session, &ip), &tenant, &key.kid).await;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// The audit entries of a new tenant: the tenant and its first signing key.
pub async fn record_tenant_created(state: &AppState, actor: &Actor, tenant: &TenantRecord, kid: &str) {
    let target = Some(("tenant", tenant.id.to_string()));
    state.audit(Some(tenant.id), actor, AuditAction::TenantCreated, target, json!({"name": tenant.name})).await;
    state.audit(Some(tenant.id), actor, AuditAction::KeyCreated, Some(("key", kid.to_owned())), json!({})).await;
}

#[utoipa::path(get, path = "/v1/tenants/{tid}", tag = "tenants", security(("session" = [])),
    params(("tid" = String, Path)), responses((status = 200, body = TenantView), (status = 404, body = ErrorSchema)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
) -> Result<Json<TenantView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Tenants, Action::Read).await?;
    Ok(Json(tenant.into()))
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    kid: String,
    alg: &'static str,
    #[schema(value_type = String)]
    status: KeyStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    /// End of the grace period of a rotated-out key.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    retires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<OffsetDateTime>,
}

impl KeyView {
    fn new(k: &SigningKeyRecord, now: OffsetDateTime) -> Self {
        Self {
            kid: k.kid.clone(),
            alg: "RS256",
            status: KeyStatus::derive(k.state, k.retires_at, now),
            created_at: k.created_at,
            retires_at: k.retires_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/keys", tag = "keys", security(("session" = [])),
    params(("tid" = String, Path), PageQuery), responses((status = 200, body = Paged<KeyView>), (status = 404, body = ErrorSchema)))]
pub async fn list_keys(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Paged<KeyView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Keys, Action::Read).await?;
    let now = state.now();
    // A tenant has few keys: page in memory by kid order of creation (newest first).
    let keys: Vec<KeyView> =
        state.store.list_signing_keys(tenant.id).await?.iter().map(|k| KeyView::new(k, now)).collect();
    Ok(Json(page.paginate(keys, |k| k.kid.clone())?))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct RotateKey {
    /// How long the old key keeps verifying; default 1800 s (at least the access-token TTL).
    grace_seconds: Option<i64>,
}

/// The longest grace period accepted (30 days).
const MAX_GRACE: i64 = 30 * 24 * 3600;

#[utoipa::path(post, path = "/v1/tenants/{tid}/keys/rotate", tag = "keys", security(("session" = [])),
    params(("tid" = String, Path)), request_body(content = RotateKey, description = "optional"),
    responses((status = 200, body = KeyView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    OptionalJson(req): OptionalJson<RotateKey>,
) -> Result<Json<KeyView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Keys, Action::Create).await?;
    let default_grace = i64::try_from(state.config.access_token_ttl.as_secs()).unwrap_or(900).max(1800);
    let grace = req.grace_seconds.unwrap_or(default_grace);
    if !(0..=MAX_GRACE).contains(&grace) {
        return Err(ApiError::bad_request("invalid_grace", format!("grace_seconds must be between 0 and {MAX_GRACE}")));
    }
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let key = run_detached(async move {
        let (key, _) = st.keys.new_key(tenant.id, now).await?;
        let data = json!({"kid": key.kid, "grace_seconds": grace});
        let event = st.events.event(tenant.id, None, WebhookEvent::KeyRotated, data)?;
        st.store.rotate_signing_key(tenant.id, &key, now + time::Duration::seconds(grace), &[event]).await?;
        st.events.committed();
        st.keys.reload_tenant(tenant.id).await?;
        let target = Some(("key", key.kid.clone()));
        st.audit(Some(tenant.id), &actor, AuditAction::KeyRotated, target, json!({"grace_seconds": grace})).await;
        Ok(key)
    })
    .await?;
    Ok(Json(KeyView::new(&key, now)))
}

/// Immediate revocation. Revoking the only active key activates a fresh one.
#[utoipa::path(post, path = "/v1/tenants/{tid}/keys/{kid}/revoke", tag = "keys", security(("session" = [])),
    params(("tid" = String, Path), ("kid" = String, Path)),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, kid)): ApiPath<(String, String)>,
) -> Result<Json<KeyView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Keys, Action::Delete).await?;
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let revoked = run_detached(async move {
        let keys = st.store.list_signing_keys(tenant.id).await?;
        let target = keys.iter().find(|k| k.kid == kid).ok_or_else(ApiError::not_found)?;
        let replacement =
            if target.state == KeyState::Active { Some(st.keys.new_key(tenant.id, now).await?.0) } else { None };
        let data = json!({"kid": kid, "replacement": replacement.as_ref().map(|r| r.kid.clone())});
        let event = st.events.event(tenant.id, None, WebhookEvent::KeyRevoked, data)?;
        st.store.revoke_signing_key(tenant.id, &kid, now, replacement.as_ref(), &[event]).await?;
        st.events.committed();
        let keys = st.keys.reload_tenant(tenant.id).await?;
        let revoked = keys.into_iter().find(|k| k.kid == kid).ok_or_else(ApiError::not_found)?;
        let reason = CloseReason { code: close::TOKEN, reason: "signing key revoked" };
        st.registry.close_where(reason, |c| c.kid == kid);
        let details = json!({"replacement": replacement.as_ref().map(|r| r.kid.clone())});
        st.audit(Some(tenant.id), &actor, AuditAction::KeyRevoked, Some(("key", kid.clone())), details).await;
        Ok(revoked)
    })
    .await?;
    Ok(Json(KeyView::new(&revoked, now)))
}

#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    #[schema(value_type = Vec<Object>)]
    keys: Vec<auth::signing::Jwk>,
}

fn public_tenant(tid: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(tid).map_err(|_| ApiError::not_found())
}

/// The tenant's verification keys (RFC 7517). Public.
#[utoipa::path(get, path = "/{tid}/.well-known/jwks", tag = "discovery",
    params(("tid" = String, Path)), responses((status = 200, body = JwkSet), (status = 404, body = ErrorSchema)))]
pub async fn jwks(State(state): State<AppState>, ApiPath(tid): ApiPath<String>) -> Result<Response, ApiError> {
    let tenant = public_tenant(&tid)?;
    state.store.get_tenant(tenant).await?.ok_or_else(ApiError::not_found)?;
    let now = state.now();
    let mut keys = Vec::new();
    for k in state.store.list_signing_keys(tenant).await? {
        if KeyStatus::derive(k.state, k.retires_at, now).verifies() {
            keys.push(auth::signing::VerifyingKey::from_components(k.kid.clone(), &k.public_n, &k.public_e)?.jwk());
        }
    }
    let mut resp = Json(JwkSet { keys }).into_response();
    // Short: third parties must notice revocations; our own nodes learn them by event.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(resp)
}

#[utoipa::path(get, path = "/{tid}/.well-known/jwks.json", tag = "discovery",
    params(("tid" = String, Path)), responses((status = 200, body = JwkSet), (status = 404, body = ErrorSchema)))]
pub async fn jwks_json(state: State<AppState>, tid: ApiPath<String>) -> Result<Response, ApiError> {
    jwks(state, tid).await
}

#[derive(Serialize, ToSchema)]
pub struct AuthServerMetadata {
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
    response_types_supported: Vec<String>,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint: String,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint: String,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    scopes_supported: Vec<&'static str>,
}

/// RFC 8414 metadata, at the §3.1 location.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server/{tid}", tag = "discovery",
    params(("tid" = String, Path)), responses((status = 200, body = AuthServerMetadata), (status = 404, body = ErrorSchema)))]
pub async fn metadata(State(state): State<AppState>, ApiPath(tid): ApiPath<String>) -> Result<Response, ApiError> {
    let tenant = public_tenant(&tid)?;
    state.store.get_tenant(tenant).await?.ok_or_else(ApiError::not_found)?;
    let base = &state.public_url;
    let auth_methods = vec!["client_secret_basic", "client_secret_post"];
    let body = AuthServerMetadata {
        issuer: state.issuer(tenant),
        token_endpoint: format!("{base}/oauth/token"),
        jwks_uri: format!("{base}/{tenant}/.well-known/jwks.json"),
        response_types_supported: vec![],
        grant_types_supported: vec!["client_credentials", "refresh_token", "password"],
        token_endpoint_auth_methods_supported: auth_methods.clone(),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        introspection_endpoint_auth_methods_supported: auth_methods.clone(),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        revocation_endpoint_auth_methods_supported: auth_methods,
        scopes_supported: vec![domain::DEFAULT_SCOPE],
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(resp)
}

#[utoipa::path(get, path = "/{tid}/.well-known/oauth-authorization-server", tag = "discovery",
    params(("tid" = String, Path)), responses((status = 200, body = AuthServerMetadata), (status = 404, body = ErrorSchema)))]
pub async fn metadata_alias(state: State<AppState>, tid: ApiPath<String>) -> Result<Response, ApiError> {
    metadata(state, tid).await
}

#[derive(Serialize, ToSchema)]
pub struct RegionView {
    id: String,
    name: String,
}

#[utoipa::path(get, path = "/v1/regions", tag = "catalog", responses((status = 200, body = Vec<RegionView>)))]
pub async fn regions(State(state): State<AppState>) -> Json<Vec<RegionView>> {
    Json(state.config.regions.iter().map(|r| RegionView { id: r.id.clone(), name: r.name.clone() }).collect())
}

#[derive(Serialize, ToSchema)]
pub struct PlanView {
    id: &'static str,
    name: &'static str,
    max_connections: Option<u64>,
    max_documents: Option<u64>,
    ops_per_minute: Option<u64>,
    price_cents_per_month: i64,
}

#[utoipa::path(get, path = "/v1/plans", tag = "catalog", responses((status = 200, body = Vec<PlanView>)))]
pub async fn plans() -> Json<Vec<PlanView>> {
    Json(
        domain::plan::catalog()
            .into_iter()
            .map(|p| PlanView {
                id: p.id.as_str(),
                name: p.name,
                max_connections: p.max_connections,
                max_documents: p.max_documents,
                ops_per_minute: p.ops_per_minute,
                price_cents_per_month: p.price_cents_per_month,
            })
            .collect(),
    )
}
