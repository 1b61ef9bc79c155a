//! Who may call what: ONE table, [`POLICIES`], declaring the principal and
//! permission of every route, and ONE guard, [`guard`], that enforces it in
//! front of every handler (a `route_layer`, so it runs after routing and
//! before any extractor or body parsing).
//!
//! A route missing from the table is refused (fail closed) and fails the
//! `every_route_declares_a_policy` test, which walks the OpenAPI document —
//! the same list the router serves — so a new route cannot be forgotten.
//!
//! - `Public`: anyone (client authentication, if any, is the handler's).
//! - `Session`: a human session, any tenant (e.g. `/v1/me`, creating a tenant).
//! - `Tenant(resource, action)`: a human session of a member of the path's
//!   `{tid}` whose role grants the permission. Not a member: 404 (no
//!   existence leak); a member without it: 403; an app token: 403.
//! - `Operator`: a human session of the platform operator (the first
//!   user), for the node registry; any other session: 403.
//! - `AppToken`: the data plane. Only an app's JWT; anything else is 401.

use crate::error::ApiError;
use crate::extract::HumanSession;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::role::{Action, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Public,
    Session,
    Tenant(Resource, Action),
    /// A human session of the platform operator (the first user).
    Operator,
    AppToken,
}

use Action::{Create, Delete, Read, Update};
use Policy::{AppToken, Operator, Public, Session, Tenant};
use Resource::*;

/// `(method, route template, policy)` for every route.
pub const POLICIES: &[(&str, &str, Policy)] = &[
    // bootstrap, sessions, account
    ("POST", "/v1/setup", Public),
    ("POST", "/v1/auth/login", Public),
    ("POST", "/v1/auth/logout", Session),
    ("GET", "/v1/me", Session),
    ("POST", "/v1/auth/password-reset", Public),
    ("POST", "/v1/auth/password-reset/confirm", Public),
    ("POST", "/v1/invites/accept", Public),
    ("POST", "/v1/me/mfa/setup", Session),
    ("POST", "/v1/me/mfa/verify", Session),
    ("DELETE", "/v1/me/mfa", Session),
    // members, roles, invites
    ("GET", "/v1/tenants/{tid}/members", Tenant(Members, Read)),
    ("PUT", "/v1/tenants/{tid}/members/{uid}", Tenant(Members, Update)),
    ("DELETE", "/v1/tenants/{tid}/members/{uid}", Tenant(Members, Delete)),
    ("DELETE", "/v1/tenants/{tid}/members/{uid}/mfa", Tenant(Members, Update)),
    ("GET", "/v1/tenants/{tid}/roles", Tenant(Roles, Read)),
    ("POST", "/v1/tenants/{tid}/roles", Tenant(Roles, Create)),
    ("GET", "/v1/tenants/{tid}/roles/{name}", Tenant(Roles, Read)),
    ("PUT", "/v1/tenants/{tid}/roles/{name}", Tenant(Roles, Update)),
    ("DELETE", "/v1/tenants/{tid}/roles/{name}", Tenant(Roles, Delete)),
    ("POST", "/v1/tenants/{tid}/invites", Tenant(Invites, Create)),
    ("GET", "/v1/tenants/{tid}/invites", Tenant(Invites, Read)),
    ("DELETE", "/v1/tenants/{tid}/invites/{id}", Tenant(Invites, Delete)),
    // tenants and keys
    ("POST", "/v1/tenants", Session),
    ("GET", "/v1/tenants/{tid}", Tenant(Tenants, Read)),
    ("GET", "/v1/tenants/{tid}/keys", Tenant(Keys, Read)),
    ("POST", "/v1/tenants/{tid}/keys/rotate", Tenant(Keys, Update)),
    ("POST", "/v1/tenants/{tid}/keys/{kid}/revoke", Tenant(Keys, Delete)),
    ("GET", "/{tid}/.well-known/jwks", Public),
    ("GET", "/{tid}/.well-known/jwks.json", Public),
    ("GET", "/.well-known/oauth-authorization-server/{tid}", Public),
    ("GET", "/{tid}/.well-known/oauth-authorization-server", Public),
    ("GET", "/v1/regions", Public),
    ("GET", "/v1/plans", Public),
    // apps and billing
    ("POST", "/v1/tenants/{tid}/apps", Tenant(Apps, Create)),
    ("GET", "/v1/tenants/{tid}/apps", Tenant(Apps, Read)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}", Tenant(Apps, Read)),
    ("PATCH", "/v1/tenants/{tid}/apps/{aid}", Tenant(Apps, Update)),
    ("DELETE", "/v1/tenants/{tid}/apps/{aid}", Tenant(Apps, Delete)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/secret/rotate", Tenant(Apps, Update)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/plan", Tenant(Billing, Update)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/plan/preview", Tenant(Billing, Read)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}/docs", Tenant(Documents, Read)),
    ("DELETE", "/v1/tenants/{tid}/apps/{aid}/docs/{doc}", Tenant(Documents, Delete)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/client-tokens", Tenant(Documents, Update)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}/invoices", Tenant(Billing, Read)),
    // webhooks
    ("POST", "/v1/tenants/{tid}/apps/{aid}/webhooks", Tenant(Webhooks, Create)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}/webhooks", Tenant(Webhooks, Read)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", Tenant(Webhooks, Read)),
    ("PATCH", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", Tenant(Webhooks, Update)),
    ("DELETE", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}", Tenant(Webhooks, Delete)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/secret/rotate", Tenant(Webhooks, Update)),
    ("GET", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/deliveries", Tenant(Webhooks, Read)),
    ("POST", "/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/test", Tenant(Webhooks, Update)),
    // audit
    ("GET", "/v1/tenants/{tid}/audit", Tenant(Audit, Read)),
    ("GET", "/v1/tenants/{tid}/audit/verify", Tenant(Audit, Read)),
    // the node registry
    ("GET", "/v1/nodes", Operator),
    ("POST", "/v1/nodes/{id}/drain", Operator),
    ("POST", "/v1/nodes/{id}/undrain", Operator),
    // OAuth 2 (client authentication is the endpoint's own)
    ("POST", "/oauth/token", Public),
    ("POST", "/oauth/introspect", Public),
    ("POST", "/oauth/revoke", Public),
    // data plane
    ("POST", "/v1/client-tokens", AppToken),
    ("GET", "/v1/discovery/{doc}", AppToken),
    ("GET", "/v1/docs", AppToken),
    ("GET", "/v1/docs/{doc}", AppToken),
    ("POST", "/v1/docs/{doc}/update", AppToken),
    ("DELETE", "/v1/docs/{doc}", AppToken),
    ("GET", "/v1/sync/{doc}", AppToken),
    ("GET", "/v1/sync/{*doc}", AppToken),
    // operations
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/openapi.json", Public),
];

/// The declared policy of a route template.
pub fn policy_of(method: &Method, path: &str) -> Option<Policy> {
    POLICIES.iter().find(|(m, p, _)| *m == method.as_str() && *p == path).map(|(_, _, policy)| *policy)
}

/// The guard in front of every route.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(path) = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned()) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Some(policy) = policy_of(&parts.method, &path) else {
        tracing::error!(method = %parts.method, path, "route has no declared policy; refused");
        return ApiError::forbidden("this route has no declared permission").into_response();
    };
    match policy {
        Public | AppToken => {}
        Session => {
            if let Err(e) = HumanSession::from_request_parts(&mut parts, &state).await {
                return e.into_response();
            }
        }
        Operator => match HumanSession::from_request_parts(&mut parts, &state).await {
            Ok(session) if session.user.is_operator => {}
            Ok(_) => return ApiError::forbidden("only the platform operator may manage nodes").into_response(),
            Err(e) => return e.into_response(),
        },
        Tenant(resource, action) => {
            let mut session = match HumanSession::from_request_parts(&mut parts, &state).await {
                Ok(s) => s,
                Err(e) => return e.into_response(),
            };
            let tid = match RawPathParams::from_request_parts(&mut parts, &state).await {
                Ok(params) => params.iter().find(|(k, _)| *k == "tid").map(|(_, v)| v.to_owned()),
                // A segment that is not UTF-8 names no tenant, app or
                // member: the 404 of any id that names nothing.
                Err(e) => {
                    tracing::debug!(path, error = %e, "path parameter is not UTF-8");
                    return ApiError::not_found().into_response();
                }
            };
            let Some(tid) = tid else {
                tracing::error!(path, "tenant policy on a route without {{tid}}; refused");
                return ApiError::forbidden("this route has no tenant to check").into_response();
            };
            match state.authorize(&session, &tid, resource, action).await {
                Ok((tenant, grant)) => {
                    session.verdict = Some(std::sync::Arc::new(crate::extract::Verdict { tid, tenant, grant }));
                }
                Err(e) => return e.into_response(),
            }
            // The handler finds the session already checked.
            parts.extensions.insert(session);
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_declares_a_policy_and_no_policy_is_stale() {
        let (router, openapi) = crate::routes::api(1 << 20);
        drop(router);
        let mut documented = Vec::new();
        for (path, item) in &openapi.paths.paths {
            let ops = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (m, present) in ops {
                if present {
                    documented.push((m.to_owned(), path.clone()));
                    let method = Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET);
                    assert!(policy_of(&method, path).is_some(), "{m} {path} has no entry in POLICIES");
                }
            }
        }
        for (m, p, _) in POLICIES {
            let undocumented = ["/openapi.json", "/v1/sync/{*doc}"];
            assert!(
                undocumented.contains(p) || documented.iter().any(|(dm, dp)| dm == m && dp == p),
                "{m} {p} is in POLICIES but not a route"
            );
        }
    }

    #[test]
    fn tenant_policies_name_a_tid() {
        for (m, p, policy) in POLICIES {
            if let Tenant(..) = policy {
                assert!(p.contains("{tid}"), "{m} {p}");
            }
        }
    }
}
