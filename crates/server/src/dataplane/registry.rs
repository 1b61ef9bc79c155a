//! Every live data-plane connection of this node, with what authorised it,
//! so that a key revocation, a revoked token, a deleted app or document, or a
//! rotated secret can close exactly the affected sockets at once; and the
//! one supervisor that closes connections whose token expired and pings
//! quiet ones (instead of timers in every connection).

use super::close;
use super::ws::Peer;
use dashmap::DashMap;
use domain::clock::Clock;
use domain::ids::{AppId, TenantId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use store::DocKey;

pub use super::CloseReason;

/// A connection that sent nothing (pongs included) for this long is pinged…
pub const PING_AFTER_SECS: u64 = 30;
/// …and one silent for this long is gone.
pub const SILENCE_LIMIT_SECS: u64 = 75;
/// How often the supervisor looks at every connection (the bound on how
/// late an expired token's connection is closed).
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tenant: TenantId,
    pub app: AppId,
    pub doc: DocKey,
    /// What authorised it (updated when the client refreshes in-band).
    pub kid: String,
    pub jti: String,
    pub iat: i64,
    /// When the token expires (unix seconds).
    pub exp: i64,
}

struct Entry {
    info: ConnInfo,
    peer: Arc<Peer>,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    conns: DashMap<u64, Entry>,
}

impl Registry {
    pub fn insert(&self, info: ConnInfo, peer: Arc<Peer>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.insert(id, Entry { info, peer });
        id
    }

    pub fn remove(&self, id: u64) {
        self.conns.remove(&id);
    }

    /// After an in-band token refresh.
    pub fn update(&self, id: u64, kid: String, jti: String, iat: i64, exp: i64) {
        if let Some(mut e) = self.conns.get_mut(&id) {
            e.info.kid = kid;
            e.info.jti = jti;
            e.info.iat = iat;
            e.info.exp = exp;
        }
    }

    /// Closes every matching connection; answers how many matched.
    pub fn close_where(&self, reason: CloseReason, pred: impl Fn(&ConnInfo) -> bool) -> usize {
        let mut n = 0;
        for e in &self.conns {
            if pred(&e.info) {
                // The first close of a connection wins.
                e.peer.close(reason);
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

    /// One look at every connection: expired tokens are closed with 4401,
    /// connections silent past the limit with 1013 (they reconnect), and
    /// quiet ones pinged, each at most once per `PING_AFTER_SECS`
    /// (staggered by id). `tick` counts calls; `now_mono` is
    /// [`super::ws::mono_secs`] (a parameter, so tests can move it).
    pub fn supervise_once(&self, now_unix: i64, now_mono: u64, tick: u64) {
        for e in &self.conns {
            let peer = &e.peer;
            if now_unix >= e.info.exp {
                peer.close(CloseReason { code: close::TOKEN, reason: "token expired" });
                continue;
            }
            let silent = peer.silent_for(now_mono);
            if silent >= SILENCE_LIMIT_SECS {
                peer.close(CloseReason { code: close::TRY_AGAIN, reason: "no keepalive" });
            } else if silent >= PING_AFTER_SECS && (tick + *e.key()).is_multiple_of(PING_AFTER_SECS) {
                peer.ping();
            }
        }
    }

    /// Runs [`Registry::supervise_once`] every second until the registry is dropped.
    pub async fn supervise(registry: Weak<Self>, clock: Arc<dyn Clock>) {
        let mut every = tokio::time::interval(SUPERVISE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0u64.. {
            every.tick().await;
            let Some(registry) = registry.upgrade() else { return };
            registry.supervise_once(clock.now().unix_timestamp(), super::ws::mono_secs(), tick);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use domain::ids::{AppId, TenantId};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn connection(registry: &Registry, exp: i64) -> (Arc<Peer>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let peer = Arc::new(Peer::new(server, 16));
        let info = ConnInfo {
            tenant: TenantId::new(),
            app: AppId::new(),
            doc: DocKey { app_id: AppId::new(), name: "d".into() },
            kid: "k".into(),
            jti: "j".into(),
            iat: 0,
            exp,
        };
        registry.insert(info, peer.clone());
        (peer, client)
    }

    /// The first frame the client receives: (first header byte, payload).
    async fn frame(client: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
        client.read_exact(&mut payload).await.unwrap();
        (head[0], payload)
    }

    #[tokio::test]
    async fn the_supervisor_closes_expired_and_silent_connections_and_pings_quiet_ones() {
        let registry = Registry::default();
        let (expired, mut expired_client) = connection(&registry, 1_000).await;
        let (quiet, mut quiet_client) = connection(&registry, 5_000).await;
        let start = super::super::ws::mono_secs();
        // At unix time 1000, 40 s later: the first token has expired; the
        // others are quiet, and each is pinged on its own tick of 30.
        for tick in 0..PING_AFTER_SECS {
            registry.supervise_once(1_000, start + 40, tick);
        }
        assert_eq!(expired.closing().map(|c| c.code), Some(close::TOKEN));
        let (op, payload) = frame(&mut expired_client).await;
        assert_eq!((op, &payload[..2]), (0x88, &close::TOKEN.to_be_bytes()[..]));
        assert_eq!(frame(&mut quiet_client).await, (0x89, vec![]), "a quiet connection is pinged");
        assert_eq!(quiet.closing(), None);
        // Heard from again, it is left alone; past the silence limit it is
        // closed to reconnect.
        quiet.touch();
        registry.supervise_once(1_000, super::super::ws::mono_secs() + 1, 0);
        assert_eq!(quiet.closing(), None);
        registry.supervise_once(1_000, super::super::ws::mono_secs() + SILENCE_LIMIT_SECS, 0);
        assert_eq!(quiet.closing().map(|c| c.code), Some(close::TRY_AGAIN));
    }
}
