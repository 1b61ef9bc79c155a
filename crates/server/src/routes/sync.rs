//! `GET /v1/sync/{doc}?token=`: the y-websocket endpoint.
//!
//! Every check happens before the upgrade (signature, expiry, revocation,
//! Origin, document scope, plan connection limit); after it, the connection
//! is two halves: this task reads and feeds the room, a writer task drains
//! a bounded queue to the socket. A reader that cannot keep up fills the
//! queue and is closed (1013: reconnect and resync), never silently skipped.

use crate::dataplane::close;
use crate::dataplane::docs::SlotRef;
use crate::dataplane::limits::ConnectionPermit;
use crate::dataplane::registry::{CloseReason, ConnInfo};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, AppToken};
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use domain::claims::Access;
use domain::docname::{DocName, docs_cover};
use domain::domains::origin_allowed;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use store::DocKey;
use sync::Outcome;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until, timeout};

/// Messages waiting for one client; a client this far behind is closed.
const OUTBOUND_QUEUE: usize = 1024;
const PING_EVERY: Duration = Duration::from_secs(30);
/// Most messages written per flush.
const WRITE_BURST: u64 = 64;
/// tungstenite's buffers default to 128 KiB each, per connection; idle
/// connections would pay for them. They grow on demand for large messages.
const READ_BUFFER: usize = 2 * 1024;
const WRITE_BUFFER: usize = 2 * 1024;
/// No frame at all (pongs included) for this long: the peer is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// A socket write that takes longer than this means a stuck peer.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// The app's access token or a client token.
    pub token: Option<String>,
}

/// Checks shared by the socket, discovery and REST: the doc name is valid
/// and the token's `docs` claim covers it.
pub fn doc_key(token: &AppToken, doc: &str) -> Result<DocKey, ApiError> {
    let name = DocName::parse(doc)?;
    if let Some(patterns) = &token.claims.docs
        && !docs_cover(patterns, name.as_str())
    {
        return Err(ApiError::forbidden("the token's docs claim does not cover this document"));
    }
    Ok(DocKey { app_id: token.app.id, name: name.into_string() })
}

fn refusal(reason: &'static str) {
    metrics::counter!("wiresocket_sync_refusals_total", "reason" => reason).increment(1);
}

/// Upgrades to the y-websocket protocol. The rest of the path, percent-decoded, is the document name.
#[utoipa::path(get, path = "/v1/sync/{doc}", tag = "data plane",
    params(("doc" = String, Path, description = "document name (the rest of the path)"), SyncQuery),
    responses((status = 101, description = "switching to the y-websocket protocol"),
        (status = 401, body = crate::routes::ErrorSchema), (status = 403, body = crate::routes::ErrorSchema),
        (status = 429, body = crate::routes::ErrorSchema)))]
pub async fn sync(
    State(state): State<AppState>,
    ApiPath(doc): ApiPath<String>,
    ApiQuery(query): ApiQuery<SyncQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = query.token.or(bearer) else {
        refusal("no_token");
        return Err(ApiError::unauthorized("missing token (pass ?token=)"));
    };
    let token = state.verify_app_token(&token).await.map_err(|r| {
        refusal("bad_token");
        ApiError::unauthorized(format!("invalid access token: {r}"))
    })?;
    if !token.claims.has_scope(domain::DEFAULT_SCOPE) {
        refusal("scope");
        return Err(ApiError::forbidden("the token lacks the WireSocket.API scope"));
    }
    let key = doc_key(&token, &doc).inspect_err(|_| refusal("doc_scope"))?;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if !origin_allowed(&token.claims.origins, origin.as_deref()) {
        refusal("origin");
        return Err(ApiError::forbidden("Origin is not one of the app's allowed domains"));
    }
    let ws = ws.map_err(|_| ApiError::bad_request("websocket_required", "this endpoint speaks WebSocket only"))?;
    let Some(permit) = state.limits.try_connect(token.app.id, token.app.plan) else {
        refusal("connection_limit");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "connection_limit",
            "the app's plan connection limit is reached",
        ));
    };
    let max = state.config.max_message_bytes;
    let ctx = Conn { state: state.clone(), token, key, origin, _permit: permit };
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| ctx.run(socket)))
}

struct Conn {
    state: AppState,
    token: AppToken,
    key: DocKey,
    origin: Option<String>,
    /// Released when the connection ends.
    _permit: ConnectionPermit,
}

/// What a text frame from the client may say (our only in-band extension;
/// stock y-websocket clients never send text).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    /// A fresh token for the same app and document, so the connection
    /// outlives the 15-minute token it was opened with.
    Refresh { token: String },
}

impl Conn {
    fn expires_at(&self) -> Instant {
        let left = self.token.claims.exp - self.state.now().unix_timestamp();
        Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }

    fn can_write(&self) -> bool {
        self.token.claims.access() == Access::ReadWrite
    }

    async fn run(mut self, socket: WebSocket) {
        let slot = match Box::pin(self.state.docs.open(&self.key)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = ?e, "could not open a document for a new connection");
                let mut socket = socket;
                let _ = socket
                    .send(close_message(CloseReason { code: close::INTERNAL, reason: "document unavailable" }))
                    .await;
                return;
            }
        };
        let (sink, mut stream) = socket.split();
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::channel::<CloseReason>(4);
        let slow = ctl_tx.clone();
        let sender: sync::Sender = Arc::new(move |bytes: Bytes| match out_tx.try_send(bytes) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let _ = slow
                    .try_send(CloseReason { code: close::TRY_AGAIN, reason: "too far behind; reconnect to resync" });
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
        let info = ConnInfo {
            tenant: self.token.app.tenant_id,
            app: self.token.app.id,
            doc: self.key.clone(),
            kid: self.token.kid.clone(),
            jti: self.token.claims.jti.clone(),
            iat: self.token.claims.iat,
        };
        let reg = self.state.registry.insert(info, ctl_tx.clone());
        let conn = slot.room.connect(sender);
        let mut writer = tokio::spawn(write_loop(sink, out_rx, ctl_rx));
        metrics::gauge!("wiresocket_connections_open").increment(1.0);
        metrics::counter!("wiresocket_connections_total").increment(1);

        let mut expires = self.expires_at();
        let mut last_seen = Instant::now();
        let mut watchdog = tokio::time::interval(PING_EVERY);
        let request_close = |reason: CloseReason| {
            let _ = ctl_tx.try_send(reason);
        };
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(Message::Binary(data))) => {
                            metrics::counter!("wiresocket_messages_in_total").increment(1);
                            metrics::counter!("wiresocket_bytes_in_total").increment(data.len() as u64);
                            // Boxed: the handlers' futures live on the heap only
                            // while they run, not in every idle connection's task.
                            if let Some(reason) = Box::pin(self.on_binary(&slot, conn, &data)).await {
                                request_close(reason);
                                break;
                            }
                        }
                        Some(Ok(Message::Text(text))) => match Box::pin(self.on_text(reg, &text)).await {
                            Ok(()) => expires = self.expires_at(),
                            Err(reason) => {
                                request_close(reason);
                                break;
                            }
                        },
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            // tungstenite reports an oversized message as a capacity error.
                            let text = e.to_string();
                            if text.contains("too long") || text.contains("Space limit") {
                                request_close(CloseReason { code: close::TOO_LARGE, reason: "message too large" });
                            }
                            break;
                        }
                    }
                }
                () = sleep_until(expires) => {
                    request_close(CloseReason { code: close::TOKEN, reason: "token expired" });
                    break;
                }
                _ = watchdog.tick() => {
                    if last_seen.elapsed() > SILENCE_LIMIT {
                        request_close(CloseReason { code: close::TRY_AGAIN, reason: "no keepalive" });
                        break;
                    }
                }
                _ = &mut writer => break,
            }
        }
        slot.room.disconnect(conn);
        self.state.registry.remove(reg);
        drop(ctl_tx);
        // Let the writer flush the close frame; it ends once the room has dropped our sender.
        let _ = timeout(Duration::from_secs(5), writer).await;
        metrics::gauge!("wiresocket_connections_open").decrement(1.0);
    }

    /// Handles one protocol message; answers a close reason when the connection must end.
    async fn on_binary(&self, slot: &SlotRef, conn: sync::ConnId, data: &[u8]) -> Option<CloseReason> {
        match slot.room.handle(conn, data, self.can_write()) {
            Ok(Outcome::Done) => None,
            Ok(Outcome::Forbidden) => Some(CloseReason { code: close::READ_ONLY, reason: "read-only token" }),
            Ok(Outcome::Persist(update)) => {
                match write(&self.state, slot, self.token.app.plan, update, Some(conn), false).await {
                    Ok(()) => None,
                    Err(WriteRefusal::Limit(reason)) => Some(CloseReason { code: close::LIMIT, reason }),
                    Err(WriteRefusal::Failed) => {
                        Some(CloseReason { code: close::INTERNAL, reason: "could not persist" })
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed message; closing that connection");
                Some(CloseReason { code: close::MALFORMED, reason: "malformed message" })
            }
        }
    }

    /// An in-band token refresh: same app, must still cover the document and the Origin.
    async fn on_text(&mut self, reg: u64, text: &str) -> Result<(), CloseReason> {
        let invalid = CloseReason { code: close::TOKEN, reason: "invalid refresh" };
        let Ok(Control::Refresh { token }) = serde_json::from_str::<Control>(text) else {
            return Err(CloseReason { code: close::MALFORMED, reason: "unknown control message" });
        };
        let fresh = self.state.verify_app_token(&token).await.map_err(|_| invalid)?;
        if fresh.app.id != self.token.app.id
            || doc_key(&fresh, &self.key.name).is_err()
            || !origin_allowed(&fresh.claims.origins, self.origin.as_deref())
            || !fresh.claims.has_scope(domain::DEFAULT_SCOPE)
        {
            return Err(invalid);
        }
        self.state.registry.update(reg, fresh.kid.clone(), fresh.claims.jti.clone(), fresh.claims.iat);
        self.token = fresh;
        metrics::counter!("wiresocket_token_refreshes_total").increment(1);
        Ok(())
    }
}

pub enum WriteRefusal {
    Limit(&'static str),
    Failed,
}

/// One write (socket or REST): counts against the plan's operations per
/// minute, and the first write of a new document against its document limit.
/// With `wait`, answers once the update is persisted (REST); a socket
/// write returns at once and is applied when its batch commits.
/// `plan` is the app's plan as last read (it only seeds this node's limiter;
/// plan changes reach an existing limiter through `Limits::set_plan`).
pub async fn write(
    state: &AppState,
    slot: &SlotRef,
    plan: domain::plan::PlanId,
    update: Vec<u8>,
    origin: Option<sync::ConnId>,
    wait: bool,
) -> Result<(), WriteRefusal> {
    let app = slot.slot.key.app_id;
    let limits = state.limits.app(app, plan);
    if !limits.check_op() {
        refusal("ops_per_minute");
        return Err(WriteRefusal::Limit("operations per minute limit"));
    }
    if slot.slot.exists() {
        return state.docs.write(slot, update, origin, wait).await.map_err(|_| WriteRefusal::Failed);
    }
    // The first write creates the document: serialise creations per app so
    // the document limit holds, and wait for it to be persisted.
    let _creating = limits.creating.lock().await;
    if !slot.slot.exists() {
        if let Some(max) = limits.plan().plan().max_documents {
            let count = state.store.count_docs(app).await.map_err(|_| WriteRefusal::Failed)?;
            if u64::try_from(count).unwrap_or(u64::MAX) >= max {
                refusal("document_limit");
                return Err(WriteRefusal::Limit("document limit of the plan"));
            }
        }
        return state.docs.write(slot, update, origin, true).await.map_err(|_| WriteRefusal::Failed);
    }
    state.docs.write(slot, update, origin, wait).await.map_err(|_| WriteRefusal::Failed)
}

fn close_message(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) }))
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut out: mpsc::Receiver<Bytes>,
    mut ctl: mpsc::Receiver<CloseReason>,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            biased;
            // A closed control channel disables this arm (no busy loop); the
            // writer then ends when the room drops our sender.
            Some(reason) = ctl.recv() => {
                metrics::counter!("wiresocket_closes_total", "code" => reason.code.to_string()).increment(1);
                let _ = timeout(Duration::from_secs(5), sink.send(close_message(reason))).await;
                let _ = timeout(Duration::from_secs(1), sink.close()).await;
                return;
            }
            msg = out.recv() => match msg {
                Some(first) => {
                    // Everything already queued goes out in one flush (one
                    // syscall for a burst), up to a bound so pings and closes
                    // are not starved.
                    let mut count = 1u64;
                    let mut bytes = first.len() as u64;
                    let burst = async {
                        sink.feed(Message::Binary(first)).await?;
                        while count < WRITE_BURST {
                            let Ok(next) = out.try_recv() else { break };
                            count += 1;
                            bytes += next.len() as u64;
                            sink.feed(Message::Binary(next)).await?;
                        }
                        sink.flush().await
                    };
                    match timeout(SEND_TIMEOUT, burst).await {
                        Ok(Ok(())) => {
                            metrics::counter!("wiresocket_messages_out_total").increment(count);
                            metrics::counter!("wiresocket_bytes_out_total").increment(bytes);
                        }
                        _ => return,
                    }
                }
                None => {
                    let _ = timeout(Duration::from_secs(1), sink.close()).await;
                    return;
                }
            },
            _ = ping.tick() => {
                if timeout(SEND_TIMEOUT, sink.send(Message::Ping(Bytes::new()))).await.map_or(true, |r| r.is_err()) {
                    return;
                }
            }
        }
    }
}
