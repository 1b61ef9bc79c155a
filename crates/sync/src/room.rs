//! A room: one document, its awareness, and the connections editing it.
//!
//! # Locks
//! Three mutexes, always taken in this order and never the reverse:
//!
//! 1. `core` ([`DocCore`]: the Doc and what the room knows about it, its
//!    state vector and delete set). Every touch of the Doc happens under
//!    it: classifying, applying, encoding.
//! 2. `awareness` (the room's one `Awareness`). Separate from the doc, so
//!    cursor traffic never waits behind a large step 2 or apply.
//! 3. `conns` (the fan-out table). Senders are called under it; they are
//!    non-blocking (`try_send` into a bounded channel) and must never call
//!    back into the room.
//!
//! A broadcast takes `conns` *before* releasing the lock it applied under
//! (hand over hand), so every connection sees updates, and awareness
//! changes, in the order they were applied, while neither the doc nor the
//! awareness lock is held during the fan-out.
//!
//! std mutexes rather than async ones: nothing here awaits, and every
//! critical section is bounded by the size of one message (or, for
//! [`Room::encode_state`], of the doc).
//!
//! # Damage
//! yrs is not panic-safe: a panic half way through integrating an update can
//! leave its block store with dangling pointers, and touching it again may
//! crash the process (fuzzing produced exactly that). The crate's `guard`
//! module refuses every input known to make yrs panic, but if an apply
//! panics anyway the room marks itself damaged and never touches its doc
//! again (nor frees it): doc operations fail, awareness keeps working, and
//! the server should reload the room from its store ([`Room::is_damaged`]),
//! where [`Room::new`] leaves out the update whose integration panics.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use yrs::sync::Awareness;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ID, IdSet, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::wire::{self, Frame};
use crate::{ConnId, Outcome, Sender, SyncError, guard, reuse};

/// The document and what the room knows about it, guarded by one mutex.
struct DocCore {
    doc: Doc,
    /// The doc's state vector, refreshed after every apply, so classifying
    /// an update does not rebuild it (it has an entry per client that ever
    /// edited the doc).
    sv: StateVector,
    /// Every id range known to be deleted in the doc. yrs offers no public
    /// "is this id deleted" lookup, so the room keeps this set: built once
    /// from the store when the room loads, then extended after each apply
    /// with the deletions yrs performed and the update's own delete set
    /// below the new state vector (already-deleted and GC'd ranges), minus
    /// the pending delete set. It never holds a range that is not deleted
    /// (that would make a real deletion look known and drop it); missing a
    /// range only makes an update look new, i.e. persisted once more.
    deleted: IdSet,
}

/// One connection in the fan-out table: an `Arc`'d callback and the
/// awareness client ids it introduced (usually one), so nothing per idle
/// connection beyond a few words.
struct ConnEntry {
    /// `None` once the sender refused bytes (slow consumer): the connection
    /// gets nothing more, but its awareness ids stay until `disconnect`.
    sender: Option<Sender>,
    clients: Vec<u64>,
}

#[derive(Default)]
struct Conns {
    map: HashMap<ConnId, ConnEntry>,
    dropped: Vec<ConnId>,
}

#[derive(Default)]
struct Counters {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    writes: AtomicU64,
    forbidden: AtomicU64,
    applied: AtomicU64,
    dropped: AtomicU64,
}

/// A snapshot of a room's counters (monotonic since the room was created,
/// except `connections`), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomStats {
    /// Registered connections, including slow ones not yet disconnected.
    pub connections: usize,
    /// Messages passed to [`Room::handle`], and their bytes.
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Messages handed to senders (replies, broadcasts, handshakes), and
    /// their bytes; a broadcast to n connections counts n times.
    pub messages_out: u64,
    pub bytes_out: u64,
    /// Messages answered with [`Outcome::Persist`].
    pub writes: u64,
    /// Messages answered with [`Outcome::Forbidden`].
    pub forbidden: u64,
    /// Calls to [`Room::apply_persisted`] that succeeded.
    pub applied: u64,
    /// Connections dropped because their sender refused bytes.
    pub dropped: u64,
}

/// One document being edited: the Yjs doc (only ever holding persisted
/// updates), the awareness of its clients, and the connections to fan out to.
pub struct Room {
    core: Mutex<DocCore>,
    awareness: Mutex<Awareness>,
    conns: Mutex<Conns>,
    damaged: AtomicBool,
    next_conn: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("damaged", &self.is_damaged()).field("stats", &self.stats()).finish()
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if self.is_damaged() {
            // Freeing a store that yrs left half-built could crash: leak it
            // (one doc, once, instead of the process).
            std::mem::forget(lock(&self.core).doc.clone());
        }
    }
}

/// Locks, shrugging off poisoning: a panic elsewhere (which the guards in
/// this crate exist to prevent) must not turn every later call on the room
/// into a panic too.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn damaged() -> SyncError {
    SyncError::Damaged
}

/// How loading the stored parts went.
enum Load {
    Done(Doc),
    /// Integrating this part panicked; the doc it was applied to is leaked.
    Panicked(usize),
}

/// Applies `parts` (but those in `skip`) to a fresh doc, one transaction
/// each, exactly as they were applied live.
fn load<P: AsRef<[u8]>>(parts: &[P], skip: &[usize]) -> Result<Load, SyncError> {
    let doc = Doc::new();
    for (i, part) in parts.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let update = guard::decode(part.as_ref()).map_err(|e| SyncError::BadUpdate(format!("stored part {i}: {e}")))?;
        // Refused live too (see `Room::apply_persisted`): reloading must
        // arrive at the state the room had.
        let sv = doc.transact().state_vector();
        if let Err(e) = reuse_check(&doc, part.as_ref(), &update, &sv) {
            tracing::warn!(part = i, error = %e, "a stored update reuses known ids; left out as it was live");
            continue;
        }
        let mut txn = doc.transact_mut();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            crate::fault::trip(part.as_ref());
            let result = txn.apply_update(update);
            txn.commit();
            result
        }));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(part = i, error = %e, "a stored update did not fully integrate"),
            Err(_) => {
                // See "Damage" in the module docs: never touch or free it.
                std::mem::forget(txn);
                std::mem::forget(doc);
                return Ok(Load::Panicked(i));
            }
        }
    }
    Ok(Load::Done(doc))
}

impl Room {
    /// A room from stored state: a snapshot (full v1 update) and/or later
    /// updates, applied in order, each in its own transaction as when it was
    /// applied live.
    ///
    /// A part that is not a valid update fails the load (the store only
    /// holds updates this crate accepted, so that means corruption). A part
    /// that yrs does not fully integrate (an item whose parent is not a
    /// shared type) is logged and kept as far as it went, as it was live. A
    /// part whose integration panics is left out: the load starts over
    /// without it, so a document never becomes unloadable.
    pub fn new(stored: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Result<Arc<Room>, SyncError> {
        let parts: Vec<_> = stored.into_iter().collect();
        let mut skip = Vec::new();
        let doc = loop {
            match load(&parts, &skip)? {
                Load::Done(doc) => break doc,
                Load::Panicked(i) => {
                    tracing::error!(part = i, "integrating a stored update panicked; loading without it");
                    skip.push(i);
                }
            }
        };
        let (sv, deleted) = {
            let txn = doc.transact();
            (txn.state_vector(), txn.snapshot().delete_set)
        };
        // The awareness never reads the doc; it only needs one to exist.
        let awareness = Awareness::new(doc.clone());
        Ok(Arc::new(Room {
            core: Mutex::new(DocCore { doc, sv, deleted }),
            awareness: Mutex::new(awareness),
            conns: Mutex::new(Conns::default()),
            damaged: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            counters: Counters::default(),
        }))
    }

    /// Registers a connection; immediately sends it (through `sender`) sync
    /// step 1 (the room's state vector) and, if any, the current awareness
    /// states (one awareness message). Returns the id.
    pub fn connect(self: &Arc<Self>, sender: Sender) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let step1 = Bytes::from(wire::step1_frame(&lock(&self.core).sv.encode_v1()));
        // Hand over hand from the awareness to the fan-out table: no change
        // can slip between the states sent here and the registration.
        let awareness = lock(&self.awareness);
        let states = current_awareness(&awareness)
            .filter(|u| !u.clients.is_empty())
            .map(|u| Bytes::from(wire::awareness_frame(&wire::write_awareness(&u))));
        let mut conns = lock(&self.conns);
        drop(awareness);
        conns.map.insert(id, ConnEntry { sender: Some(sender), clients: Vec::new() });
        self.send_to(&mut conns, id, step1);
        if let Some(states) = states {
            self.send_to(&mut conns, id, states);
        }
        id
    }

    /// Handles one binary message from a connection. `can_write` is false
    /// for `access: r` tokens. Replies (sync step 2, awareness) go out
    /// through the connection's sender before this returns.
    pub fn handle(&self, conn: ConnId, msg: &[u8], can_write: bool) -> Result<Outcome, SyncError> {
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_in.fetch_add(msg.len() as u64, Ordering::Relaxed);
        let frame = wire::read_frame(msg).map_err(|e| SyncError::Malformed(e.0.to_owned()))?;
        match frame {
            Frame::SyncStep1(sv) => {
                let sv = wire::read_state_vector(sv).map_err(|e| SyncError::Malformed(e.0.to_owned()))?;
                if !self.is_live(conn) {
                    // Disconnected or dropped as too slow: spare the diff.
                    return Ok(Outcome::Done);
                }
                let diff = self.diff(&sv, true)?;
                let mut conns = lock(&self.conns);
                self.send_to(&mut conns, conn, Bytes::from(wire::step2_frame(&diff)));
                Ok(Outcome::Done)
            }
            Frame::SyncStep2(update) | Frame::SyncUpdate(update) => self.on_update(update, can_write),
            Frame::Awareness(payload) => {
                let update = wire::read_awareness(payload).map_err(|e| SyncError::Malformed(e.0.to_owned()))?;
                self.on_awareness(conn, update, Bytes::from(wire::awareness_frame(payload)));
                Ok(Outcome::Done)
            }
            Frame::QueryAwareness => {
                let update =
                    current_awareness(&lock(&self.awareness)).unwrap_or(AwarenessUpdate { clients: HashMap::new() });
                let reply = Bytes::from(wire::awareness_frame(&wire::write_awareness(&update)));
                let mut conns = lock(&self.conns);
                self.send_to(&mut conns, conn, reply);
                Ok(Outcome::Done)
            }
            Frame::Other(kind) => {
                tracing::trace!(kind, "ignoring a message type this server does not speak");
                Ok(Outcome::Done)
            }
        }
    }

    fn on_update(&self, bytes: &[u8], can_write: bool) -> Result<Outcome, SyncError> {
        let Some(update) = self.new_update(bytes)? else { return Ok(Outcome::Done) };
        if !can_write {
            self.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            return Ok(Outcome::Forbidden);
        }
        guard::ensure_persistable(&update)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Persist(bytes.to_vec()))
    }

    /// Whether `update` would change the doc, without applying it. Also the
    /// gate before persisting an update from elsewhere (REST): an update
    /// this answers `true` for is one the room can apply later.
    pub fn would_change(&self, update: &[u8]) -> Result<bool, SyncError> {
        let Some(update) = self.new_update(update)? else { return Ok(false) };
        guard::ensure_persistable(&update)?;
        Ok(true)
    }

    /// Decodes `bytes`; `None` if they add nothing to the doc.
    fn new_update(&self, bytes: &[u8]) -> Result<Option<Update>, SyncError> {
        let update = guard::decode(bytes)?;
        let core = lock(&self.core);
        if self.is_damaged() {
            return Err(damaged());
        }
        reuse_check(&core.doc, bytes, &update, &core.sv)?;
        // Reads only; should yrs panic anyway, call it new: the apply path
        // is the guarded one.
        let new = catch_unwind(AssertUnwindSafe(|| is_new(&core, &update))).unwrap_or(true);
        Ok(new.then_some(update))
    }

    /// Applies an update that the server has persisted, and broadcasts what
    /// it changed (as a sync `update` message, type 0/2) to every connection
    /// except `origin` (None = to all, e.g. REST writes).
    ///
    /// What is broadcast is the effective change (the structs and deletions
    /// this apply integrated, as Yjs's `update` event reports them), not the
    /// bytes as received: a reconnecting client's step 2 carries its whole
    /// delete set, which no peer needs again. An update that only parks
    /// pending structs broadcasts nothing until its dependencies arrive.
    pub fn apply_persisted(&self, update: &[u8], origin: Option<ConnId>) -> Result<(), SyncError> {
        let decoded = guard::decode(update)?;
        let claimed_deletes = decoded.delete_set().clone();
        let mut core = lock(&self.core);
        if self.is_damaged() {
            return Err(damaged());
        }
        let DocCore { doc, sv, deleted } = &mut *core;
        // Checked when the update came in, but another one applied since may
        // have brought the ids it reuses (two connections racing with one
        // client id).
        reuse_check(doc, update, &decoded, sv)?;
        let mut txn = doc.transact_mut();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            crate::fault::trip(update);
            let result = txn.apply_update(decoded);
            let new_sv = txn.state_vector();
            record_deletions(deleted, &txn, &claimed_deletes, &new_sv, result.is_ok());
            let change = txn.has_changes().then(|| txn.encode_update_v1());
            txn.commit();
            (result, new_sv, change)
        }));
        let Ok((result, new_sv, change)) = applied else {
            // See "Damage" in the module docs: no commit, no unlock, no free.
            std::mem::forget(txn);
            self.damaged.store(true, Ordering::Release);
            tracing::error!("applying a persisted update panicked; the room must be reloaded");
            return Err(damaged());
        };
        drop(txn);
        *sv = new_sv;
        let mut conns = lock(&self.conns);
        drop(core);
        if let Some(change) = change {
            self.broadcast(&mut conns, &Bytes::from(wire::update_frame(&change)), origin);
        }
        drop(conns);
        match result {
            Ok(()) => {
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Whatever integrated before the error stays (and was broadcast);
            // reloading replays the same steps, see `Room::new`.
            Err(e) => Err(SyncError::BadUpdate(e.to_string())),
        }
    }

    fn on_awareness(&self, conn: ConnId, update: AwarenessUpdate, relay: Bytes) {
        let mut awareness = lock(&self.awareness);
        let summary = match awareness.apply_update_summary(update) {
            Ok(Some(summary)) => summary,
            // Nothing newer than what the room has: like the reference
            // server, relay nothing.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "awareness update not applied");
                return;
            }
        };
        let mut conns = lock(&self.conns);
        drop(awareness);
        let claimed: Vec<u64> = summary.added.iter().chain(&summary.updated).map(ClientID::get).collect();
        claim_clients(&mut conns.map, conn, &claimed);
        if let Some(entry) = conns.map.get_mut(&conn) {
            entry.clients.retain(|c| !summary.removed.iter().any(|r| r.get() == *c));
        }
        // The update as received: stock providers only send their own
        // client's entry, and relaying it needs no re-encoding.
        self.broadcast(&mut conns, &relay, None);
    }

    /// Removes a connection: its awareness client ids are removed from the
    /// room's Awareness and that removal is broadcast to the remaining
    /// connections. Unknown ids are ignored.
    pub fn disconnect(&self, conn: ConnId) {
        let mut awareness = lock(&self.awareness);
        let mut conns = lock(&self.conns);
        let Some(entry) = conns.map.remove(&conn) else { return };
        conns.dropped.retain(|c| *c != conn);
        // What y-protocols' `removeAwarenessStates` emits: each client at its
        // current clock with a `null` state. Peers drop a state whose clock
        // equals theirs when it arrives as null; not bumping the clock means
        // the client's own next renewal (clock + 1) is accepted at once if
        // it is in fact still online through another connection.
        let mut clients = HashMap::new();
        for id in &entry.clients {
            let Ok(current) = awareness.update_with_clients([ClientID::new(*id)]) else { continue };
            for (client, e) in current.clients {
                if &*e.json != "null" {
                    clients.insert(client, AwarenessUpdateEntry { clock: e.clock, json: Arc::from("null") });
                }
            }
        }
        if clients.is_empty() {
            return;
        }
        let removal = AwarenessUpdate { clients };
        let frame = Bytes::from(wire::awareness_frame(&wire::write_awareness(&removal)));
        if let Err(e) = awareness.apply_update(removal) {
            tracing::debug!(error = %e, "awareness removal not applied");
        }
        drop(awareness);
        self.broadcast(&mut conns, &frame, None);
    }

    /// Connections whose sender returned false since the last call (to be
    /// closed by the server, which then calls [`Room::disconnect`]).
    pub fn take_dropped(&self) -> Vec<ConnId> {
        std::mem::take(&mut lock(&self.conns).dropped)
    }

    /// Registered connections, including slow ones not yet disconnected.
    pub fn connection_count(&self) -> usize {
        lock(&self.conns).map.len()
    }

    /// Full state as a Yjs v1 update (for REST GET and compaction
    /// snapshots), pending structs and delete set included.
    ///
    /// Infallible for convenience; if the room is damaged (see
    /// [`Room::is_damaged`]) or yrs cannot merge its pending structs, it
    /// returns what it can (an empty update, or the state without pending
    /// structs) and logs an error. A compaction snapshot must use
    /// [`Room::try_encode_state`] instead, which fails rather than lose data.
    pub fn encode_state(&self) -> Vec<u8> {
        match self.diff(&StateVector::default(), true) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "encoding a document failed; serving an empty one");
                Update::EMPTY_V1.to_vec()
            }
        }
    }

    /// Full state as a Yjs v1 update, with everything the doc holds, or an
    /// error; never a partial state. Use it for compaction snapshots.
    pub fn try_encode_state(&self) -> Result<Vec<u8>, SyncError> {
        self.diff(&StateVector::default(), false)
    }

    /// Whether an apply panicked inside yrs: the room no longer touches its
    /// doc (doc operations fail; awareness still works). The server should
    /// close its connections (they reconnect) and load it again from the
    /// store; [`Room::new`] leaves out the update whose integration panics.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// The counters of this room.
    pub fn stats(&self) -> RoomStats {
        let c = &self.counters;
        RoomStats {
            connections: self.connection_count(),
            messages_in: c.messages_in.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            messages_out: c.messages_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            forbidden: c.forbidden.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Everything the doc has beyond `sv`, pending structs and the whole
    /// delete set included (what Yjs's `encodeStateAsUpdate` gives). yrs
    /// merges the pending structs in with an `unwrap`; updates are checked
    /// to round-trip before they are persisted, so that should not fail,
    /// but if it does, `lossy` serves the integrated state without them
    /// (fine for a sync step 2: the client asks again later).
    fn diff(&self, sv: &StateVector, lossy: bool) -> Result<Vec<u8>, SyncError> {
        let core = lock(&self.core);
        if self.is_damaged() {
            return Err(damaged());
        }
        let txn = core.doc.transact();
        if let Ok(update) = catch_unwind(AssertUnwindSafe(|| txn.encode_state_as_update_v1(sv))) {
            return Ok(update);
        }
        tracing::error!("encoding the doc with its pending structs panicked");
        if !lossy {
            return Err(SyncError::BadUpdate("the document's pending updates cannot be encoded".to_owned()));
        }
        catch_unwind(AssertUnwindSafe(|| txn.encode_diff_v1(sv)))
            .map_err(|_| SyncError::BadUpdate("the document cannot be encoded".to_owned()))
    }

    /// Whether `conn` is registered and still takes bytes.
    fn is_live(&self, conn: ConnId) -> bool {
        lock(&self.conns).map.get(&conn).is_some_and(|e| e.sender.is_some())
    }

    fn send_to(&self, conns: &mut Conns, conn: ConnId, msg: Bytes) {
        let Conns { map, dropped } = conns;
        if let Some(entry) = map.get_mut(&conn) {
            self.deliver(conn, entry, dropped, msg);
        }
    }

    fn broadcast(&self, conns: &mut Conns, msg: &Bytes, except: Option<ConnId>) {
        let Conns { map, dropped } = conns;
        for (id, entry) in map.iter_mut() {
            if Some(*id) != except {
                self.deliver(*id, entry, dropped, msg.clone());
            }
        }
    }

    fn deliver(&self, id: ConnId, entry: &mut ConnEntry, dropped: &mut Vec<ConnId>, msg: Bytes) {
        let Some(sender) = &entry.sender else { return };
        let len = msg.len() as u64;
        if sender(msg) {
            self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes_out.fetch_add(len, Ordering::Relaxed);
        } else {
            entry.sender = None;
            dropped.push(id);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An update is new if it inserts a clock range the doc has neither
/// integrated (below its state vector) nor parked as pending, or deletes a
/// range the doc has neither deleted nor parked in its pending delete set
/// (ranges of items not yet integrated count as new). Cost: one pass over the
/// update's blocks and delete set with map lookups into the cached state
/// vector and delete set; only when the doc has pending structs and the
/// update reaches past the state vector, one pass over those pending structs.
/// The doc is not copied.
fn is_new(core: &DocCore, update: &Update) -> bool {
    let txn = core.doc.transact();
    let store = txn.store();

    let mut pending_inserts: Option<IdSet> = None;
    for (client, ranges) in update.insertions(true).iter() {
        let known = core.sv.get(client);
        for range in ranges.iter() {
            if range.end <= known {
                continue;
            }
            let Some(pending) = store.pending_update() else { return true };
            let pending = pending_inserts.get_or_insert_with(|| pending.update.insertions(true));
            if !covered(range.start.max(known)..range.end, client, pending) {
                return true;
            }
        }
    }

    // One merge pass per client over sorted ranges (a reconnecting client's
    // step 2 carries its whole delete set).
    let mut deletes = normalized(update.delete_set());
    deletes.diff_with(&core.deleted);
    if let Some(pending) = store.pending_ds().filter(|_| !deletes.is_empty()) {
        deletes.diff_with(&normalized(pending));
    }
    !deletes.is_empty()
}

/// [`reuse::check`] against `doc`, whose state vector is `sv`.
fn reuse_check(doc: &Doc, bytes: &[u8], update: &Update, sv: &StateVector) -> Result<(), SyncError> {
    reuse::check(bytes, update, sv, |from| {
        // Reads only; a panic here leaves the doc as it was.
        catch_unwind(AssertUnwindSafe(|| doc.transact().encode_diff_v1(from))).ok()
    })
}

/// All live awareness states, or None if yrs cannot list them.
fn current_awareness(awareness: &Awareness) -> Option<AwarenessUpdate> {
    match awareness.update() {
        Ok(update) => Some(update),
        Err(e) => {
            tracing::debug!(error = %e, "could not list awareness states");
            None
        }
    }
}

/// Records `claimed` as introduced by `conn`. A client id moves to the
/// connection that last announced it: a provider that reconnects keeps its
/// client id, and when the server notices the old socket is gone later, its
/// disconnect must not remove the state the new connection now carries.
fn claim_clients(map: &mut HashMap<ConnId, ConnEntry>, conn: ConnId, claimed: &[u64]) {
    let Some(entry) = map.get_mut(&conn) else { return };
    let fresh: Vec<u64> = claimed.iter().copied().filter(|c| !entry.clients.contains(c)).collect();
    if fresh.is_empty() {
        return;
    }
    entry.clients.extend_from_slice(&fresh);
    // Usually one id: keep the idle connection at a few words.
    entry.clients.shrink_to_fit();
    for (id, other) in map.iter_mut() {
        if *id != conn {
            other.clients.retain(|c| !fresh.contains(c));
        }
    }
}

/// Whether every clock of `range` for `client` lies in `set`.
fn covered(range: std::ops::Range<u32>, client: &ClientID, set: &IdSet) -> bool {
    if range.start >= range.end {
        return true;
    }
    let mut rest = IdSet::new();
    rest.insert(ID::new(*client, range.start), range.end - range.start);
    rest.diff_with(set);
    rest.is_empty()
}

/// `set` with its ranges sorted and coalesced, empty ones dropped. yrs keeps
/// decoded delete sets as they came (in any order), and its set operations
/// assume sorted ranges.
fn normalized(set: &IdSet) -> IdSet {
    let mut out = IdSet::new();
    for (client, ranges) in set.iter() {
        for range in ranges.iter().filter(|r| r.start < r.end) {
            out.insert(ID::new(*client, range.start), range.end - range.start);
        }
    }
    out
}

/// Extends the room's delete set after `txn` applied an update (see
/// [`DocCore::deleted`]).
fn record_deletions(deleted: &mut IdSet, txn: &TransactionMut<'_>, claimed: &IdSet, sv: &StateVector, applied: bool) {
    deleted.merge_with(txn.delete_set().clone());
    if !applied {
        // The update stopped half way: its delete set may not have run.
        return;
    }
    let mut done = IdSet::new();
    for (client, ranges) in claimed.iter() {
        let limit = sv.get(client);
        for range in ranges.iter() {
            let end = range.end.min(limit);
            if range.start < end {
                done.insert(ID::new(*client, range.start), end - range.start);
            }
        }
    }
    if done.is_empty() {
        return;
    }
    if let Some(pending) = txn.store().pending_ds() {
        done.diff_with(&normalized(pending));
    }
    deleted.merge_with(done);
}
