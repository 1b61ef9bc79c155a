//! The node registry (CONTRACT "Nodes and the fleet"): list, drain,
//! undrain, for the platform operator; and the heartbeat that keeps this
//! process's own entry fresh and exports every node's state as metrics.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, ClientIp, HumanSession};
use crate::routes::{ErrorSchema, PageQuery, Paged};
use crate::state::{Actor, AppState};
use axum::Json;
use axum::extract::State;
use domain::audit::AuditAction;
use domain::node::NodeStatus;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use store::NodeRecord;
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct NodeView {
    id: String,
    /// The license region it serves (`all` for a `--role all` node).
    region: String,
    url: String,
    #[schema(value_type = String, example = "up")]
    status: NodeStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    last_heartbeat_at: OffsetDateTime,
    /// Open data-plane connections at the last heartbeat.
    connections: i64,
    /// Documents loaded at the last heartbeat.
    documents: i64,
}

impl NodeView {
    fn new(n: NodeRecord, now: OffsetDateTime, timeout: Duration) -> Self {
        Self {
            status: NodeStatus::of(n.draining, n.last_heartbeat_at, now, timeout),
            id: n.id,
            region: n.region,
            url: n.url,
            last_heartbeat_at: n.last_heartbeat_at,
            connections: n.connections,
            documents: n.documents,
        }
    }
}

/// Every node that ever heartbeated, by id, with its status.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("session" = [])), params(PageQuery),
    responses((status = 200, body = Paged<NodeView>), (status = 401, body = ErrorSchema), (status = 403, body = ErrorSchema)))]
pub async fn list_nodes(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<NodeView>>, ApiError> {
    let page = state.store.list_nodes(q.after()?.as_deref(), q.limit()?).await?;
    let (now, timeout) = (state.now(), state.config.node_timeout);
    Ok(Json(Paged::from_store(page, |n| NodeView::new(n, now, timeout))))
}

/// Drains a node: it takes no new connections, discovery stops naming it,
/// and its clients are closed with 4503 (at once on this process, within a
/// heartbeat interval on another).
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "nodes", security(("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn drain_node(
    State(state): State<AppState>,
    session: HumanSession,
    ip: ClientIp,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<NodeView>, ApiError> {
    set_draining(&state, &Actor::user(&session, &ip), &id, true).await
}

/// Puts a drained node back into service.
#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "nodes", security(("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn undrain_node(
    State(state): State<AppState>,
    session: HumanSession,
    ip: ClientIp,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<NodeView>, ApiError> {
    set_draining(&state, &Actor::user(&session, &ip), &id, false).await
}

async fn set_draining(state: &AppState, actor: &Actor, id: &str, draining: bool) -> Result<Json<NodeView>, ApiError> {
    let node = state.store.set_node_draining(id, draining).await?.ok_or_else(ApiError::not_found)?;
    // Discovery stops (or starts again) naming it at once.
    state.directory.upsert(node.clone());
    if node.id == state.node.id {
        state.node.set_draining(draining);
    }
    let action = if draining { AuditAction::NodeDrained } else { AuditAction::NodeUndrained };
    state.audit(None, actor, action, Some(("node", node.id.clone())), json!({"region": node.region})).await;
    Ok(Json(NodeView::new(node, state.now(), state.config.node_timeout)))
}

/// This process's heartbeat, every `--heartbeat-interval` (see [`beat`]).
pub async fn heartbeat_loop(state: std::sync::Weak<crate::state::Inner>) {
    let interval = match state.upgrade() {
        Some(state) => state.config.heartbeat_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first beat ran at start-up.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        beat(&state).await;
    }
}

/// Reports this node (connections, documents) to the registry and follows
/// its drain flag (so a drain taken by another control process reaches it
/// within one interval), then reloads the node directory and exports every
/// node's gauges.
pub async fn beat(state: &crate::state::Inner) {
    let now = state.clock.now();
    if let Err(e) = state.node.heartbeat(state.store.as_ref(), state.docs.loaded_count(), now).await {
        tracing::warn!(error = %e, "the node heartbeat failed; the registry may show this node down");
    }
    match state.directory.refresh(state.store.as_ref()).await {
        Ok(()) => state.directory.export_metrics(now, state.config.node_timeout),
        Err(e) => tracing::warn!(error = %e, "reloading the node directory failed; discovery keeps the last copy"),
    }
}
