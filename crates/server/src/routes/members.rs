//! Members of a tenant: list, change a role, remove, reset a member's MFA.
//!
//! Changes follow [`require_covers`]: a caller manages only members whose
//! role grants no more than the caller's own, and grants only such roles —
//! so only a `super_admin` grants `super_admin` or touches one. The store
//! keeps the last `super_admin` (409 `last_super_admin`). Permissions are
//! read from the store on every request, so a removal or demotion takes
//! effect on the member's very next call.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::routes::roles::{requested_role, require_covers};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::ids::{TenantId, UserId};
use domain::role::{Action, Grant, Resource};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::MemberRecord;
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    #[schema(value_type = String)]
    user_id: UserId,
    email: String,
    /// Display name, when one was given.
    name: Option<String>,
    role: String,
    mfa_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    joined_at: OffsetDateTime,
}

impl From<MemberRecord> for MemberView {
    fn from(m: MemberRecord) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            name: m.name,
            role: m.role,
            mfa_enabled: m.mfa_enabled,
            joined_at: m.joined_at,
        }
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tid}/members", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<MemberView>), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_members(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<MemberView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Members, Action::Read).await?;
    let page = state.store.list_members(tenant.id, q.after()?.as_deref(), q.limit()?).await?;
    Ok(Json(Paged::from_store(page, MemberView::from)))
}

/// A member of `tenant` the caller may manage: 404 if `uid` is not a
/// member (whatever else it is), 403 if the member's role grants more than
/// the caller's.
async fn managed_member(
    state: &AppState,
    tenant: TenantId,
    caller: &Grant,
    uid: &str,
) -> Result<(MemberRecord, Grant), ApiError> {
    let user = UserId::parse(uid).map_err(|_| ApiError::not_found())?;
    let member = state.store.get_member(tenant, user).await?.ok_or_else(ApiError::not_found)?;
    let grant = state.grant_for(tenant, &member.role).await?;
    require_covers(caller, &grant)?;
    Ok((member, grant))
}

#[derive(Deserialize, ToSchema)]
pub struct SetRole {
    /// A built-in role or one of the tenant's custom roles.
    role: String,
}

#[utoipa::path(put, path = "/v1/tenants/{tid}/members/{uid}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("uid" = String, Path)), request_body = SetRole,
    responses((status = 200, body = MemberView), (status = 400, body = ErrorSchema, description = "invalid_role"),
        (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema),
        (status = 409, body = ErrorSchema, description = "last_super_admin")))]
pub async fn set_member_role(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, uid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRole>,
) -> Result<Json<MemberView>, ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Members, Action::Update).await?;
    let (member, current) = managed_member(&state, tenant.id, &caller, &uid).await?;
    let wanted = requested_role(&state, tenant.id, &req.role).await?;
    require_covers(&caller, &wanted)?;
    if wanted.name() == current.name() {
        return Ok(Json(member.into()));
    }
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    let user = member.user_id;
    let member = run_detached(async move {
        let data = json!({"user_id": user.to_string(), "role": wanted.name(), "from": current.name()});
        let event = st.events.event(tenant.id, None, domain::webhook::WebhookEvent::MemberRoleChanged, data)?;
        st.store.set_member_role(tenant.id, user, wanted.name(), &[event]).await?;
        st.events.committed();
        let details = json!({"from": current.name(), "to": wanted.name()});
        st.audit(Some(tenant.id), &actor, AuditAction::MemberRoleChanged, Some(("user", user.to_string())), details)
            .await;
        st.store.get_member(tenant.id, user).await?.ok_or_else(ApiError::not_found)
    })
    .await?;
    Ok(Json(member.into()))
}

/// Ends the member's access to this tenant at once; their sessions stay
/// valid for their other tenants.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/members/{uid}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("uid" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema),
        (status = 409, body = ErrorSchema, description = "last_super_admin")))]
pub async fn remove_member(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, uid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Members, Action::Delete).await?;
    let (member, grant) = managed_member(&state, tenant.id, &caller, &uid).await?;
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        let data = json!({"user_id": member.user_id.to_string(), "role": grant.name()});
        let event = st.events.event(tenant.id, None, domain::webhook::WebhookEvent::MemberRemoved, data)?;
        st.store.remove_membership(tenant.id, member.user_id, &[event]).await?;
        st.events.committed();
        let target = Some(("user", member.user_id.to_string()));
        let details = json!({"role": grant.name(), "email": member.email});
        st.audit(Some(tenant.id), &actor, AuditAction::MemberRemoved, target, details).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turns a member's MFA off (they lost their device and their recovery
/// codes), so they can log in with their password and enrol again.
///
/// MFA belongs to the account, not the tenant, so the caller must be
/// allowed to manage the member (members: update, and a role at least as
/// strong) in EVERY tenant the member belongs to: an admin of one tenant
/// cannot weaken the login of another tenant's super_admin. Your own MFA
/// goes through `DELETE /v1/me/mfa`, which asks for a code.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/members/{uid}/mfa", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("uid" = String, Path)),
    responses((status = 204, description = "MFA is off (also when it already was)"), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema)))]
pub async fn reset_member_mfa(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, uid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Members, Action::Update).await?;
    let (member, _) = managed_member(&state, tenant.id, &caller, &uid).await?;
    if member.user_id == session.user.id {
        return Err(ApiError::forbidden("to turn off your own MFA use DELETE /v1/me/mfa"));
    }
    for (other, role) in state.store.list_user_tenants(member.user_id).await? {
        if other.id == tenant.id {
            continue;
        }
        let allowed = match state.store.get_membership(other.id, session.user.id).await? {
            Some(mine) => {
                let mine = state.grant_for(other.id, &mine).await?;
                let theirs = state.grant_for(other.id, &role).await?;
                mine.permits(Resource::Members, Action::Update) && mine.covers(&theirs)
            }
            None => false,
        };
        if !allowed {
            return Err(ApiError::forbidden(
                "this user also belongs to a tenant where you may not manage them; \
                 they can sign in with a recovery code, or an admin of every one of their tenants can reset MFA",
            ));
        }
    }
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        if st.store.disable_mfa(member.user_id).await? {
            let details = json!({"by": "admin", "tenant": tenant.id.to_string()});
            st.audit_user(member.user_id, &actor, AuditAction::MfaDisabled, details).await;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
