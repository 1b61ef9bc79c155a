//! Roles of a tenant: the built-in ones (read-only) and custom ones
//! (`{name, permissions}`), and the rule every grant follows — nobody hands
//! out, or manages a holder of, more than they hold themselves.
//!
//! A custom role can never grant more than `admin`: a permission to change
//! signing keys (keys create, update or delete) is refused with 400
//! `invalid_permission` when the role is created or updated, never silently
//! dropped, and `authorize` caps stored permissions again.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::ids::TenantId;
use domain::role::{Action, Grant, Resource, Role, check_custom_role_name, custom_permission};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::CustomRoleRecord;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// One permission on the wire.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct PermissionView {
    /// `tenants`, `apps`, `keys`, `billing`, `members`, `roles`, `invites`, `webhooks`, `documents`, `nodes`, `audit`.
    resource: String,
    /// `read`, `create`, `update`, `delete`.
    action: String,
}

pub(crate) fn views(permissions: &[(Resource, Action)]) -> Vec<PermissionView> {
    permissions
        .iter()
        .map(|(r, a)| PermissionView { resource: r.as_str().to_owned(), action: a.as_str().to_owned() })
        .collect()
}

/// `resource:action` labels, for the audit trail.
fn labels(permissions: &[(Resource, Action)]) -> Vec<String> {
    permissions.iter().map(|(r, a)| format!("{}:{}", r.as_str(), a.as_str())).collect()
}

#[derive(Serialize, ToSchema)]
pub struct RoleView {
    name: String,
    /// Built-in roles cannot be changed or deleted.
    builtin: bool,
    permissions: Vec<PermissionView>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    created_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    updated_at: Option<OffsetDateTime>,
}

impl RoleView {
    fn builtin(role: Role) -> Self {
        Self {
            name: role.as_str().to_owned(),
            builtin: true,
            permissions: views(&role.permissions()),
            created_at: None,
            updated_at: None,
        }
    }

    fn custom(role: CustomRoleRecord) -> Self {
        Self {
            name: role.name,
            builtin: false,
            permissions: views(&role.permissions),
            created_at: Some(role.created_at),
            updated_at: Some(role.updated_at),
        }
    }
}

/// The role a request names: built in, or one of the tenant's custom roles.
/// Anything else is 400 `invalid_role`.
pub async fn requested_role(state: &AppState, tenant: TenantId, name: &str) -> Result<Grant, ApiError> {
    if let Ok(role) = Role::parse(name) {
        return Ok(Grant::BuiltIn(role));
    }
    let unknown = || ApiError::bad_request("invalid_role", format!("no role {name:?} in this tenant; see GET …/roles"));
    if check_custom_role_name(name).is_err() {
        return Err(unknown());
    }
    let role = state.store.get_role(tenant, name).await?.ok_or_else(unknown)?;
    Ok(Grant::Custom { name: role.name, permissions: role.permissions })
}

/// 403 unless `caller` may hand out `grant` or manage a member holding it.
pub fn require_covers(caller: &Grant, grant: &Grant) -> Result<(), ApiError> {
    if caller.covers(grant) {
        return Ok(());
    }
    if grant.is_super_admin() {
        return Err(ApiError::forbidden("only a super_admin may grant super_admin or manage a super_admin"));
    }
    Err(ApiError::forbidden(format!(
        "role {} grants permissions that your role {} does not have",
        grant.name(),
        caller.name()
    )))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateRole {
    /// 1–64 of `a-z`, `0-9`, `_`, `-`; not a built-in role's name.
    name: String,
    permissions: Vec<PermissionView>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateRole {
    /// Replaces the role's permissions.
    permissions: Vec<PermissionView>,
}

/// More than the 44 pairs there are is certainly a mistake (or an attack).
const MAX_PERMISSIONS: usize = 100;

/// Parses, caps at `admin` (refusing, not dropping) and de-duplicates, in
/// the canonical order.
fn parse_permissions(input: &[PermissionView]) -> Result<Vec<(Resource, Action)>, ApiError> {
    if input.len() > MAX_PERMISSIONS {
        return Err(ApiError::bad_request("invalid_permission", format!("at most {MAX_PERMISSIONS} permissions")));
    }
    let mut wanted = Vec::with_capacity(input.len());
    for p in input {
        wanted.push(custom_permission(&p.resource, &p.action)?);
    }
    Ok(domain::role::every_permission().filter(|p| wanted.contains(p)).collect())
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/roles", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<RoleView>, description = "built-in roles first, then custom roles by name"),
        (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_roles(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Paged<RoleView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Roles, Action::Read).await?;
    let mut roles: Vec<RoleView> = Role::ALL.into_iter().map(RoleView::builtin).collect();
    roles.extend(state.store.list_roles(tenant.id).await?.into_iter().map(RoleView::custom));
    Ok(Json(page.paginate(roles, |r| r.name.clone())?))
}

#[utoipa::path(post, path = "/v1/tenants/{tid}/roles", tag = "members", security(("session" = [])),
    params(("tid" = String, Path)), request_body = CreateRole,
    responses((status = 201, body = RoleView), (status = 400, body = ErrorSchema, description = "invalid_role, invalid_permission"),
        (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema, description = "role_exists")))]
pub async fn create_role(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiJson(req): ApiJson<CreateRole>,
) -> Result<(StatusCode, Json<RoleView>), ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Roles, Action::Create).await?;
    check_custom_role_name(&req.name)?;
    let permissions = parse_permissions(&req.permissions)?;
    let role = Grant::Custom { name: req.name.clone(), permissions: permissions.clone() };
    require_covers(&caller, &role)?;
    let now = state.now();
    let record =
        CustomRoleRecord { tenant_id: tenant.id, name: req.name, permissions, created_at: now, updated_at: now };
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let record = run_detached(async move {
        st.store.create_role(&record).await?;
        let details = json!({"permissions": labels(&record.permissions)});
        st.audit(Some(tenant.id), &actor, AuditAction::RoleCreated, Some(("role", record.name.clone())), details).await;
        Ok(record)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(RoleView::custom(record))))
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/roles/{name}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = RoleView), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn get_role(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, name)): ApiPath<(String, String)>,
) -> Result<Json<RoleView>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Roles, Action::Read).await?;
    if let Ok(role) = Role::parse(&name) {
        return Ok(Json(RoleView::builtin(role)));
    }
    let role = state.store.get_role(tenant.id, &name).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(RoleView::custom(role)))
}

fn builtin_is_fixed(name: &str) -> Result<(), ApiError> {
    if Role::parse(name).is_ok() {
        return Err(ApiError::bad_request(
            "invalid_role",
            format!("{name:?} is a built-in role and cannot be changed"),
        ));
    }
    Ok(())
}

/// Replaces a custom role's permissions; members holding it get the new set at once.
#[utoipa::path(put, path = "/v1/tenants/{tid}/roles/{name}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("name" = String, Path)), request_body = UpdateRole,
    responses((status = 200, body = RoleView), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema)))]
pub async fn update_role(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<UpdateRole>,
) -> Result<Json<RoleView>, ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Roles, Action::Update).await?;
    builtin_is_fixed(&name)?;
    let current = state.store.get_role(tenant.id, &name).await?.ok_or_else(ApiError::not_found)?;
    let permissions = parse_permissions(&req.permissions)?;
    // Both what the role was and what it becomes must be within the caller's reach.
    require_covers(&caller, &Grant::Custom { name: name.clone(), permissions: current.permissions.clone() })?;
    require_covers(&caller, &Grant::Custom { name: name.clone(), permissions: permissions.clone() })?;
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let before = labels(&current.permissions);
    let after = labels(&permissions);
    run_detached(async move {
        st.store.update_role_permissions(tenant.id, &name, &permissions, now).await?;
        let details = json!({"from": before, "to": after});
        st.audit(Some(tenant.id), &actor, AuditAction::RoleUpdated, Some(("role", name.clone())), details).await;
        Ok(())
    })
    .await?;
    let role = state.store.get_role(tenant.id, &current.name).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(RoleView::custom(role)))
}

/// Refused with 409 `role_in_use` while a member holds it or a pending invite offers it.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/roles/{name}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema, description = "role_in_use")))]
pub async fn delete_role(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Roles, Action::Delete).await?;
    builtin_is_fixed(&name)?;
    let current = state.store.get_role(tenant.id, &name).await?.ok_or_else(ApiError::not_found)?;
    require_covers(&caller, &Grant::Custom { name: name.clone(), permissions: current.permissions })?;
    let now = state.now();
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        st.store.delete_role(tenant.id, &name, now).await?;
        st.audit(Some(tenant.id), &actor, AuditAction::RoleDeleted, Some(("role", name)), json!({})).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
