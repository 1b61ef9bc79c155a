//! Request extractors whose rejections speak the API's error shape, and the
//! two kinds of principal: human sessions (management API) and app JWTs
//! (data-plane API). They are never interchangeable.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use store::UserRecord;

/// `axum::Json` whose rejections are `invalid_json` (400), 415 or 413.
pub struct ApiJson<T>(pub T);

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_request", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", e.body_text()),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large")
        }
        other => ApiError::bad_request("invalid_json", other.body_text()),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state).await.map(|axum::Json(v)| Self(v)).map_err(json_rejection)
    }
}

/// Like [`ApiJson`], but an empty body (with or without a content type)
/// means `T::default()`: for actions whose body is optional.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_body = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_none_or(|v| v != "0");
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        if !has_type {
            let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|_| {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large")
            })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Self(T::default()));
            }
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        if !has_body {
            return Ok(Self(T::default()));
        }
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| Self(v))
    }
}

/// `axum::extract::Query` whose rejection is a 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The client's address, for the audit trail.
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())))
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A logged-in human, from `Authorization: Bearer <session_token>`.
#[derive(Debug, Clone)]
pub struct HumanSession {
    pub user: UserRecord,
    pub token_hash: String,
    pub expires_at: time::OffsetDateTime,
    /// The refresh-token family a dashboard session came from.
    pub family_id: Option<domain::ids::FamilyId>,
}

impl FromRequestParts<AppState> for HumanSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Already checked by the route's guard (`routes::policy`).
        if let Some(session) = parts.extensions.get::<HumanSession>() {
            return Ok(session.clone());
        }
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer credential"))?;
        if crate::tokens::looks_like_jwt(token) {
            // An app token is a valid credential of the wrong kind: 403, but
            // only once we know it is genuine; a forged one is just 401.
            return match state.verify_app_token(token).await {
                Ok(_) => Err(ApiError::forbidden("app tokens cannot use the management API; log in as a human")),
                Err(_) => Err(ApiError::unauthorized("invalid or expired credential")),
            };
        }
        state.session_from_token(token).await?.ok_or_else(|| ApiError::unauthorized("invalid or expired session"))
    }
}

/// An app's access token (M2M or client token), verified.
#[derive(Debug, Clone)]
pub struct AppToken {
    pub claims: domain::claims::Claims,
    pub app: store::AppRecord,
    /// The signing key that vouched for it.
    pub kid: String,
}

impl FromRequestParts<AppState> for AppToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        state
            .verify_app_token(token)
            .await
            .map_err(|reason| ApiError::unauthorized(format!("invalid access token: {reason}")))
    }
}

/// `axum::extract::Path` whose rejection (e.g. invalid percent-encoding) is
/// a JSON 400 `invalid_path`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The raw body, with a JSON 413 when it is over the route's limit.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state).await.map(Self).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large")
            } else {
                ApiError::bad_request("invalid_body", e.body_text())
            }
        })
    }
}
