//! A minimal y-websocket client on yrs + tokio-tungstenite, speaking the
//! protocol byte for byte like the stock provider does.

use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::sync::{Awareness, AwarenessUpdate, Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

pub struct YClient {
    pub doc: Doc,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Awareness states seen, by client id (removed when the server says so).
    pub awareness: HashMap<u64, String>,
    pub closed: Option<u16>,
    pub synced: bool,
    pub updates_received: usize,
}

/// Like a browser: `/` stays (the stock provider does not encode the name),
/// spaces and non-ASCII are percent-encoded by URL parsing.
pub fn sync_url(base: &str, doc: &str, token: &str) -> String {
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'%');
    let doc = percent_encoding::utf8_percent_encode(doc, PATH);
    let base = base.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    format!("{base}/v1/sync/{doc}?token={token}")
}

/// Connects; on a refused upgrade answers the HTTP status.
pub async fn connect(base: &str, doc: &str, token: &str, origin: Option<&str>) -> Result<YClient, u16> {
    connect_with(base, doc, token, origin, None).await
}

/// [`connect`] over `wss://` (for an `https://` base), trusting what `tls` trusts.
pub async fn connect_tls(
    base: &str,
    doc: &str,
    token: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<YClient, u16> {
    connect_with(base, doc, token, None, Some(tokio_tungstenite::Connector::Rustls(tls))).await
}

async fn connect_with(
    base: &str,
    doc: &str,
    token: &str,
    origin: Option<&str>,
    connector: Option<tokio_tungstenite::Connector>,
) -> Result<YClient, u16> {
    let mut req = sync_url(base, doc, token).into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector).await {
        Ok((ws, _)) => Ok(YClient {
            doc: Doc::new(),
            ws,
            awareness: HashMap::new(),
            closed: None,
            synced: false,
            updates_received: 0,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

impl YClient {
    pub async fn send(&mut self, msg: YMessage) {
        self.send_raw(msg.encode_v1()).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(Message::Binary(Bytes::from(bytes))).await;
    }

    /// A raw WebSocket frame (for protocol-level tests).
    pub async fn send_frame(&mut self, frame: tokio_tungstenite::tungstenite::protocol::frame::Frame) {
        let _ = self.ws.send(Message::Frame(frame)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// Sends our step 1 and processes messages until the server's step 2 arrives.
    pub async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector();
        self.send(YMessage::Sync(SyncMessage::SyncStep1(sv))).await;
        assert!(self.wait_for(|c| c.synced, Duration::from_secs(5)).await, "no sync step 2");
    }

    /// Inserts at the end of the shared text `t` and sends the update.
    pub async fn insert(&mut self, s: &str) {
        let update = {
            let text = self.doc.get_or_insert_text("t");
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, s);
            txn.encode_update_v1()
        };
        self.send(YMessage::Sync(SyncMessage::Update(update))).await;
    }

    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("t");
        text.get_string(&self.doc.transact())
    }

    pub async fn set_awareness(&mut self, json: &str) {
        let mut aw = Awareness::new(self.doc.clone());
        aw.set_local_state_raw(json);
        let update = aw.update().unwrap();
        self.send(YMessage::Awareness(update)).await;
    }

    fn handle(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let msg = YMessage::decode_v1(bytes).expect("server sent a malformed message");
        match msg {
            YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                let diff = self.doc.transact().encode_diff_v1(&sv);
                return Some(YMessage::Sync(SyncMessage::SyncStep2(diff)).encode_v1());
            }
            YMessage::Sync(SyncMessage::SyncStep2(u)) => {
                self.apply(&u);
                self.synced = true;
            }
            YMessage::Sync(SyncMessage::Update(u)) => {
                self.apply(&u);
                self.updates_received += 1;
            }
            YMessage::Awareness(AwarenessUpdate { clients }) => {
                for (id, e) in clients {
                    if &*e.json == "null" {
                        self.awareness.remove(&id.get());
                    } else {
                        self.awareness.insert(id.get(), e.json.to_string());
                    }
                }
            }
            _ => {}
        }
        None
    }

    fn apply(&mut self, u: &[u8]) {
        let update = Update::decode_v1(u).unwrap();
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    /// Reads and handles one frame; false when the connection ended.
    pub async fn step(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Some(reply) = self.handle(&b) {
                    self.send_raw(reply).await;
                }
                true
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                false
            }
            Ok(Some(Ok(_))) => true,
            Ok(Some(Err(_)) | None) => {
                self.closed.get_or_insert(1006);
                false
            }
            Err(_) => true,
        }
    }

    pub async fn wait_for(&mut self, cond: impl Fn(&Self) -> bool, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !cond(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.step(left.min(Duration::from_millis(200))).await {
                return cond(self);
            }
        }
        true
    }

    /// Waits for the server to close the connection; answers the close code.
    pub async fn closed_with(&mut self, within: Duration) -> Option<u16> {
        self.wait_for(|c| c.closed.is_some(), within).await;
        self.closed
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }

    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }
}
