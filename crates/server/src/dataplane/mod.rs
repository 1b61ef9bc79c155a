//! The data plane: Yjs documents served over WebSocket to stock clients.
//!
//! - [`docs`]: rooms loaded lazily from the store, unloaded when idle, and
//!   compacted in the background; the group-commit persister.
//! - [`registry`]: live connections, so revocations and deletions can close them.
//! - [`limits`]: per-app plan limits (connections, documents, operations per minute).
//! - [`node`]: this process as a node: its id, drain, heartbeat to the registry.
//! - [`ws`], [`socket`]: WebSocket framing and fan-out on a plain or TLS socket.
//!
//! Durability: a write is appended to the store before the room applies it,
//! so a room only ever holds persisted state and no client can receive an
//! update that a crash could lose.

pub mod docs;
pub mod limits;
pub mod node;
pub mod registry;
pub mod socket;
pub mod ws;

/// Why a connection is being closed: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

/// WebSocket close codes of the contract.
pub mod close {
    pub const TOKEN: u16 = 4401;
    pub const READ_ONLY: u16 = 4403;
    pub const DELETED: u16 = 4404;
    /// An update reusing ids the document already has for other content
    /// (a forged client id): final, so the provider does not resend it.
    pub const CONFLICT: u16 = 4409;
    pub const TOO_LARGE: u16 = 4413;
    pub const LIMIT: u16 = 4429;
    pub const DRAINING: u16 = 4503;
    /// Not final for the stock provider: it reconnects and resyncs.
    pub const TRY_AGAIN: u16 = 1013;
    pub const MALFORMED: u16 = 1007;
    pub const INTERNAL: u16 = 1011;
}

/// Handles to the metrics touched once per message, looked up once: the
/// `counter!`/`histogram!` macros look their key up in the registry on
/// every call, and these run for every frame in and every delivery out.
pub struct HotMetrics {
    pub messages_in: metrics::Counter,
    pub bytes_in: metrics::Counter,
    pub messages_out: metrics::Counter,
    pub bytes_out: metrics::Counter,
    pub fanout_seconds: metrics::Histogram,
    pub persist_batch_seconds: metrics::Histogram,
}

/// The hot-path metric handles. Bound to the recorder installed when first
/// called, which [`crate::observe::recorder`] does before any connection.
pub fn hot() -> &'static HotMetrics {
    static HOT: std::sync::LazyLock<HotMetrics> = std::sync::LazyLock::new(|| HotMetrics {
        messages_in: metrics::counter!("wiresocket_messages_in_total"),
        bytes_in: metrics::counter!("wiresocket_bytes_in_total"),
        messages_out: metrics::counter!("wiresocket_messages_out_total"),
        bytes_out: metrics::counter!("wiresocket_bytes_out_total"),
        fanout_seconds: metrics::histogram!("wiresocket_fanout_seconds"),
        persist_batch_seconds: metrics::histogram!("wiresocket_persist_batch_seconds"),
    });
    &HOT
}
