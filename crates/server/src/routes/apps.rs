//! Apps of a tenant: credentials, region pin, allowed domains, plan and invoices.

use crate::dataplane::close;
use crate::dataplane::registry::CloseReason;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use crate::tokens::{CLIENT_ID_PREFIX, CLIENT_SECRET_PREFIX};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::domains::parse_allowed_domains;
use domain::ids::{AppId, InvoiceId, TenantId};
use domain::names::{AppName, Environment};
use domain::plan::PlanId;
use domain::proration::{InvoiceLine, billing_period, first_period_line, invoice_total, prorate};
use domain::role::{Action, Resource};
use domain::webhook::WebhookEvent;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{AppRecord, InvoiceRecord, TenantRecord};
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct AppView {
    #[schema(value_type = String)]
    id: AppId,
    #[schema(value_type = String)]
    tenant_id: TenantId,
    name: String,
    client_id: String,
    /// Only in the answers that create or rotate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    region: String,
    #[schema(value_type = String)]
    plan: PlanId,
    allowed_domains: Vec<String>,
    environment: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    /// The current monthly billing period (anchored at creation).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    current_period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    current_period_end: OffsetDateTime,
}

impl AppView {
    fn new(a: AppRecord, now: OffsetDateTime, secret: Option<String>) -> Self {
        let (start, end) = billing_period(a.created_at, now);
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            name: a.name,
            client_id: a.client_id,
            client_secret: secret,
            region: a.region,
            plan: a.plan,
            allowed_domains: a.allowed_domains,
            environment: a.environment,
            created_at: a.created_at,
            updated_at: a.updated_at,
            current_period_start: start,
            current_period_end: end,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateApp {
    name: String,
    region: String,
    plan: String,
    #[serde(default)]
    allowed_domains: Vec<String>,
    environment: Option<String>,
}

fn normalise_domains(input: &[String]) -> Result<Vec<String>, ApiError> {
    Ok(parse_allowed_domains(input)?.iter().map(ToString::to_string).collect())
}

pub(crate) async fn load_app(state: &AppState, tenant: &TenantRecord, aid: &str) -> Result<AppRecord, ApiError> {
    let id = AppId::parse(aid).map_err(|_| ApiError::not_found())?;
    state.store.get_app(tenant.id, id).await?.ok_or_else(ApiError::not_found)
}

fn new_secret() -> (auth::SecretString, String) {
    let secret = auth::token::generate_token(CLIENT_SECRET_PREFIX);
    let hash = auth::token::hash_token(secret.expose_secret());
    (secret, hash)
}

#[utoipa::path(post, path = "/v1/tenants/{tid}/apps", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path)), request_body = CreateApp,
    responses((status = 201, body = AppView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn create_app(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiJson(req): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Create).await?;
    let name = AppName::parse(&req.name)?;
    if !state.config.regions.iter().any(|r| r.id == req.region) {
        return Err(ApiError::bad_request(
            "invalid_region",
            format!("unknown region {:?}; see GET /v1/regions", req.region),
        ));
    }
    let plan = PlanId::parse(&req.plan)?;
    let allowed_domains = normalise_domains(&req.allowed_domains)?;
    let environment = match req.environment.as_deref() {
        Some(e) => Environment::parse(e)?,
        None => Environment::default(),
    };
    let now = state.now();
    let (secret, secret_hash) = new_secret();
    let app = AppRecord {
        id: AppId::new(),
        tenant_id: tenant.id,
        name: name.into_string(),
        client_id: format!("{CLIENT_ID_PREFIX}{}", auth::token::random_id(16)),
        client_secret_hash: secret_hash,
        region: req.region,
        plan,
        allowed_domains,
        environment: environment.as_str().to_owned(),
        created_at: now,
        updated_at: now,
        secret_rotated_at: None,
    };
    // A paid subscription starts with the charge for its first period.
    let initial_invoice = first_period_line(now, plan).map(|line| InvoiceRecord {
        id: InvoiceId::new(),
        app_id: app.id,
        tenant_id: tenant.id,
        total_cents: line.amount_cents,
        lines: vec![line],
        created_at: now,
    });
    let data = json!({"name": app.name, "plan": plan.as_str(), "region": app.region, "environment": app.environment});
    let event = state.events.event(tenant.id, Some(app.id), WebhookEvent::AppCreated, data)?;
    state.store.create_app(&app, initial_invoice.as_ref(), &[event]).await?;
    state.events.committed();
    state
        .audit(
            Some(tenant.id),
            &Actor::user(&session, &ip),
            AuditAction::AppCreated,
            Some(("app", app.id.to_string())),
            json!({"name": app.name, "plan": plan.as_str(), "region": app.region}),
        )
        .await;
    let view = AppView::new(app, now, Some(secret.expose_secret().to_owned()));
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path), PageQuery), responses((status = 200, body = Paged<AppView>), (status = 404, body = ErrorSchema)))]
pub async fn list_apps(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<AppView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Read).await?;
    let page = state.store.list_apps(tenant.id, q.after()?.as_deref(), q.limit()?).await?;
    let now = state.now();
    Ok(Json(Paged::from_store(page, |a| AppView::new(a, now, None))))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), responses((status = 200, body = AppView), (status = 404, body = ErrorSchema)))]
pub async fn get_app(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
) -> Result<Json<AppView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    Ok(Json(AppView::new(app, state.now(), None)))
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateApp {
    name: Option<String>,
    allowed_domains: Option<Vec<String>>,
    environment: Option<String>,
}

#[utoipa::path(patch, path = "/v1/tenants/{tid}/apps/{aid}", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), request_body = UpdateApp,
    responses((status = 200, body = AppView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn update_app(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateApp>,
) -> Result<Json<AppView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Update).await?;
    let mut app = load_app(&state, &tenant, &aid).await?;
    let mut changed = Vec::new();
    if let Some(name) = &req.name {
        app.name = AppName::parse(name)?.into_string();
        changed.push("name");
    }
    if let Some(domains) = &req.allowed_domains {
        app.allowed_domains = normalise_domains(domains)?;
        changed.push("allowed_domains");
    }
    if let Some(env) = &req.environment {
        app.environment = Environment::parse(env)?.as_str().to_owned();
        changed.push("environment");
    }
    let now = state.now();
    app.updated_at = now;
    let data = json!({"name": app.name, "allowed_domains": app.allowed_domains, "environment": app.environment, "changed": changed});
    let event = state.events.event(tenant.id, Some(app.id), WebhookEvent::AppUpdated, data)?;
    state.store.update_app(&app, &[event]).await?;
    state.events.committed();
    state.apps.invalidate(app.id);
    state
        .audit(
            Some(tenant.id),
            &Actor::user(&session, &ip),
            AuditAction::AppUpdated,
            Some(("app", app.id.to_string())),
            json!({"changed": changed}),
        )
        .await;
    Ok(Json(AppView::new(app, now, None)))
}

#[utoipa::path(delete, path = "/v1/tenants/{tid}/apps/{aid}", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn delete_app(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Delete).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        let event = st.events.event(tenant.id, Some(app.id), WebhookEvent::AppDeleted, json!({"name": app.name}))?;
        st.store.delete_app(tenant.id, app.id, &[event]).await?;
        st.events.committed();
        st.apps.invalidate(app.id);
        st.registry.close_where(CloseReason { code: close::TOKEN, reason: "app deleted" }, |c| c.app == app.id);
        st.limits.forget(app.id);
        let target = Some(("app", app.id.to_string()));
        st.audit(Some(tenant.id), &actor, AuditAction::AppDeleted, target, json!({"name": app.name})).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    client_id: String,
    client_secret: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    rotated_at: OffsetDateTime,
}

/// New client secret, shown once. The old secret stops working at once, and
/// so do tokens issued before the rotation (a leaked secret may have minted them).
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/secret/rotate", tag = "apps", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)),
    responses((status = 200, body = RotatedSecret), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Apps, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let (secret, hash) = new_secret();
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let app_id = app.id;
    let client_id = app.client_id.clone();
    run_detached(async move {
        let rotated_at = now.format(&time::format_description::well_known::Rfc3339).ok();
        let data = json!({"client_id": client_id, "rotated_at": rotated_at});
        let event = st.events.event(tenant.id, Some(app_id), WebhookEvent::AppSecretRotated, data)?;
        st.store.set_app_secret(app_id, &hash, now, &[event]).await?;
        st.events.committed();
        st.apps.invalidate(app_id);
        // Tokens minted before the rotation are dead, and so are the sockets they opened.
        let reason = CloseReason { code: close::TOKEN, reason: "client secret rotated" };
        st.registry.close_where(reason, |c| c.app == app_id && c.iat < now.unix_timestamp());
        st.audit(Some(tenant.id), &actor, AuditAction::AppSecretRotated, Some(("app", app_id.to_string())), json!({}))
            .await;
        Ok(())
    })
    .await?;
    Ok(Json(RotatedSecret {
        client_id: app.client_id,
        client_secret: secret.expose_secret().to_owned(),
        rotated_at: now,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceLineView {
    description: String,
    plan: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    period_end: OffsetDateTime,
    amount_cents: i64,
}

impl From<InvoiceLine> for InvoiceLineView {
    fn from(l: InvoiceLine) -> Self {
        Self {
            description: l.description,
            plan: l.plan.as_str().to_owned(),
            period_start: l.period_start,
            period_end: l.period_end,
            amount_cents: l.amount_cents,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceView {
    #[schema(value_type = String)]
    id: InvoiceId,
    #[schema(value_type = String)]
    app_id: AppId,
    lines: Vec<InvoiceLineView>,
    total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
}

impl From<InvoiceRecord> for InvoiceView {
    fn from(i: InvoiceRecord) -> Self {
        Self {
            id: i.id,
            app_id: i.app_id,
            lines: i.lines.into_iter().map(Into::into).collect(),
            total_cents: i.total_cents,
            created_at: i.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePlan {
    plan: String,
}

/// Up- or downgrade mid-period: credit for the unused part of the old plan,
/// charge for the rest of the period on the new one, to the second.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/plan", tag = "billing", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), request_body = ChangePlan,
    responses((status = 200, body = InvoiceView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn change_plan(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ChangePlan>,
) -> Result<Json<InvoiceView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Billing, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let new_plan = PlanId::parse(&req.plan)?;
    let now = state.now();
    let lines = plan_change_lines(&app, now, new_plan)?;
    let invoice = InvoiceRecord {
        id: InvoiceId::new(),
        app_id: app.id,
        tenant_id: tenant.id,
        total_cents: invoice_total(&lines),
        lines,
        created_at: now,
    };
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let invoice = run_detached(async move {
        st.store.change_app_plan(app.id, app.plan, new_plan, &invoice).await?;
        st.apps.invalidate(app.id);
        st.limits.set_plan(app.id, new_plan);
        let details = json!({"from": app.plan.as_str(), "to": new_plan.as_str(), "invoice": invoice.id.to_string(), "total_cents": invoice.total_cents});
        st.audit(Some(tenant.id), &actor, AuditAction::PlanChanged, Some(("app", app.id.to_string())), details).await;
        Ok(invoice)
    })
    .await?;
    Ok(Json(invoice.into()))
}

/// The invoice lines of moving `app` to `new_plan` at `now`: one rule for
/// the change and its preview.
fn plan_change_lines(app: &AppRecord, now: OffsetDateTime, new_plan: PlanId) -> Result<Vec<InvoiceLine>, ApiError> {
    prorate(app.created_at, now, app.plan, new_plan).map_err(|e| match e.code {
        "plan_unchanged" => ApiError::conflict("plan_unchanged", e.message),
        _ => e.into(),
    })
}

/// What a plan change would invoice if made now; nothing is changed or stored.
#[derive(Serialize, ToSchema)]
pub struct PlanPreview {
    #[schema(value_type = String)]
    app_id: AppId,
    /// The current plan.
    from: String,
    /// The plan asked for.
    plan: String,
    lines: Vec<InvoiceLineView>,
    total_cents: i64,
}

/// The prorated invoice of a plan change, before making it (the dashboard
/// shows it for confirmation). The change itself may differ by the seconds
/// between the two calls.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/plan/preview", tag = "billing", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), request_body = ChangePlan,
    responses((status = 200, body = PlanPreview), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn preview_plan(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ChangePlan>,
) -> Result<Json<PlanPreview>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Billing, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let new_plan = PlanId::parse(&req.plan)?;
    let lines = plan_change_lines(&app, state.now(), new_plan)?;
    Ok(Json(PlanPreview {
        app_id: app.id,
        from: app.plan.as_str().to_owned(),
        plan: new_plan.as_str().to_owned(),
        total_cents: invoice_total(&lines),
        lines: lines.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}/invoices", tag = "billing", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<InvoiceView>), (status = 404, body = ErrorSchema)))]
pub async fn list_invoices(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<InvoiceView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Billing, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let page = state.store.list_invoices(app.id, q.after()?.as_deref(), q.limit()?).await?;
    Ok(Json(Paged::from_store(page, Into::into)))
}
