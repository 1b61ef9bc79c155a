//! Request extractors whose rejections speak the API's error shape, and the
//! two kinds of principal: human sessions (management API) and app JWTs
//! (data-plane API). They are never interchangeable.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
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

/// Every body the API takes is a JSON object, but serde reads a JSON array
/// into a struct field by field (`["x"]` is `{"name": "x"}`): a body whose
/// first byte is not `{` is refused before `T` sees it. Peeking costs
/// nothing on the happy path; only a refused body is parsed a second time,
/// to tell malformed JSON (`invalid_json`) and a wrong content type (415)
/// from valid JSON of the wrong shape (`invalid_request`).
impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let ApiBytes(bytes) = ApiBytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        let is_object = bytes.iter().find(|b| !b.is_ascii_whitespace()).is_none_or(|&b| b == b'{');
        let buffered = Request::from_parts(parts, axum::body::Body::from(bytes));
        if !is_object {
            let axum::Json(_) =
                axum::Json::<serde::de::IgnoredAny>::from_request(buffered, state).await.map_err(json_rejection)?;
            return Err(ApiError::bad_request("invalid_request", "the body must be a JSON object"));
        }
        axum::Json::<T>::from_request(buffered, state).await.map(|axum::Json(v)| Self(v)).map_err(json_rejection)
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

/// The client's address, for the audit trail and the per-IP rate limit.
///
/// It is the TCP peer, unless the peer is one of `--trusted-proxies`: then
/// it is the first untrusted address in `X-Forwarded-For`, read from the
/// right (see [`client_addr`]). Without trusted proxies the header is
/// ignored, so a client cannot choose its own address.
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl ClientIp {
    /// From the connection (`ConnectInfo`) and the request headers.
    pub fn resolve(headers: &HeaderMap, extensions: &Extensions, trusted: &[IpNet]) -> Self {
        let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
        Self(peer.map(|peer| client_addr(peer, headers, trusted).to_string()))
    }

    pub fn addr(&self) -> Option<IpAddr> {
        self.0.as_deref().and_then(|s| s.parse().ok())
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::resolve(&parts.headers, &parts.extensions, &state.config.trusted_proxies))
    }
}

/// The client behind `peer`: `peer` itself unless it is trusted; then the
/// `X-Forwarded-For` entries are walked from the right (each proxy appends
/// the address it was talking to), skipping trusted ones, and the first
/// untrusted one is the client. Everything left of it was written by the
/// client and is never read. A malformed entry reached before an untrusted
/// one means the header cannot be believed: the peer is used. When every
/// entry is trusted the request came from inside: the leftmost one is used.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let mut lines = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(line) = value.to_str() else { return peer };
        lines.push(line);
    }
    // Several header lines are one comma-separated list, in order (RFC 9110 §5.3).
    let mut innermost = None;
    for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let Some(addr) = forwarded_addr(entry.trim()) else { return peer };
        if !is_trusted(&addr) {
            return addr;
        }
        innermost = Some(addr);
    }
    innermost.unwrap_or(peer)
}

/// One `X-Forwarded-For` entry: an IP address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`) or in brackets, as some proxies write.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|sa| sa.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())?;
    Some(addr.to_canonical())
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
    /// What the route's guard found for this request's tenant, so the
    /// handler's own permission check needs no second database read.
    pub verdict: Option<std::sync::Arc<Verdict>>,
}

/// A membership the guard looked up for one request (see `routes::policy`).
#[derive(Debug)]
pub struct Verdict {
    /// The `{tid}` of the path, as given.
    pub tid: String,
    pub tenant: store::TenantRecord,
    pub grant: domain::role::Grant,
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

/// A `{doc}` path segment (or the rest of the path, on the sync route),
/// percent-decoded. Bytes that are not UTF-8 are no document name: 400
/// `invalid_document_name`, as [`domain::docname::DocName::parse`] answers
/// for every other bad name.
pub struct DocPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DocPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(doc)) => Ok(Self(doc)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Err(ApiError::bad_request("invalid_document_name", "the document name is not valid UTF-8"))
            }
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let headers = xff(&["203.0.113.7"]);
        assert_eq!(client_addr(ip("198.51.100.1"), &headers, &[]), ip("198.51.100.1"));
        // A peer outside the trusted ranges cannot speak for anyone either.
        assert_eq!(client_addr(ip("198.51.100.1"), &headers, &nets(&["10.0.0.0/8"])), ip("198.51.100.1"));
    }

    #[test]
    fn a_trusted_peer_names_the_client_and_spoofed_entries_are_skipped() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client sent "1.1.1.1" itself; the proxy appended what it saw.
        let headers = xff(&["1.1.1.1, 203.0.113.7"]);
        assert_eq!(client_addr(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.7"));
        // Several proxies, each trusted, and the header split over lines.
        let headers = xff(&["1.1.1.1, 203.0.113.7, 10.0.0.9", "10.1.1.1"]);
        assert_eq!(client_addr(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.7"));
        // No header: the proxy itself.
        assert_eq!(client_addr(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
        // Every hop trusted: the request came from inside.
        assert_eq!(client_addr(ip("10.0.0.2"), &xff(&["10.9.9.9, 10.0.0.5"]), &trusted), ip("10.9.9.9"));
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        let trusted = nets(&["::1/128", "fd00::/8", "127.0.0.1/32"]);
        let headers = xff(&["2001:db8::7, fd00::1"]);
        assert_eq!(client_addr(ip("::1"), &headers, &trusted), ip("2001:db8::7"));
        let headers = xff(&["[2001:db8::8]:4711"]);
        assert_eq!(client_addr(ip("::1"), &headers, &trusted), ip("2001:db8::8"));
        let headers = xff(&["203.0.113.9:1234"]);
        assert_eq!(client_addr(ip("::1"), &headers, &trusted), ip("203.0.113.9"));
        // A dual-stack listener sees IPv4 peers as mapped IPv6 addresses.
        let headers = xff(&["::ffff:203.0.113.10"]);
        assert_eq!(client_addr(ip("::ffff:127.0.0.1"), &headers, &trusted), ip("203.0.113.10"));
    }

    #[test]
    fn garbage_means_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in ["not-an-ip", "", "203.0.113.7,", "unknown, 10.0.0.3", "fe80::1%eth0", "1.2.3.4.5"] {
            assert_eq!(client_addr(ip("10.0.0.2"), &xff(&[bad]), &trusted), ip("10.0.0.2"), "{bad:?}");
        }
        // Garbage left of the client is the client's own business.
        assert_eq!(client_addr(ip("10.0.0.2"), &xff(&["junk, 203.0.113.7"]), &trusted), ip("203.0.113.7"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap());
        assert_eq!(client_addr(ip("10.0.0.2"), &headers, &trusted), ip("10.0.0.2"));
    }
}
