//! Webhooks of an app: targets, event subscriptions, signing secrets, the
//! delivery log and a test ping. Delivery itself is `crate::webhooks`.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::routes::apps::load_app;
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use crate::webhooks::{redacted_url, secret_aad};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::ids::{AppId, TenantId};
use domain::role::{Action, Resource};
use domain::webhook::{EventFilter, WebhookUrl};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{AppRecord, DeliveryRecord, TenantRecord, WebhookRecord};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Webhooks one app may have.
pub const MAX_WEBHOOKS_PER_APP: usize = 20;

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    id: String,
    #[schema(value_type = String)]
    app_id: AppId,
    url: String,
    /// Subscribed event types, or `["*"]`.
    events: Vec<String>,
    /// The signing secret: only in the answers that create or rotate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
}

impl WebhookView {
    fn new(h: WebhookRecord, secret: Option<String>) -> Self {
        Self {
            id: h.id,
            app_id: h.app_id,
            url: h.url,
            events: h.events,
            secret,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateWebhook {
    /// `http(s)://host[:port][/path][?query]`; a public address.
    #[serde(default)]
    #[schema(value_type = String)]
    url: Value,
    /// Event types (`document.updated`, `app.created`, …) or `["*"]`.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    events: Value,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateWebhook {
    #[schema(value_type = Option<String>)]
    url: Option<Value>,
    #[schema(value_type = Option<Vec<String>>)]
    events: Option<Value>,
}

/// The `url` of a request, parsed and checked against the SSRF policy.
fn target(state: &AppState, url: &Value) -> Result<WebhookUrl, ApiError> {
    let url = match url {
        Value::String(s) => WebhookUrl::parse(s)?,
        Value::Null => return Err(ApiError::bad_request("invalid_url", "url is required")),
        _ => return Err(ApiError::bad_request("invalid_url", "url must be a string")),
    };
    state.events.targets.check_url(&url)?;
    Ok(url)
}

/// The webhook of the tenant's app, else 404 (also for another tenant's).
async fn load_hook(
    state: &AppState,
    tenant: &TenantRecord,
    app: &AppRecord,
    wid: &str,
) -> Result<WebhookRecord, ApiError> {
    if uuid::Uuid::parse_str(wid).is_err() {
        return Err(ApiError::not_found());
    }
    state.store.get_webhook(tenant.id, app.id, wid).await?.ok_or_else(ApiError::not_found)
}

/// A fresh secret, sealed for the webhook's row.
fn new_secret(state: &AppState, tenant: TenantId, id: &str) -> Result<(auth::SecretString, Vec<u8>, u32), ApiError> {
    let secret = auth::webhook::generate_webhook_secret();
    let (sealed, version) = state.keys.seal(secret.expose_secret().as_bytes(), &secret_aad(tenant, id))?;
    Ok((secret, sealed, version))
}

fn audit_details(h: &WebhookRecord, changed: &[&str]) -> Value {
    let mut details = json!({"app_id": h.app_id.to_string(), "url": redacted_url(&h.url), "events": h.events});
    if !changed.is_empty()
        && let Some(map) = details.as_object_mut()
    {
        map.insert("changed".into(), json!(changed));
    }
    details
}

/// Subscribes a URL to events of the app (and tenant-wide events). The
/// answer carries the signing secret; it is not shown again.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/webhooks", tag = "webhooks", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), request_body = CreateWebhook,
    responses((status = 201, body = WebhookView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Create).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let url = target(&state, &req.url)?;
    let events = EventFilter::from_json(&req.events)?;
    let existing = state.store.list_webhooks(app.id, None, MAX_WEBHOOKS_PER_APP as u32).await?;
    if existing.items.len() >= MAX_WEBHOOKS_PER_APP {
        return Err(ApiError::conflict(
            "webhook_limit",
            format!("an app may have at most {MAX_WEBHOOKS_PER_APP} webhooks; delete one first"),
        ));
    }
    let now = state.now();
    let id = uuid::Uuid::now_v7().to_string();
    let (secret, secret_enc, master_key_version) = new_secret(&state, tenant.id, &id)?;
    let hook = WebhookRecord {
        id,
        tenant_id: tenant.id,
        app_id: app.id,
        url: url.to_string(),
        events: events.names().into_iter().map(str::to_owned).collect(),
        secret_enc,
        master_key_version,
        created_at: now,
        updated_at: now,
    };
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let hook = run_detached(async move {
        st.store.create_webhook(&hook).await?;
        st.events.webhooks_changed();
        let target = Some(("webhook", hook.id.clone()));
        st.audit(Some(tenant.id), &actor, AuditAction::WebhookCreated, target, audit_details(&hook, &[])).await;
        Ok(hook)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(WebhookView::new(hook, Some(secret.expose_secret().to_owned())))))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}/webhooks", tag = "webhooks", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<WebhookView>), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<WebhookView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let page = state.store.list_webhooks(app.id, q.after()?.as_deref(), q.limit()?).await?;
    Ok(Json(Paged::from_store(page, |h| WebhookView::new(h, None))))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", tag = "webhooks", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
) -> Result<Json<WebhookView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    Ok(Json(WebhookView::new(load_hook(&state, &tenant, &app, &wid).await?, None)))
}

/// Changes the URL and/or the events; the secret stays.
#[utoipa::path(patch, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", tag = "webhooks", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema)))]
pub async fn update_webhook(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let mut hook = load_hook(&state, &tenant, &app, &wid).await?;
    let mut changed = Vec::new();
    if let Some(url) = &req.url {
        hook.url = target(&state, url)?.to_string();
        changed.push("url");
    }
    if let Some(events) = &req.events {
        hook.events = EventFilter::from_json(events)?.names().into_iter().map(str::to_owned).collect();
        changed.push("events");
    }
    hook.updated_at = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let hook = run_detached(async move {
        st.store.update_webhook(&hook).await?;
        st.events.webhooks_changed();
        let details = audit_details(&hook, &changed);
        st.audit(Some(tenant.id), &actor, AuditAction::WebhookUpdated, Some(("webhook", hook.id.clone())), details)
            .await;
        Ok(hook)
    })
    .await?;
    Ok(Json(WebhookView::new(hook, None)))
}

/// Deletes the webhook with its pending deliveries and its delivery log.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", tag = "webhooks", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Delete).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let hook = load_hook(&state, &tenant, &app, &wid).await?;
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        if !st.store.delete_webhook(tenant.id, app.id, &hook.id).await? {
            return Err(ApiError::not_found());
        }
        st.events.webhooks_changed();
        let target = Some(("webhook", hook.id.clone()));
        st.audit(Some(tenant.id), &actor, AuditAction::WebhookDeleted, target, audit_details(&hook, &[])).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct RotatedWebhookSecret {
    id: String,
    /// The new signing secret, shown once. Deliveries from now on are signed with it.
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    rotated_at: OffsetDateTime,
}

/// A new signing secret, shown once; the old one signs nothing more.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/secret/rotate", tag = "webhooks",
    security(("session" = [])), params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path)),
    responses((status = 200, body = RotatedWebhookSecret), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
) -> Result<Json<RotatedWebhookSecret>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let hook = load_hook(&state, &tenant, &app, &wid).await?;
    let (secret, sealed, version) = new_secret(&state, tenant.id, &hook.id)?;
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let id = hook.id.clone();
    run_detached(async move {
        st.store.set_webhook_secret(&hook.id, &sealed, version, now).await?;
        let target = Some(("webhook", hook.id.clone()));
        st.audit(Some(tenant.id), &actor, AuditAction::WebhookSecretRotated, target, audit_details(&hook, &[])).await;
        Ok(())
    })
    .await?;
    Ok(Json(RotatedWebhookSecret { id, secret: secret.expose_secret().to_owned(), rotated_at: now }))
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    /// 1 for the first attempt of the event.
    attempt: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: OffsetDateTime,
    /// The HTTP status answered; null when there was no answer (timeout,
    /// connection error, refused target).
    status: Option<u16>,
    latency_ms: i64,
    error: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            event_id: d.event_id,
            event_type: d.event_type,
            attempt: d.attempt,
            at: d.at,
            status: d.status_code,
            latency_ms: d.latency_ms,
            error: d.error,
        }
    }
}

/// Delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/deliveries", tag = "webhooks",
    security(("session" = [])), params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<DeliveryView>), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<DeliveryView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let hook = load_hook(&state, &tenant, &app, &wid).await?;
    let before = q
        .after()?
        .map(|c| c.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not one this server issued"))?;
    let page = state.store.list_webhook_deliveries(&hook.id, before, q.limit()?).await?;
    Ok(Json(Paged::from_store(page, Into::into)))
}

#[derive(Serialize, ToSchema)]
pub struct TestDelivery {
    /// The `X-Webhook-Id` of the `ping` event; its attempts show up under `deliveries`.
    event_id: String,
    #[serde(rename = "type")]
    event_type: &'static str,
}

/// Queues a `ping` event to this webhook (whatever it subscribed to), to
/// check the receiver and its signature verification.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/test", tag = "webhooks",
    security(("session" = [])), params(("tid" = String, Path), ("aid" = String, Path), ("wid" = String, Path)),
    responses((status = 200, body = TestDelivery), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn test_webhook(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid, wid)): ApiPath<(String, String, String)>,
) -> Result<Json<TestDelivery>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Webhooks, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let hook = load_hook(&state, &tenant, &app, &wid).await?;
    let st = state.clone();
    let event_id = run_detached(async move { Ok(st.events.ping(&hook).await?) }).await?;
    Ok(Json(TestDelivery { event_id, event_type: crate::webhooks::PING }))
}
