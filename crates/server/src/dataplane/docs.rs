//! Documents at run time: rooms loaded lazily from the store, the ordered
//! write path, background compaction, and unloading when idle.
//!
//! The write path: a write is appended to the document log, and only then
//! applied to its room (which broadcasts it), in log order. So a room holds
//! only persisted state. Two ways, by store:
//! - a store with a [`store::DocAppender`] (SQLite on a file) commits it
//!   and calls [`durable`] in log order, on whichever thread committed it
//!   and under the log's write lock. That only queues the write on its
//!   document's lane; the lane is drained (applied and broadcast, in
//!   order) outside the lock: by the connection's own task right after an
//!   inline commit, or by a task spawned when the writer thread committed.
//!   So the next commit never waits for a broadcast, and documents fan out
//!   on both cores at once;
//! - otherwise (PostgreSQL) a persister task appends everything queued
//!   since its last commit in one transaction, then applies each write.
//!
//! Either way, batching keeps throughput when many clients write at once
//! without adding a timer to anyone's latency.

use crate::error::ApiError;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use store::{DocKey, Store};
use sync::{ConnId, Room};
use tokio::sync::{OnceCell, mpsc, oneshot};

/// Compact once this many updates or bytes sit in a document's log.
const COMPACT_AFTER_UPDATES: u64 = 500;
const COMPACT_AFTER_BYTES: u64 = 8 * 1024 * 1024;
/// A document smaller than this (snapshot plus log) is compacted by
/// encoding its room, which holds the room for the encode (about 1.4 ms for
/// 1 MiB). A larger one is rebuilt from the store on a blocking thread
/// instead, never holding its room: encoding 10 MiB took 27 to 57 ms, during
/// which the room could neither apply nor answer a joining client.
const ENCODE_IN_ROOM_BELOW: u64 = 1024 * 1024;
/// Most writes in one transaction.
const MAX_BATCH: usize = 1024;
/// By default, unload a room this long after its last connection left.
pub const IDLE_UNLOAD: Duration = Duration::from_secs(30);

/// A document's place in memory. `refs` counts connections (and REST calls)
/// using it; the sweeper only removes a slot at zero refs, under the map's
/// shard lock, so an opener can never end up with a room nobody else sees.
pub struct DocSlot {
    pub key: DocKey,
    room: OnceCell<Arc<Room>>,
    refs: AtomicUsize,
    /// Some update of this doc is persisted.
    exists: AtomicBool,
    applied_seq: AtomicI64,
    log_updates: AtomicU64,
    log_bytes: AtomicU64,
    /// Size of the stored snapshot, as loaded or last compacted.
    snapshot_bytes: AtomicU64,
    compacting: AtomicBool,
    /// Compactions failed in a row, and the time (unix seconds, by the
    /// injected clock) before which no other is tried (see [`compact_backoff`]).
    compact_failures: AtomicU32,
    compact_retry_at: AtomicI64,
    /// Writes queued but not yet applied.
    pending: AtomicUsize,
    /// Durable writes waiting to be applied, in log order (appender path).
    lane: std::sync::Mutex<Lane>,
    /// The room is damaged (an apply panicked inside yrs; see the sync
    /// crate's "Damage"): it takes no more writes, its clients have been
    /// told to reconnect, and the next open replaces the slot with one
    /// loaded afresh from the store, once every write made through this
    /// one has settled (`pending` is 0), so the reload holds them all.
    retired: AtomicBool,
    idle_since: std::sync::Mutex<Option<Instant>>,
}

/// A document's committed writes on their way into its room. One drainer
/// at a time (`draining`), so they are applied in the order queued.
#[derive(Default)]
struct Lane {
    queue: std::collections::VecDeque<(Write, i64)>,
    draining: bool,
}

thread_local! {
    /// Set while a connection's task submits a write: a commit made inline
    /// (on this thread) leaves its lane here for that task to drain.
    static SUBMITTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static TO_DRAIN: std::cell::RefCell<Vec<Arc<DocSlot>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl DocSlot {
    fn new(key: DocKey) -> Self {
        Self {
            key,
            room: OnceCell::new(),
            refs: AtomicUsize::new(0),
            exists: AtomicBool::new(false),
            applied_seq: AtomicI64::new(0),
            log_updates: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            compacting: AtomicBool::new(false),
            compact_failures: AtomicU32::new(0),
            compact_retry_at: AtomicI64::new(0),
            pending: AtomicUsize::new(0),
            lane: std::sync::Mutex::new(Lane::default()),
            retired: AtomicBool::new(false),
            idle_since: std::sync::Mutex::new(None),
        }
    }

    pub fn room(&self) -> Option<&Arc<Room>> {
        self.room.get()
    }

    pub fn exists(&self) -> bool {
        self.exists.load(Ordering::Acquire)
    }
}

/// A use of a slot; releasing it lets the room unload when idle.
pub struct SlotRef {
    pub slot: Arc<DocSlot>,
    pub room: Arc<Room>,
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        if self.slot.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.slot.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// Told of every write once it is durable (webhooks' `document.updated`).
/// Called on the persister's task, once per write: it must be cheap and
/// must never block or await.
pub trait WriteObserver: Send + Sync {
    fn persisted(&self, key: &DocKey);
}

struct Write {
    slot: Arc<DocSlot>,
    room: Arc<Room>,
    update: Vec<u8>,
    origin: Option<ConnId>,
    ack: Option<oneshot::Sender<Result<(), ()>>>,
    /// When the write arrived: fan-out latency is measured from here.
    queued: Instant,
}

pub struct Docs {
    store: Arc<dyn Store>,
    /// The store's ordered appender, if it has one (SQLite on a file): a
    /// write then goes from its connection's task to the document log's
    /// writer (inline when it is idle), which queues it on its document's
    /// lane once committed. Without one, the persister task below orders
    /// the writes.
    appender: Option<Arc<dyn store::DocAppender>>,
    /// For spawning from the appender's thread, which is not the runtime's.
    runtime: tokio::runtime::Handle,
    me: std::sync::Weak<Docs>,
    slots: DashMap<DocKey, Arc<DocSlot>>,
    /// Per document: how many times its room was retired as damaged, and
    /// when last (see [`reload_backoff`]).
    reloads: DashMap<DocKey, (u32, Instant)>,
    queue: mpsc::Sender<Write>,
    clock: Arc<dyn domain::clock::Clock>,
    observer: std::sync::OnceLock<Arc<dyn WriteObserver>>,
    /// Told when a document's room is retired as damaged, to close its
    /// connections (they reconnect to the reloaded room).
    on_damaged: std::sync::OnceLock<DamageHook>,
}

/// See [`Docs::on_damaged`].
pub type DamageHook = Box<dyn Fn(&DocKey) + Send + Sync>;

/// The error code of a write or open refused while a damaged room is
/// being replaced.
pub const RELOADING: &str = "document_reloading";

/// A write or open refused while a damaged room is being replaced (503).
pub fn reloading() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        RELOADING,
        "the document is being reloaded; retry in a moment",
    )
}

impl Docs {
    /// Starts the persister and the idle sweeper; they stop when `Docs` is dropped.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn domain::clock::Clock>, idle_unload: Duration) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(8192);
        let appender = store.doc_appender();
        let docs = Arc::new_cyclic(|me| Self {
            appender,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
            store,
            slots: DashMap::new(),
            reloads: DashMap::new(),
            queue,
            clock,
            observer: std::sync::OnceLock::new(),
            on_damaged: std::sync::OnceLock::new(),
        });
        // Only a store without an ordered appender needs the persister.
        if docs.appender.is_none() {
            tokio::spawn(persister(Arc::downgrade(&docs), rx));
        }
        tokio::spawn(sweeper(Arc::downgrade(&docs), idle_unload));
        docs
    }

    /// Sets the one observer of durable writes; a second call is ignored.
    pub fn observe(&self, observer: Arc<dyn WriteObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Sets what closes a damaged room's connections; a second call is ignored.
    pub fn on_damaged(&self, hook: DamageHook) {
        let _ = self.on_damaged.set(hook);
    }

    /// The document's room, loaded from the store on first use (and again
    /// after its room was retired as damaged).
    pub async fn open(&self, key: &DocKey) -> Result<SlotRef, ApiError> {
        let slot = {
            let mut entry = self.slots.entry(key.clone()).or_insert_with(|| Arc::new(DocSlot::new(key.clone())));
            if entry.retired.load(Ordering::SeqCst) {
                // Pairs with `write`: either that write sees `retired` and
                // backs out, or this sees it pending and waits for it.
                if entry.pending.load(Ordering::SeqCst) > 0 || !self.may_reload(key) {
                    return Err(reloading());
                }
                *entry = Arc::new(DocSlot::new(key.clone()));
            }
            // Counted under the shard lock: the sweeper cannot remove it now.
            entry.refs.fetch_add(1, Ordering::AcqRel);
            entry.clone()
        };
        let loaded = slot
            .room
            .get_or_try_init(|| async {
                let state = self.store.load_doc(key).await?;
                let mut parts: Vec<Vec<u8>> = Vec::new();
                if let Some(state) = state {
                    slot.exists.store(true, Ordering::Release);
                    slot.applied_seq.store(state.last_seq, Ordering::Release);
                    slot.log_updates.store(state.updates.len() as u64, Ordering::Relaxed);
                    slot.log_bytes.store(state.updates.iter().map(|u| u.len() as u64).sum(), Ordering::Relaxed);
                    let snapshot_bytes = state.snapshot.as_ref().map_or(0, |s| s.len() as u64);
                    slot.snapshot_bytes.store(snapshot_bytes, Ordering::Relaxed);
                    parts.extend(state.snapshot);
                    parts.extend(state.updates);
                }
                let room = tokio::task::spawn_blocking(move || Room::new(parts))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e| ApiError::internal(format!("stored document {key:?} does not load: {e}")))?;
                Ok::<_, ApiError>(room)
            })
            .await;
        match loaded {
            Ok(room) => {
                let room = room.clone();
                Ok(SlotRef { slot, room })
            }
            Err(e) => {
                if slot.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
                    *slot.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    /// The slot if it is loaded (for REST reads that must not load
    /// needlessly); a retired one does not count.
    pub fn loaded(&self, key: &DocKey) -> Option<Arc<DocSlot>> {
        self.slots.get(key).filter(|s| !s.retired.load(Ordering::Acquire)).map(|s| s.clone())
    }

    /// Queues a write; it is applied and broadcast once persisted. With
    /// `wait`, answers when that happened (or failed).
    pub async fn write(
        &self,
        slot: &SlotRef,
        update: Vec<u8>,
        origin: Option<ConnId>,
        wait: bool,
    ) -> Result<(), ApiError> {
        let (ack, done) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        slot.slot.pending.fetch_add(1, Ordering::SeqCst);
        let mut counted = PendingCount { slot: &slot.slot, handed_over: false };
        if slot.slot.retired.load(Ordering::SeqCst) {
            return Err(reloading());
        }
        let w = Write { slot: slot.slot.clone(), room: slot.room.clone(), update, origin, ack, queued: Instant::now() };
        if let Some(appender) = &self.appender {
            let batch = vec![(w.slot.key.clone(), w.update.clone())];
            let me = self.me.clone();
            let then: store::Durable = Box::new(move |result| durable(&me, w, result));
            SUBMITTING.with(|s| s.set(true));
            let submitted = appender.submit(batch, self.clock.now(), then).await;
            SUBMITTING.with(|s| s.set(false));
            // An inline commit left its lane to us: apply it now, on this
            // thread, before anything else runs here.
            for slot in TO_DRAIN.with(|t| std::mem::take(&mut *t.borrow_mut())) {
                drain(&self.me, &slot);
            }
            if submitted.is_err() {
                return Err(ApiError::internal("the document log writer has stopped"));
            }
        } else if self.queue.send(w).await.is_err() {
            return Err(ApiError::internal("the persister has stopped"));
        }
        // The writer or the persister settles the count from here on.
        counted.handed_over = true;
        if let Some(done) = done {
            return match done.await {
                Ok(Ok(())) => Ok(()),
                _ => Err(ApiError::internal("the update could not be persisted")),
            };
        }
        Ok(())
    }

    /// Forgets a deleted document's room (connections are closed by the caller).
    pub fn evict(&self, key: &DocKey) {
        self.slots.remove(key);
    }

    pub fn loaded_count(&self) -> usize {
        self.slots.len()
    }

    async fn compact(self: Arc<Self>, slot: Arc<DocSlot>, room: Arc<Room>) {
        let size = slot.snapshot_bytes.load(Ordering::Relaxed) + slot.log_bytes.load(Ordering::Relaxed);
        let (from, snapshot) = if size < ENCODE_IN_ROOM_BELOW {
            ("room", Self::snapshot_of_room(&slot, room).await)
        } else {
            drop(room);
            ("store", self.snapshot_from_store(&slot).await)
        };
        let outcome = match snapshot {
            Ok((snapshot, upto)) => match self.store.compact_doc(&slot.key, &snapshot, upto, self.clock.now()).await {
                Ok(()) => {
                    slot.log_updates.store(0, Ordering::Relaxed);
                    slot.log_bytes.store(0, Ordering::Relaxed);
                    slot.snapshot_bytes.store(snapshot.len() as u64, Ordering::Relaxed);
                    metrics::counter!("wiresocket_doc_compactions_total", "from" => from).increment(1);
                    Ok(())
                }
                // Deleted meanwhile: nothing left to compact.
                Err(store::StoreError::NotFound) => Err(Skip::Gone),
                Err(e) => {
                    tracing::warn!(error = %e, doc = ?slot.key, "storing a compacted snapshot failed");
                    Err(Skip::Failed)
                }
            },
            Err(skip) => Err(skip),
        };
        match outcome {
            Ok(()) | Err(Skip::Gone) => {
                slot.compact_failures.store(0, Ordering::Relaxed);
                slot.compact_retry_at.store(0, Ordering::Relaxed);
            }
            Err(Skip::Failed) => {
                let failures = slot.compact_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                let wait = compact_backoff(failures);
                let retry_at = self.clock.now().unix_timestamp().saturating_add(wait.as_secs() as i64);
                slot.compact_retry_at.store(retry_at, Ordering::Relaxed);
                metrics::counter!("wiresocket_doc_compaction_failures_total").increment(1);
                tracing::warn!(
                    doc = ?slot.key,
                    failures,
                    retry_in_secs = wait.as_secs(),
                    "compaction failed; the log keeps growing until a later write retries it"
                );
            }
        }
        slot.compacting.store(false, Ordering::Release);
    }

    /// The room's state and the seq it covers at least, encoded while
    /// holding the room (small documents).
    async fn snapshot_of_room(slot: &DocSlot, room: Arc<Room>) -> Result<(Vec<u8>, i64), Skip> {
        // Read the seq first: the state encoded afterwards contains at least
        // everything up to it, so no update is ever dropped from the log
        // without being in the snapshot (later ones may be in both: harmless).
        let upto = slot.applied_seq.load(Ordering::Acquire);
        // `try_encode_state` fails on a damaged room instead of answering an
        // empty state, which would replace the whole log with nothing.
        let snapshot =
            encode_blocking(&slot.key, "a room that cannot encode its state", move || room.try_encode_state());
        Ok((snapshot.await.ok_or(Skip::Failed)?, upto))
    }

    /// The document as stored (one consistent read), rebuilt and encoded on
    /// a blocking thread, and the seq it covers exactly (large documents:
    /// the room is never held).
    async fn snapshot_from_store(&self, slot: &DocSlot) -> Result<(Vec<u8>, i64), Skip> {
        let state = match self.store.load_doc(&slot.key).await {
            Ok(Some(state)) => state,
            Ok(None) => return Err(Skip::Gone),
            Err(e) => {
                tracing::warn!(error = %e, doc = ?slot.key, "reading a document to compact failed");
                return Err(Skip::Failed);
            }
        };
        let upto = state.last_seq;
        let parts: Vec<Vec<u8>> = state.snapshot.into_iter().chain(state.updates).collect();
        // `Room::new` leaves out an update whose integration panics, as a load does.
        let rebuild = move || Room::new(parts).and_then(|room| room.try_encode_state());
        let snapshot = encode_blocking(&slot.key, "a stored document that does not load", rebuild).await;
        Ok((snapshot.ok_or(Skip::Failed)?, upto))
    }
}

/// Why a compaction did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The document was deleted meanwhile.
    Gone,
    /// It failed (logged where it did); the next one backs off.
    Failed,
}

/// How long after its `n`th failure in a row (n >= 1) a document's next
/// compaction waits: 10 s, doubling, at most 10 minutes. Without it every
/// write past the threshold started a full rebuild again (a store that
/// refuses the snapshot, a document that does not encode), each costing as
/// much as the first; with it a failing document costs a rebuild every
/// 10 minutes at worst, while its log (still durable, still loading) grows.
fn compact_backoff(n: u32) -> Duration {
    Duration::from_secs(10_u64.saturating_mul(1_u64 << n.saturating_sub(1).min(6))).min(Duration::from_secs(600))
}

/// Runs a snapshot's encoding on a blocking thread; `None` (logged, naming
/// what could not be compacted) if it fails or panics.
async fn encode_blocking(
    key: &DocKey,
    what: &'static str,
    encode: impl FnOnce() -> Result<Vec<u8>, sync::SyncError> + Send + 'static,
) -> Option<Vec<u8>> {
    match tokio::task::spawn_blocking(encode).await {
        Ok(Ok(snapshot)) => Some(snapshot),
        Ok(Err(e)) => {
            tracing::error!(error = %e, doc = ?key, "not compacting {what}");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, doc = ?key, "encoding a snapshot panicked");
            None
        }
    }
}

/// Appends everything queued in one transaction, then applies and broadcasts.
async fn persister(docs: std::sync::Weak<Docs>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let Some(docs) = docs.upgrade() else { return };
        let entries: Vec<(DocKey, Vec<u8>)> = batch.iter().map(|w| (w.slot.key.clone(), w.update.clone())).collect();
        let started = Instant::now();
        let result = docs.store.append_doc_updates(&entries, docs.clock.now()).await;
        super::hot().persist_batch_seconds.record(started.elapsed().as_secs_f64());
        match result {
            Ok(seqs) => {
                for (w, seq) in batch.drain(..).zip(seqs) {
                    apply(&docs, w, seq);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "persisting a batch failed; its writers are told");
                batch.drain(..).for_each(not_persisted);
            }
        }
    }
}

/// A write that did not make it into the log: nothing is applied, and a
/// waiting writer is told.
fn not_persisted(w: Write) {
    w.slot.pending.fetch_sub(1, Ordering::AcqRel);
    if let Some(ack) = w.ack {
        let _ = ack.send(Err(()));
    }
}

/// The appender's answer for one write, on the thread that committed it,
/// in seq order. On this path the "batch" histogram times each write from
/// receipt to durable.
fn durable(docs: &std::sync::Weak<Docs>, w: Write, result: store::Result<Vec<i64>>) {
    let Some(docs) = docs.upgrade() else { return };
    super::hot().persist_batch_seconds.record(w.queued.elapsed().as_secs_f64());
    match result.as_deref() {
        Ok(&[seq]) => {
            let slot = w.slot.clone();
            let start = {
                let mut lane = slot.lane.lock().unwrap_or_else(|e| e.into_inner());
                lane.queue.push_back((w, seq));
                !std::mem::replace(&mut lane.draining, true)
            };
            // Otherwise its drainer is at work and takes this one too.
            if start {
                if SUBMITTING.with(std::cell::Cell::get) {
                    TO_DRAIN.with(|t| t.borrow_mut().push(slot));
                } else {
                    let me = Arc::downgrade(&docs);
                    docs.runtime.spawn(async move { drain(&me, &slot) });
                }
            }
        }
        Ok(seqs) => {
            tracing::error!(seqs = seqs.len(), doc = ?w.slot.key, "one update answered with other than one seq");
            not_persisted(w);
        }
        Err(e) => {
            tracing::error!(error = %e, doc = ?w.slot.key, "persisting an update failed; its writer is told");
            not_persisted(w);
        }
    }
}

/// Applies a document's queued writes in order until its lane is empty.
fn drain(docs: &std::sync::Weak<Docs>, slot: &DocSlot) {
    let docs = docs.upgrade();
    loop {
        let next = {
            let mut lane = slot.lane.lock().unwrap_or_else(|e| e.into_inner());
            let next = lane.queue.pop_front();
            if next.is_none() {
                lane.draining = false;
            }
            next
        };
        let Some((w, seq)) = next else { return };
        match &docs {
            Some(docs) => apply(docs, w, seq),
            // Shutting down: it is durable, just not applied here.
            None => not_persisted(w),
        }
    }
}

fn apply(docs: &Arc<Docs>, w: Write, seq: i64) {
    let slot = &w.slot;
    slot.exists.store(true, Ordering::Release);
    if let Some(observer) = docs.observer.get() {
        observer.persisted(&slot.key);
    }
    // A panic inside the CRDT library must not take the persister (and so
    // every document) down with it.
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.room.apply_persisted(&w.update, w.origin)));
    match applied {
        Ok(Ok(())) => {}
        // Another write applied since brought the ids this one reuses (see
        // `sync::SyncError::Conflict`): left out, as a reload leaves it out.
        Ok(Err(e @ sync::SyncError::Conflict(_))) => {
            tracing::warn!(error = %e, doc = ?slot.key, "a persisted update conflicts with the document; not applied")
        }
        Ok(Err(e)) => tracing::error!(error = %e, doc = ?slot.key, "a persisted update did not apply"),
        Err(_) => tracing::error!(doc = ?slot.key, "applying an update panicked; the room keeps its previous state"),
    }
    if w.room.is_damaged() {
        docs.retire(slot);
    }
    // Receipt → persisted → broadcast to every other client of the document.
    super::hot().fanout_seconds.record(w.queued.elapsed().as_secs_f64());
    slot.applied_seq.fetch_max(seq, Ordering::AcqRel);
    slot.pending.fetch_sub(1, Ordering::AcqRel);
    let updates = slot.log_updates.fetch_add(1, Ordering::Relaxed) + 1;
    let bytes = slot.log_bytes.fetch_add(w.update.len() as u64, Ordering::Relaxed) + w.update.len() as u64;
    if (updates >= COMPACT_AFTER_UPDATES || bytes >= COMPACT_AFTER_BYTES)
        && docs.clock.now().unix_timestamp() >= slot.compact_retry_at.load(Ordering::Relaxed)
        && !slot.compacting.swap(true, Ordering::AcqRel)
    {
        docs.runtime.spawn(docs.clone().compact(slot.clone(), w.room.clone()));
    }
    if let Some(ack) = w.ack {
        let _ = ack.send(Ok(()));
    }
}

/// Holds a write's count in its slot's `pending` until the write is handed
/// over (to the log writer or the persister, which settle it). Dropped
/// before that (the write refused, or the caller's future dropped while
/// waiting for room in a queue), it gives the count back, so no slot ever
/// waits for a write that will never come.
struct PendingCount<'a> {
    slot: &'a DocSlot,
    handed_over: bool,
}

impl Drop for PendingCount<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.slot.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How long after its `n`th retirement (n >= 1) a damaged document waits
/// before it is loaded again: at once the first time, then 4 s, 16 s, 64 s,
/// 256 s, and at most 5 minutes. A client whose own update damages the room
/// sends it again in its sync step 2 when it reconnects; without a backoff
/// that would retire, reload (and leak the damaged document, see the sync
/// crate's "Damage") every few seconds.
fn reload_backoff(n: u32) -> Duration {
    match n {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(4_u64.saturating_pow(n - 1)).min(Duration::from_secs(300)),
    }
}

impl Docs {
    /// Whether a retired document may be loaded again now.
    fn may_reload(&self, key: &DocKey) -> bool {
        self.reloads.get(key).is_none_or(|r| r.1.elapsed() >= reload_backoff(r.0))
    }

    /// Retires a damaged room (once): no more writes go to it, its clients
    /// are told to reconnect, and the next open loads the document again.
    /// Its later writes are in the log, which the reload reads; the update
    /// whose integration panicked is left out there too (`Room::new`).
    fn retire(&self, slot: &DocSlot) {
        if slot.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        self.reloads
            .entry(slot.key.clone())
            .and_modify(|r| *r = (r.0 + 1, Instant::now()))
            .or_insert((1, Instant::now()));
        tracing::error!(doc = ?slot.key, "a document's room is damaged; its clients reconnect to a reloaded room");
        metrics::counter!("wiresocket_doc_reloads_total").increment(1);
        if let Some(hook) = self.on_damaged.get() {
            hook(&slot.key);
        }
    }
}

/// Unloads rooms nobody has used for `idle_unload`, and retired ones as
/// soon as nothing uses them.
async fn sweeper(docs: std::sync::Weak<Docs>, idle_unload: Duration) {
    let mut tick = tokio::time::interval((idle_unload / 2).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    loop {
        tick.tick().await;
        let Some(docs) = docs.upgrade() else { return };
        let now = Instant::now();
        docs.slots.retain(|_, slot| {
            let idle = slot
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| now.duration_since(t) >= idle_unload);
            let busy = slot.refs.load(Ordering::Acquire) > 0
                || slot.pending.load(Ordering::Acquire) > 0
                || slot.compacting.load(Ordering::Acquire);
            busy || !(idle || slot.retired.load(Ordering::Acquire))
        });
        metrics::gauge!("wiresocket_docs_loaded").set(docs.slots.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A write refused or abandoned before it was handed over gives its
    /// count back; one handed over leaves it to whoever settles it.
    #[test]
    fn a_pending_count_is_given_back_unless_handed_over() {
        let slot = DocSlot::new(DocKey { app_id: domain::ids::AppId::new(), name: "d".into() });
        slot.pending.fetch_add(1, Ordering::SeqCst);
        drop(PendingCount { slot: &slot, handed_over: false });
        assert_eq!(slot.pending.load(Ordering::SeqCst), 0);
        slot.pending.fetch_add(1, Ordering::SeqCst);
        drop(PendingCount { slot: &slot, handed_over: true });
        assert_eq!(slot.pending.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failing_compaction_waits_longer_each_time() {
        let waits: Vec<u64> = (1..=9).map(|n| compact_backoff(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(compact_backoff(u32::MAX), Duration::from_secs(600));
    }

    /// Distinct real Yjs updates, one character each.
    fn updates(n: usize) -> Vec<Vec<u8>> {
        use yrs::{GetString, Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        (0..n)
            .map(|i| {
                let mut txn = doc.transact_mut();
                let end = text.get_string(&txn).len() as u32;
                text.insert(&mut txn, end, &format!("{}", i % 10));
                txn.encode_update_v1()
            })
            .collect()
    }

    async fn settled(slot: &DocSlot) {
        for _ in 0..500 {
            if !slot.compacting.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a compaction never ended");
    }

    /// A compaction the store refuses is not tried again on every write (a
    /// full rebuild each time) but after 10 s, 20 s, … by the clock; once it
    /// succeeds, the count starts over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_compaction_backs_off_instead_of_retrying_on_every_write() {
        let dir = std::env::temp_dir().join(format!("compact-backoff-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = store::sql::SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let app = store::contract::doc_app(&sqlite).await;
        let key = store::contract::doc_key(app.id, "failing");
        // The store refuses every snapshot, as a full disk would.
        sqlx::query(
            "CREATE TRIGGER refuse_snapshots BEFORE INSERT ON doc_snapshot_parts \
             BEGIN SELECT RAISE(ABORT, 'injected: no room for snapshots'); END",
        )
        .execute(sqlite.pool())
        .await
        .unwrap();
        let clock = Arc::new(domain::clock::ManualClock::new(time::OffsetDateTime::now_utc()));
        let docs = Docs::start(Arc::new(sqlite.clone()), clock.clone(), IDLE_UNLOAD);
        let doc = docs.open(&key).await.unwrap();
        let mut updates = updates(2000).into_iter();
        let mut write = async |n: usize| {
            for update in updates.by_ref().take(n) {
                docs.write(&doc, update, None, true).await.unwrap();
            }
            settled(&doc.slot).await;
            doc.slot.compact_failures.load(Ordering::Relaxed)
        };
        assert_eq!(write(COMPACT_AFTER_UPDATES as usize).await, 1, "the threshold starts a compaction");
        assert_eq!(write(300).await, 1, "retried before its time");
        clock.advance(time::Duration::seconds(10));
        assert_eq!(write(1).await, 2, "not retried after 10 s");
        clock.advance(time::Duration::seconds(10));
        assert_eq!(write(50).await, 2, "retried before 20 s");
        clock.advance(time::Duration::seconds(10));
        assert_eq!(write(1).await, 3);
        sqlx::query("DROP TRIGGER refuse_snapshots").execute(sqlite.pool()).await.unwrap();
        clock.advance(time::Duration::seconds(40));
        assert_eq!(write(1).await, 0, "a success starts the count over");
        assert_eq!(sqlite.doc_log_stats(&key).await.unwrap().0, 0, "compacted at last");
        let text: String = {
            use yrs::{GetString, Transact};
            let state = sqlite.load_doc(&key).await.unwrap().unwrap();
            let room = Room::new(state.snapshot.into_iter().chain(state.updates).collect::<Vec<_>>()).unwrap();
            let doc = yrs::Doc::new();
            let text = doc.get_or_insert_text("t");
            let update = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&room.encode_state()).unwrap();
            doc.transact_mut().apply_update(update).unwrap();
            text.get_string(&doc.transact())
        };
        assert_eq!(text.len(), 500 + 300 + 1 + 50 + 1 + 1, "nothing lost on the way");
        drop(doc);
        sqlite.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_document_damaged_again_waits_longer_each_time() {
        let waits: Vec<u64> = (1..=7).map(|n| reload_backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 4, 16, 64, 256, 300, 300]);
        assert_eq!(reload_backoff(u32::MAX), Duration::from_secs(300));
    }
}
