//! Bootstrap and human sessions: setup, login, logout, me.

use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp, HumanSession};
use crate::mfa::{MfaError, Proof};
use crate::routes::ErrorSchema;
use crate::state::{Actor, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::ids::{TenantId, UserId};
use domain::names::{Email, TenantName, check_password_policy};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{TenantRecord, UserRecord};
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct SetupRequest {
    email: String,
    password: String,
    tenant_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct SetupResponse {
    #[schema(value_type = String)]
    user_id: UserId,
    #[schema(value_type = String)]
    tenant_id: TenantId,
}

/// Hashes off the async threads: argon2id is deliberately expensive.
pub async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    let policy = state.password_policy;
    tokio::task::spawn_blocking(move || policy.hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Verifies off the async threads; for an unknown user burns the same work
/// so timing does not tell which emails have accounts.
pub async fn verify_password(state: &AppState, user: Option<&UserRecord>, password: String) -> Result<bool, ApiError> {
    let policy = state.password_policy;
    let phc = user.map(|u| u.password_hash.clone());
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => policy.verify(&phc, &password),
        None => {
            policy.dummy_verify(&password);
            false
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// Creates the first user (platform operator and `super_admin` of the first
/// tenant). Refused once any user exists, atomically.
#[utoipa::path(post, path = "/v1/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 201, body = SetupResponse), (status = 400, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn setup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<(StatusCode, Json<SetupResponse>), ApiError> {
    let email = Email::parse(&req.email)?;
    check_password_policy(&req.password)?;
    let tenant_name = TenantName::parse(&req.tenant_name)?;
    // A cheap early refusal; the store's singleton row is what makes it atomic.
    if state.store.count_users().await? > 0 {
        return Err(ApiError::conflict("setup_disabled", "setup has already been completed"));
    }
    let now = state.now();
    let user = UserRecord {
        id: UserId::new(),
        email: email.as_str().to_owned(),
        password_hash: hash_password(&state, req.password).await?,
        is_operator: true,
        created_at: now,
        name: None,
    };
    let tenant = TenantRecord { id: TenantId::new(), name: tenant_name.into_string(), created_at: now };
    let (key, signer) = state.keys.new_key(tenant.id, now).await?;
    state.store.setup_first_user(&user, &tenant, &key).await?;
    state.keys.install_signer(tenant.id, signer);
    let actor = Actor::user_id(user.id, &ip);
    state.audit(None, &actor, AuditAction::SetupCompleted, Some(("user", user.id.to_string())), json!({})).await;
    crate::routes::tenants::record_tenant_created(&state, &actor, &tenant, &key.kid).await;
    Ok((StatusCode::CREATED, Json(SetupResponse { user_id: user.id, tenant_id: tenant.id })))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    email: String,
    password: String,
    /// TOTP code, when MFA is enabled.
    totp: Option<String>,
    /// One of the recovery codes shown when MFA was enabled, instead of `totp`; each works once.
    recovery_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    session_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    #[schema(value_type = String)]
    user_id: UserId,
}

/// Checks a human's email and password; on failure records the attempt in
/// every tenant the account belongs to. Shared by login and the password grant.
/// Every attempt counts against the account's failed-login limit until it
/// succeeds; while the account is locked the answer is 429, whatever the
/// password.
pub async fn check_credentials(
    state: &AppState,
    email: &str,
    password: String,
    ip: &ClientIp,
) -> Result<Option<UserRecord>, ApiError> {
    let attempt = state.check_account(email, ip).await?;
    let user = match Email::parse(email) {
        Ok(e) => state.store.get_user_by_email(e.as_str()).await?,
        Err(_) => None,
    };
    let ok = verify_password(state, user.as_ref(), password).await?;
    match user {
        Some(user) if ok => {
            attempt.succeeded(state).await;
            Ok(Some(user))
        }
        other => {
            // Recorded after answering: a known account's failure fans out to
            // each of its tenants, and that extra work must not tell an
            // attacker which emails exist.
            let state = state.clone();
            let actor = Actor::anonymous(ip);
            tokio::spawn(async move {
                let target = other.as_ref().map(|u| ("user", u.id.to_string()));
                if let Some(user) = &other {
                    match state.store.list_user_tenants(user.id).await {
                        Ok(tenants) => {
                            for (tenant, _) in tenants {
                                let action = AuditAction::LoginFailed;
                                state.audit(Some(tenant.id), &actor, action, target.clone(), json!({})).await;
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "could not list tenants for a failed login"),
                    }
                }
                state.audit(None, &actor, AuditAction::LoginFailed, target, json!({})).await;
            });
            Ok(None)
        }
    }
}

/// Email and password, then — when MFA is on — a TOTP code or a recovery
/// code. Whether MFA is on is told only once the password checked out.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse),
        (status = 401, body = ErrorSchema, description = "invalid_credentials, mfa_required or invalid_totp"),
        (status = 429, body = ErrorSchema, description = "too many failed logins for the account, or requests from the IP; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let Some(user) = check_credentials(&state, &req.email, req.password, &ip).await? else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password"));
    };
    let proof = Proof::from_fields(req.totp.as_deref(), req.recovery_code.as_deref());
    match crate::mfa::check(&state, user.id, proof, &ip).await {
        Ok(()) => {}
        Err(MfaError::Required) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "mfa_required",
                "this account has two-factor authentication on: give a `totp` code (or a `recovery_code`)",
            ));
        }
        Err(MfaError::Invalid) => {
            // A wrong second factor is a failed login too: it counts against
            // the account's limit, so codes cannot be guessed at leisure.
            drop(state.check_account(&req.email, &ip).await);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_totp",
                "wrong or already used code; wait for the next code of your authenticator app",
            ));
        }
        Err(MfaError::Internal(e)) => return Err(e),
    }
    let (token, session) = state.create_session(user.id, None).await?;
    let actor = Actor::user_id(user.id, &ip);
    state.audit(None, &actor, AuditAction::Login, Some(("user", user.id.to_string())), json!({})).await;
    Ok(Json(LoginResponse {
        session_token: token.expose_secret().to_owned(),
        expires_at: session.expires_at,
        user_id: user.id,
    }))
}

/// Ends the presented session, server-side, at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorSchema)))]
pub async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
) -> Result<StatusCode, ApiError> {
    state.store.delete_session(&session.token_hash).await?;
    // A dashboard session came with a refresh token: logging out must also
    // stop it from minting new sessions.
    if let Some(family) = session.family_id {
        state.store.revoke_refresh_family(family, state.now()).await?;
    }
    state
        .audit(
            None,
            &Actor::user(&session, &ip),
            AuditAction::Logout,
            Some(("user", session.user.id.to_string())),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MeTenant {
    #[schema(value_type = String)]
    id: TenantId,
    name: String,
    role: String,
    /// What `role` grants in this tenant (custom roles included), so a
    /// client can show only what the user may do; the API still checks.
    permissions: Vec<crate::routes::roles::PermissionView>,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    #[schema(value_type = String)]
    id: UserId,
    email: String,
    /// Display name, when one was given (accepting an invitation).
    name: Option<String>,
    mfa_enabled: bool,
    /// Unused recovery codes, when MFA is on.
    recovery_codes_remaining: Option<i64>,
    is_operator: bool,
    tenants: Vec<MeTenant>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    session_expires_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorSchema)))]
pub async fn me(State(state): State<AppState>, session: HumanSession) -> Result<Json<MeResponse>, ApiError> {
    let mut tenants = Vec::new();
    for (t, role) in state.store.list_user_tenants(session.user.id).await? {
        let permissions = crate::routes::roles::views(&state.grant_for(t.id, &role).await?.permissions());
        tenants.push(MeTenant { id: t.id, name: t.name, role, permissions });
    }
    let mfa_enabled = crate::mfa::enabled(&state, session.user.id).await?.is_some();
    let recovery_codes_remaining =
        if mfa_enabled { Some(state.store.unused_recovery_codes(session.user.id).await?) } else { None };
    Ok(Json(MeResponse {
        id: session.user.id,
        email: session.user.email,
        name: session.user.name,
        mfa_enabled,
        recovery_codes_remaining,
        is_operator: session.user.is_operator,
        tenants,
        session_expires_at: session.expires_at,
    }))
}
