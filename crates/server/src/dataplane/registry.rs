//! Every live data-plane connection of this node, with what authorised it,
//! so that a key revocation, a revoked token, a deleted app or document, or a
//! rotated secret can close exactly the affected sockets at once.

use dashmap::DashMap;
use domain::ids::{AppId, TenantId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use store::DocKey;
use tokio::sync::mpsc;

/// Why a connection is being closed: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tenant: TenantId,
    pub app: AppId,
    pub doc: DocKey,
    /// What authorised it (updated when the client refreshes in-band).
    pub kid: String,
    pub jti: String,
    pub iat: i64,
}

struct Entry {
    info: ConnInfo,
    close: mpsc::Sender<CloseReason>,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    conns: DashMap<u64, Entry>,
}

impl Registry {
    pub fn insert(&self, info: ConnInfo, close: mpsc::Sender<CloseReason>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.insert(id, Entry { info, close });
        id
    }

    pub fn remove(&self, id: u64) {
        self.conns.remove(&id);
    }

    /// After an in-band token refresh.
    pub fn update(&self, id: u64, kid: String, jti: String, iat: i64) {
        if let Some(mut e) = self.conns.get_mut(&id) {
            e.info.kid = kid;
            e.info.jti = jti;
            e.info.iat = iat;
        }
    }

    /// Asks every matching connection to close; answers how many matched.
    pub fn close_where(&self, reason: CloseReason, pred: impl Fn(&ConnInfo) -> bool) -> usize {
        let mut n = 0;
        for e in &self.conns {
            if pred(&e.info) {
                // A full control queue means a close is already on its way.
                let _ = e.close.try_send(reason);
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }
}
