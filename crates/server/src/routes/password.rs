//! Forgotten passwords: a reset link by mail, then a new password.
//!
//! The request always answers 202 at once and does its work (look-up,
//! token, mail) in the background, so neither the answer nor its timing
//! tells whether the address has an account. The token is `rst_` + 256
//! random bits, stored only as its SHA-256, good once for 30 minutes.
//! Confirming sets the password, ends every session of the user and
//! revokes their refresh tokens, in one transaction. MFA stays as it was:
//! a reset proves the mailbox, not the second factor.

use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::routes::ErrorSchema;
use crate::routes::human::hash_password;
use crate::state::{Actor, AppState, run_detached};
use axum::extract::State;
use axum::http::StatusCode;
use domain::audit::AuditAction;
use domain::names::{Email, check_password_policy};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use store::PasswordResetRecord;
use time::Duration;
use utoipa::ToSchema;

pub const RESET_PREFIX: &str = "rst_";
/// How long a reset link works.
pub const RESET_TTL: Duration = Duration::minutes(30);

#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    email: String,
}

/// Mails a reset link if the address has an account; answers 202 either way.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "accepted, whether or not the account exists"),
        (status = 400, body = ErrorSchema, description = "invalid_email")))]
pub async fn request_reset(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    let email = Email::parse(&req.email)?;
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &email, &ip).await {
            match e {
                ApiError::Internal(cause) => tracing::error!(%cause, "password reset request failed"),
                other => tracing::warn!(code = other.code(), "password reset request refused"),
            }
        }
    });
    Ok(StatusCode::ACCEPTED)
}

async fn send_reset(state: &AppState, email: &Email, ip: &ClientIp) -> Result<(), ApiError> {
    let Some(user) = state.store.get_user_by_email(email.as_str()).await? else {
        return Ok(());
    };
    let now = state.now();
    let token = auth::token::generate_token(RESET_PREFIX);
    let reset = PasswordResetRecord {
        token_hash: auth::token::hash_token(token.expose_secret()),
        user_id: user.id,
        created_at: now,
        expires_at: now + RESET_TTL,
        used_at: None,
    };
    state.store.create_password_reset(&reset).await?;
    state.audit_user(user.id, &Actor::anonymous(ip), AuditAction::PasswordResetRequested, json!({})).await;
    let link = format!("{}/dashboard/reset-password#token={}", state.public_url, token.expose_secret());
    state.send_mail(crate::mail::reset_mail(&user.email, &link, RESET_TTL.whole_minutes()));
    Ok(())
}

#[derive(Deserialize, ToSchema)]
pub struct ResetConfirm {
    /// The `rst_…` token from the link.
    token: String,
    /// 10 to 1024 characters.
    password: String,
}

/// Sets the new password; every session of the user ends.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = ErrorSchema, description = "invalid_token, weak_password")))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    check_password_policy(&req.password)?;
    let token_hash = auth::token::hash_token(&req.token);
    let password_hash = hash_password(&state, req.password).await?;
    let now = state.now();
    let st = state.clone();
    run_detached(async move {
        let user = st.store.consume_password_reset(&token_hash, &password_hash, now).await?;
        st.audit_user(user, &Actor::user_id(user, &ip), AuditAction::PasswordReset, json!({})).await;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
