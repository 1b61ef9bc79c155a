//! Documents over REST and discovery, for the app's backend (M2M tokens).

use crate::dataplane::close;
use crate::dataplane::registry::CloseReason;
use crate::error::ApiError;
use crate::extract::{ApiBytes, ApiQuery, AppToken, DocPath};
use crate::routes::sync::{WriteRefusal, doc_key, write};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::webhook::WebhookEvent;
use serde::Serialize;
use serde_json::json;
use store::DocRecord;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// REST document access is for the app's backend: an M2M token with the API scope.
fn require_m2m(token: &AppToken) -> Result<(), ApiError> {
    if token.claims.is_client_token() {
        return Err(ApiError::forbidden("document REST needs the app's M2M token, not a client token"));
    }
    if !token.claims.has_scope(domain::DEFAULT_SCOPE) {
        return Err(ApiError::forbidden("the token lacks the WireSocket.API scope"));
    }
    Ok(())
}

#[derive(Serialize, ToSchema)]
pub struct Discovery {
    /// The `serverUrl` to give the stock provider.
    url: String,
    node_id: String,
    region: String,
}

/// Where to connect for a document.
#[utoipa::path(get, path = "/v1/discovery/{doc}", tag = "data plane", security(("app_token" = [])),
    params(("doc" = String, Path, description = "percent-encoded document name")),
    responses((status = 200, body = Discovery), (status = 400, body = ErrorSchema), (status = 401, body = ErrorSchema), (status = 403, body = ErrorSchema)))]
pub async fn discovery(
    State(state): State<AppState>,
    token: AppToken,
    DocPath(doc): DocPath,
) -> Result<Json<Discovery>, ApiError> {
    let key = doc_key(&token, &doc)?;
    let app = token.app.id.to_string();
    let node = state
        .directory
        .pick(&token.app.region, &app, &key.name, state.now(), state.config.node_timeout)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_node_available",
                "no node of the app's region is up; try again shortly",
            )
        })?;
    Ok(Json(Discovery { url: crate::fleet::sync_url(&node.url), node_id: node.id, region: token.app.region.clone() }))
}

#[derive(Serialize, ToSchema)]
pub struct DocView {
    name: String,
    size_bytes: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    /// Open connections on this node.
    connections: usize,
}

#[utoipa::path(get, path = "/v1/docs", tag = "data plane", security(("app_token" = [])), params(PageQuery),
    responses((status = 200, body = Paged<DocView>), (status = 401, body = ErrorSchema), (status = 403, body = ErrorSchema)))]
pub async fn list_docs(
    State(state): State<AppState>,
    token: AppToken,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<DocView>>, ApiError> {
    require_m2m(&token)?;
    list_app_docs(&state, token.app.id, &q).await.map(Json)
}

/// One page of an app's documents with their live connection counts (the
/// backend's `/v1/docs` and the dashboard's per-app list).
pub(crate) async fn list_app_docs(
    state: &AppState,
    app: domain::ids::AppId,
    q: &PageQuery,
) -> Result<Paged<DocView>, ApiError> {
    let page = state.store.list_docs(app, q.after()?.as_deref(), q.limit()?).await?;
    Ok(Paged::from_store(page, |d: DocRecord| {
        let key = store::DocKey { app_id: d.app_id, name: d.name.clone() };
        let connections = state.docs.loaded(&key).and_then(|s| s.room().map(|r| r.connection_count())).unwrap_or(0);
        DocView {
            name: d.name,
            size_bytes: d.size_bytes,
            created_at: d.created_at,
            updated_at: d.updated_at,
            connections,
        }
    }))
}

/// The document's full state as one Yjs v1 update.
#[utoipa::path(get, path = "/v1/docs/{doc}", tag = "data plane", security(("app_token" = [])),
    params(("doc" = String, Path, description = "percent-encoded document name")),
    responses((status = 200, content_type = "application/octet-stream", description = "Yjs v1 update"), (status = 404, body = ErrorSchema)))]
pub async fn get_doc(
    State(state): State<AppState>,
    token: AppToken,
    DocPath(doc): DocPath,
) -> Result<Response, ApiError> {
    require_m2m(&token)?;
    let key = doc_key(&token, &doc)?;
    if state.docs.loaded(&key).is_none() && state.store.get_doc(&key).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let slot = state.docs.open(&key).await?;
    if !slot.slot.exists() {
        return Err(ApiError::not_found());
    }
    let room = slot.room.clone();
    let bytes = tokio::task::spawn_blocking(move || room.try_encode_state())
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "document_unavailable",
                "the document cannot be read right now",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Applies a binary Yjs update: persisted, then broadcast to the document's clients.
#[utoipa::path(post, path = "/v1/docs/{doc}/update", tag = "data plane", security(("app_token" = [])),
    params(("doc" = String, Path, description = "percent-encoded document name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Yjs v1 update"),
    responses((status = 204), (status = 400, body = ErrorSchema), (status = 413, body = ErrorSchema), (status = 429, body = ErrorSchema)))]
pub async fn update_doc(
    State(state): State<AppState>,
    token: AppToken,
    DocPath(doc): DocPath,
    ApiBytes(body): ApiBytes,
) -> Result<StatusCode, ApiError> {
    require_m2m(&token)?;
    let key = doc_key(&token, &doc)?;
    let slot = state.docs.open(&key).await?;
    let changes = slot.room.would_change(&body).map_err(|e| match e {
        sync::SyncError::Damaged => crate::dataplane::docs::reloading(),
        e @ sync::SyncError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "update_conflict", e.to_string()),
        e => ApiError::bad_request("invalid_update", format!("not a Yjs v1 update: {e}")),
    })?;
    if !changes {
        return Ok(StatusCode::NO_CONTENT);
    }
    match write(&state, &slot, token.app.plan, body.to_vec(), None, true).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(WriteRefusal::Limit(reason)) => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "plan_limit", reason)),
        Err(WriteRefusal::Reloading) => Err(crate::dataplane::docs::reloading()),
        Err(WriteRefusal::Failed) => Err(ApiError::internal("persisting a REST update failed")),
    }
}

/// Deletes the document; its connections close with 4404.
#[utoipa::path(delete, path = "/v1/docs/{doc}", tag = "data plane", security(("app_token" = [])),
    params(("doc" = String, Path, description = "percent-encoded document name")),
    responses((status = 204), (status = 404, body = ErrorSchema)))]
pub async fn delete_doc(
    State(state): State<AppState>,
    token: AppToken,
    DocPath(doc): DocPath,
) -> Result<StatusCode, ApiError> {
    require_m2m(&token)?;
    let key = doc_key(&token, &doc)?;
    delete_document(&state, &token.app, key).await
}

/// Deletes one document of `app` (the backend's REST and the dashboard):
/// the `document.deleted` event, closing its connections with 4404.
pub(crate) async fn delete_document(
    state: &AppState,
    app: &store::AppRecord,
    key: store::DocKey,
) -> Result<StatusCode, ApiError> {
    let data = json!({"doc": key.name});
    let event = state.events.event(app.tenant_id, Some(app.id), WebhookEvent::DocumentDeleted, data)?;
    if !state.store.delete_doc(&key, &[event]).await? {
        return Err(ApiError::not_found());
    }
    state.events.committed();
    state.registry.close_where(CloseReason { code: close::DELETED, reason: "document deleted" }, |c| c.doc == key);
    state.docs.evict(&key);
    // No `document.updated` may trail the deletion.
    state.events.forget_doc(&key);
    Ok(StatusCode::NO_CONTENT)
}
