//! What every WebSocket connect needs, without a database round trip:
//! the app a token names ([`AppCache`]) and the access-token deny-list
//! ([`DenyList`]).
//!
//! Both are bounded in staleness by [`REFRESH`] (one second, the same bound
//! the contract gives revocation), so a change made by another control-plane
//! process is seen within it; changes made through this process take effect
//! at once (the handlers invalidate or insert directly).

use dashmap::DashMap;
use domain::ids::AppId;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use store::{AppRecord, Store};
use time::OffsetDateTime;

/// Longest a cached answer is trusted.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Read-through cache of app records by id, with a short TTL. Only hits are
/// cached: a missing app is looked up every time (ids come from verified
/// tokens, so misses cannot be sprayed by strangers).
#[derive(Default)]
pub struct AppCache {
    apps: DashMap<AppId, (AppRecord, Instant)>,
}

impl AppCache {
    pub async fn get(&self, store: &dyn Store, id: AppId) -> store::Result<Option<AppRecord>> {
        if let Some(hit) = self.apps.get(&id)
            && hit.1.elapsed() < REFRESH
        {
            return Ok(Some(hit.0.clone()));
        }
        let app = store.get_app_by_id(id).await?;
        match &app {
            Some(a) => {
                self.apps.insert(id, (a.clone(), Instant::now()));
            }
            None => {
                self.apps.remove(&id);
            }
        }
        Ok(app)
    }

    /// Call after changing or deleting the app.
    pub fn invalidate(&self, id: AppId) {
        self.apps.remove(&id);
    }

    /// Drops entries past their TTL (they would be refetched anyway), so
    /// apps that stopped connecting do not stay in memory.
    pub fn sweep(&self) {
        self.apps.retain(|_, (_, at)| at.elapsed() < REFRESH);
    }
}

/// An in-memory mirror of the store's deny-list of access-token ids, which is
/// short (revoked tokens that have not expired yet). Reloaded whole every
/// [`REFRESH`]; a revocation through this process is inserted at once.
pub struct DenyList {
    inner: RwLock<Mirror>,
}

struct Mirror {
    /// jti → expiry (Unix seconds).
    denied: HashMap<String, i64>,
    loaded: bool,
}

impl Default for DenyList {
    fn default() -> Self {
        Self { inner: RwLock::new(Mirror { denied: HashMap::new(), loaded: false }) }
    }
}

impl DenyList {
    /// Whether `jti` is denied at `now`. Before the first load succeeded,
    /// answers from the store (never "not denied" on a guess).
    pub async fn is_denied(&self, store: &dyn Store, jti: &str, now: OffsetDateTime) -> store::Result<bool> {
        {
            let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if m.loaded {
                return Ok(m.denied.get(jti).is_some_and(|&exp| exp > now.unix_timestamp()));
            }
        }
        store.is_jti_denied(jti, now).await
    }

    /// Records a denial made through this process (after the store has it).
    pub fn insert(&self, jti: &str, expires_at: OffsetDateTime) {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let exp = m.denied.entry(jti.to_owned()).or_insert(i64::MIN);
        *exp = (*exp).max(expires_at.unix_timestamp());
    }

    /// Replaces the mirror with the store's list. On error the old mirror
    /// stays (and is reported): a database hiccup must not unrevoke tokens.
    pub async fn reload(&self, store: &dyn Store, now: OffsetDateTime) -> store::Result<()> {
        let listed = store.list_denied_jtis(now).await?;
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        // Entries inserted locally while the query ran are kept if still in force.
        let local: Vec<(String, i64)> =
            m.denied.iter().filter(|(_, e)| **e > now.unix_timestamp()).map(|(j, e)| (j.clone(), *e)).collect();
        m.denied = listed.into_iter().map(|(j, e)| (j, e.unix_timestamp())).collect();
        for (j, e) in local {
            let exp = m.denied.entry(j).or_insert(i64::MIN);
            *exp = (*exp).max(e);
        }
        m.loaded = true;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).denied.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps the caches fresh until the state is dropped.
pub async fn refresh_loop(state: std::sync::Weak<crate::state::Inner>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = state.denied.reload(state.store.as_ref(), state.clock.now()).await {
            tracing::warn!(error = %e, "reloading the deny-list failed; keeping the last copy");
        }
        state.apps.sweep();
    }
}
