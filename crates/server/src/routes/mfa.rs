//! A user's own second factor (TOTP, RFC 6238): enrol, confirm, turn off.
//!
//! Setup stores a fresh secret, sealed under the master key ring and bound
//! to the user, as *pending*; it protects nothing until a code from the
//! authenticator app proves the user holds it (`verify`), which turns MFA
//! on, consumes that code's step and answers ten single-use recovery codes
//! (stored only as hashes, shown once). Turning MFA off needs a current
//! code or a recovery code — the second factor itself, not just a session.
//! An admin can reset a member's MFA instead (`routes::members`).

use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp, HumanSession, OptionalJson};
use crate::mfa::{MfaError, Proof, unix_now};
use crate::routes::ErrorSchema;
use crate::state::{Actor, AppState, run_detached};
use auth::totp::TotpSecret;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::audit::AuditAction;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Answers carrying secrets must not be cached anywhere.
fn no_store(body: impl Serialize) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn invalid_code() -> ApiError {
    ApiError::bad_request(
        "invalid_totp",
        "wrong or already used code; wait for the next code of your authenticator app",
    )
}

#[derive(Serialize, ToSchema)]
pub struct MfaSetupResponse {
    /// Base32, for apps that cannot scan the QR code.
    secret: String,
    /// `otpauth://totp/WireSocket:<email>?secret=…&issuer=WireSocket&algorithm=SHA1&digits=6&period=30`
    otpauth_url: String,
    /// The otpauth URL as a QR code (a standalone SVG document).
    qr_svg: String,
}

/// Starts enrolment (or restarts a pending one with a new secret).
#[utoipa::path(post, path = "/v1/me/mfa/setup", tag = "auth", security(("session" = [])),
    responses((status = 200, body = MfaSetupResponse), (status = 401, body = ErrorSchema),
        (status = 409, body = ErrorSchema, description = "mfa_already_enabled")))]
pub async fn setup(State(state): State<AppState>, session: HumanSession) -> Result<Response, ApiError> {
    let user = &session.user;
    if crate::mfa::enabled(&state, user.id).await?.is_some() {
        return Err(ApiError::conflict("mfa_already_enabled", "two-factor authentication is already on"));
    }
    let secret = TotpSecret::generate();
    let (blob, version) = crate::mfa::seal(&state, user.id, &secret)?;
    state.store.put_pending_mfa(user.id, &blob, version, state.now()).await?;
    Ok(no_store(MfaSetupResponse {
        secret: secret.to_base32().expose_secret().to_owned(),
        otpauth_url: secret.otpauth_url(crate::mfa::ISSUER, &user.email),
        qr_svg: secret.qr_svg(crate::mfa::ISSUER, &user.email)?,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyMfa {
    /// The six-digit code the authenticator app shows now.
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct MfaEnabledResponse {
    enabled: bool,
    /// Ten single-use codes for when the authenticator is not at hand; shown only now.
    recovery_codes: Vec<String>,
}

/// Confirms enrolment with a current code: MFA is on from now.
#[utoipa::path(post, path = "/v1/me/mfa/verify", tag = "auth", security(("session" = [])), request_body = VerifyMfa,
    responses((status = 200, body = MfaEnabledResponse), (status = 400, body = ErrorSchema, description = "invalid_totp"),
        (status = 401, body = ErrorSchema), (status = 409, body = ErrorSchema, description = "mfa_not_pending, mfa_already_enabled")))]
pub async fn verify(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    ApiJson(req): ApiJson<VerifyMfa>,
) -> Result<Response, ApiError> {
    let user = session.user.id;
    let record = state
        .store
        .get_mfa(user)
        .await?
        .ok_or_else(|| ApiError::conflict("mfa_not_pending", "start with POST /v1/me/mfa/setup"))?;
    if record.enabled_at.is_some() {
        return Err(ApiError::conflict("mfa_already_enabled", "two-factor authentication is already on"));
    }
    let secret = crate::mfa::open(&state, &record).await?;
    let actor = Actor::user(&session, &ip);
    let Some(step) = secret.verify(&req.code, unix_now(&state), None).and_then(|s| i64::try_from(s).ok()) else {
        state.audit_user(user, &actor, AuditAction::MfaFailed, json!({"method": "totp", "during": "setup"})).await;
        return Err(invalid_code());
    };
    let codes = auth::recovery::generate_recovery_codes(auth::recovery::RECOVERY_CODE_COUNT);
    let hashes = codes
        .iter()
        .map(|c| auth::recovery::hash_recovery_code(c.expose_secret()))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ApiError::internal("a generated recovery code does not normalise"))?;
    let now = state.now();
    let st = state.clone();
    run_detached(async move {
        st.store.enable_mfa(user, step, &hashes, now).await?;
        st.audit_user(user, &actor, AuditAction::MfaEnabled, json!({})).await;
        Ok(())
    })
    .await?;
    Ok(no_store(MfaEnabledResponse {
        enabled: true,
        recovery_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct DisableMfa {
    /// A current TOTP code or one of the recovery codes. Not needed to
    /// cancel an enrolment that was never verified.
    code: Option<String>,
}

/// Turns your own MFA off; proof is the second factor itself (a current
/// code or a recovery code), so a stolen session alone cannot do it.
#[utoipa::path(delete, path = "/v1/me/mfa", tag = "auth", security(("session" = [])),
    request_body(content = DisableMfa, description = "`{code}`"),
    responses((status = 204), (status = 400, body = ErrorSchema, description = "invalid_totp"), (status = 401, body = ErrorSchema),
        (status = 409, body = ErrorSchema, description = "mfa_not_enabled")))]
pub async fn disable(
    State(state): State<AppState>,
    ip: ClientIp,
    session: HumanSession,
    OptionalJson(req): OptionalJson<DisableMfa>,
) -> Result<StatusCode, ApiError> {
    let user = session.user.id;
    let record = state
        .store
        .get_mfa(user)
        .await?
        .ok_or_else(|| ApiError::conflict("mfa_not_enabled", "two-factor authentication is not on"))?;
    let actor = Actor::user(&session, &ip);
    if record.enabled_at.is_some() {
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("invalid_totp", "give `code`: a current code or a recovery code"))?;
        match crate::mfa::verify_enabled(&state, &record, Proof::either(code), &ip).await {
            Ok(()) => {}
            Err(MfaError::Required | MfaError::Invalid) => return Err(invalid_code()),
            Err(MfaError::Internal(e)) => return Err(e),
        }
    }
    let was_on = record.enabled_at.is_some();
    let st = state.clone();
    run_detached(async move {
        st.store.disable_mfa(user).await?;
        if was_on {
            st.audit_user(user, &actor, AuditAction::MfaDisabled, json!({"by": "self"})).await;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
