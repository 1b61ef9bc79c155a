//! The document log's writer on a file-backed SQLite database: a journal
//! in front of the `documents` and `doc_updates` tables.
//!
//! # Why a journal
//! Every Yjs update is made durable before anyone else receives it, so the
//! append is the server's hottest write. As one SQLite transaction per
//! update it cost about 40 µs of CPU: the transaction's locks (four `fcntl`s
//! on the WAL index), two or three 4 KiB pages written to the WAL (the log's
//! b-tree leaf and the `documents` row, each a frame header and a page, each
//! checksummed), and the statements. That was a quarter of the server's CPU
//! per delivered update.
//!
//! Here an append is one `pwrite` of a few checksummed records at the end of
//! an append-only journal file that only this process writes, plus a few
//! in-memory updates. It is then exactly as durable as a SQLite commit with
//! `synchronous=NORMAL` was: both sit in the kernel's page cache, so a
//! killed process loses neither, and both reach the disk at the next sync.
//!
//! # Folding
//! A thread of its own (`wiresocket-doclog`) folds the journal into the
//! tables every [`FOLD_EVERY`] (sooner past [`FOLD_SOON`] entries), in one
//! transaction that also records the journal position it covers
//! (`doc_journal`, migration 10); the journal is synced every
//! [`SYNC_EVERY`], after a fold. A batch of
//! hundreds of entries touches each document's pages once. Journal segments
//! of [`SEGMENT_BYTES`] are deleted once folded and checkpointed.
//!
//! Every read or delete of a document through the store first waits for a
//! fold of everything appended before it ([`DocWriter::flush`]: free when
//! nothing is pending), so no reader sees the log without its journal.
//!
//! # Seqs
//! Seqs are assigned here, from an in-memory head per document read from
//! `documents.last_seq` when the document is first touched since its last
//! fold: consecutive from 1, in append order, as before. A document's head
//! is dropped once everything assigned to it is folded, so a document
//! deleted meanwhile starts over. An append to a document of an app that
//! does not exist fails whole with `NotFound`, as the foreign key made it;
//! entries of an app deleted while they wait are dropped by the fold.
//!
//! # Recovery
//! At start, what the journal holds past the recorded position is folded
//! before anything else (an entry at or below its document's `last_seq` is
//! already there). A record cut short by a crash mid-write was never
//! acknowledged; it and whatever follows it in its segment are ignored, and
//! the writer always goes on in a fresh segment. If the fold fails, the
//! store does not open: nothing acknowledged is dropped.
//!
//! Callbacks ([`DocAppender::submit`]) run while the journal is held, so
//! seqs and callbacks keep one order. The thread ends when the store is
//! closed or its last clone dropped, after a last fold.

use super::{db_err, secs};
use crate::{DocAppender, DocKey, Durable, Result, StoreError};
use domain::ids::AppId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sqlx::error::{DatabaseError, ErrorKind};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

/// How often the journal is folded into the tables (and synced).
const FOLD_EVERY: Duration = Duration::from_millis(1000);
/// A fold starts early once this many entries wait.
const FOLD_SOON: usize = 2048;
/// At most this many entries go into one fold transaction, so one
/// transaction stays short however much waits.
const MAX_FOLD_ENTRIES: usize = 8192;
/// How often the journal is synced to the disk, after a fold: what a power
/// loss can take (a killed process loses nothing).
const SYNC_EVERY: Duration = Duration::from_millis(1000);
/// The folding thread's nice value (its own; the connections' tasks keep 0).
const FOLDER_NICE: i32 = 10;
/// How long a start waits for the journal's lock (held by a closing store).
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// At most this many bytes of updates go into one fold transaction (but
/// always one entry).
const MAX_FOLD_BYTES: usize = 32 << 20;
/// A failing fold is retried after [`FOLD_EVERY`], doubling up to this.
const MAX_FOLD_BACKOFF: Duration = Duration::from_secs(5);
/// Updates waiting to be folded are held in memory up to this many bytes;
/// past it (folds keep failing) appends are refused.
const MAX_PENDING_BYTES: usize = 256 << 20;
/// A journal segment is closed, and a new one begun, past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
/// The format of a journal record's body.
const RECORD_VERSION: u8 = 1;
/// A record's length and checksum, before its body.
const HEADER: usize = 8;
/// CRC-32C (Castagnoli), as iSCSI, ext4 and many logs use.
static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

const APP_EXISTS: &str = "SELECT 1 FROM apps WHERE id = $1";
const DOC_LAST_SEQ: &str = "SELECT last_seq FROM documents WHERE app_id = $1 AND name = $2";
/// The document row of a fold: created (its snapshot seq just below its
/// first entry) or moved on. Nothing if its app is gone.
const FOLD_DOC: &str = "INSERT INTO documents \
     (app_id, name, snapshot_seq, last_seq, size_bytes, created_at, updated_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM apps WHERE id = $1) \
     ON CONFLICT (app_id, name) DO UPDATE SET last_seq = excluded.last_seq, \
     size_bytes = documents.size_bytes + excluded.size_bytes, updated_at = excluded.updated_at";
const INSERT_UPDATE: &str = "INSERT INTO doc_updates (app_id, name, seq, data) VALUES ($1, $2, $3, $4)";
const GET_POSITION: &str = "SELECT segment_no, byte_offset FROM doc_journal WHERE id = 1";
const SET_POSITION: &str = "UPDATE doc_journal SET segment_no = $1, byte_offset = $2 WHERE id = 1";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A place in the journal: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
}

/// One journaled log entry, waiting to be folded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    app: AppId,
    name: String,
    seq: i64,
    /// Unix seconds.
    at: i64,
    data: Vec<u8>,
    /// Where its record ends.
    end: Position,
}

// ---- records ---------------------------------------------------------------

fn too_large(what: &'static str) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what)))
}

/// One update of a batch record.
struct Item<'a> {
    app: &'a str,
    name: &'a str,
    seq: i64,
    data: &'a [u8],
}

/// Appends one record holding a whole batch to `out` (so a crash mid-write
/// keeps all of a batch or none of it): `[body length: u32][CRC-32C of the
/// body: u32][body]`, the body `[version: u8][at: i64][count: u32]` then per
/// update `[app id length: u8][app id][name length: u16][name][seq: i64]
/// [data length: u32][data]`, little-endian.
fn encode(out: &mut Vec<u8>, at: i64, items: &[Item<'_>]) -> Result<()> {
    let count = u32::try_from(items.len()).map_err(|_| too_large("batch too large for the journal"))?;
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for item in items {
        let app_len = u8::try_from(item.app.len()).map_err(|_| too_large("app id too long for the journal"))?;
        let name_len =
            u16::try_from(item.name.len()).map_err(|_| too_large("document name too long for the journal"))?;
        let data_len = u32::try_from(item.data.len()).map_err(|_| too_large("update too large for the journal"))?;
        out.push(app_len);
        out.extend_from_slice(item.app.as_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(item.name.as_bytes());
        out.extend_from_slice(&item.seq.to_le_bytes());
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(item.data);
    }
    let body_len =
        u32::try_from(out.len() - start - HEADER).map_err(|_| too_large("batch too large for the journal"))?;
    let crc = CRC.checksum(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads `n` bytes at `*at`, moving past them.
fn take<'a>(body: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let bytes = body.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(bytes)
}

fn take_i64(body: &[u8], at: &mut usize) -> Option<i64> {
    Some(i64::from_le_bytes(take(body, at, 8)?.try_into().ok()?))
}

fn take_u32(body: &[u8], at: &mut usize) -> Option<usize> {
    usize::try_from(u32::from_le_bytes(take(body, at, 4)?.try_into().ok()?)).ok()
}

/// Why a record is not read.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    /// Cut short, or its checksum fails: a write a crash interrupted (never
    /// acknowledged), or damage.
    Torn,
    /// It checks out but is not of a format this binary reads (a journal
    /// written by a newer version).
    Unknown(u8),
}

/// A checked record's body: its batch's entries, all ending at `end`.
fn decode_body(body: &[u8], end: Position) -> std::result::Result<Vec<Entry>, Bad> {
    let mut at = 0;
    let version = take(body, &mut at, 1).ok_or(Bad::Torn)?[0];
    if version != RECORD_VERSION {
        return Err(Bad::Unknown(version));
    }
    let entries = (|| {
        let at_secs = take_i64(body, &mut at)?;
        let count = take_u32(body, &mut at)?;
        let mut entries = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let app_len = usize::from(take(body, &mut at, 1)?[0]);
            let app = AppId::parse(std::str::from_utf8(take(body, &mut at, app_len)?).ok()?).ok()?;
            let name_len = usize::from(u16::from_le_bytes(take(body, &mut at, 2)?.try_into().ok()?));
            let name = std::str::from_utf8(take(body, &mut at, name_len)?).ok()?.to_owned();
            let seq = take_i64(body, &mut at)?;
            let data_len = take_u32(body, &mut at)?;
            let data = take(body, &mut at, data_len)?.to_vec();
            entries.push(Entry { app, name, seq, at: at_secs, data, end });
        }
        (at == body.len()).then_some(entries)
    })();
    // A body that checks out but does not parse is not a torn write: it is
    // read as damage all the same, and the segment is kept for inspection.
    entries.ok_or(Bad::Torn)
}

/// What reading a segment found.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    entries: Vec<Entry>,
    /// Bytes from the first record that was not read to the end.
    ignored: usize,
    /// Why it was not, if one was not.
    bad: Option<Bad>,
}

/// The entries of segment `segment` from byte `from` on, up to its end or
/// to the first record that cannot be read.
fn decode_segment(bytes: &[u8], segment: u64, from: u64) -> Read {
    let mut entries = Vec::new();
    let Ok(mut at) = usize::try_from(from) else { return Read { entries, ignored: 0, bad: None } };
    while at < bytes.len() {
        let checked = (|| {
            let header = bytes.get(at..at.checked_add(HEADER)?)?;
            let len = usize::try_from(u32::from_le_bytes(header[..4].try_into().ok()?)).ok()?;
            let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
            let end = at.checked_add(HEADER)?.checked_add(len)?;
            let body = bytes.get(at + HEADER..end)?;
            (len > 0 && CRC.checksum(body) == crc).then_some((body, end))
        })();
        let record = match checked {
            Some((body, end)) => u64::try_from(end)
                .map_err(|_| Bad::Torn)
                .and_then(|offset| decode_body(body, Position { segment, offset }))
                .map(|batch| (batch, end)),
            None => Err(Bad::Torn),
        };
        match record {
            Ok((batch, end)) => {
                entries.extend(batch);
                at = end;
            }
            Err(bad) => return Read { entries, ignored: bytes.len() - at, bad: Some(bad) },
        }
    }
    Read { entries, ignored: 0, bad: None }
}

// ---- segments ----------------------------------------------------------------

/// The journal segment being written.
#[derive(Debug)]
struct Segment {
    no: u64,
    file: File,
    len: u64,
}

fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.log"))
}

/// The segment numbers in `dir`, in order.
fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(no) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok()) {
            found.push(no);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Creates segment `no` (it must not exist) and makes its name durable.
fn create_segment(dir: &Path, no: u64) -> std::io::Result<Segment> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(segment_path(dir, no))?;
    File::open(dir)?.sync_all()?;
    Ok(Segment { no, file, len: 0 })
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Io(e))
}

/// Memory an entry waiting to be folded holds, roughly.
fn held(name: &str, data: &[u8]) -> usize {
    std::mem::size_of::<Entry>() + name.len() + data.len()
}

// ---- the journal ---------------------------------------------------------------

/// What appends share, behind one lock.
#[derive(Debug)]
struct Log {
    /// Holds the journal's lock (`LOCK`, an exclusive `flock`) while open.
    _owner: File,
    dir: PathBuf,
    segment: Segment,
    /// Segments before `segment` not yet deleted.
    rotated: Vec<u64>,
    /// Segments closed since the last sync, to be synced with the next.
    unsynced: Vec<File>,
    /// For heads and apps: reads only.
    read: Connection,
    /// The last seq assigned per document, for documents touched since
    /// their last fold.
    heads: HashMap<AppId, HashMap<String, i64>>,
    /// Apps known to exist (forgotten when deleted).
    alive: HashSet<AppId>,
    /// Journaled, not yet folded, in journal order.
    pending: Vec<Entry>,
    /// The bytes of `pending`'s updates, and how many may wait: past it
    /// appends are refused (folds are failing) rather than held in memory
    /// without end.
    pending_bytes: usize,
    max_pending_bytes: usize,
    /// A failed write could not be undone: no more writes (see `append`).
    broken: bool,
    buf: Vec<u8>,
}

impl Log {
    /// The last seq of `key`, read from the tables unless cached; `NotFound`
    /// if its app does not exist.
    fn head(&mut self, key: &DocKey) -> Result<i64> {
        if let Some(seq) = self.heads.get(&key.app_id).and_then(|docs| docs.get(&key.name)) {
            return Ok(*seq);
        }
        let app = key.app_id.to_string();
        if !self.alive.contains(&key.app_id) {
            if !self.read.prepare_cached(APP_EXISTS).and_then(|mut s| s.exists(params![app])).map_err(lite_err)? {
                return Err(StoreError::NotFound);
            }
            self.alive.insert(key.app_id);
        }
        let last: Option<i64> = self
            .read
            .prepare_cached(DOC_LAST_SEQ)
            .and_then(|mut s| s.query_row(params![app, key.name], |r| r.get(0)).optional())
            .map_err(lite_err)?;
        // Cached by `append` once the write is journaled.
        Ok(last.unwrap_or(0))
    }

    /// Journals `batch` in one write and answers its seqs. Nothing of it is
    /// kept if it fails.
    fn append(&mut self, batch: Vec<(DocKey, Vec<u8>)>, now: i64) -> Result<Vec<i64>> {
        if self.broken {
            return Err(io_err(std::io::Error::other("the document journal refuses writes until restarted")));
        }
        if self.pending_bytes > self.max_pending_bytes {
            return Err(StoreError::Database(sqlx::Error::Protocol(
                "the document journal is not being folded into the database; writes wait for it".into(),
            )));
        }
        // Each document's seqs follow on from its head, in batch order.
        let mut next: HashMap<(AppId, &str), i64> = HashMap::new();
        let mut seqs = Vec::with_capacity(batch.len());
        for (key, _) in &batch {
            let head = match next.entry((key.app_id, key.name.as_str())) {
                std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => slot.insert(self.head(key)?),
            };
            *head += 1;
            seqs.push(*head);
        }
        if self.segment.len >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let apps: Vec<String> = batch.iter().map(|(key, _)| key.app_id.to_string()).collect();
        let items: Vec<Item<'_>> = batch
            .iter()
            .zip(&apps)
            .zip(&seqs)
            .map(|(((key, data), app), &seq)| Item { app, name: &key.name, seq, data })
            .collect();
        if let Err(e) = encode(&mut buf, now, &items) {
            self.buf = buf;
            return Err(e);
        }
        drop(items);
        let end = self.segment.len + buf.len() as u64;
        let written = self.segment.file.write_all_at(&buf, self.segment.len);
        self.buf = buf;
        if let Err(e) = written {
            // A record cut short, or one written whole whose append is
            // reported failed, must not be read at recovery: cut it off. If
            // even that fails, its seqs could be read back in place of the
            // next writes', so this journal takes no more writes until a
            // restart (which reads it up to the damage).
            if let Err(cut) = self.segment.file.set_len(self.segment.len) {
                tracing::error!(error = %cut, "the document journal could not undo a failed write; it refuses writes until restarted");
                self.broken = true;
            } else if let Err(r) = self.rotate() {
                tracing::warn!(error = %r, "starting a new document journal segment failed");
            }
            return Err(io_err(e));
        }
        self.segment.len = end;
        for ((app, name), last) in next {
            self.heads.entry(app).or_default().insert(name.to_owned(), last);
        }
        let end = Position { segment: self.segment.no, offset: end };
        for ((key, data), seq) in batch.into_iter().zip(&seqs) {
            self.pending_bytes += held(&key.name, &data);
            self.pending.push(Entry { app: key.app_id, name: key.name, seq: *seq, at: now, data, end });
        }
        Ok(seqs)
    }

    /// Goes on in a new segment.
    fn rotate(&mut self) -> Result<()> {
        let next = create_segment(&self.dir, self.segment.no + 1).map_err(io_err)?;
        let old = std::mem::replace(&mut self.segment, next);
        self.rotated.push(old.no);
        self.unsynced.push(old.file);
        Ok(())
    }

    /// After a fold: drops the heads of documents with nothing left to fold.
    fn evict(&mut self, folded: &[(AppId, String, i64)]) {
        for (app, name, last) in folded {
            if let Some(docs) = self.heads.get_mut(app) {
                if docs.get(name) == Some(last) {
                    docs.remove(name);
                }
                if docs.is_empty() {
                    self.heads.remove(app);
                }
            }
        }
    }
}

/// How many of `entries` (at least one) the next fold transaction takes:
/// at most [`MAX_FOLD_ENTRIES`] and [`MAX_FOLD_BYTES`] of updates.
fn fold_size(entries: &[Entry]) -> usize {
    let mut bytes = 0;
    let n = entries
        .iter()
        .take(MAX_FOLD_ENTRIES)
        .take_while(|e| {
            bytes += e.data.len();
            bytes <= MAX_FOLD_BYTES
        })
        .count();
    n.max(1).min(entries.len())
}

/// Folds all of `entries`, transaction by transaction (see [`fold_size`]).
fn fold_all(conn: &mut Connection, mut entries: &[Entry]) -> rusqlite::Result<()> {
    while !entries.is_empty() {
        let (now, rest) = entries.split_at(fold_size(entries));
        fold(conn, now)?;
        entries = rest;
    }
    Ok(())
}

/// Folds `entries` (in journal order) into the tables in one transaction,
/// recording the position after the last. Answers each document's last seq
/// among them.
fn fold(conn: &mut Connection, entries: &[Entry]) -> rusqlite::Result<Vec<(AppId, String, i64)>> {
    let Some(covered) = entries.last().map(|e| e.end) else { return Ok(Vec::new()) };
    let mut docs: BTreeMap<(AppId, &str), Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        docs.entry((e.app, e.name.as_str())).or_default().push(e);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut folded = Vec::with_capacity(docs.len());
    let mut dropped = 0usize;
    for ((app, name), entries) in docs {
        let last_of_all = entries.last().map_or(0, |e| e.seq);
        folded.push((app, name.to_owned(), last_of_all));
        let app_id = app.to_string();
        let existing: Option<i64> =
            tx.prepare_cached(DOC_LAST_SEQ)?.query_row(params![app_id, name], |r| r.get(0)).optional()?;
        // Already folded before a crash (recovery) if at or below `last_seq`.
        let fresh: Vec<&Entry> = entries.into_iter().filter(|e| existing.is_none_or(|last| e.seq > last)).collect();
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else { continue };
        if let Some(existing) = existing
            && existing != first.seq - 1
        {
            tracing::warn!(existing, first = first.seq, "a document's journal does not follow on from its log");
        }
        let bytes: i64 = fresh.iter().map(|e| super::byte_len(&e.data)).sum();
        let stored = tx.prepare_cached(FOLD_DOC)?.execute(params![
            app_id,
            name,
            first.seq - 1,
            last.seq,
            bytes,
            first.at,
            last.at
        ])?;
        if stored == 0 {
            // Its app was deleted while they waited.
            dropped += fresh.len();
            continue;
        }
        let mut insert = tx.prepare_cached(INSERT_UPDATE)?;
        for e in fresh {
            insert.execute(params![app_id, name, e.seq, e.data])?;
        }
    }
    let (segment, offset) = (i64::try_from(covered.segment), i64::try_from(covered.offset));
    let (Ok(segment), Ok(offset)) = (segment, offset) else {
        return Err(rusqlite::Error::IntegralValueOutOfRange(0, i64::MAX));
    };
    tx.execute(SET_POSITION, params![segment, offset])?;
    tx.commit()?;
    if dropped > 0 {
        tracing::debug!(dropped, "journaled updates of deleted apps dropped");
    }
    Ok(folded)
}

/// Deletes the segments of `candidates` below `covered`'s once a checkpoint
/// has the folded data in the database file itself (so a power loss cannot
/// take it from the WAL after its journal is gone). Answers those deleted.
fn delete_folded(conn: &Connection, dir: &Path, candidates: &[u64], covered: Position) -> Vec<u64> {
    let done: Vec<u64> = candidates.iter().copied().filter(|&no| no < covered.segment).collect();
    if done.is_empty() {
        return done;
    }
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match checkpoint {
        Ok((0, log, checkpointed)) if checkpointed >= log => {}
        Ok(_) => return Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "checkpoint before deleting journal segments failed; later");
            return Vec::new();
        }
    }
    let mut deleted = Vec::with_capacity(done.len());
    for no in done {
        match std::fs::remove_file(segment_path(dir, no)) {
            Ok(()) => deleted.push(no),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted.push(no),
            Err(e) => tracing::warn!(error = %e, segment = no, "deleting a folded journal segment failed"),
        }
    }
    deleted
}

/// Folds what the journal in `dir` holds past the recorded position, then
/// deletes the old segments if it can. Answers the first free segment
/// number and the old segments left.
fn recover(conn: &mut Connection, dir: &Path) -> Result<(u64, Vec<u64>)> {
    let (segment, offset): (i64, i64) =
        conn.query_row(GET_POSITION, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(lite_err)?;
    let position =
        Position { segment: u64::try_from(segment).unwrap_or(0), offset: u64::try_from(offset).unwrap_or(0) };
    let mut segments = list_segments(dir).map_err(io_err)?;
    let highest = segments.last().copied();
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    for &no in segments.iter().filter(|&&no| no >= position.segment) {
        let bytes = std::fs::read(segment_path(dir, no)).map_err(io_err)?;
        let from = if no == position.segment { position.offset } else { 0 };
        let read = decode_segment(&bytes, no, from);
        match read.bad {
            None => {}
            Some(Bad::Unknown(version)) => {
                return Err(io_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "document journal segment {no} holds records of format {version}, which this version of \
                         WireSocket does not read: start the version that wrote it, which folds it"
                    ),
                )));
            }
            Some(Bad::Torn) => {
                // Normally a crash mid-write: never acknowledged. The segment
                // is kept aside (not deleted) in case it is damage instead.
                tracing::warn!(
                    segment = no,
                    ignored = read.ignored,
                    "the document journal ends in a record cut short (a crash mid-write?); what follows it is \
                     ignored and the segment kept as .damaged"
                );
                damaged.push(no);
            }
        }
        entries.extend(read.entries);
    }
    fold_all(conn, &entries).map_err(lite_err)?;
    if !entries.is_empty() {
        tracing::info!(entries = entries.len(), "folded the document journal a previous run left");
    }
    for no in damaged {
        let path = segment_path(dir, no);
        let mut aside = path.clone().into_os_string();
        aside.push(".damaged");
        std::fs::rename(&path, &aside).map_err(io_err)?;
        segments.retain(|&s| s != no);
    }
    metrics::counter!("wiresocket_doc_journal_recovered_entries_total").increment(entries.len() as u64);
    let next = highest.map_or(1, |last| last + 1).max(position.segment + 1);
    let deleted = delete_folded(conn, dir, &segments, Position { segment: next, offset: 0 });
    let left = segments.into_iter().filter(|no| !deleted.contains(no)).collect();
    Ok((next, left))
}

// ---- the writer ---------------------------------------------------------------

/// How far folding has come: entries folded since start, and failed folds.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    folded: u64,
    failures: u64,
    /// The thread has ended (closed, or died): no fold will come.
    ended: bool,
}

/// Marks the progress ended when the thread leaves [`folder`], however it
/// leaves, so no [`DocWriter::flush`] waits for a fold that cannot come.
struct EndsProgress<'a>(&'a Shared);

impl Drop for EndsProgress<'_> {
    fn drop(&mut self) {
        // Ended by a panic, the journal is still open: close it, so appends
        // fail rather than being acknowledged into a journal nobody folds.
        drop(lock(&self.0.log).take());
        self.0.progress.send_modify(|p| p.ended = true);
    }
}

#[derive(Debug, Default)]
struct Signal {
    fold_now: bool,
    closing: bool,
}

/// What the writer's handle and its thread share.
#[derive(Debug)]
struct Shared {
    /// `None` once closed.
    log: Mutex<Option<Log>>,
    /// Entries journaled since start; changes only with `log` held.
    appended: AtomicU64,
    progress: watch::Sender<Progress>,
    signal: Mutex<Signal>,
    wakeup: Condvar,
}

impl Shared {
    fn wake(&self, closing: bool) {
        let mut signal = lock(&self.signal);
        signal.fold_now = true;
        signal.closing |= closing;
        self.wakeup.notify_one();
    }

    /// Waits up to `timeout` for a wake-up; answers whether closing.
    fn wait(&self, timeout: Duration) -> bool {
        let mut signal = lock(&self.signal);
        if !signal.fold_now && !signal.closing {
            signal = match self.wakeup.wait_timeout(signal, timeout) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        signal.fold_now = false;
        signal.closing
    }
}

/// Handle to the journal and its folding thread. Dropping it (with the
/// store's last clone) ends the thread after a last fold.
#[derive(Debug)]
pub(super) struct DocWriter {
    shared: Arc<Shared>,
    /// Fails (its sender is dropped) once the thread has ended. Taken by
    /// [`close`](Self::close) to wait for that without blocking.
    ended: Mutex<Option<oneshot::Receiver<()>>>,
}

impl DocWriter {
    /// Starts the thread, which opens two connections with `connect` (one
    /// folds, one reads heads), folds what the journal in `dir` holds, and
    /// begins a new segment; waits until it has, so a database or journal
    /// that cannot be opened fails here, not at the first append.
    pub(super) async fn start<F>(dir: PathBuf, connect: F) -> Result<Self>
    where
        F: Fn() -> rusqlite::Result<Connection> + Send + 'static,
    {
        let (opened, ready) = oneshot::channel();
        let (ending, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("wiresocket-doclog".to_owned())
            .spawn(move || {
                // Dropped last, after the connections.
                let _ending = ending;
                // Folding is background work: a fold of a second's writes
                // must not take a core from the connections' tasks (on
                // Linux this sets the nice value of this thread alone).
                if let Err(e) = rustix::process::setpriority_process(None, FOLDER_NICE) {
                    tracing::debug!(error = %e, "lowering the document journal thread's priority failed");
                }
                match open(&dir, &connect) {
                    Ok((shared, conn)) => {
                        let _ = opened.send(Ok(shared.clone()));
                        let _ends = EndsProgress(&shared);
                        folder(&shared, conn);
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                    }
                }
            })
            .map_err(io_err)?;
        let shared = ready.await.map_err(|_| crashed())??;
        Ok(Self { shared, ended: Mutex::new(Some(ended)) })
    }

    /// Journals `batch` (not empty) and answers its seqs.
    pub(super) async fn append(&self, batch: &[(DocKey, Vec<u8>)], now: OffsetDateTime) -> Result<Vec<i64>> {
        let mut answer = None;
        self.accept(batch.to_vec(), secs(now), |r| answer = Some(r))?;
        answer.unwrap_or_else(|| Err(crashed()))
    }

    /// Journals `batch` and calls `reply` with its result while the
    /// journal is still held (so replies keep the order of seqs). An error
    /// (without a call) once closed.
    fn accept(&self, batch: Vec<(DocKey, Vec<u8>)>, now: i64, reply: impl FnOnce(Result<Vec<i64>>)) -> Result<()> {
        let n = batch.len() as u64;
        let mut guard = lock(&self.shared.log);
        let log = guard.as_mut().ok_or(StoreError::Database(sqlx::Error::PoolClosed))?;
        let result = log.append(batch, now);
        if result.is_ok() {
            self.shared.appended.fetch_add(n, Ordering::Release);
        }
        let soon = log.pending.len() >= FOLD_SOON;
        reply(result);
        drop(guard);
        if soon {
            self.shared.wake(false);
        }
        Ok(())
    }

    /// Waits until everything appended before this call is in the tables.
    /// Immediate when nothing is pending; an error if a fold fails
    /// meanwhile (the entries stay journaled and are retried).
    pub(super) async fn flush(&self) -> Result<()> {
        let target = self.shared.appended.load(Ordering::Acquire);
        let mut progress = self.shared.progress.subscribe();
        let start = *progress.borrow_and_update();
        if start.folded >= target {
            return Ok(());
        }
        if start.ended {
            return Err(crashed());
        }
        self.shared.wake(false);
        loop {
            progress.changed().await.map_err(|_| crashed())?;
            let now = *progress.borrow_and_update();
            if now.folded >= target {
                return Ok(());
            }
            if now.ended {
                return Err(crashed());
            }
            if now.failures != start.failures {
                return Err(StoreError::Database(sqlx::Error::Protocol(
                    "the document journal could not be folded into the database".into(),
                )));
            }
        }
    }

    /// Whether it still takes appends (not closed or closing).
    pub(super) fn is_open(&self) -> bool {
        !lock(&self.shared.signal).closing && lock(&self.shared.log).is_some()
    }

    /// `app` was deleted: later appends to its documents check again (and
    /// fail), and its heads go.
    pub(super) fn forget_app(&self, app: AppId) {
        if let Some(log) = lock(&self.shared.log).as_mut() {
            log.alive.remove(&app);
            log.heads.remove(&app);
        }
    }

    /// What fails once the thread has ended, for tests that watch it end.
    #[cfg(test)]
    pub(super) fn take_ended(&self) -> Option<oneshot::Receiver<()>> {
        lock(&self.ended).take()
    }

    /// Stops taking appends and waits until the thread has folded what is
    /// journaled and ended.
    pub(super) async fn close(&self) {
        self.shared.wake(true);
        let ended = lock(&self.ended).take();
        if let Some(ended) = ended {
            let _ = ended.await;
        }
    }
}

impl Drop for DocWriter {
    fn drop(&mut self) {
        self.shared.wake(true);
    }
}

#[async_trait::async_trait]
impl DocAppender for DocWriter {
    /// Runs right here, on the caller's thread: a journal write, no
    /// hand-off, no thread to wake.
    async fn submit(&self, batch: Vec<(DocKey, Vec<u8>)>, now: OffsetDateTime, then: Durable) -> Result<()> {
        self.accept(batch, secs(now), |result| {
            // A panicking callback must not take the journal (and every
            // later append) down with it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(result))).is_err() {
                tracing::error!("a document log callback panicked");
            }
        })
    }
}

/// The error for a writer thread that is gone.
fn crashed() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

/// Opens the connections and the journal, folding what it holds.
fn open<F>(dir: &Path, connect: &F) -> Result<(Arc<Shared>, Connection)>
where
    F: Fn() -> rusqlite::Result<Connection>,
{
    let mut conn = connect().map_err(lite_err)?;
    let read = connect().map_err(lite_err)?;
    std::fs::create_dir_all(dir).map_err(io_err)?;
    // One writer per journal: a second process on the same file would fold
    // the first one's entries, delete its segments and reuse its seqs.
    let owner =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK")).map_err(io_err)?;
    // A store of this process that is closing (its last fold) gets a few
    // seconds to let go.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match owner.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io_err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    format!("another process has this database's document journal ({}) open", dir.display()),
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    let (next, rotated) = recover(&mut conn, dir)?;
    let segment = create_segment(dir, next).map_err(io_err)?;
    let log = Log {
        _owner: owner,
        dir: dir.to_owned(),
        segment,
        rotated,
        unsynced: Vec::new(),
        read,
        heads: HashMap::new(),
        alive: HashSet::new(),
        pending: Vec::new(),
        pending_bytes: 0,
        max_pending_bytes: MAX_PENDING_BYTES,
        broken: false,
        buf: Vec::new(),
    };
    let shared = Arc::new(Shared {
        log: Mutex::new(Some(log)),
        appended: AtomicU64::new(0),
        progress: watch::Sender::new(Progress::default()),
        signal: Mutex::new(Signal::default()),
        wakeup: Condvar::new(),
    });
    Ok((shared, conn))
}

/// The thread's loop: folds on schedule, on demand and at the end.
fn folder(shared: &Shared, mut conn: Connection) {
    let mut wait = FOLD_EVERY;
    let mut more = false;
    let mut synced = std::time::Instant::now();
    loop {
        let closing = if more { lock(&shared.signal).closing } else { shared.wait(wait) };
        if closing {
            return finish(shared, conn);
        }
        let (taken, target, journal) = {
            let mut guard = lock(&shared.log);
            let Some(log) = guard.as_mut() else { return };
            let n = fold_size(&log.pending);
            let taken: Vec<Entry> = log.pending.drain(..n).collect();
            log.pending_bytes -= taken.iter().map(|e| held(&e.name, &e.data)).sum::<usize>();
            more = !log.pending.is_empty();
            let target = shared.appended.load(Ordering::Acquire).saturating_sub(log.pending.len() as u64);
            let journal = (synced.elapsed() >= SYNC_EVERY).then(|| {
                let mut files = std::mem::take(&mut log.unsynced);
                log.segment.file.try_clone().map(|current| {
                    files.push(current);
                    files
                })
            });
            (taken, target, journal)
        };
        let started = std::time::Instant::now();
        // Journaled and not yet in the tables, as this fold starts.
        let waiting = shared.appended.load(Ordering::Acquire).saturating_sub(shared.progress.borrow().folded);
        metrics::gauge!("wiresocket_doc_journal_pending").set(waiting as f64);
        match fold(&mut conn, &taken) {
            Ok(_) if taken.is_empty() => {}
            Ok(folded) => {
                wait = FOLD_EVERY;
                let covered = taken.last().map(|e| e.end).unwrap_or_default();
                // Segments waiting to be deleted (rare: one per 8 MiB).
                let rotated = {
                    let mut guard = lock(&shared.log);
                    let Some(log) = guard.as_mut() else { return };
                    log.evict(&folded);
                    (!log.rotated.is_empty()).then(|| (log.rotated.clone(), log.dir.clone()))
                };
                shared.progress.send_modify(|p| p.folded = target);
                metrics::counter!("wiresocket_doc_journal_folds_total").increment(1);
                metrics::counter!("wiresocket_doc_journal_folded_entries_total").increment(taken.len() as u64);
                metrics::histogram!("wiresocket_doc_journal_fold_seconds").record(started.elapsed().as_secs_f64());
                if let Some((rotated, dir)) = rotated {
                    let deleted = delete_folded(&conn, &dir, &rotated, covered);
                    if !deleted.is_empty()
                        && let Some(log) = lock(&shared.log).as_mut()
                    {
                        log.rotated.retain(|no| !deleted.contains(no));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "folding the document journal into the database failed; it stays journaled");
                if let Some(log) = lock(&shared.log).as_mut() {
                    log.pending_bytes += taken.iter().map(|e| held(&e.name, &e.data)).sum::<usize>();
                    let newer = std::mem::replace(&mut log.pending, taken);
                    log.pending.extend(newer);
                }
                shared.progress.send_modify(|p| p.failures += 1);
                metrics::counter!("wiresocket_doc_journal_fold_failures_total").increment(1);
                more = false;
                wait = (wait * 2).min(MAX_FOLD_BACKOFF);
            }
        }
        if let Some(journal) = journal {
            synced = std::time::Instant::now();
            if let Err(e) = journal.and_then(|files| files.iter().try_for_each(File::sync_data)) {
                tracing::warn!(error = %e, "syncing the document journal failed");
            }
        }
    }
}

/// The last fold: takes the journal (appends fail from here on), folds all
/// it holds, syncs it, and closes the connections. What cannot be folded
/// stays journaled for the next start.
fn finish(shared: &Shared, mut conn: Connection) {
    let Some(log) = lock(&shared.log).take() else { return };
    let target = shared.appended.load(Ordering::Acquire);
    match fold_all(&mut conn, &log.pending) {
        Ok(()) => shared.progress.send_modify(|p| p.folded = target),
        Err(e) => tracing::warn!(error = %e, "the last fold of the document journal failed; the next start folds it"),
    }
    if let Err(e) = log.unsynced.iter().chain([&log.segment.file]).try_for_each(File::sync_data) {
        tracing::warn!(error = %e, "syncing the document journal failed");
    }
    let Log { read, .. } = log;
    for c in [read, conn] {
        if let Err((_, e)) = c.close() {
            tracing::warn!(error = %e, "closing a document journal connection failed");
        }
    }
}

/// Maps a `rusqlite` error as [`db_err`] maps sqlx's: constraint failures
/// become `Conflict` or `NotFound` by the same rules, the rest `Database`.
fn lite_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..) = e {
        return StoreError::Corrupt(e.to_string());
    }
    db_err(sqlx::Error::Database(Box::new(LiteError { message: e.to_string(), source: e })))
}

/// A `rusqlite` error dressed as an sqlx database error, so one function
/// ([`db_err`]) reads both.
#[derive(Debug)]
struct LiteError {
    message: String,
    source: rusqlite::Error,
}

impl LiteError {
    fn extended_code(&self) -> Option<i32> {
        match &self.source {
            rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
            _ => None,
        }
    }
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LiteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.extended_code().map(|c| Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    /// As sqlx-sqlite reads SQLite's extended result codes.
    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.extended_code() {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => ErrorKind::UniqueViolation,
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::contract::{doc_app, doc_key};
    use crate::sql::SqliteStore;
    use crate::sql::sqlite::journal_dir;
    use rusqlite::OpenFlags;

    struct Db {
        store: SqliteStore,
        dir: PathBuf,
        path: PathBuf,
        app: AppId,
    }

    /// A migrated database file with one app.
    async fn database() -> Db {
        let dir = std::env::temp_dir().join(format!("doclog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let app = doc_app(&store).await.id;
        Db { store, dir, path, app }
    }

    async fn updates(store: &SqliteStore, key: &DocKey) -> Vec<Vec<u8>> {
        store.load_doc(key).await.unwrap().unwrap().updates
    }

    /// Log rows in the table itself, read past the store (no flush).
    async fn rows_in_table(store: &SqliteStore, key: &DocKey) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM doc_updates WHERE app_id = $1 AND name = $2")
            .bind(key.app_id.to_string())
            .bind(&key.name)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    fn writer(store: &SqliteStore) -> &DocWriter {
        store.doc_writer().expect("a file-backed store has a writer")
    }

    /// Submissions from many tasks: each callback sees its own seq, the
    /// callbacks run in seq order (one at a time), and a callback that
    /// panics does not stop the writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn submitted_batches_are_called_back_in_seq_order() {
        let db = database().await;
        let appender = db.store.doc_appender().expect("a file-backed store has an appender");
        let key = doc_key(db.app, "ordered");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let boom: Durable = Box::new(|_| panic!("a callback that panics"));
        appender.submit(vec![(key.clone(), vec![0])], OffsetDateTime::now_utc(), boom).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u8 {
            let (appender, key, seen) = (appender.clone(), key.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25u8 {
                    let seen = seen.clone();
                    let then: Durable = Box::new(move |r| {
                        let seq = r.unwrap()[0];
                        seen.lock().unwrap().push(seq);
                    });
                    appender.submit(vec![(key.clone(), vec![t, i])], OffsetDateTime::now_utc(), then).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let seqs = seen.lock().unwrap().clone();
        assert_eq!(seqs, (2..=201).collect::<Vec<_>>(), "in seq order, none missing, after the panicking one (seq 1)");
        assert_eq!(updates(&db.store, &key).await.len(), 201);
        db.store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// An append answers once journaled, before its fold; a read through
    /// the store waits for the fold, and the table then holds it.
    #[tokio::test]
    async fn an_append_is_journaled_then_folded_and_reads_wait_for_the_fold() {
        let db = database().await;
        let key = doc_key(db.app, "journaled");
        let appender = db.store.doc_appender().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let then: Durable = Box::new(move |r| tx.send((r.unwrap(), std::thread::current().id())).unwrap());
        appender.submit(vec![(key.clone(), vec![1])], OffsetDateTime::now_utc(), then).await.unwrap();
        let (seqs, thread) = rx.try_recv().expect("answered before submit returned");
        assert_eq!((seqs, thread), (vec![1], std::thread::current().id()), "on the caller's thread");
        let batch = [(key.clone(), vec![2]), (key.clone(), vec![3])];
        assert_eq!(db.store.append_doc_updates(&batch, OffsetDateTime::now_utc()).await.unwrap(), vec![2, 3]);
        assert_eq!(updates(&db.store, &key).await, vec![vec![1], vec![2], vec![3]]);
        assert_eq!(rows_in_table(&db.store, &key).await, 3, "the read folded first");
        let doc = db.store.get_doc(&key).await.unwrap().unwrap();
        assert_eq!(doc.size_bytes, 3);
        // Folded on schedule too, with no reader asking.
        db.store.append_doc_updates(&[(key.clone(), vec![4])], OffsetDateTime::now_utc()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rows_in_table(&db.store, &key).await < 4 {
            assert!(std::time::Instant::now() < deadline, "never folded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        db.store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// What a crash left in the journal is folded at the next start: entries
    /// already in the tables are not added twice, a record cut short (and
    /// whatever follows it) is ignored, and seqs go on from there.
    #[tokio::test]
    async fn a_crashed_journal_is_folded_at_start_without_doubles() {
        let db = database().await;
        let key = doc_key(db.app, "crashed");
        db.store
            .append_doc_updates(&[(key.clone(), vec![1]), (key.clone(), vec![2])], OffsetDateTime::now_utc())
            .await
            .unwrap();
        db.store.close().await;
        // A journal as a killed process leaves it: seq 2 again (folded
        // before the crash), 3 and 4 (not folded), then a torn record.
        let app = db.app.to_string();
        let item = |seq, data| Item { app: &app, name: &key.name, seq, data };
        let mut bytes = Vec::new();
        encode(&mut bytes, 1_700_000_000, &[item(2, &[2]), item(3, &[3])]).unwrap();
        encode(&mut bytes, 1_700_000_000, &[item(4, &[4])]).unwrap();
        let mut torn = Vec::new();
        encode(&mut torn, 1_700_000_000, &[item(5, &[5; 64])]).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() - 10]);
        let segments = list_segments(&journal_dir(&db.path)).unwrap();
        let crashed = segments.last().unwrap() + 1;
        std::fs::write(segment_path(&journal_dir(&db.path), crashed), &bytes).unwrap();

        let store = SqliteStore::open(&db.path).await.unwrap();
        assert_eq!(rows_in_table(&store, &key).await, 4, "folded at start, before any read");
        assert_eq!(updates(&store, &key).await, vec![vec![1], vec![2], vec![3], vec![4]]);
        let next = store.append_doc_updates(&[(key.clone(), vec![6])], OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(next, vec![5], "the torn record was never acknowledged: its seq is free");
        assert!(!segment_path(&journal_dir(&db.path), crashed).exists(), "not left as a segment");
        let aside = journal_dir(&db.path).join(format!("{crashed:020}.log.damaged"));
        assert_eq!(std::fs::read(aside).unwrap(), bytes, "kept aside, as it might be damage");
        store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// The position folded is recorded with the fold: a restart does not
    /// bring back a document deleted after its entries were folded, though
    /// its records are still in the journal's segment.
    #[tokio::test]
    async fn a_restart_does_not_bring_back_what_was_deleted_after_its_fold() {
        let db = database().await;
        let (gone, kept) = (doc_key(db.app, "gone"), doc_key(db.app, "kept"));
        let now = OffsetDateTime::now_utc();
        // `gone`'s record last: a restart that read the last folded record
        // again (a position at its start, not its end) would bring it back.
        db.store.append_doc_updates(&[(kept.clone(), vec![2])], now).await.unwrap();
        db.store.append_doc_updates(&[(gone.clone(), vec![1])], now).await.unwrap();
        assert!(db.store.delete_doc(&gone, &[]).await.unwrap());
        db.store.append_doc_updates(&[(kept.clone(), vec![3])], now).await.unwrap();
        db.store.close().await;
        let store = SqliteStore::open(&db.path).await.unwrap();
        assert_eq!(store.load_doc(&gone).await.unwrap(), None);
        assert_eq!(updates(&store, &kept).await, vec![vec![2], vec![3]]);
        // A deleted document starts over at seq 1.
        assert_eq!(store.append_doc_updates(&[(gone.clone(), vec![4])], now).await.unwrap(), vec![1]);
        store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// A fold the database refuses keeps the entries journaled: a read
    /// that needs them fails rather than missing them, and once the
    /// database takes them again they are all there, in order.
    #[tokio::test]
    async fn a_refused_fold_keeps_its_entries_and_is_retried() {
        let db = database().await;
        let key = doc_key(db.app, "refused");
        let now = OffsetDateTime::now_utc();
        db.store.append_doc_updates(&[(key.clone(), vec![1])], now).await.unwrap();
        writer(&db.store).flush().await.unwrap();
        sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON doc_updates BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            .execute(db.store.pool())
            .await
            .unwrap();
        db.store.append_doc_updates(&[(key.clone(), vec![2])], now).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(20), db.store.load_doc(&key)).await.unwrap();
        assert!(matches!(read, Err(StoreError::Database(_))), "{read:?}");
        // While folds fail, what waits is bounded: past the cap, appends
        // are refused instead of held in memory without end.
        // (Both under the journal's lock, so no fold attempt moves bytes
        // out of `pending` in between.)
        {
            let shared = &writer(&db.store).shared;
            let mut guard = lock(&shared.log);
            let log = guard.as_mut().unwrap();
            log.max_pending_bytes = log.pending_bytes;
            assert_eq!(log.append(vec![(key.clone(), vec![3, 3])], secs(now)).unwrap(), vec![3]);
            shared.appended.fetch_add(1, Ordering::Release);
            let refused = log.append(vec![(key.clone(), vec![4])], secs(now));
            assert!(matches!(refused, Err(StoreError::Database(sqlx::Error::Protocol(_)))), "{refused:?}");
            log.max_pending_bytes = MAX_PENDING_BYTES;
        }
        sqlx::query("DROP TRIGGER refuse").execute(db.store.pool()).await.unwrap();
        let state = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(state) = db.store.load_doc(&key).await {
                    return state;
                }
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            (state.updates, state.last_seq),
            (vec![vec![1], vec![2], vec![3, 3]], 3),
            "the refused one took no seq"
        );
        db.store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// A close whose last fold is refused leaves the entries journaled for
    /// the next start; a read meanwhile fails at once instead of waiting
    /// for a fold that cannot come.
    #[tokio::test]
    async fn a_failed_last_fold_is_an_error_not_a_hang_and_the_next_start_folds_it() {
        let db = database().await;
        let key = doc_key(db.app, "last");
        sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON doc_updates BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            .execute(db.store.pool())
            .await
            .unwrap();
        db.store.append_doc_updates(&[(key.clone(), vec![1])], OffsetDateTime::now_utc()).await.unwrap();
        let clone = db.store.clone();
        tokio::time::timeout(Duration::from_secs(20), db.store.close()).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), writer(&clone).flush()).await;
        assert!(matches!(read, Ok(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))), "{read:?}");
        drop(clone);
        // The trigger goes, as a repaired disk would; the journal still has the write.
        let conn = super::super::sqlite::writer_connection(&db.path).unwrap();
        conn.execute_batch("DROP TRIGGER refuse").unwrap();
        drop(conn);
        let store = SqliteStore::open(&db.path).await.unwrap();
        assert_eq!(updates(&store, &key).await, vec![vec![1]]);
        store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// Past its size a segment is closed and a new one begun; the old one
    /// is deleted once folded and checkpointed.
    #[tokio::test]
    async fn full_segments_are_rotated_and_deleted_once_folded() {
        let db = database().await;
        let key = doc_key(db.app, "big");
        let now = OffsetDateTime::now_utc();
        let first = list_segments(&journal_dir(&db.path)).unwrap();
        assert_eq!(first.len(), 1);
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(SEGMENT_BYTES >> 20) + 1 {
            db.store.append_doc_updates(&[(key.clone(), chunk.clone())], now).await.unwrap();
        }
        db.store.append_doc_updates(&[(key.clone(), vec![1])], now).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            writer(&db.store).flush().await.unwrap();
            let segments = list_segments(&journal_dir(&db.path)).unwrap();
            if !segments.contains(&first[0]) {
                assert!(segments.iter().all(|&no| no > first[0]), "{segments:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the full segment was never deleted: {segments:?}");
            db.store.append_doc_updates(&[(key.clone(), vec![1])], now).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(updates(&db.store, &key).await.len() as u64 >= (SEGMENT_BYTES >> 20) + 2);
        db.store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// A fold takes at most so many entries and so many bytes, and always
    /// one, however large.
    #[test]
    fn a_fold_is_capped_by_entries_and_bytes() {
        let entry = |len: usize| Entry {
            app: AppId::new(),
            name: "d".into(),
            seq: 1,
            at: 0,
            data: vec![0; len],
            end: Position::default(),
        };
        assert_eq!(fold_size(&[]), 0);
        assert_eq!(fold_size(&vec![entry(1); MAX_FOLD_ENTRIES + 5]), MAX_FOLD_ENTRIES);
        let half = MAX_FOLD_BYTES / 2;
        assert_eq!(fold_size(&[entry(half), entry(half), entry(1)]), 2, "bytes");
        assert_eq!(fold_size(&[entry(MAX_FOLD_BYTES + 1), entry(1)]), 1, "one, however large");
    }

    /// Records round-trip; anything else stops the reading where it starts.
    #[test]
    fn records_round_trip_and_damage_stops_the_reading() {
        let app = AppId::new();
        let app_id = app.to_string();
        let mut bytes = Vec::new();
        let item = |name, seq, data| Item { app: &app_id, name, seq, data };
        encode(&mut bytes, 42, &[item("a/b", 7, b"data"), item("c", 1, b"")]).unwrap();
        let first_end = bytes.len();
        encode(&mut bytes, 43, &[item("a/b", 8, b"more")]).unwrap();
        let read = decode_segment(&bytes, 3, 0);
        assert_eq!((read.ignored, read.bad), (0, None));
        let end = |offset| Position { segment: 3, offset: offset as u64 };
        let entry = |name: &str, seq, at, data: &[u8], e| Entry {
            app,
            name: name.into(),
            seq,
            at,
            data: data.to_vec(),
            end: e,
        };
        assert_eq!(
            read.entries,
            vec![
                entry("a/b", 7, 42, b"data", end(first_end)),
                entry("c", 1, 42, b"", end(first_end)),
                entry("a/b", 8, 43, b"more", end(bytes.len())),
            ],
            "a batch is one record: its entries end together"
        );
        assert_eq!(decode_segment(&bytes, 3, first_end as u64).entries.len(), 1, "from a position");
        let mut flipped = bytes.clone();
        flipped[HEADER + 3] ^= 1;
        let read = decode_segment(&flipped, 3, 0);
        assert_eq!((read.entries, read.ignored, read.bad), (vec![], bytes.len(), Some(Bad::Torn)), "a bad checksum");
        let read = decode_segment(&bytes[..bytes.len() - 1], 3, 0);
        assert_eq!((read.entries.len(), read.ignored), (2, bytes.len() - 1 - first_end), "a torn batch: none of it");
        assert_eq!(decode_segment(&[0; 16], 3, 0).bad, Some(Bad::Torn), "zeros are no record");
        // A record that checks out in a format this binary does not know.
        let mut newer = bytes[..first_end].to_vec();
        newer[HEADER] = RECORD_VERSION + 1;
        let crc = CRC.checksum(&newer[HEADER..]);
        newer[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_segment(&newer, 3, 0).bad, Some(Bad::Unknown(RECORD_VERSION + 1)));
    }

    /// What real appends wrote is read back after a crash (no last fold):
    /// past the folded position inside the segment it was in, and in the
    /// segment after a rotation; nothing folded is added twice.
    #[tokio::test]
    async fn appends_survive_a_crash_before_their_fold() {
        let db = database().await;
        let (a, b) = (doc_key(db.app, "a"), doc_key(db.app, "b"));
        let now = OffsetDateTime::now_utc();
        db.store.append_doc_updates(&[(a.clone(), vec![1])], now).await.unwrap();
        writer(&db.store).flush().await.unwrap();
        db.store.append_doc_updates(&[(a.clone(), vec![2]), (b.clone(), vec![3])], now).await.unwrap();
        {
            let mut guard = lock(&writer(&db.store).shared.log);
            guard.as_mut().unwrap().rotate().unwrap();
        }
        db.store.append_doc_updates(&[(b.clone(), vec![4])], now).await.unwrap();
        // The crash: the journal goes without its last fold (the folder
        // finds it gone), as the process dying would leave it.
        let abandoned = lock(&writer(&db.store).shared.log).take();
        drop(abandoned);
        assert_eq!(rows_in_table(&db.store, &b).await, 0, "not folded before the crash");
        db.store.close().await;

        let store = SqliteStore::open(&db.path).await.unwrap();
        let (sa, sb) = (store.load_doc(&a).await.unwrap().unwrap(), store.load_doc(&b).await.unwrap().unwrap());
        assert_eq!((sa.updates, sa.last_seq), (vec![vec![1], vec![2]], 2));
        assert_eq!((sb.updates, sb.last_seq), (vec![vec![3], vec![4]], 2));
        assert_eq!(store.append_doc_updates(&[(b.clone(), vec![5])], now).await.unwrap(), vec![3]);
        store.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// One writer per journal: a store opened again in this process shares
    /// it; another writer (another process) is refused at start, with the
    /// reason, until the first has closed.
    #[tokio::test]
    async fn one_journal_one_writer() {
        let db = database().await;
        let key = doc_key(db.app, "shared");
        let now = OffsetDateTime::now_utc();
        let again = SqliteStore::open(&db.path).await.unwrap();
        assert_eq!(db.store.append_doc_updates(&[(key.clone(), vec![1])], now).await.unwrap(), vec![1]);
        assert_eq!(again.append_doc_updates(&[(key.clone(), vec![2])], now).await.unwrap(), vec![2], "one writer");
        let path = db.path.clone();
        let other = DocWriter::start(journal_dir(&db.path), move || super::super::sqlite::writer_connection(&path));
        let err = other.await.expect_err("a second writer on the journal");
        assert!(err.to_string().contains("another process has this database's document journal"), "{err}");
        // An administration command beside the server reads everything and
        // writes no document.
        let admin = SqliteStore::open_beside_server(&db.path).await.unwrap();
        assert_eq!(admin.count_docs(db.app).await.unwrap(), 1);
        let refused = admin.append_doc_updates(&[(key.clone(), vec![9])], now).await;
        assert!(matches!(refused, Err(StoreError::Database(sqlx::Error::Protocol(_)))), "{refused:?}");
        assert!(admin.delete_doc(&key, &[]).await.is_err());
        admin.close().await;
        db.store.close().await;
        assert!(again.append_doc_updates(&[(key.clone(), vec![3])], now).await.is_err(), "closed for both");
        let reopened = SqliteStore::open(&db.path).await.unwrap();
        assert_eq!(updates(&reopened, &key).await, vec![vec![1], vec![2]]);
        reopened.close().await;
        std::fs::remove_dir_all(db.dir).unwrap();
    }

    /// SQLite's constraint errors read as the sqlx side's do.
    #[tokio::test]
    async fn errors_map_as_through_sqlx() {
        let db = database().await;
        let conn = super::super::sqlite::writer_connection(&db.path).unwrap();
        let insert = "INSERT INTO doc_updates (app_id, name, seq, data) VALUES ($1, $2, $3, $4)";
        let no_doc = conn.execute(insert, params![db.app.to_string(), "none", 1, vec![1_u8]]).unwrap_err();
        assert!(matches!(lite_err(no_doc), StoreError::NotFound));
        let email =
            "INSERT INTO users (id, email, password_hash, is_operator, created_at) VALUES ($1, 'a@b.c', 'h', 0, 0)";
        conn.execute(email, params![uuid::Uuid::new_v4().to_string()]).unwrap();
        let taken = conn.execute(email, params![uuid::Uuid::new_v4().to_string()]).unwrap_err();
        assert!(matches!(lite_err(taken), StoreError::Conflict("email_taken")));
        let bad_sql = conn.execute("INSERT INTO nowhere VALUES (1)", []).unwrap_err();
        match lite_err(bad_sql) {
            StoreError::Database(sqlx::Error::Database(e)) => assert!(e.message().contains("nowhere"), "{e}"),
            other => panic!("expected a database error, got {other:?}"),
        }
        std::fs::remove_dir_all(&db.dir).unwrap();
    }

    /// The thread goes by a name of its own (in `top -H`, `perf`), `close`
    /// waits for it, and appends after it fail.
    #[tokio::test]
    async fn the_thread_is_named_and_closes() {
        let db = database().await;
        db.store.close().await;
        let (tx, rx) = std::sync::mpsc::channel();
        let path = db.path.clone();
        let writer = DocWriter::start(journal_dir(&db.path), move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
            super::super::sqlite::writer_connection(&path)
        })
        .await
        .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("wiresocket-doclog"));
        tokio::time::timeout(Duration::from_secs(10), writer.close()).await.unwrap();
        writer.close().await;
        let late = writer.append(&[(doc_key(db.app, "late"), vec![1])], OffsetDateTime::now_utc()).await;
        assert!(matches!(late, Err(StoreError::Database(sqlx::Error::PoolClosed))), "{late:?}");
        std::fs::remove_dir_all(&db.dir).unwrap();
    }

    /// A thread that cannot open its connection, or panics trying, fails
    /// the start rather than hanging.
    #[tokio::test]
    async fn a_writer_that_cannot_start_is_an_error_not_a_hang() {
        let ten_secs = Duration::from_secs(10);
        let dir = std::env::temp_dir().join(format!("doclog-{}", uuid::Uuid::new_v4()));
        let fails = DocWriter::start(dir.clone(), || {
            Connection::open_with_flags("/nonexistent/db", OpenFlags::SQLITE_OPEN_READ_WRITE)
        });
        let fails = tokio::time::timeout(ten_secs, fails).await.unwrap();
        assert!(matches!(fails, Err(StoreError::Database(_))), "{fails:?}");
        let panics = DocWriter::start(dir, || panic!("test: the writer dies at start"));
        let panics = tokio::time::timeout(ten_secs, panics).await.unwrap();
        assert!(matches!(panics, Err(StoreError::Database(sqlx::Error::WorkerCrashed))), "{panics:?}");
    }
}
