//! Plan limits at the edge, per app: concurrent connections, documents, and
//! operations per minute (GCRA, via `governor`). Limits follow a plan change
//! at once: the change handler calls [`Limits::set_plan`].
//!
//! These counters are per node; a fleet shares them through Redis.

use dashmap::DashMap;
use domain::ids::AppId;
use domain::plan::PlanId;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct AppLimits {
    plan: Mutex<PlanId>,
    connections: AtomicU64,
    ops: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
    /// Serialises the creation of new documents so the document limit holds
    /// under concurrent first writes.
    pub creating: tokio::sync::Mutex<()>,
}

fn ops_limiter(plan: PlanId) -> Option<Arc<DefaultDirectRateLimiter>> {
    let per_minute = plan.plan().ops_per_minute?;
    let n = NonZeroU32::new(u32::try_from(per_minute).unwrap_or(u32::MAX))?;
    Some(Arc::new(RateLimiter::direct(Quota::per_minute(n))))
}

impl AppLimits {
    fn new(plan: PlanId) -> Self {
        Self {
            plan: Mutex::new(plan),
            connections: AtomicU64::new(0),
            ops: Mutex::new(ops_limiter(plan)),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn plan(&self) -> PlanId {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One operation (a write); false when the plan's rate is exceeded.
    pub fn check_op(&self) -> bool {
        let limiter = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        limiter.is_none_or(|l| l.check().is_ok())
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Held for as long as a connection is open.
pub struct ConnectionPermit(Arc<AppLimits>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
pub struct Limits {
    apps: DashMap<AppId, Arc<AppLimits>>,
}

impl Limits {
    /// The app's limiter, created with `plan` if this node has not seen the app yet.
    pub fn app(&self, app: AppId, plan: PlanId) -> Arc<AppLimits> {
        self.apps.entry(app).or_insert_with(|| Arc::new(AppLimits::new(plan))).clone()
    }

    pub fn set_plan(&self, app: AppId, plan: PlanId) {
        if let Some(l) = self.apps.get(&app) {
            *l.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
            *l.ops.lock().unwrap_or_else(|e| e.into_inner()) = ops_limiter(plan);
        }
    }

    pub fn forget(&self, app: AppId) {
        self.apps.remove(&app);
    }

    /// A connection slot, or None when the plan's connection limit is reached.
    pub fn try_connect(&self, app: AppId, plan: PlanId) -> Option<ConnectionPermit> {
        let limits = self.app(app, plan);
        let max = limits.plan().plan().max_connections;
        let previous = limits.connections.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|m| previous >= m) {
            limits.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionPermit(limits))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connection_limit_and_release() {
        let limits = Limits::default();
        let app = AppId::new();
        let permits: Vec<_> = (0..20).map(|_| limits.try_connect(app, PlanId::Free).unwrap()).collect();
        assert!(limits.try_connect(app, PlanId::Free).is_none());
        drop(permits);
        assert!(limits.try_connect(app, PlanId::Free).is_some());
    }

    #[test]
    fn ops_follow_plan_changes() {
        let limits = Limits::default();
        let app = AppId::new();
        let l = limits.app(app, PlanId::Free);
        let allowed = (0..1100).filter(|_| l.check_op()).count();
        assert_eq!(allowed, 1000);
        limits.set_plan(app, PlanId::Enterprise);
        assert!((0..10_000).all(|_| l.check_op()));
        limits.set_plan(app, PlanId::Starter);
        assert_eq!(l.plan(), PlanId::Starter);
        assert!(l.check_op());
    }
}
