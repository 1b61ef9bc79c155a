//! An app's documents as its tenant's members see them in the dashboard:
//! the list, deleting one, and minting a client token for the dashboard's
//! playground. The same operations as the backend's `/v1/docs` and
//! `/v1/client-tokens`, authorised by a human session and the member's role
//! instead of the app's M2M token (whose secret the dashboard never holds).

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, HumanSession};
use crate::routes::apps::load_app;
use crate::routes::docs::{DocView, delete_document, list_app_docs};
use crate::routes::oauth::{ClientTokenRequest, ClientTokenResponse, client_token_spec};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::docname::DocName;
use domain::role::{Action, Resource};

#[utoipa::path(get, path = "/v1/tenants/{tid}/apps/{aid}/docs", tag = "documents", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), PageQuery),
    responses((status = 200, body = Paged<DocView>), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_docs(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<DocView>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Documents, Action::Read).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    list_app_docs(&state, app.id, &q).await.map(Json)
}

/// Deletes the document; its connections close with 4404.
#[utoipa::path(delete, path = "/v1/tenants/{tid}/apps/{aid}/docs/{doc}", tag = "documents", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path), ("doc" = String, Path, description = "percent-encoded document name")),
    responses((status = 204), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn delete_doc(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid, doc)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Documents, Action::Delete).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let name = DocName::parse(&doc)?;
    delete_document(&state, &app, store::DocKey { app_id: app.id, name: name.into_string() }).await
}

/// The public URL's origin as an allowed domain is written: `host`, or
/// `host:port` when the port is not the scheme's default.
fn dashboard_origin(public_url: &str) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// A client token of the app for the member's own use (the playground):
/// the same request and limits as `/v1/client-tokens`. Without a `user`,
/// the token's subject is the member (`dashboard:<user id>`, named by
/// their name or email), so presence and logs show who it was. The token
/// may also connect from the dashboard's own origin.
#[utoipa::path(post, path = "/v1/tenants/{tid}/apps/{aid}/client-tokens", tag = "documents", security(("session" = [])),
    params(("tid" = String, Path), ("aid" = String, Path)), request_body = ClientTokenRequest,
    responses((status = 200, body = ClientTokenResponse), (status = 400, body = ErrorSchema), (status = 403, body = ErrorSchema),
        (status = 404, body = ErrorSchema)))]
pub async fn mint_client_token(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath((tid, aid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ClientTokenRequest>,
) -> Result<Json<ClientTokenResponse>, ApiError> {
    // Writing through the token is what it is for: documents, update.
    let (tenant, _) = state.authorize(&session, &tid, Resource::Documents, Action::Update).await?;
    let app = load_app(&state, &tenant, &aid).await?;
    let mut spec = client_token_spec(req)?;
    if spec.sub.is_none() {
        spec.sub = Some(format!("dashboard:{}", session.user.id));
        spec.name = Some(session.user.name.clone().unwrap_or_else(|| session.user.email.clone()));
    }
    // The playground runs on the dashboard's page: its origin must pass
    // the app's Origin check like the app's own sites.
    spec.extra_origin = dashboard_origin(&state.public_url);
    let (token, claims) = state.issue_client_token(&app, spec).await?;
    Ok(Json(ClientTokenResponse { token, expires_in: claims.exp - claims.iat }))
}

#[cfg(test)]
mod tests {
    use super::dashboard_origin;

    #[test]
    fn the_dashboard_origin_is_written_as_an_allowed_domain() {
        assert_eq!(dashboard_origin("http://127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(dashboard_origin("https://ws.example.com").as_deref(), Some("ws.example.com"));
        assert_eq!(dashboard_origin("https://ws.example.com:443/base").as_deref(), Some("ws.example.com"));
        assert_eq!(dashboard_origin("not a url"), None);
    }
}
