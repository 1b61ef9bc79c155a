//! The HTTP surface. Every route is registered through `utoipa_axum`'s
//! `routes!`, so `/openapi.json` is generated from the same list the router
//! serves and cannot drift from it.

pub mod app_docs;
pub mod apps;
pub mod audit;
pub mod dashboard;
pub mod docs;
pub mod human;
pub mod invites;
pub mod members;
pub mod mfa;
pub mod nodes;
pub mod oauth;
pub mod ops;
pub mod password;
pub mod policy;
pub mod roles;
pub mod sync;
pub mod tenants;
pub mod webhooks;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The JSON error body of every non-OAuth endpoint.
#[derive(Serialize, ToSchema)]
pub struct ErrorSchema {
    /// Stable machine-readable code.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

/// `?limit=&cursor=` of growing collections.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–500, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

impl PageQuery {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(0) => Err(ApiError::bad_request("invalid_query", "limit must be at least 1")),
            Some(n) => Ok(n.min(MAX_LIMIT)),
        }
    }

    /// The decoded cursor: the id after which the page starts.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one this server issued"))
            })
            .transpose()
    }

    /// Pages an already-loaded list (small collections).
    pub fn paginate<T>(&self, items: Vec<T>, id: impl Fn(&T) -> String) -> Result<Paged<T>, ApiError> {
        let limit = self.limit()? as usize;
        let after = self.after()?;
        let start = match after {
            Some(a) => items.iter().position(|i| id(i) == a).map_or(items.len(), |p| p + 1),
            None => 0,
        };
        let rest: Vec<T> = items.into_iter().skip(start).collect();
        let has_more = rest.len() > limit;
        let items: Vec<T> = rest.into_iter().take(limit).collect();
        let next_cursor = if has_more { items.last().map(|i| encode_cursor(&id(i))) } else { None };
        Ok(Paged { items, next_cursor })
    }
}

pub fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

#[derive(Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    pub fn from_store<R>(page: store::Page<R>, f: impl FnMut(R) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(f).collect(),
            next_cursor: page.next_after.as_deref().map(encode_cursor),
        }
    }
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("human session token")).build(),
            ),
        );
        components.add_security_scheme(
            "app_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "WireSocket", description = "Managed real-time collaboration on Yjs documents: control plane and token service."),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// `/v1/sync/{*doc}`: the doc name is the whole rest of the path (the stock
/// provider does not encode `/`), which OpenAPI cannot express; the router
/// gets the catch-all and the document the one-segment form.
fn sync_route() -> OpenApiRouter<AppState> {
    let (_, doc) = OpenApiRouter::<AppState>::new().routes(routes!(sync::sync)).split_for_parts();
    OpenApiRouter::with_openapi(doc).route("/v1/sync/{*doc}", axum::routing::get(sync::sync))
}

/// The routes and the OpenAPI document describing exactly them.
/// `max_message` bounds document-update bodies (other bodies get 1 MiB).
pub fn api(max_message: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let documents =
        OpenApiRouter::new().routes(routes!(docs::update_doc)).layer(axum::extract::DefaultBodyLimit::max(max_message));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(documents)
        .routes(routes!(docs::discovery))
        .routes(routes!(docs::list_docs))
        .routes(routes!(docs::get_doc, docs::delete_doc))
        .merge(sync_route())
        .routes(routes!(human::setup))
        .routes(routes!(human::login))
        .routes(routes!(human::logout))
        .routes(routes!(human::me))
        .routes(routes!(password::request_reset))
        .routes(routes!(password::confirm_reset))
        .routes(routes!(mfa::setup))
        .routes(routes!(mfa::verify))
        .routes(routes!(mfa::disable))
        .routes(routes!(members::list_members))
        .routes(routes!(members::set_member_role, members::remove_member))
        .routes(routes!(members::reset_member_mfa))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(roles::get_role, roles::update_role, roles::delete_role))
        .routes(routes!(invites::create_invite, invites::list_invites))
        .routes(routes!(invites::delete_invite))
        .routes(routes!(invites::accept_invite))
        .routes(routes!(tenants::create_tenant))
        .routes(routes!(tenants::get_tenant))
        .routes(routes!(tenants::list_keys))
        .routes(routes!(tenants::rotate_key))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(tenants::jwks))
        .routes(routes!(tenants::jwks_json))
        .routes(routes!(tenants::metadata))
        .routes(routes!(tenants::metadata_alias))
        .routes(routes!(tenants::regions))
        .routes(routes!(tenants::plans))
        .routes(routes!(apps::create_app, apps::list_apps))
        .routes(routes!(apps::get_app, apps::update_app, apps::delete_app))
        .routes(routes!(apps::rotate_secret))
        .routes(routes!(apps::change_plan))
        .routes(routes!(apps::preview_plan))
        .routes(routes!(apps::list_invoices))
        .routes(routes!(app_docs::list_docs))
        .routes(routes!(app_docs::delete_doc))
        .routes(routes!(app_docs::mint_client_token))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(nodes::list_nodes))
        .routes(routes!(nodes::drain_node))
        .routes(routes!(nodes::undrain_node))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(oauth::client_token))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts()
}
