//! The `Events` service: from "this happened" to jobs in the durable outbox.
//!
//! An event rides with its change (the transactional outbox): the route
//! builds it with [`Events::event`] (body serialised once, event id a
//! UUIDv7) and hands it to the store call that makes the change, which
//! writes both in one transaction; then it calls [`Events::committed`].
//! The dispatcher's loop runs [`Events::fan_out`] before each claim: for
//! each outbox row it looks up the tenant's webhooks, keeps those the event
//! reaches and that subscribed to it, and enqueues one job per webhook
//! while removing the row, in one transaction. A crash between the change
//! and the fan-out leaves the row, fanned out at the next start. Nothing is
//! sent from here, so a slow receiver never slows the request that caused
//! the event.
//!
//! `document.updated` is debounced: the persister calls
//! [`Events::persisted`] for every durable write, which only bumps a counter
//! in a `DashMap` (and, for the first write of a window, queues the window's
//! deadline to one timer task). At the deadline the timer takes the count
//! and emits one event `{doc, app_id, updates: n}`. No store work happens on
//! the write path; a window still open at shutdown is flushed by
//! `run_until`, one that is open when the process dies is lost (the
//! document itself is not). Whether an app has any webhook for its
//! `document.updated` is cached per app (for [`SUBSCRIBERS_TTL`], dropped at
//! once when this process changes a webhook), so busy documents of tenants
//! without webhooks cost no store reads at all.

use crate::dataplane::docs::WriteObserver;
use crate::webhooks::{PING, TargetPolicy, event_body, reaches, with_owner};
use dashmap::DashMap;
use domain::clock::Clock;
use domain::ids::{AppId, TenantId};
use domain::webhook::{EventFilter, WebhookEvent};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use store::AppRecord;
use store::{DocKey, JobStatus, OutboxEvent, Store, StoreError, WebhookJobRecord, WebhookRecord};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How long "this app has (no) `document.updated` webhooks" is trusted; it
/// bounds how late a webhook created through another node starts getting
/// document events.
pub const SUBSCRIBERS_TTL: Duration = Duration::from_secs(10);
/// Outbox rows read per store call by [`Events::fan_out`].
const FAN_OUT_BATCH: u32 = 100;
/// Apps remembered in that cache before stale entries are swept.
const SUBSCRIBERS_SWEEP_AT: usize = 10_000;

pub struct Events {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Wakes the dispatcher when jobs were enqueued.
    wake: Arc<Notify>,
    /// Where deliveries may go (also checked by the routes on create/update).
    pub targets: TargetPolicy,
    window: Duration,
    /// Writes per document in its open `document.updated` window.
    pending: DashMap<DocKey, u64>,
    /// Deadlines of newly opened windows, in order, to the timer task.
    windows: mpsc::UnboundedSender<(Instant, DocKey)>,
    /// Per app: its tenant if some webhook takes the app's `document.updated`.
    doc_subscribers: DashMap<AppId, (Option<TenantId>, Instant)>,
}

impl Events {
    /// Starts the debounce timer; it stops when the service is dropped.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, targets: TargetPolicy, window: Duration) -> Arc<Self> {
        let (windows, rx) = mpsc::unbounded_channel();
        let events = Arc::new(Self {
            store,
            clock,
            wake: Arc::new(Notify::new()),
            targets,
            window,
            pending: DashMap::new(),
            windows,
            doc_subscribers: DashMap::new(),
        });
        tokio::spawn(close_windows(Arc::downgrade(&events), rx));
        events
    }

    /// What the dispatcher waits on besides its poll interval.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Tells the dispatcher to look for due jobs now (e.g. after a test
    /// moved the clock).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The outbox row of `event`, to hand to the store call that makes the
    /// change it reports. `app`: the app the event is about (`None` for
    /// tenant-wide events); `tenant_id` (and `app_id`) are added to `data`.
    pub fn event(
        &self,
        tenant: TenantId,
        app: Option<AppId>,
        event: WebhookEvent,
        data: serde_json::Value,
    ) -> Result<OutboxEvent, StoreError> {
        let (id, now) = (uuid::Uuid::now_v7().to_string(), self.clock.now());
        let data = with_owner(data, tenant, app);
        let payload = event_body(&id, event.as_str(), now, &data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(OutboxEvent {
            id,
            tenant_id: tenant,
            app_id: app,
            event_type: event.as_str().to_owned(),
            payload,
            created_at: now,
        })
    }

    /// Call once the change carrying events has committed: the dispatcher
    /// fans them out now rather than at its next poll.
    pub fn committed(&self) {
        self.wake.notify_one();
    }

    /// Stores an event that has no change of its own (a debounced
    /// `document.updated`). Errors are logged, never returned: the writes
    /// it reports have already happened.
    async fn emit(&self, tenant: TenantId, app: Option<AppId>, event: WebhookEvent, data: serde_json::Value) {
        let stored = match self.event(tenant, app, event, data) {
            Ok(row) => self.store.insert_events(std::slice::from_ref(&row)).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => self.committed(),
            Err(e) => tracing::error!(error = %e, event = event.as_str(), %tenant, "failed to store a webhook event"),
        }
    }

    /// Turns every event in the outbox into one job per webhook that takes
    /// it, each event with its jobs in one transaction; answers how many
    /// jobs were new. Run by the dispatcher before each claim (and so at
    /// start, for what a crash left behind).
    pub async fn fan_out(&self) -> Result<u64, StoreError> {
        let mut added = 0;
        loop {
            let batch = self.store.pending_events(FAN_OUT_BATCH).await?;
            let mut hooks: HashMap<TenantId, Vec<WebhookRecord>> = HashMap::new();
            for row in &batch {
                if let std::collections::hash_map::Entry::Vacant(slot) = hooks.entry(row.tenant_id) {
                    slot.insert(self.store.webhooks_for_tenant(row.tenant_id).await?);
                }
                let tenant_hooks = hooks.get(&row.tenant_id).map(Vec::as_slice).unwrap_or_default();
                let jobs = jobs_for(row, tenant_hooks);
                added += self.store.fan_out_event(&row.id, &jobs).await?;
            }
            if batch.len() < FAN_OUT_BATCH as usize {
                break;
            }
        }
        if added > 0 {
            metrics::counter!("wiresocket_webhook_jobs_enqueued_total").increment(added);
            self.wake.notify_one();
        }
        Ok(added)
    }

    /// Enqueues a `ping` for one webhook (whatever it subscribed to);
    /// answers the event id.
    pub async fn ping(&self, hook: &WebhookRecord) -> Result<String, StoreError> {
        let data = with_owner(json!({"webhook_id": hook.id}), hook.tenant_id, Some(hook.app_id));
        let (_, event_id) = enqueue(self.store.as_ref(), &self.wake, &[hook], PING, &data, self.clock.now()).await?;
        Ok(event_id)
    }

    /// Call after creating, changing or deleting a webhook.
    pub fn webhooks_changed(&self) {
        self.doc_subscribers.clear();
    }

    /// Drops the open `document.updated` window of a document (it was
    /// deleted: a late "updated" after "deleted" would only confuse).
    pub fn forget_doc(&self, key: &DocKey) {
        self.pending.remove(key);
    }

    /// Emits every open `document.updated` window now (at shutdown).
    pub async fn flush_pending(&self) {
        let keys: Vec<DocKey> = self.pending.iter().map(|e| e.key().clone()).collect();
        for key in keys {
            if let Some((key, n)) = self.pending.remove(&key) {
                self.doc_updated(key, n).await;
            }
        }
    }

    async fn doc_updated(&self, key: DocKey, updates: u64) {
        let tenant = match self.doc_subscriber(key.app_id).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the webhooks of an updated document; its event is dropped");
                return;
            }
        };
        let data = json!({"doc": key.name, "app_id": key.app_id.to_string(), "updates": updates});
        self.emit(tenant, Some(key.app_id), WebhookEvent::DocumentUpdated, data).await;
    }

    /// The app's tenant, if any webhook takes the app's `document.updated`.
    async fn doc_subscriber(&self, app: AppId) -> Result<Option<TenantId>, StoreError> {
        if let Some(hit) = self.doc_subscribers.get(&app)
            && hit.1.elapsed() < SUBSCRIBERS_TTL
        {
            return Ok(hit.0);
        }
        let tenant = match self.store.get_app_by_id(app).await? {
            Some(AppRecord { tenant_id, .. }) => {
                let hooks = self.store.webhooks_for_tenant(tenant_id).await?;
                let event = WebhookEvent::DocumentUpdated;
                hooks.iter().any(|h| reaches(event, Some(app), h.app_id) && subscribed(h, event)).then_some(tenant_id)
            }
            None => None,
        };
        if self.doc_subscribers.len() >= SUBSCRIBERS_SWEEP_AT {
            self.doc_subscribers.retain(|_, (_, at)| at.elapsed() < SUBSCRIBERS_TTL);
        }
        self.doc_subscribers.insert(app, (tenant, Instant::now()));
        Ok(tenant)
    }
}

impl WriteObserver for Events {
    /// On the persister's task for every durable write: one map operation,
    /// plus a channel send for the first write of a window.
    fn persisted(&self, key: &DocKey) {
        if let Some(mut n) = self.pending.get_mut(key) {
            *n += 1;
            return;
        }
        let mut opened = false;
        self.pending.entry(key.clone()).and_modify(|n| *n += 1).or_insert_with(|| {
            opened = true;
            1
        });
        if opened {
            let _ = self.windows.send((Instant::now() + self.window, key.clone()));
        }
    }
}

/// Whether the webhook subscribed to `event`. A stored list that no longer
/// parses (it was valid when stored) subscribes to nothing, loudly.
fn subscribed(hook: &WebhookRecord, event: WebhookEvent) -> bool {
    match EventFilter::parse(&hook.events) {
        Ok(filter) => filter.matches(event),
        Err(e) => {
            tracing::error!(webhook = %hook.id, error = %e, "stored webhook event list does not parse");
            false
        }
    }
}

/// The jobs of one outbox event: one per webhook of its tenant that the
/// event reaches and that subscribed to it. An event type this version does
/// not know (written by a newer one) reaches nobody, loudly.
fn jobs_for(row: &OutboxEvent, hooks: &[WebhookRecord]) -> Vec<WebhookJobRecord> {
    let Some(event) = WebhookEvent::parse(&row.event_type) else {
        tracing::warn!(event = %row.event_type, id = %row.id, "unknown event type in the outbox; not delivered");
        return Vec::new();
    };
    hooks
        .iter()
        .filter(|h| reaches(event, row.app_id, h.app_id) && subscribed(h, event))
        .map(|h| job(&row.id, h, &row.event_type, &row.payload, row.created_at))
        .collect()
}

/// A new pending job of one event for one webhook.
fn job(event_id: &str, hook: &WebhookRecord, kind: &str, payload: &str, now: OffsetDateTime) -> WebhookJobRecord {
    WebhookJobRecord {
        id: uuid::Uuid::now_v7().to_string(),
        event_id: event_id.to_owned(),
        webhook_id: hook.id.clone(),
        tenant_id: hook.tenant_id,
        event_type: kind.to_owned(),
        payload: payload.to_owned(),
        attempt: 0,
        status: JobStatus::Pending,
        next_attempt_at: now,
        locked_until: None,
        created_at: now,
        updated_at: now,
    }
}

/// One body, one job per webhook, one store call; wakes the dispatcher.
/// Answers the number of new jobs and the event id.
async fn enqueue(
    store: &dyn Store,
    wake: &Notify,
    hooks: &[&WebhookRecord],
    kind: &str,
    data: &serde_json::Value,
    now: OffsetDateTime,
) -> Result<(u64, String), StoreError> {
    let event_id = uuid::Uuid::now_v7().to_string();
    let payload = event_body(&event_id, kind, now, data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let jobs: Vec<WebhookJobRecord> = hooks.iter().map(|h| job(&event_id, h, kind, &payload, now)).collect();
    let n = store.enqueue_webhook_jobs(&jobs).await?;
    if n > 0 {
        metrics::counter!("wiresocket_webhook_jobs_enqueued_total").increment(n);
        wake.notify_one();
    }
    Ok((n, event_id))
}

/// Closes `document.updated` windows at their deadlines. Deadlines arrive
/// in the order windows opened, all of the same length, so they are
/// non-decreasing: sleeping until each in turn is exact.
async fn close_windows(events: Weak<Events>, mut rx: mpsc::UnboundedReceiver<(Instant, DocKey)>) {
    while let Some((deadline, key)) = rx.recv().await {
        tokio::time::sleep_until(deadline).await;
        let Some(events) = events.upgrade() else { return };
        let Some((key, n)) = events.pending.remove(&key) else { continue };
        // Off this task, so one slow store call does not hold later windows.
        tokio::spawn(async move { events.doc_updated(key, n).await });
    }
}
