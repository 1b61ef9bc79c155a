//! The data plane: Yjs documents served over WebSocket to stock clients.
//!
//! - [`docs`]: rooms loaded lazily from the store, unloaded when idle, and
//!   compacted in the background; the group-commit persister.
//! - [`registry`]: live connections, so revocations and deletions can close them.
//! - [`limits`]: per-app plan limits (connections, documents, operations per minute).
//!
//! Durability: a write is appended to the store before the room applies it,
//! so a room only ever holds persisted state and no client can receive an
//! update that a crash could lose.

pub mod docs;
pub mod limits;
pub mod registry;

/// WebSocket close codes of the contract.
pub mod close {
    pub const TOKEN: u16 = 4401;
    pub const READ_ONLY: u16 = 4403;
    pub const DELETED: u16 = 4404;
    pub const TOO_LARGE: u16 = 4413;
    pub const LIMIT: u16 = 4429;
    pub const DRAINING: u16 = 4503;
    /// Not final for the stock provider: it reconnects and resyncs.
    pub const TRY_AGAIN: u16 = 1013;
    pub const MALFORMED: u16 = 1007;
    pub const INTERNAL: u16 = 1011;
}
