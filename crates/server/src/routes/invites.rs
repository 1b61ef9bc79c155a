//! Invitations: an admin invites an email address to a role; the token
//! (`inv_` + 256 random bits, stored only as its SHA-256) goes only to that
//! mailbox, in a link whose token sits after `#` so it never reaches a web
//! server's log. Accepting creates the account (or, for an existing one,
//! checks its password and second factor), adds the membership and starts
//! a session — once: the store's compare-and-set lets exactly one of
//! concurrent accepts through.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::mfa::{MfaError, Proof};
use crate::routes::human::{check_credentials, hash_password};
use crate::routes::roles::{requested_role, require_covers};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState, run_detached};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::ids::{TenantId, UserId};
use domain::names::{Email, check_password_policy};
use domain::role::{Action, Resource};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{InviteAcceptor, InviteRecord, UserRecord};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

pub const INVITE_PREFIX: &str = "inv_";
/// How long an invitation can be accepted.
pub const INVITE_TTL: Duration = Duration::days(7);

#[derive(Deserialize, ToSchema)]
pub struct CreateInvite {
    email: String,
    /// A built-in role or one of the tenant's custom roles; no stronger than the inviter's own.
    role: String,
}

#[derive(Serialize, ToSchema)]
pub struct InviteView {
    id: String,
    email: String,
    role: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[schema(value_type = String)]
    invited_by: UserId,
    /// Past `expires_at`: can no longer be accepted (delete it, invite again).
    expired: bool,
}

impl InviteView {
    fn new(i: InviteRecord, now: OffsetDateTime) -> Self {
        Self {
            expired: i.expires_at <= now,
            id: i.id,
            email: i.email,
            role: i.role,
            expires_at: i.expires_at,
            created_at: i.created_at,
            invited_by: i.invited_by,
        }
    }
}

/// Mails an invitation; answers it without the token.
#[utoipa::path(post, path = "/v1/tenants/{tid}/invites", tag = "members", security(("session" = [])),
    params(("tid" = String, Path)), request_body = CreateInvite,
    responses((status = 201, body = InviteView), (status = 400, body = ErrorSchema, description = "invalid_email, invalid_role"),
        (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema),
        (status = 409, body = ErrorSchema, description = "already_member")))]
pub async fn create_invite(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiJson(req): ApiJson<CreateInvite>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    let (tenant, caller) = state.authorize(&session, &tid, Resource::Invites, Action::Create).await?;
    let email = Email::parse(&req.email)?;
    if !crate::mail::valid_recipient(email.as_str()) {
        return Err(ApiError::bad_request("invalid_email", "mail cannot be sent to this address"));
    }
    let role = requested_role(&state, tenant.id, &req.role).await?;
    require_covers(&caller, &role)?;
    if let Some(user) = state.store.get_user_by_email(email.as_str()).await?
        && state.store.get_membership(tenant.id, user.id).await?.is_some()
    {
        return Err(ApiError::conflict("already_member", "this user is already a member of the tenant"));
    }
    let now = state.now();
    let token = auth::token::generate_token(INVITE_PREFIX);
    let invite = InviteRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id,
        email: email.into_string(),
        role: role.name().to_owned(),
        token_hash: auth::token::hash_token(token.expose_secret()),
        invited_by: session.user.id,
        created_at: now,
        expires_at: now + INVITE_TTL,
        accepted_at: None,
        accepted_by: None,
    };
    let actor = Actor::user(&session, &ip);
    let inviter = session.user.email.clone();
    let st = state.clone();
    let invite = run_detached(async move {
        st.store.create_invite(&invite).await?;
        let details = json!({"email": invite.email, "role": invite.role});
        st.audit(Some(tenant.id), &actor, AuditAction::MemberInvited, Some(("invite", invite.id.clone())), details)
            .await;
        let link = format!("{}/dashboard/accept-invite#token={}", st.public_url, token.expose_secret());
        let expires = invite.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        st.send_mail(crate::mail::invite_mail(&invite.email, &tenant.name, &inviter, &invite.role, &link, &expires));
        Ok(invite)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(InviteView::new(invite, now))))
}

/// Pending invitations (expired ones too, flagged), oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tid}/invites", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<InviteView>), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_invites(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<InviteView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Invites, Action::Read).await?;
    let page = state.store.list_invites(tenant.id, q.after()?.as_deref(), q.limit()?).await?;
    let now = state.now();
    Ok(Json(Paged::from_store(page, |i| InviteView::new(i, now))))
}

/// Withdraws a pending invitation: its link stops working.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/invites/{id}", tag = "members", security(("session" = [])),
    params(("tid" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn delete_invite(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiPath((tid, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Invites, Action::Delete).await?;
    let actor = Actor::user(&session, &ip);
    let st = state.clone();
    run_detached(async move {
        if !st.store.delete_invite(tenant.id, &id).await? {
            return Err(ApiError::not_found());
        }
        st.audit(Some(tenant.id), &actor, AuditAction::InviteRevoked, Some(("invite", id)), json!({})).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct AcceptInvite {
    /// The `inv_…` token from the invitation link.
    token: String,
    /// For a new account: its password (10–1024 characters). For an existing
    /// account (the invited email already has one): that account's password.
    password: String,
    /// Display name: a new account gets it; an existing account only if it
    /// has none yet. Shown in the member list and `/v1/me`.
    name: Option<String>,
    /// An existing account with MFA on also needs a TOTP code…
    totp: Option<String>,
    /// …or one of its recovery codes.
    recovery_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptResponse {
    #[schema(value_type = String)]
    user_id: UserId,
    session_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    #[schema(value_type = String)]
    tenant_id: TenantId,
    role: String,
}

/// Who is joining: an account to create, or one that exists.
enum Joiner {
    New(UserRecord),
    Existing(UserId),
}

fn invalid_token() -> ApiError {
    ApiError::bad_request("invalid_token", "the invitation is invalid, expired or already used")
}

/// Joins the tenant: creates the account for a new email, or checks the
/// password (and second factor) of the existing one; answers a session.
#[utoipa::path(post, path = "/v1/invites/accept", tag = "members", request_body = AcceptInvite,
    responses((status = 201, body = AcceptResponse),
        (status = 400, body = ErrorSchema, description = "invalid_token, weak_password"),
        (status = 401, body = ErrorSchema, description = "invalid_credentials, mfa_required, invalid_totp"),
        (status = 409, body = ErrorSchema, description = "already_member")))]
pub async fn accept_invite(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<AcceptInvite>,
) -> Result<(StatusCode, Json<AcceptResponse>), ApiError> {
    if let Some(name) = &req.name
        && (name.trim().is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("invalid_name", "name must be 1–255 characters without control characters"));
    }
    let now = state.now();
    let token_hash = auth::token::hash_token(&req.token);
    // A cheap early answer for dead links; the store's compare-and-set below is what counts.
    let invite = state
        .store
        .get_invite_by_token(&token_hash)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > now)
        .ok_or_else(invalid_token)?;
    let joiner = match state.store.get_user_by_email(&invite.email).await? {
        Some(_) => {
            let Some(user) = check_credentials(&state, &invite.email, req.password, &ip).await? else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "this email already has an account: give its password",
                ));
            };
            let proof = Proof::from_fields(req.totp.as_deref(), req.recovery_code.as_deref());
            match crate::mfa::check(&state, user.id, proof, &ip).await {
                Ok(()) => {}
                Err(MfaError::Required) => {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "mfa_required", "give a `totp` code too"));
                }
                Err(MfaError::Invalid) => {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_totp", "wrong or already used code"));
                }
                Err(MfaError::Internal(e)) => return Err(e),
            }
            Joiner::Existing(user.id)
        }
        None => {
            check_password_policy(&req.password)?;
            Joiner::New(UserRecord {
                id: UserId::new(),
                email: invite.email.clone(),
                password_hash: hash_password(&state, req.password).await?,
                is_operator: false,
                created_at: now,
                name: None,
            })
        }
    };
    let st = state.clone();
    let response = run_detached(async move {
        let acceptor = match &joiner {
            Joiner::New(user) => InviteAcceptor::NewUser(user),
            Joiner::Existing(id) => InviteAcceptor::Existing(*id),
        };
        let user_id = acceptor.user_id();
        let name = req.name.as_deref().map(str::trim);
        // The invite read above names the tenant and role for the event
        // (an invite never changes; the accept below is what must succeed).
        let data = json!({"user_id": user_id.to_string(), "role": invite.role});
        let event = st.events.event(invite.tenant_id, None, domain::webhook::WebhookEvent::MemberJoined, data)?;
        let invite = st.store.accept_invite(&token_hash, acceptor, name, now, &[event]).await?;
        st.events.committed();
        let (token, session) = st.create_session(user_id, None).await?;
        let actor = Actor::user_id(user_id, &ip);
        let target = Some(("user", user_id.to_string()));
        let details =
            json!({"role": invite.role, "invite": invite.id, "new_account": matches!(joiner, Joiner::New(_))});
        st.audit(Some(invite.tenant_id), &actor, AuditAction::MemberJoined, target.clone(), details).await;
        st.audit(None, &actor, AuditAction::Login, target, json!({"via": "invite"})).await;
        Ok(AcceptResponse {
            user_id,
            session_token: token.expose_secret().to_owned(),
            expires_at: session.expires_at,
            tenant_id: invite.tenant_id,
            role: invite.role,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(response)))
}
