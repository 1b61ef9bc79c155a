//! The server side of RFC 6455 on a raw socket (TCP, or TLS over TCP: see
//! [`super::socket`]), shaped for fan-out.
//!
//! Why not axum's `ws` (tungstenite)? There a broadcast to n connections is
//! n channel sends, n task wake-ups and n buffered copies, and every
//! connection holds a read and a write buffer for its whole life. Here:
//!
//! - A [`Peer`] is the write side, shared by the connection's task and the
//!   room's fan-out. A broadcast writes each frame straight into each
//!   socket from the broadcasting thread (`try_write_vectored`: the header
//!   and the shared payload, one syscall, no copy, no wake-up). Only a
//!   socket that cannot take a frame right away queues it; the connection's
//!   task then drains the queue as the socket becomes writable. The queue is
//!   bounded: a peer too far behind is closed (it resyncs on reconnect),
//!   never skipped.
//! - A [`FrameReader`] is the read side: a sans-IO parser of client frames
//!   (masking, fragmentation, control frames, size limit, UTF-8 of text and
//!   close reasons). Its buffer exists only while bytes are in flight, so an
//!   idle connection holds no buffer at all.
//! - [`Upgrade`] is the handshake: an extractor that checks the request and
//!   answers 101, handing the raw socket to the connection's task.
//!
//! No extensions (permessage-deflate) and no subprotocols are negotiated;
//! y-websocket uses neither. HTTP/1.1 only.

use super::socket::Socket;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close codes of RFC 6455 used by the framing itself.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_BAD_DATA: u16 = 1007;

/// Most bytes queued for one peer (beyond the frame being written): a
/// bound on memory that the message count alone would not give, with
/// messages of up to the message size limit. An empty queue always takes
/// one frame, whatever its size.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Writes up to this size go out as one copied buffer (`send`) rather than
/// as slices (`writev`).
const SMALL_WRITE: usize = 1024;

/// Most slices handed to one vectored write while draining a queue.
const MAX_SLICES: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server frame's header (never masked): FIN, the opcode, the length.
fn frame_header(opcode: u8, len: usize) -> ([u8; 10], u8) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    if let Ok(short) = u8::try_from(len)
        && short < 126
    {
        h[1] = short;
        (h, 2)
    } else if let Ok(medium) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&medium.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A frame on its way out, with how much of it the socket has taken.
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
    written: usize,
    data: bool,
}

impl OutFrame {
    fn new(opcode: u8, payload: Bytes) -> Self {
        let (head, head_len) = frame_header(opcode, payload.len());
        Self { head, head_len, payload, written: 0, data: opcode == OP_BINARY || opcode == OP_TEXT }
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }

    /// The unwritten rest, as up to two slices.
    fn rest(&self) -> [&[u8]; 2] {
        let head = &self.head[..usize::from(self.head_len)];
        if self.written < head.len() {
            [&head[self.written..], &self.payload]
        } else {
            [&[], &self.payload[self.written - head.len()..]]
        }
    }
}

use super::CloseReason;

#[derive(Default)]
struct Outbox {
    queue: VecDeque<OutFrame>,
    /// Data frames in `queue` (the bound applies to those), and the bytes
    /// they have left to write.
    data_frames: usize,
    data_bytes: usize,
    /// A close frame is queued (or sent): nothing else goes out.
    closing: Option<CloseReason>,
    /// The socket failed: nothing more can be written.
    broken: bool,
}

impl Outbox {
    fn push(&mut self, frame: OutFrame) {
        if frame.data {
            self.data_frames += 1;
            self.data_bytes += frame.len();
        }
        self.queue.push_back(frame);
    }
}

/// What [`Peer::flush`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is on the wire.
    All,
    /// The socket is full; wait until it is writable.
    Partly,
}

/// The writing side of one WebSocket connection; see the module docs.
pub struct Peer {
    socket: Socket,
    out: Mutex<Outbox>,
    /// Tells the connection's task there is something queued or a close.
    wake: Notify,
    /// Most data frames queued before the peer counts as too slow.
    limit: usize,
    /// Seconds (on [`Peer::clock`]) when a frame last arrived.
    last_seen: AtomicU64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("peer", &self.socket.peer_addr().ok())
            .field("tls", &self.socket.is_tls())
            .finish_non_exhaustive()
    }
}

/// Why a send was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the peer is now closing with `slow`'s code.
    Slow,
    /// Closing or broken already.
    Closed,
}

impl Peer {
    pub fn new(socket: impl Into<Socket>, limit: usize) -> Self {
        Self {
            socket: socket.into(),
            out: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            limit,
            last_seen: AtomicU64::new(mono_secs()),
        }
    }

    /// Sends one binary message. A slow peer (queue full) is switched to
    /// closing with `slow` and the send is refused.
    pub fn send_binary(&self, payload: Bytes, slow: CloseReason) -> Result<(), Refused> {
        self.send(OP_BINARY, payload, Some(slow))
    }

    /// A ping, for keepalive (control frames are not bounded by the queue limit).
    pub fn ping(&self) {
        let _ = self.send(OP_PING, Bytes::new(), None);
    }

    /// The answer to a client's ping.
    pub fn pong(&self, payload: Bytes) {
        let _ = self.send(OP_PONG, payload, None);
    }

    fn send(&self, opcode: u8, payload: Bytes, slow: Option<CloseReason>) -> Result<(), Refused> {
        let mut out = lock(&self.out);
        if out.closing.is_some() || out.broken {
            return Err(Refused::Closed);
        }
        let mut frame = OutFrame::new(opcode, payload);
        if !out.queue.is_empty() {
            if let Some(slow) = slow
                && (out.data_frames >= self.limit || out.data_bytes + frame.len() > QUEUE_BYTES)
            {
                self.close_locked(&mut out, slow);
                return Err(Refused::Slow);
            }
            out.push(frame);
            return Ok(());
        }
        // Nothing queued: straight into the socket, from this thread.
        if write_some(&self.socket, &mut [&mut frame]).is_err() {
            out.broken = true;
            self.wake.notify_one();
            return Err(Refused::Closed);
        }
        if frame.written < frame.len() {
            out.push(frame);
        } else if !self.socket.pending_out() {
            return Ok(());
        }
        // The rest (or, with TLS, records the socket did not take) goes out
        // from the connection's task once the socket is writable.
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a close frame; whatever was queued and not yet started is
    /// dropped (a frame already partly written is finished first, so the
    /// framing stays valid). Later sends are refused. The first close wins.
    pub fn close(&self, closing: CloseReason) {
        let mut out = lock(&self.out);
        self.close_locked(&mut out, closing);
    }

    fn close_locked(&self, out: &mut Outbox, closing: CloseReason) {
        if out.closing.is_some() {
            return;
        }
        let keep = usize::from(out.queue.front().is_some_and(|f| f.written > 0));
        out.queue.truncate(keep);
        out.data_frames = out.queue.iter().filter(|f| f.data).count();
        out.data_bytes = out.queue.iter().filter(|f| f.data).map(OutFrame::len).sum();
        out.closing = Some(closing);
        let mut payload = Vec::with_capacity(2 + closing.reason.len());
        payload.extend_from_slice(&closing.code.to_be_bytes());
        payload.extend_from_slice(closing.reason.as_bytes());
        let mut frame = OutFrame::new(OP_CLOSE, Bytes::from(payload));
        // Alone in the queue: it can go out right now, from this thread.
        if out.queue.is_empty() && !out.broken && write_some(&self.socket, &mut [&mut frame]).is_err() {
            out.broken = true;
        }
        if frame.written < frame.len() && !out.broken {
            out.queue.push_back(frame);
        }
        self.wake.notify_one();
    }

    /// Writes what is queued until done or the socket is full.
    pub fn flush(&self) -> io::Result<Flushed> {
        let mut out = lock(&self.out);
        loop {
            match self.socket.send_pending() {
                Ok(true) => {}
                Ok(false) => return Ok(Flushed::Partly),
                Err(e) => {
                    out.broken = true;
                    return Err(e);
                }
            }
            if out.queue.is_empty() {
                return Ok(Flushed::All);
            }
            if out.broken {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let mut frames: Vec<&mut OutFrame> = out.queue.iter_mut().take(MAX_SLICES / 2).collect();
            match write_some(&self.socket, &mut frames) {
                Ok(0) => return Ok(Flushed::Partly),
                Ok(_) => {}
                Err(e) => {
                    out.broken = true;
                    return Err(e);
                }
            }
            while out.queue.front().is_some_and(|f| f.written == f.len()) {
                if let Some(done) = out.queue.pop_front() {
                    out.data_frames -= usize::from(done.data);
                    if done.data {
                        out.data_bytes -= done.len();
                    }
                }
            }
        }
    }

    /// Something is queued for the socket.
    pub fn wants_write(&self) -> bool {
        let out = lock(&self.out);
        !out.broken && (!out.queue.is_empty() || self.socket.pending_out())
    }

    /// The close this peer is ending with, if any.
    pub fn closing(&self) -> Option<CloseReason> {
        lock(&self.out).closing
    }

    /// Our close frame is on the wire (or cannot be written anymore).
    pub fn close_sent(&self) -> bool {
        let out = lock(&self.out);
        out.broken || (out.closing.is_some() && out.queue.is_empty() && !self.socket.pending_out())
    }

    pub fn is_broken(&self) -> bool {
        lock(&self.out).broken
    }

    /// Resolves when a send queued something or a close was asked for.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    pub fn touch(&self) {
        self.last_seen.store(mono_secs(), Ordering::Relaxed);
    }

    /// Seconds since a frame last arrived, at `now` (of [`mono_secs`]).
    pub fn silent_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_seen.load(Ordering::Relaxed))
    }
}

/// Seconds on a monotonic clock (for keepalive only).
pub fn mono_secs() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs()
}

/// One non-blocking vectored write of the frames' unwritten bytes; advances
/// their `written`. `Ok(0)` when the socket would block.
fn write_some(stream: &Socket, frames: &mut [&mut OutFrame]) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for frame in frames.iter() {
        for part in frame.rest() {
            if !part.is_empty() && n < MAX_SLICES {
                slices[n] = IoSlice::new(part);
                n += 1;
            }
        }
    }
    let total: usize = slices[..n].iter().map(|s| s.len()).sum();
    let result = if total <= SMALL_WRITE {
        // One small buffer: `send` skips the VFS layer and iovec import of
        // `writev`, which showed up in the fan-out profile; copying a few
        // hundred bytes costs less.
        let mut buf = [0u8; SMALL_WRITE];
        let mut at = 0;
        for slice in &slices[..n] {
            buf[at..at + slice.len()].copy_from_slice(slice);
            at += slice.len();
        }
        stream.try_write(&buf[..at])
    } else {
        stream.try_write_vectored(&slices[..n])
    };
    let wrote = match result {
        Ok(0) if n > 0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
        Ok(w) => w,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut left = wrote;
    for frame in frames.iter_mut() {
        let take = left.min(frame.len() - frame.written);
        frame.written += take;
        left -= take;
        if left == 0 {
            break;
        }
    }
    Ok(wrote)
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Binary(Bytes),
    /// Valid UTF-8.
    Text(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close, with its code if it gave one.
    Close(Option<u16>),
}

/// A client broke the protocol: close with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// RFC 6455 framing rules (close 1002).
    Protocol(&'static str),
    /// Text or a close reason that is not UTF-8 (close 1007).
    Utf8,
    /// A message larger than the limit (the caller's close code).
    TooLarge,
}

/// Parses client frames from the bytes read so far (sans IO).
pub struct FrameReader {
    buf: BytesMut,
    /// A fragmented message in progress: its opcode and payload so far.
    partial: Option<(u8, BytesMut)>,
    max_message: usize,
    /// After [`WsError::TooLarge`]: bytes of the refused frame still to
    /// drop as they arrive (never buffered), so the connection can be read
    /// to the client's close frame; RFC 6455 peers cannot send that close
    /// before they finish the frame they are sending.
    skip: u64,
    /// The refused message was fragmented: its continuation frames are
    /// dropped too, up to and including the final one.
    dropping: bool,
}

/// Bytes asked of the socket per read when no frame says how many to expect.
const READ_CHUNK: usize = 4096;

impl FrameReader {
    pub fn new(max_message: usize) -> Self {
        Self { buf: BytesMut::new(), partial: None, max_message, skip: 0, dropping: false }
    }

    /// Drops what is left of a refused frame from the buffer; `false`
    /// while more of it is still to come.
    fn skip_refused(&mut self) -> bool {
        let drop = usize::try_from(self.skip).unwrap_or(usize::MAX).min(self.buf.len());
        self.buf.advance(drop);
        self.skip -= drop as u64;
        // More to come: the buffer is empty again, nothing of it was kept.
        if self.skip > 0 {
            return false;
        }
        true
    }

    /// The buffer to read into, with room for at least one more chunk.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Bytes that arrived some other way (after the HTTP request).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Gives the buffer back when nothing is in flight, so an idle
    /// connection holds none.
    pub fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// The next complete event, `None` until more bytes arrive.
    ///
    /// After `Err(TooLarge)` the reader discards the rest of that message
    /// (without buffering it) and goes on parsing what follows, so the
    /// caller can read on to the client's close frame.
    pub fn next_event(&mut self) -> Result<Option<Event>, WsError> {
        loop {
            if !self.skip_refused() {
                return Ok(None);
            }
            let Some((fin, opcode, len, head_len, mask)) = self.header()? else { return Ok(None) };
            let control = opcode & 0x8 != 0;
            if self.dropping && !control {
                if opcode != OP_CONTINUATION {
                    return Err(WsError::Protocol("new message inside a fragmented one"));
                }
                self.skip = head_len as u64 + len;
                self.dropping = !fin;
                continue;
            }
            if control {
                if !fin {
                    return Err(WsError::Protocol("fragmented control frame"));
                }
                if len > 125 {
                    return Err(WsError::Protocol("control frame longer than 125 bytes"));
                }
            } else {
                match (opcode, &self.partial) {
                    (OP_CONTINUATION, None) => return Err(WsError::Protocol("continuation without a message")),
                    (OP_TEXT | OP_BINARY, Some(_)) => {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    _ => {}
                }
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len());
                if len > (self.max_message - so_far.min(self.max_message)) as u64 {
                    self.partial = None;
                    self.skip = head_len as u64 + len;
                    self.dropping = !fin;
                    return Err(WsError::TooLarge);
                }
            }
            // `len` is now bounded by the message limit or by 125.
            let len = usize::try_from(len).map_err(|_| WsError::TooLarge)?;
            let total = head_len + len;
            if self.buf.len() < total {
                self.buf.reserve(total - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(head_len);
            let mut payload = self.buf.split_to(len);
            unmask(&mut payload, mask);
            match opcode {
                OP_CLOSE => return close_event(&payload).map(Some),
                OP_PING => return Ok(Some(Event::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Event::Pong)),
                OP_TEXT | OP_BINARY if fin => return message(opcode, payload).map(Some),
                OP_TEXT | OP_BINARY => self.partial = Some((opcode, payload)),
                _ => {
                    // A continuation (checked above that a message is open).
                    if let Some((_, so_far)) = &mut self.partial {
                        so_far.extend_from_slice(&payload);
                    }
                    if fin && let Some((op, whole)) = self.partial.take() {
                        return message(op, whole).map(Some);
                    }
                }
            }
        }
    }

    /// FIN, opcode, payload length, header length and mask of the frame at
    /// the front, once its header is complete.
    #[allow(clippy::type_complexity)]
    fn header(&self) -> Result<Option<(bool, u8, u64, usize, [u8; 4])>, WsError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        let opcode = b[0] & 0x0F;
        if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
            return Err(WsError::Protocol("reserved opcode"));
        }
        if b[1] & 0x80 == 0 {
            return Err(WsError::Protocol("client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 => {
                let Some(bytes) = b.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
            }
            127 => {
                let Some(bytes) = b.get(2..10) else { return Ok(None) };
                let mut a = [0u8; 8];
                a.copy_from_slice(bytes);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("payload length with the top bit set"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let Some(m) = b.get(at..at + 4) else { return Ok(None) };
        Ok(Some((fin, opcode, len, at + 4, [m[0], m[1], m[2], m[3]])))
    }
}

fn message(opcode: u8, payload: BytesMut) -> Result<Event, WsError> {
    if opcode == OP_TEXT {
        std::str::from_utf8(&payload).map_err(|_| WsError::Utf8)?;
        return Ok(Event::Text(payload.freeze()));
    }
    Ok(Event::Binary(payload.freeze()))
}

fn close_event(payload: &[u8]) -> Result<Event, WsError> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(WsError::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| WsError::Utf8)?;
            Ok(Event::Close(Some(u16::from_be_bytes([*a, *b]))))
        }
    }
}

/// XORs `data` with the 4-byte mask, 8 bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask is in phase.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The WebSocket handshake of a request (RFC 6455 §4.2), checked; the
/// socket is handed over by [`Upgrade::respond`].
pub struct Upgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    accept: HeaderValue,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let refused = || ApiError::bad_request("websocket_required", "this endpoint speaks WebSocket only");
        if parts.method != Method::GET
            || !has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(refused());
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err(ApiError::bad_request("websocket_version", "only WebSocket version 13 is spoken"));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else { return Err(refused()) };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).map_err(ApiError::internal)?;
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>().ok_or_else(refused)?;
        Ok(Self { on_upgrade, accept })
    }
}

impl Upgrade {
    /// Answers 101 and runs `connection` on the raw socket (with any bytes
    /// the client sent after its request) once the upgrade completes.
    pub fn respond<F, Fut>(self, connection: F) -> Response
    where
        F: FnOnce(Socket, Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use hyper_util::rt::TokioIo;
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
                    return;
                }
            };
            // The leftover is a slice of hyper's read buffer (8 KiB or more):
            // copy it out and drop the buffer now, before the connection
            // runs, or every idle connection would keep one.
            let (socket, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let leftover = Bytes::copy_from_slice(&parts.read_buf);
                    (Socket::from(parts.io.into_inner()), leftover)
                }
                Err(upgraded) => match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>() {
                    Ok(parts) => {
                        let leftover = Bytes::copy_from_slice(&parts.read_buf);
                        let (tcp, session) = parts.io.into_inner().into_inner();
                        (Socket::tls(tcp, session), leftover)
                    }
                    Err(_) => {
                        tracing::error!("an upgraded connection is neither TCP nor TLS over TCP; dropping it");
                        return;
                    }
                },
            };
            connection(socket, leftover).await;
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::SEC_WEBSOCKET_ACCEPT, self.accept),
            ],
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A client frame: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn events(reader: &mut FrameReader) -> Result<Vec<Event>, WsError> {
        let mut out = Vec::new();
        while let Some(e) = reader.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn the_rfc_example_hello_unmasks() {
        // RFC 6455 §5.7: a masked text frame "Hello".
        let mut r = FrameReader::new(1024);
        r.push(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        assert_eq!(events(&mut r).unwrap(), vec![Event::Text(Bytes::from_static(b"Hello"))]);
    }

    #[test]
    fn frames_split_at_every_byte_parse_the_same() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let mut wire = client_frame(true, OP_BINARY, &payload, MASK);
        wire.extend(client_frame(true, OP_PING, b"hi", MASK));
        wire.extend(client_frame(true, OP_BINARY, &[], MASK));
        for cut in 0..wire.len() {
            let mut r = FrameReader::new(1024);
            r.push(&wire[..cut]);
            let mut got = events(&mut r).unwrap();
            r.push(&wire[cut..]);
            got.extend(events(&mut r).unwrap());
            assert_eq!(
                got,
                vec![
                    Event::Binary(Bytes::from(payload.clone())),
                    Event::Ping(Bytes::from_static(b"hi")),
                    Event::Binary(Bytes::new())
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_length_encoding_and_odd_lengths_unmask() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut r = FrameReader::new(1 << 20);
            r.push(&client_frame(true, OP_BINARY, &payload, MASK));
            assert_eq!(events(&mut r).unwrap(), vec![Event::Binary(Bytes::from(payload))], "len {len}");
        }
    }

    #[test]
    fn fragments_join_and_control_frames_may_interleave() {
        let mut r = FrameReader::new(1024);
        r.push(&client_frame(false, OP_BINARY, b"abc", MASK));
        r.push(&client_frame(true, OP_PING, b"", MASK));
        r.push(&client_frame(false, OP_CONTINUATION, b"def", MASK));
        r.push(&client_frame(true, OP_CONTINUATION, b"g", MASK));
        assert_eq!(
            events(&mut r).unwrap(),
            vec![Event::Ping(Bytes::new()), Event::Binary(Bytes::from_static(b"abcdefg"))]
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            // Unmasked.
            (vec![0x82, 0x01, 0x00], WsError::Protocol("client frames must be masked")),
            // RSV1 without an extension.
            (vec![0xC2, 0x80, 0, 0, 0, 0], WsError::Protocol("reserved bits set without an extension")),
            (client_frame(true, 0x3, b"", MASK), WsError::Protocol("reserved opcode")),
            (client_frame(false, OP_PING, b"", MASK), WsError::Protocol("fragmented control frame")),
            (client_frame(true, OP_PING, &[0; 126], MASK), WsError::Protocol("control frame longer than 125 bytes")),
            (client_frame(true, OP_CONTINUATION, b"x", MASK), WsError::Protocol("continuation without a message")),
            (client_frame(true, OP_CLOSE, &[3], MASK), WsError::Protocol("close payload of one byte")),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe], MASK), WsError::Utf8),
            (client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff], MASK), WsError::Utf8),
        ];
        for (wire, want) in cases {
            let mut r = FrameReader::new(1024);
            r.push(&wire);
            assert_eq!(r.next_event(), Err(want), "{wire:02x?}");
        }
        let mut r = FrameReader::new(1024);
        r.push(&client_frame(false, OP_TEXT, b"a", MASK));
        r.push(&client_frame(true, OP_BINARY, b"b", MASK));
        assert_eq!(r.next_event(), Err(WsError::Protocol("new message inside a fragmented one")));
    }

    #[test]
    fn the_size_limit_holds_from_the_header_and_across_fragments() {
        // Refused from the header alone: no need to buffer the payload.
        let mut r = FrameReader::new(100);
        r.push(&client_frame(true, OP_BINARY, &[0; 101], MASK)[..12]);
        assert_eq!(r.next_event(), Err(WsError::TooLarge));
        let mut r = FrameReader::new(100);
        r.push(&client_frame(true, OP_BINARY, &[0; 100], MASK));
        assert!(matches!(r.next_event(), Ok(Some(Event::Binary(b))) if b.len() == 100));
        let mut r = FrameReader::new(100);
        r.push(&client_frame(false, OP_BINARY, &[0; 60], MASK));
        r.push(&client_frame(true, OP_CONTINUATION, &[0; 41], MASK));
        assert_eq!(r.next_event(), Err(WsError::TooLarge));
        // A length with the top bit set.
        let mut r = FrameReader::new(100);
        r.push(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.next_event(), Err(WsError::Protocol("payload length with the top bit set")));
    }

    #[test]
    fn after_too_large_the_rest_of_the_message_is_dropped_and_the_close_still_read() {
        let big = client_frame(true, OP_BINARY, &vec![7; 10_000], MASK);
        let close = client_frame(true, OP_CLOSE, &[0x03, 0xE8], MASK);
        let mut r = FrameReader::new(100);
        r.push(&big[..50]);
        assert_eq!(r.next_event(), Err(WsError::TooLarge));
        // The rest arrives in pieces; none of it is kept.
        for chunk in big[50..].chunks(1000) {
            r.push(chunk);
            assert_eq!(r.next_event(), Ok(None));
            assert!(r.buf.capacity() < 8192, "the refused frame is not buffered: {}", r.buf.capacity());
        }
        r.push(&close);
        assert_eq!(r.next_event(), Ok(Some(Event::Close(Some(1000)))));

        // A fragmented message over the limit: every continuation goes,
        // a ping in between is still answered, and the close is read.
        let mut r = FrameReader::new(100);
        r.push(&client_frame(false, OP_BINARY, &[1; 60], MASK));
        r.push(&client_frame(false, OP_CONTINUATION, &[2; 60], MASK));
        assert_eq!(r.next_event(), Err(WsError::TooLarge));
        r.push(&client_frame(false, OP_CONTINUATION, &[3; 500], MASK));
        r.push(&client_frame(true, OP_PING, b"p", MASK));
        assert!(matches!(r.next_event(), Ok(Some(Event::Ping(b))) if &b[..] == b"p"));
        r.push(&client_frame(true, OP_CONTINUATION, &[4; 500], MASK));
        r.push(&close);
        assert_eq!(r.next_event(), Ok(Some(Event::Close(Some(1000)))));
        // And the reader is whole again afterwards.
        r.push(&client_frame(true, OP_BINARY, &[5; 10], MASK));
        assert!(matches!(r.next_event(), Ok(Some(Event::Binary(b))) if b.len() == 10));
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut r = FrameReader::new(1024);
        r.push(&client_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'], MASK));
        r.push(&client_frame(true, OP_CLOSE, b"", MASK));
        assert_eq!(events(&mut r).unwrap(), vec![Event::Close(Some(1000)), Event::Close(None)]);
    }

    #[test]
    fn the_buffer_is_released_when_idle() {
        let mut r = FrameReader::new(1024);
        r.read_buf();
        assert!(r.buf.capacity() > 0);
        r.release();
        assert_eq!(r.buf.capacity(), 0);
        r.push(&client_frame(true, OP_BINARY, b"abc", MASK)[..3]);
        r.release();
        assert_eq!(r.buf.len(), 3, "bytes in flight are kept");
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        assert_eq!(frame_header(OP_BINARY, 5), ([0x82, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(frame_header(OP_BINARY, 125).1, 2);
        let (h, n) = frame_header(OP_BINARY, 126);
        assert_eq!((&h[..n as usize], n), (&[0x82, 126, 0, 126][..], 4));
        let (h, n) = frame_header(OP_CLOSE, 70_000);
        assert_eq!(&h[..n as usize], &[0x88, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    /// A connected pair: the server side as a `Peer`, the client as a plain stream.
    /// A peer over TLS (the listener's own acceptor, a self-signed
    /// certificate) and the client's end, handshake done.
    async fn tls_pair(limit: usize) -> (Peer, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
        let dir = std::env::temp_dir().join(format!("wiresocket-ws-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("c.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), made.signing_key.serialize_pem()).unwrap();
        let tls = crate::tls::TlsListener::new(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(
            async { connector.connect(name, tokio::net::TcpStream::connect(addr).await.unwrap()).await.unwrap() },
            async { tls.acceptor().accept(listener.accept().await.unwrap().0).await.unwrap() }
        );
        let (tcp, session) = server.into_inner();
        (Peer::new(Socket::tls(tcp, session), limit), client)
    }

    /// Whatever a send leaves unwritten (a queued frame, or TLS records the
    /// socket refused) wakes the connection's task, which then flushes it;
    /// nothing is left behind for the client that reads later.
    #[tokio::test]
    async fn over_tls_a_send_leaving_records_behind_wakes_the_task_and_all_arrives() {
        use tokio::io::AsyncReadExt;
        let (peer, mut client) = tls_pair(100_000).await;
        let payload = Bytes::from(vec![7u8; 16 * 1024]);
        let mut sent = 0usize;
        let mut left_behind = false;
        // The client reads nothing: the socket fills, records stay in the session.
        while sent < 4000 && !left_behind {
            peer.send_binary(payload.clone(), SLOW).unwrap();
            sent += 1;
            let behind = peer.wants_write();
            let woken = tokio::time::timeout(std::time::Duration::ZERO, peer.woken()).await.is_ok();
            assert_eq!(woken, behind, "send {sent}: something left behind must wake the task, and only then");
            left_behind = behind;
        }
        assert!(left_behind, "the socket never filled in {sent} sends");
        // The frame went into the session whole; its records wait there.
        assert!(lock(&peer.out).queue.is_empty() && peer.socket().pending_out());
        // The task's part: flush whenever writable, until nothing is left,
        // while the client reads everything.
        let flushing = async {
            loop {
                match peer.flush().unwrap() {
                    Flushed::All if !peer.wants_write() => return,
                    _ => peer.socket().writable().await.unwrap(),
                }
            }
        };
        let want = sent * (payload.len() + 4);
        let reading = async {
            let mut got = vec![0u8; want];
            client.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) =
            tokio::time::timeout(std::time::Duration::from_secs(30), async { tokio::join!(flushing, reading) })
                .await
                .expect("everything sent reaches the client");
        for frame in got.chunks(payload.len() + 4) {
            assert_eq!(&frame[..4], &[0x82, 126, 0x40, 0x00]);
            assert!(frame[4..].iter().all(|&b| b == 7));
        }
    }

    async fn pair(limit: usize) -> (Peer, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Peer::new(server, limit), client)
    }

    const SLOW: CloseReason = CloseReason { code: 1013, reason: "slow" };

    /// Splits server frames (unmasked) off the front of `buf`.
    fn parse_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        loop {
            if buf.len() < 2 {
                return frames;
            }
            let (len, at) = match buf[1] {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => return frames,
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                return frames;
            }
            frames.push((buf[0], buf[at..at + len].to_vec()));
            buf.drain(..at + len);
        }
    }

    /// Reads server frames from the client side until `n` arrived.
    async fn read_frames(client: &mut tokio::net::TcpStream, n: usize) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        while frames.len() < n {
            let mut chunk = [0u8; 65536];
            let got = client.read(&mut chunk).await.unwrap();
            assert!(got > 0, "eof after {} frames", frames.len());
            buf.extend_from_slice(&chunk[..got]);
            frames.extend(parse_frames(&mut buf));
        }
        frames
    }

    /// Bytes that arrive while a short read is being handled must still
    /// wake the reader. Each round the client sends a byte, waits a varying
    /// moment, sends a second one, and waits until the server has read both
    /// (so a lost wake-up cannot be rescued by later bytes). With readiness
    /// cleared in a second step after the read, a run of this stalled about
    /// one time in three.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_reads_never_lose_a_wakeup() {
        const ROUNDS: usize = 3000;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ack, acked) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client.set_nodelay(true).unwrap();
            for round in 0..ROUNDS {
                client.write_all(&[1]).unwrap();
                for _ in 0..(round % 97) * 20 {
                    std::hint::spin_loop();
                }
                client.write_all(&[2]).unwrap();
                if acked.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
                    return Err(round);
                }
            }
            Ok(client)
        });
        let (server, _) = listener.accept().await.unwrap();
        let server = Socket::from(server);
        let mut buf = BytesMut::new();
        let read_all = async {
            for _ in 0..ROUNDS {
                let mut got = 0;
                while got < 2 {
                    server.readable().await.unwrap();
                    buf.clear();
                    buf.reserve(READ_CHUNK);
                    match server.read_some(&mut buf) {
                        // The client gave up waiting (see below).
                        Ok(0) => return,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                if ack.send(()).is_err() {
                    return;
                }
            }
        };
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), read_all).await;
        let stalled = writer.join().unwrap().err();
        assert!(done.is_ok() && stalled.is_none(), "the reader stalled in round {stalled:?} with a byte unread");
    }

    #[tokio::test]
    async fn sends_go_straight_to_the_socket_in_order() {
        let (peer, mut client) = pair(8).await;
        for i in 0..20u8 {
            peer.send_binary(Bytes::from(vec![i; 3]), SLOW).unwrap();
        }
        peer.ping();
        assert!(!peer.wants_write(), "a socket with room takes frames at once");
        let frames = read_frames(&mut client, 21).await;
        for (i, (op, payload)) in frames.iter().take(20).enumerate() {
            assert_eq!((*op, payload.as_slice()), (0x82, &[i as u8; 3][..]));
        }
        assert_eq!(frames[20], (0x89, vec![]));
    }

    #[tokio::test]
    async fn a_full_socket_queues_then_drains_and_a_slow_peer_is_closed() {
        let (peer, mut client) = pair(4).await;
        let big = Bytes::from(vec![7u8; 1 << 20]);
        // Fill the socket until frames queue, then up to the limit.
        let mut sent = 0;
        while !peer.wants_write() {
            peer.send_binary(big.clone(), SLOW).unwrap();
            sent += 1;
        }
        // The partly written frame counts: three more reach the limit of 4.
        for _ in 0..3 {
            peer.send_binary(big.clone(), SLOW).unwrap();
            sent += 1;
        }
        assert_eq!(peer.send_binary(big.clone(), SLOW), Err(Refused::Slow));
        assert_eq!(peer.send_binary(big.clone(), SLOW), Err(Refused::Closed));
        assert_eq!(peer.closing(), Some(SLOW));
        // The client reads: the frame that was partly written completes,
        // the unstarted ones were dropped, and the close frame follows.
        let drain = async move {
            loop {
                match peer.flush().unwrap() {
                    Flushed::All => break,
                    Flushed::Partly => peer.socket().writable().await.unwrap(),
                }
            }
            assert!(peer.close_sent());
            // Dropping the peer closes the socket: the client sees the end.
        };
        let read = async {
            use tokio::io::AsyncReadExt;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            parse_frames(&mut all)
        };
        let ((), frames) = tokio::join!(drain, read);
        let (last, data) = frames.split_last().unwrap();
        assert_eq!(last.0, 0x88);
        assert_eq!(&last.1[..2], &1013u16.to_be_bytes());
        assert!(data.iter().all(|(op, p)| *op == 0x82 && p.len() == 1 << 20), "every data frame is whole");
        assert!(data.len() < sent, "queued frames not yet started were dropped");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_too() {
        let (peer, _client) = pair(usize::MAX).await;
        let big = Bytes::from(vec![1u8; 1 << 20]);
        while !peer.wants_write() {
            peer.send_binary(big.clone(), SLOW).unwrap();
        }
        let mut queued = 1;
        while peer.send_binary(big.clone(), SLOW).is_ok() {
            queued += 1;
            assert!(queued <= QUEUE_BYTES >> 20, "more than {QUEUE_BYTES} bytes queued");
        }
        // 63 frames of 1 MiB and a 4-byte header fit in 64 MiB, 64 do not.
        assert_eq!(queued, (QUEUE_BYTES >> 20) - 1, "the bound is the byte limit");
        assert_eq!(peer.closing(), Some(SLOW));
        // An empty queue takes one frame of any size.
        let (peer, _client) = pair(1).await;
        peer.send_binary(Bytes::from(vec![0u8; QUEUE_BYTES + 1]), SLOW).unwrap();
    }
}
