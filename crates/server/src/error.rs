//! One error type for the JSON API and one for the OAuth endpoints.
//!
//! User mistakes answer their own message with a stable `error` code; internal
//! failures answer an opaque body while the cause is logged, so a database
//! message or a file path never reaches a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub enum ApiError {
    /// 4xx with a stable machine code and a human message.
    Client { status: StatusCode, code: &'static str, message: String },
    /// 429 `too_many_requests` with `Retry-After` (whole seconds).
    TooManyRequests { retry_after_secs: u64 },
    /// Anything we did not expect: logged, answered as an opaque 500.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
    pub fn too_many_requests(retry_after: std::time::Duration) -> Self {
        Self::TooManyRequests { retry_after_secs: domain::ratelimit::retry_after_secs(retry_after) }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Client { code, .. } => code,
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client { status, code, message } => {
                let mut resp = (status, axum::Json(ErrorBody { error: code, message: &message })).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    // RFC 6750 §3 / RFC 9110 §11.6.1: a 401 names its scheme.
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"wiresocket\""));
                }
                resp
            }
            Self::TooManyRequests { retry_after_secs } => {
                let message = format!("too many requests; retry after {retry_after_secs} s");
                let body = ErrorBody { error: "too_many_requests", message: &message };
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                resp
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(ErrorBody { error: "internal", message: "internal error; see the server log" }),
                )
                    .into_response()
            }
        }
    }
}

impl From<domain::DomainError> for ApiError {
    fn from(e: domain::DomainError) -> Self {
        Self::bad_request(e.code, e.message)
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound => Self::not_found(),
            // A single-use token that is unknown, used or expired is bad input, not a conflict.
            store::StoreError::Conflict("invalid_token") => {
                Self::bad_request("invalid_token", "the link is invalid, expired or already used")
            }
            store::StoreError::Conflict(code) => Self::conflict(code, conflict_message(code)),
            other => Self::internal(other),
        }
    }
}

impl From<auth::AuthError> for ApiError {
    fn from(e: auth::AuthError) -> Self {
        Self::internal(e)
    }
}

fn conflict_message(code: &str) -> &'static str {
    match code {
        "setup_disabled" => "setup has already been completed",
        "free_plan_limit" => "this tenant already has an app on the free plan",
        "email_taken" => "an account with this email already exists",
        "plan_changed" => "the plan was changed concurrently; read the app and retry",
        "key_conflict" => "a concurrent key change won; list the keys and retry",
        "last_super_admin" => "the tenant must keep at least one super_admin",
        "already_member" => "this user is already a member of the tenant",
        "unknown_role" => "no such role in this tenant",
        "role_exists" => "a role with this name already exists",
        "role_in_use" => "the role is held by a member or offered by a pending invite",
        "mfa_already_enabled" => "two-factor authentication is already on; turn it off first",
        "mfa_not_pending" => "start with POST /v1/me/mfa/setup",
        _ => "the request conflicts with the current state",
    }
}

/// RFC 6749 §5.2 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// Too many requests (429). Registered for the token endpoint by RFC
    /// 8628 §3.5; we answer it on every OAuth endpoint, with `Retry-After`.
    SlowDown,
}

impl OAuthErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::SlowDown => "slow_down",
        }
    }
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    /// The client tried HTTP Basic: answer 401 with `WWW-Authenticate`.
    pub basic_challenge: bool,
    /// Extra members (e.g. `"mfa": "required"`).
    pub extra: Option<(&'static str, &'static str)>,
    /// `Retry-After`, in seconds (with [`OAuthErrorCode::SlowDown`]).
    pub retry_after_secs: Option<u64>,
    internal: Option<String>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            extra: None,
            retry_after_secs: None,
            internal: None,
        }
    }
    pub fn slow_down(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(OAuthErrorCode::SlowDown, format!("too many requests; retry after {retry_after_secs} s"))
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, d)
    }
    pub fn invalid_client(basic: bool) -> Self {
        Self { basic_challenge: basic, ..Self::new(OAuthErrorCode::InvalidClient, "client authentication failed") }
    }
    pub fn with_extra(mut self, key: &'static str, value: &'static str) -> Self {
        self.extra = Some((key, value));
        self
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Client { message, .. } => Self::invalid_request(message),
            ApiError::TooManyRequests { retry_after_secs } => Self::slow_down(retry_after_secs),
            ApiError::Internal(cause) => Self { internal: Some(cause), ..Self::invalid_request("") },
        }
    }
}

impl From<store::StoreError> for OAuthError {
    fn from(e: store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<auth::AuthError> for OAuthError {
    fn from(e: auth::AuthError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if let Some(cause) = self.internal {
            return ApiError::Internal(cause).into_response();
        }
        let status = match self.code {
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.code.as_str().into());
        body.insert("error_description".into(), self.description.into());
        if let Some((k, v)) = self.extra {
            body.insert(k.into(), v.into());
        }
        let mut resp = (status, axum::Json(serde_json::Value::Object(body))).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.basic_challenge || self.code == OAuthErrorCode::InvalidClient {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wiresocket\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}
