//! WireSocket's Yjs sync core, free of transport: bytes in, bytes out through
//! callbacks. No sockets, no async runtime. The server owns the WebSocket,
//! persistence and limits, and drives a [`Room`] per loaded document.
//!
//! # Layout
//! - [`room`]: [`Room`], one document with its awareness and connections:
//!   handshake, message handling, write classification, fan-out, counters
//!   ([`RoomStats`]); its lock order and what happens if yrs panics.
//! - `wire`: the y-protocols framing (sync, awareness, query awareness) and
//!   strict lib0 readers for state vectors and awareness updates.
//! - `guard`: structural checks run on every Yjs update before yrs decodes
//!   it, for inputs that make yrs 0.28.1 panic or abort (each one listed
//!   there, found by fuzzing).
//! - [`fault`] (feature `fault-injection`, tests only): makes chosen
//!   updates panic inside the apply, to test the damage path.
//! - `reuse`: the one check that needs the doc: an update reusing ids the
//!   doc already has for other content is refused.
//!
//! # Durability
//! An update is persisted before any other client receives it, so a room's
//! doc only ever holds persisted updates. [`Room::handle`] never applies a
//! write: it answers [`Outcome::Persist`], the server appends the bytes to
//! its store, then calls [`Room::apply_persisted`], which applies and
//! broadcasts. A client that connects in between is served persisted state
//! only. Compaction snapshots come from [`Room::try_encode_state`], which
//! fails rather than return a partial state.
//!
//! # Protocol
//! What stock `y-websocket` providers speak (message 0 sync: step 1, step 2,
//! update; 1 awareness; 3 query awareness; lib0 varints). Each WebSocket
//! message carries one protocol message; unknown message types are ignored,
//! malformed bytes are an error (the server closes that connection).

#[cfg(feature = "fault-injection")]
pub mod fault;
mod guard;
mod reuse;
pub mod room;
mod wire;

use std::sync::Arc;

pub use room::{Room, RoomStats};

/// Identifies a connection within its room.
pub type ConnId = u64;

/// Bytes for one connection; returns false if the connection cannot take
/// them (slow consumer): the room then drops that connection from its
/// fan-out and reports it via [`Room::take_dropped`] so the server closes it.
///
/// Called with room locks held: it must not block and must not call back
/// into the room.
pub type Sender = Arc<dyn Fn(bytes::Bytes) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The message does not follow the protocol framing (or its state
    /// vector or awareness update cannot be read).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A Yjs update that cannot be decoded, or that this server refuses to
    /// apply (see `guard`).
    #[error("invalid update: {0}")]
    BadUpdate(String),
    /// An update that reuses ids the document already has for other
    /// content (see `reuse`): refused, nothing of it applied.
    #[error("conflicting update: {0}")]
    Conflict(String),
    /// The room is damaged (see [`Room::is_damaged`]): nothing is wrong
    /// with the message; the document must be reloaded.
    #[error("the document must be reloaded")]
    Damaged,
}

/// What the server must do after [`Room::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing further (replies, if any, were already sent to this
    /// connection via its sender; awareness already relayed).
    Done,
    /// A write: persist these bytes (a v1 update, exactly as received), then
    /// call `apply_persisted(update, Some(conn))`.
    Persist(Vec<u8>),
    /// An `access: r` connection attempted a write: the server closes it
    /// with 4403. Nothing was applied.
    Forbidden,
}
