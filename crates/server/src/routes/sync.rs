//! `GET /v1/sync/{doc}?token=`: the y-websocket endpoint.
//!
//! Every check happens before the upgrade (signature, expiry, revocation,
//! Origin, document scope, plan connection limit); after it, one task per
//! connection reads frames and feeds the room, while the room's fan-out
//! writes straight into the socket (see [`crate::dataplane::ws`]). A reader
//! that cannot keep up fills its bounded queue and is closed (1013:
//! reconnect and resync), never silently skipped. Token expiry and
//! keepalive are the registry's supervisor's job, not per-connection timers.

use crate::dataplane::docs::{self, SlotRef};
use crate::dataplane::limits::ConnectionPermit;
use crate::dataplane::registry::{CloseReason, ConnInfo};
use crate::dataplane::socket::Socket;
use crate::dataplane::ws::{self, Event, FrameReader, Peer, Upgrade, WsError};
use crate::dataplane::{close, hot};
use crate::error::ApiError;
use crate::extract::{ApiQuery, AppToken, DocPath};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use domain::claims::Access;
use domain::docname::{DocName, docs_cover};
use domain::domains::origin_allowed;
use domain::ids::AppId;
use serde::Deserialize;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use store::DocKey;
use sync::Outcome;
use tokio::time::timeout;

/// Messages waiting for one client; a client this far behind is closed.
const OUTBOUND_QUEUE: usize = 1024;
const SLOW: CloseReason = CloseReason { code: close::TRY_AGAIN, reason: "too far behind; reconnect to resync" };
/// How long a closing connection waits for its close frame to go out and
/// the client's close to come back.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The same after a message over the size limit: long enough for the
/// client to finish sending it (the reader drops it unbuffered as it
/// arrives). Only then can its close come back; a socket closed with
/// unread bytes is reset, which the client sees as 1006 instead of 4413.
const TOO_LARGE_GRACE: Duration = Duration::from_secs(10);

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
    DocPath(doc): DocPath,
    ApiQuery(query): ApiQuery<SyncQuery>,
    headers: HeaderMap,
    ws: Result<Upgrade, ApiError>,
) -> Result<Response, ApiError> {
    if state.node.is_draining() {
        refusal("draining");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_draining",
            "this node is draining: ask discovery for another",
        ));
    }
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
    let ws = ws?;
    let Some(permit) = state.limits.try_connect(token.app.id, token.app.plan) else {
        refusal("connection_limit");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "connection_limit",
            "the app's plan connection limit is reached",
        ));
    };
    let info = ConnInfo {
        tenant: token.app.tenant_id,
        app: token.app.id,
        doc: key.clone(),
        kid: token.kid,
        jti: token.claims.jti.clone(),
        iat: token.claims.iat,
        exp: token.claims.exp,
    };
    let conn = Conn {
        state,
        app: token.app.id,
        plan: token.app.plan,
        can_write: token.claims.access() == Access::ReadWrite,
        key,
        origin: origin.map(String::into_boxed_str),
        _permit: permit,
    };
    Ok(ws.respond(move |stream, leftover| conn.run(stream, leftover, info)))
}

/// What a connection keeps for its life (small: an idle connection is
/// mostly this, its task and its socket).
struct Conn {
    state: AppState,
    app: AppId,
    plan: domain::plan::PlanId,
    can_write: bool,
    key: DocKey,
    origin: Option<Box<str>>,
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

fn ws_error_reason(e: WsError) -> CloseReason {
    match e {
        WsError::Protocol(reason) => CloseReason { code: ws::CLOSE_PROTOCOL, reason },
        WsError::Utf8 => CloseReason { code: ws::CLOSE_BAD_DATA, reason: "invalid UTF-8" },
        WsError::TooLarge => CloseReason { code: close::TOO_LARGE, reason: "message too large" },
    }
}

/// The code to echo for a client's close (RFC 6455 §7.4: never one of the
/// codes reserved for reporting).
fn echo_code(code: Option<u16>) -> u16 {
    match code {
        Some(c @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => c,
        _ => ws::CLOSE_NORMAL,
    }
}

impl Conn {
    async fn run(mut self, socket: Socket, leftover: Bytes, info: ConnInfo) {
        let mut reader = FrameReader::new(self.state.config.max_message_bytes);
        reader.push(&leftover);
        drop(leftover);
        socket.take_buffered(reader.read_buf());
        let peer = Arc::new(Peer::new(socket, OUTBOUND_QUEUE));
        let slot = match Box::pin(self.state.docs.open(&self.key)).await {
            Ok(s) => s,
            Err(e) if e.code() == docs::RELOADING => {
                peer.close(RELOADING);
                finish(&peer, &mut reader, false).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = ?e, "could not open a document for a new connection");
                peer.close(CloseReason { code: close::INTERNAL, reason: "document unavailable" });
                finish(&peer, &mut reader, false).await;
                return;
            }
        };
        let sender: sync::Sender = {
            let peer = peer.clone();
            let out = hot();
            Arc::new(move |bytes: Bytes| {
                let len = bytes.len() as u64;
                let sent = peer.send_binary(bytes, SLOW).is_ok();
                if sent {
                    out.messages_out.increment(1);
                    out.bytes_out.increment(len);
                }
                sent
            })
        };
        let reg = self.state.registry.insert(info, peer.clone());
        // A drain between the check before the upgrade and this insert
        // would miss this connection: check again now that it is listed.
        if self.state.node.is_draining() {
            peer.close(CloseReason { code: close::DRAINING, reason: "node draining: reconnect through discovery" });
        }
        let conn = slot.room.connect(sender);
        metrics::gauge!("wiresocket_connections_open").increment(1.0);
        metrics::counter!("wiresocket_connections_total").increment(1);

        let ended_by = Box::pin(self.serve(&peer, &mut reader, &slot, conn, reg)).await;
        let (ended, client_closed) = match &ended_by {
            Ended::ClientClosed(code) => (Some(CloseReason { code: echo_code(*code), reason: "" }), true),
            Ended::Close(reason) => (Some(*reason), false),
            Ended::Closing | Ended::Gone => (None, false),
        };
        slot.room.disconnect(conn);
        self.state.registry.remove(reg);
        drop(slot);
        if let Some(reason) = ended {
            peer.close(reason);
        }
        if let Some(reason) = peer.closing() {
            metrics::counter!("wiresocket_closes_total", "code" => reason.code.to_string()).increment(1);
        }
        // A client that hung up (or a broken socket) gets no goodbye: there
        // is nobody left to read it.
        if !matches!(ended_by, Ended::Gone) {
            finish(&peer, &mut reader, client_closed).await;
        }
        metrics::gauge!("wiresocket_connections_open").decrement(1.0);
    }

    /// Reads and handles frames, and drains what could not be written at
    /// once, until the connection ends.
    async fn serve(
        &mut self,
        peer: &Peer,
        reader: &mut FrameReader,
        slot: &SlotRef,
        conn: sync::ConnId,
        reg: u64,
    ) -> Ended {
        loop {
            loop {
                let event = match reader.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => return Ended::Close(ws_error_reason(e)),
                };
                match event {
                    Event::Binary(data) => {
                        hot().messages_in.increment(1);
                        // Boxed: the handler's future lives on the heap only
                        // while it runs, not in every idle connection's task.
                        if let Some(reason) = Box::pin(self.on_binary(slot, conn, &data)).await {
                            return Ended::Close(reason);
                        }
                    }
                    Event::Text(text) => {
                        if let Err(reason) = Box::pin(self.on_text(reg, &text)).await {
                            return Ended::Close(reason);
                        }
                    }
                    Event::Ping(payload) => peer.pong(payload),
                    Event::Pong => {}
                    Event::Close(code) => return Ended::ClientClosed(code),
                }
            }
            reader.release();
            if peer.is_broken() {
                return Ended::Gone;
            }
            if peer.closing().is_some() {
                return Ended::Closing;
            }
            let wants_write = peer.wants_write();
            tokio::select! {
                biased;
                () = peer.woken() => {}
                ready = peer.socket().writable(), if wants_write => {
                    if ready.is_err() || peer.flush().is_err() {
                        return Ended::Gone;
                    }
                }
                ready = peer.socket().readable() => {
                    if ready.is_err() {
                        return Ended::Gone;
                    }
                    match peer.socket().read_some(reader.read_buf()) {
                        Ok(0) => return Ended::Gone,
                        Ok(n) => {
                            peer.touch();
                            hot().bytes_in.increment(n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Ended::Gone,
                    }
                }
            }
        }
    }

    /// Handles one protocol message; answers a close reason when the connection must end.
    async fn on_binary(&self, slot: &SlotRef, conn: sync::ConnId, data: &[u8]) -> Option<CloseReason> {
        match slot.room.handle(conn, data, self.can_write) {
            Ok(Outcome::Done) => None,
            Ok(Outcome::Forbidden) => Some(CloseReason { code: close::READ_ONLY, reason: "read-only token" }),
            Ok(Outcome::Persist(update)) => {
                match write(&self.state, slot, self.plan, update, Some(conn), false).await {
                    Ok(()) => None,
                    Err(WriteRefusal::Limit(reason)) => Some(CloseReason { code: close::LIMIT, reason }),
                    Err(WriteRefusal::Reloading) => Some(RELOADING),
                    Err(WriteRefusal::Failed) => {
                        Some(CloseReason { code: close::INTERNAL, reason: "could not persist" })
                    }
                }
            }
            // Its clients are being closed to reconnect to the reloaded room.
            Err(sync::SyncError::Damaged) => Some(RELOADING),
            Err(e @ sync::SyncError::Conflict(_)) => {
                tracing::info!(error = %e, "refused an update that reuses known ids; closing that connection");
                Some(CloseReason { code: close::CONFLICT, reason: "update conflicts with the document" })
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed message; closing that connection");
                Some(CloseReason { code: close::MALFORMED, reason: "malformed message" })
            }
        }
    }

    /// An in-band token refresh: same app, must still cover the document and the Origin.
    async fn on_text(&mut self, reg: u64, text: &[u8]) -> Result<(), CloseReason> {
        let invalid = CloseReason { code: close::TOKEN, reason: "invalid refresh" };
        let Ok(Control::Refresh { token }) = serde_json::from_slice::<Control>(text) else {
            return Err(CloseReason { code: close::MALFORMED, reason: "unknown control message" });
        };
        let fresh = self.state.verify_app_token(&token).await.map_err(|_| invalid)?;
        if fresh.app.id != self.app
            || doc_key(&fresh, &self.key.name).is_err()
            || !origin_allowed(&fresh.claims.origins, self.origin.as_deref())
            || !fresh.claims.has_scope(domain::DEFAULT_SCOPE)
        {
            return Err(invalid);
        }
        self.can_write = fresh.claims.access() == Access::ReadWrite;
        self.state.registry.update(reg, fresh.kid, fresh.claims.jti, fresh.claims.iat, fresh.claims.exp);
        metrics::counter!("wiresocket_token_refreshes_total").increment(1);
        Ok(())
    }
}

/// How [`Conn::serve`] ended.
enum Ended {
    /// The client sent a close (with this code): echo it and hang up.
    ClientClosed(Option<u16>),
    /// This side ends the connection with this close.
    Close(CloseReason),
    /// A close was queued from elsewhere (supervisor, revocation, slow).
    Closing,
    /// The client hung up, or the socket failed.
    Gone,
}

/// The end of a connection: our close frame goes out, then, unless the
/// client closed first, its close (or the end of its stream) is awaited,
/// briefly, before the socket is dropped (RFC 6455 §7.1.1: the server
/// closes the TCP connection, at once when answering the client's close).
async fn finish(peer: &Peer, reader: &mut FrameReader, client_closed: bool) {
    let closing = async {
        loop {
            match peer.flush() {
                Ok(ws::Flushed::All) => break,
                Ok(ws::Flushed::Partly) => {
                    if peer.socket().writable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        if client_closed {
            return;
        }
        loop {
            if peer.socket().readable().await.is_err() {
                return;
            }
            match peer.socket().read_some(reader.read_buf()) {
                Ok(0) => return,
                Ok(_) => loop {
                    match reader.next_event() {
                        Ok(Some(Event::Close(_))) | Err(_) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let too_large = peer.closing().is_some_and(|r| r.code == close::TOO_LARGE);
    let _ = timeout(if too_large { TOO_LARGE_GRACE } else { CLOSE_GRACE }, closing).await;
    // With TLS, a clean end of the session too (best effort).
    peer.socket().close_notify();
}

pub enum WriteRefusal {
    Limit(&'static str),
    /// The document's room is being reloaded (see `Docs::open`): retry.
    Reloading,
    Failed,
}

fn write_refusal(e: ApiError) -> WriteRefusal {
    if e.code() == docs::RELOADING { WriteRefusal::Reloading } else { WriteRefusal::Failed }
}

/// How a connection hears it: reconnect (to the reloaded room).
const RELOADING: CloseReason = CloseReason { code: close::TRY_AGAIN, reason: "document reloading" };

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
        return state.docs.write(slot, update, origin, wait).await.map_err(write_refusal);
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
        return state.docs.write(slot, update, origin, true).await.map_err(write_refusal);
    }
    state.docs.write(slot, update, origin, wait).await.map_err(write_refusal)
}
