//! What every answer tells the browser: the security headers of the
//! contract, and CORS for the configured origins (`--cors-origin`).
//!
//! Both are layers around the whole router, so 404s, 405s, 413s, 429s and
//! the opaque 500 of a panic carry them too.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// No scripts, styles or frames but the dashboard's own files; nobody may
/// frame it (clickjacking).
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One year, the value HSTS preload lists ask for; no `includeSubDomains`,
/// since the operator's other hosts are not ours to pin.
pub const HSTS: &str = "max-age=31536000";

/// `/v1/*` and `/oauth/*`: the JSON and OAuth API.
fn is_api(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/oauth/")
}

/// The RFC 8414 metadata, at both of its locations.
fn is_discovery(path: &str) -> bool {
    path.starts_with("/.well-known/oauth-authorization-server/")
        || path.ends_with("/.well-known/oauth-authorization-server")
}

fn is_dashboard(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The security headers; `hsts` is on when the listener speaks TLS.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    pub hsts: bool,
}

/// Sets the headers of the contract's "Production" section on every answer.
///
/// `Cache-Control: no-store` goes on every API answer that has no
/// `Cache-Control` of its own, rather than on a list of the answers that
/// carry secrets: tokens, sessions, client secrets, webhook secrets, TOTP
/// seeds and invite links come from a dozen routes, and a new one must not
/// be cacheable because nobody added it to a list. The public documents
/// that may be cached (JWKS, discovery) say so themselves.
pub async fn security_headers(State(policy): State<SecurityHeaders>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let (api, dashboard) = (is_api(path), is_dashboard(path));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if dashboard {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    }
    if policy.hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

/// CORS for the exact origins of `--cors-origin`, on the API and discovery.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<[HeaderValue]>,
    layer: CorsLayer,
}

impl Cors {
    /// `origins` as the config keeps them (validated and serialized the way
    /// browsers send `Origin`), so matching is byte equality.
    pub fn new(origins: &[String]) -> Self {
        let origins: Arc<[HeaderValue]> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        // No `Access-Control-Allow-Credentials`: the API's credentials are
        // bearer tokens in `Authorization`, which a cross-origin fetch sends
        // without credentials mode once the header is allowed here; that
        // mode is for cookies, which this API never sets or reads. Leaving
        // it off means a page of a listed origin cannot make the browser
        // attach any ambient credential either.
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600));
        Self { origins, layer }
    }
}

/// tower-http's `CorsLayer` answers every `OPTIONS` as a preflight and adds
/// its `Vary` and method lists whatever the origin; the contract wants no
/// CORS headers at all for another origin, and none outside the API. So the
/// layer only sees requests from a listed origin to the API; a preflight
/// answers 204.
pub async fn cors(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if cors.origins.is_empty() || !(is_api(path) || is_discovery(path)) {
        return next.run(request).await;
    }
    let listed = request.headers().get(header::ORIGIN).is_some_and(|o| cors.origins.contains(o));
    if !listed {
        let mut response = next.run(request).await;
        // The answer differs by Origin: a cache must not hand this one to a
        // listed origin.
        response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let preflight = request.method() == Method::OPTIONS;
    let inner = tower::service_fn(move |request: Request| {
        let next = next.clone();
        async move { Ok::<_, std::convert::Infallible>(next.run(request).await) }
    });
    let mut response = match cors.layer.layer(inner).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if preflight {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn answer(hsts: bool, path: &str) -> Response {
        let router = Router::new()
            .route("/v1/x", get(|| async { "x" }))
            .layer(axum::middleware::from_fn_with_state(SecurityHeaders { hsts }, security_headers));
        router.oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn hsts_only_when_asked_for() {
        let on = answer(true, "/v1/x").await;
        assert_eq!(on.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
        let off = answer(false, "/v1/x").await;
        assert!(!off.headers().contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(off.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn scopes() {
        assert!(is_api("/v1/plans") && is_api("/oauth/token") && !is_api("/v1") && !is_api("/healthz"));
        assert!(is_discovery("/.well-known/oauth-authorization-server/t1"));
        assert!(is_discovery("/t1/.well-known/oauth-authorization-server"));
        assert!(!is_discovery("/t1/.well-known/jwks.json"));
        assert!(is_dashboard("/dashboard") && is_dashboard("/dashboard/apps") && !is_dashboard("/dashboards"));
    }
}
