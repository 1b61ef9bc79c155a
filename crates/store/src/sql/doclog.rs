//! The document log's writer on a file-backed SQLite database: one OS
//! thread with its own `rusqlite` connection that runs every
//! [`append_doc_updates`](crate::Store::append_doc_updates).
//!
//! # Why a thread of its own
//! Every Yjs update is appended before it is broadcast, so appends are the
//! hottest write. Through sqlx each batch costs a hand-off to the
//! connection's worker thread and back for every statement (begin, one seq
//! reservation per doc, inserts, commit); under load a quarter of the
//! server's CPU went to the futex wake-ups of those hand-offs. Here a batch
//! crosses threads once each way: the async side sends it down a channel
//! and awaits a oneshot, and the thread runs the whole transaction with
//! cached prepared statements, in-process.
//!
//! Requests already queued when the thread picks one up join it in the same
//! transaction (group commit: one fsync-bearing commit for all of them),
//! each answered with its own seqs. If that transaction fails, each request
//! runs again on its own, so one bad request (a doc of a deleted app) fails
//! alone.
//!
//! Every other write (compaction, deletion, the control plane) still goes
//! through sqlx; all writers use `BEGIN IMMEDIATE` and the same
//! `busy_timeout`, so SQLite's write lock serialises them.
//!
//! The thread ends when its channel closes: when the last clone of the
//! store is dropped (they share this writer through an `Arc`) or when it is
//! closed. A caller whose answer never comes (the thread is gone) gets an
//! error, never a hang.

use super::queries as q;
use super::{db_err, group_by_doc, secs};
use crate::{DocAppender, DocKey, Durable, Result, StoreError};
use rusqlite::{Connection, TransactionBehavior, params};
use sqlx::error::{DatabaseError, ErrorKind};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the thread; senders wait (asynchronously) beyond it.
const QUEUE: usize = 1024;

/// At most this many log entries go into one merged transaction, so one
/// commit stays short however deep the queue.
const MAX_MERGED_ENTRIES: usize = 4096;

/// One `append_doc_updates` call (or [`DocAppender`] submission), owned so
/// it can cross to the thread.
struct Request {
    batch: Vec<(DocKey, Vec<u8>)>,
    /// Unix seconds.
    now: i64,
    reply: Reply,
}

/// How a request is answered.
enum Reply {
    /// An awaiting caller (`append_doc_updates`).
    Channel(oneshot::Sender<Result<Vec<i64>>>),
    /// A callback, run right here on the thread, in order.
    Call(Durable),
}

impl Reply {
    fn send(self, result: Result<Vec<i64>>) {
        match self {
            // The caller may have stopped waiting; the append stands.
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            // A panicking callback must not take the writer (and every
            // later append) down with it.
            Reply::Call(then) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(result))).is_err() {
                    tracing::error!("a document log callback panicked");
                }
            }
        }
    }
}

impl From<oneshot::Sender<Result<Vec<i64>>>> for Reply {
    fn from(tx: oneshot::Sender<Result<Vec<i64>>>) -> Self {
        Reply::Channel(tx)
    }
}

/// Handle to the writer thread. Dropping it closes the channel, which ends
/// the thread once the requests already queued are answered.
#[derive(Debug)]
pub(super) struct DocWriter {
    /// `None` once closed.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// The writer's connection, shared with its thread (`None` once the
    /// thread has closed it). Whoever holds the lock commits and runs the
    /// callbacks of what it committed, so seqs and callbacks keep one order.
    conn: Arc<Mutex<Option<Connection>>>,
    /// Fails (its sender is dropped) once the thread has closed its
    /// connection and ended, panicking or not. Taken by
    /// [`close`](Self::close) to wait for that without blocking.
    ended: Mutex<Option<oneshot::Receiver<()>>>,
}

impl DocWriter {
    /// Starts the thread, which opens its connection with `connect`, and
    /// waits until it has (so a database that cannot be opened fails here,
    /// not at the first append).
    pub(super) async fn start<F>(connect: F) -> Result<Self>
    where
        F: FnOnce() -> rusqlite::Result<Connection> + Send + 'static,
    {
        let (requests, queue) = mpsc::channel(QUEUE);
        let (opened, ready) = oneshot::channel();
        let (ending, ended) = oneshot::channel::<()>();
        let shared = Arc::new(Mutex::new(None));
        let conn = shared.clone();
        std::thread::Builder::new()
            .name("wiresocket-doclog".to_owned())
            .spawn(move || {
                // Dropped last, after the connection.
                let _ending = ending;
                match connect() {
                    Ok(c) => {
                        *conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(c);
                        let _ = opened.send(Ok(()));
                        serve(&conn, queue);
                    }
                    Err(e) => {
                        let _ = opened.send(Err(lite_err(e)));
                    }
                }
            })
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        ready.await.map_err(|_| crashed())??;
        Ok(Self { requests: Mutex::new(Some(requests)), conn: shared, ended: Mutex::new(Some(ended)) })
    }

    /// Hands `batch` to the thread and waits for its seqs. `batch` is not
    /// empty. Once handed over the append runs to its end even if this
    /// future is dropped (as a commit already sent would through sqlx).
    pub(super) async fn append(&self, batch: &[(DocKey, Vec<u8>)], now: OffsetDateTime) -> Result<Vec<i64>> {
        let requests = self.sender()?;
        let (reply, answer) = oneshot::channel();
        let request = Request { batch: batch.to_vec(), now: secs(now), reply: Reply::Channel(reply) };
        requests.send(request).await.map_err(|_| crashed())?;
        drop(requests);
        answer.await.map_err(|_| crashed())?
    }

    /// The channel to the thread, cloned out so no lock is held across an
    /// await; an error once closed.
    fn sender(&self) -> Result<mpsc::Sender<Request>> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Database(sqlx::Error::PoolClosed))
    }

    /// Stops taking requests and waits until the thread has answered those
    /// queued and closed its connection.
    pub(super) async fn close(&self) {
        drop(self.requests.lock().unwrap_or_else(PoisonError::into_inner).take());
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(ended) = ended {
            let _ = ended.await;
        }
    }

    /// What fails once the thread has ended, for tests that watch it end.
    #[cfg(test)]
    pub(super) fn take_ended(&self) -> Option<oneshot::Receiver<()>> {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[async_trait::async_trait]
impl DocAppender for DocWriter {
    /// When nothing is queued and the connection is free, the append runs
    /// right here, on the caller's thread: no hand-off, so no thread to wake
    /// (on a busy machine a wake-up can wait milliseconds for a core). It
    /// does not wait for SQLite's write lock there: if another connection
    /// holds it, the request goes to the thread, which waits.
    async fn submit(&self, batch: Vec<(DocKey, Vec<u8>)>, now: OffsetDateTime, then: Durable) -> Result<()> {
        let requests = self.sender()?;
        let now = secs(now);
        if requests.capacity() == requests.max_capacity() {
            let guard = match self.conn.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut guard) = guard
                && let Some(conn) = guard.as_mut()
            {
                match inline(conn, &batch, now) {
                    Some(result) => {
                        Reply::Call(then).send(result.map_err(lite_err));
                        return Ok(());
                    }
                    None => drop(guard),
                }
            }
        }
        let request = Request { batch, now, reply: Reply::Call(then) };
        requests.send(request).await.map_err(|_| crashed())
    }
}

/// The error for a writer thread that is gone.
fn crashed() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

/// One append on the caller's thread without waiting for SQLite's write
/// lock: `None` if another connection holds it (nothing was written).
fn inline(conn: &mut Connection, batch: &[(DocKey, Vec<u8>)], now: i64) -> Option<rusqlite::Result<Vec<i64>>> {
    if conn.busy_timeout(std::time::Duration::ZERO).is_err() {
        return None;
    }
    let result = transaction(conn, |tx| append(tx, batch, now));
    if let Err(e) = conn.busy_timeout(super::sqlite::BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "restoring the writer's busy timeout failed");
    }
    match result {
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => None,
        other => Some(other),
    }
}

/// The thread's loop: until every sender is gone, takes the next request
/// with whatever else is already queued and commits them.
fn serve(conn: &Mutex<Option<Connection>>, mut queue: mpsc::Receiver<Request>) {
    while let Some(first) = queue.blocking_recv() {
        let mut entries = first.batch.len();
        let mut group = vec![first];
        while entries < MAX_MERGED_ENTRIES {
            let Ok(next) = queue.try_recv() else { break };
            entries += next.batch.len();
            group.push(next);
        }
        let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(c) => commit(c, group),
            None => group.into_iter().for_each(|r| r.reply.send(Err(crashed()))),
        }
    }
    let closing = conn.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(c) = closing
        && let Err((_, e)) = c.close()
    {
        tracing::warn!(error = %e, "closing the document log writer's connection failed");
    }
}

/// Runs `group` in one transaction, or each request in its own if that
/// fails, and answers every request.
fn commit(conn: &mut Connection, group: Vec<Request>) {
    if group.len() > 1 {
        let merged = transaction(conn, |tx| {
            group.iter().map(|r| append(tx, &r.batch, r.now)).collect::<rusqlite::Result<Vec<_>>>()
        });
        if let Ok(seqs) = merged {
            for (request, seqs) in group.into_iter().zip(seqs) {
                request.reply.send(Ok(seqs));
            }
            return;
        }
        // Rolled back whole: nothing of it is stored, so each may run again.
    }
    for request in group {
        let result = transaction(conn, |tx| append(tx, &request.batch, request.now));
        request.reply.send(result.map_err(lite_err));
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction (taking the write lock up
/// front, as the sqlx side does), committing if it succeeds and rolling
/// back if it fails.
fn transaction<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // On error `tx` drops, which rolls back.
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// One request's work, as the sqlx implementation does it: per doc (in key
/// order) reserve its seqs, which fails on the foreign key for a doc of an
/// unknown app; then insert the entries. Answers the seqs in batch order.
fn append(conn: &Connection, batch: &[(DocKey, Vec<u8>)], now: i64) -> rusqlite::Result<Vec<i64>> {
    let docs = group_by_doc(batch);
    let mut seqs = vec![0; batch.len()];
    let mut reserve = conn.prepare_cached(q::RESERVE_DOC_SEQS)?;
    for doc in &docs {
        let last_seq: i64 =
            reserve.query_row(params![doc.app_id, doc.name, doc.count, doc.bytes, now], |row| row.get(0))?;
        for (seq, &i) in (last_seq - doc.count + 1..).zip(&doc.entries) {
            seqs[i] = seq;
        }
    }
    // In-process, one cached single-row insert per entry costs less than
    // building multi-row ones.
    let mut insert = conn.prepare_cached(q::insert_doc_updates(1).1)?;
    for doc in &docs {
        for &i in &doc.entries {
            insert.execute(params![doc.app_id, doc.name, seqs[i], batch[i].1])?;
        }
    }
    Ok(seqs)
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
    use crate::contract::{doc_app, doc_key};
    use crate::sql::SqliteStore;
    use rusqlite::OpenFlags;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A migrated database file with one app, and a writer connection to it.
    async fn database() -> (SqliteStore, PathBuf, domain::ids::AppId, Connection) {
        let dir = std::env::temp_dir().join(format!("doclog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let app = doc_app(&store).await.id;
        let conn = super::super::sqlite::writer_connection(&path).unwrap();
        (store, dir, app, conn)
    }

    async fn updates(store: &SqliteStore, key: &DocKey) -> Vec<Vec<u8>> {
        crate::Store::load_doc(store, key).await.unwrap().unwrap().updates
    }

    fn request(batch: Vec<(DocKey, Vec<u8>)>) -> (Request, oneshot::Receiver<Result<Vec<i64>>>) {
        let (reply, answer) = oneshot::channel();
        (Request { batch, now: 1_700_000_000, reply: reply.into() }, answer)
    }

    /// Submissions from many tasks: each callback sees its own seq, the
    /// callbacks run in seq order (one at a time, on the writer's thread),
    /// and a callback that panics does not stop the writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn submitted_batches_are_called_back_in_seq_order() {
        let (store, dir, app, _conn) = database().await;
        let appender = crate::Store::doc_appender(&store).expect("a file-backed store has an appender");
        let key = doc_key(app, "ordered");
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
        // The last callbacks may still be running: a plain append queues behind them.
        crate::Store::append_doc_updates(&store, &[(key.clone(), vec![9])], OffsetDateTime::now_utc()).await.unwrap();
        let seqs = seen.lock().unwrap().clone();
        assert_eq!(seqs, (2..=201).collect::<Vec<_>>(), "in seq order, none missing, after the panicking one (seq 1)");
        assert_eq!(updates(&store, &key).await.len(), 202);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// With nothing queued the append runs on the caller's thread; when
    /// another connection holds SQLite's write lock it does not wait there
    /// but hands over to the writer thread, which waits for the lock.
    #[tokio::test]
    async fn an_idle_writer_appends_inline_and_a_held_lock_goes_to_the_thread() {
        let (store, dir, app, other) = database().await;
        let appender = crate::Store::doc_appender(&store).unwrap();
        let key = doc_key(app, "inline");
        let (tx, rx) = std::sync::mpsc::channel();
        let then: Durable = Box::new(move |r| tx.send((r.unwrap(), std::thread::current().id())).unwrap());
        appender.submit(vec![(key.clone(), vec![1])], OffsetDateTime::now_utc(), then).await.unwrap();
        let (seqs, thread) = rx.try_recv().expect("answered before submit returned");
        assert_eq!((seqs, thread), (vec![1], std::thread::current().id()));

        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let then: Durable =
            Box::new(move |r| tx.send((r.unwrap(), std::thread::current().name().map(str::to_owned))).unwrap());
        let started = std::time::Instant::now();
        appender.submit(vec![(key.clone(), vec![2])], OffsetDateTime::now_utc(), then).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "the caller did not wait for the lock");
        assert!(rx.try_recv().is_err(), "not committed while the lock is held");
        other.execute_batch("COMMIT").unwrap();
        let (seqs, thread) = tokio::task::spawn_blocking(move || rx.recv().unwrap()).await.unwrap();
        assert_eq!((seqs, thread.as_deref()), (vec![2], Some("wiresocket-doclog")));
        assert_eq!(updates(&store, &key).await, vec![vec![1], vec![2]]);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Several queued requests commit together, each answered with its own
    /// seqs; when one fails, the others still go through, each on its own.
    #[tokio::test]
    async fn merged_requests_are_answered_apart_and_fail_apart() {
        let (store, dir, app, mut conn) = database().await;
        let (x, y, ghost) = (doc_key(app, "x"), doc_key(app, "y"), doc_key(domain::ids::AppId::new(), "g"));
        let entry = |key: &DocKey, n: u8| (key.clone(), vec![n]);

        let (a, a_answer) = request(vec![entry(&x, 1), entry(&y, 2), entry(&x, 3)]);
        let (b, b_answer) = request(vec![entry(&y, 4)]);
        let (c, c_answer) = request(vec![entry(&x, 5)]);
        commit(&mut conn, vec![a, b, c]);
        assert_eq!(a_answer.await.unwrap().unwrap(), vec![1, 1, 2]);
        assert_eq!(b_answer.await.unwrap().unwrap(), vec![2]);
        assert_eq!(c_answer.await.unwrap().unwrap(), vec![3]);

        // The merged transaction fails on the ghost: rolled back whole, then
        // each request runs alone and only the bad one fails.
        let (a, a_answer) = request(vec![entry(&x, 6)]);
        let (bad, bad_answer) = request(vec![entry(&y, 7), entry(&ghost, 8)]);
        let (c, c_answer) = request(vec![entry(&y, 9), entry(&x, 10)]);
        commit(&mut conn, vec![a, bad, c]);
        assert_eq!(a_answer.await.unwrap().unwrap(), vec![4]);
        assert!(matches!(bad_answer.await.unwrap(), Err(StoreError::NotFound)));
        assert_eq!(c_answer.await.unwrap().unwrap(), vec![3, 5]);

        assert_eq!(updates(&store, &x).await, vec![vec![1], vec![3], vec![5], vec![6], vec![10]]);
        assert_eq!(updates(&store, &y).await, vec![vec![2], vec![4], vec![9]]);
        assert_eq!(crate::Store::load_doc(&store, &ghost).await.unwrap(), None);
        // A caller that stopped waiting does not stop the others.
        let (gone, answer) = request(vec![entry(&x, 11)]);
        drop(answer);
        let (kept, kept_answer) = request(vec![entry(&x, 12)]);
        commit(&mut conn, vec![gone, kept]);
        assert_eq!(kept_answer.await.unwrap().unwrap(), vec![7]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// SQLite's constraint errors read as the sqlx side's do.
    #[tokio::test]
    async fn errors_map_as_through_sqlx() {
        let (_store, dir, app, conn) = database().await;
        let insert = "INSERT INTO doc_updates (app_id, name, seq, data) VALUES ($1, $2, $3, $4)";
        let no_doc = conn.execute(insert, params![app.to_string(), "none", 1, vec![1_u8]]).unwrap_err();
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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The thread goes by a name of its own (in `top -H`, `perf`), and
    /// `close` waits for it.
    #[tokio::test]
    async fn the_thread_is_named_and_closes() {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = DocWriter::start(move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
            Connection::open_in_memory()
        })
        .await
        .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("wiresocket-doclog"));
        tokio::time::timeout(std::time::Duration::from_secs(10), writer.close()).await.unwrap();
        writer.close().await;
    }

    fn writer(requests: mpsc::Sender<Request>) -> DocWriter {
        DocWriter { requests: Mutex::new(Some(requests)), conn: Arc::new(Mutex::new(None)), ended: Mutex::new(None) }
    }

    fn assert_crashed(result: Result<Vec<i64>>) {
        assert!(matches!(result, Err(StoreError::Database(sqlx::Error::WorkerCrashed))), "{result:?}");
    }

    /// A writer whose thread is gone, or dies with a request in hand,
    /// answers with an error rather than hanging.
    #[tokio::test]
    async fn a_dead_writer_is_an_error_not_a_hang() {
        let batch = [(doc_key(domain::ids::AppId::new(), "x"), vec![1])];
        let now = OffsetDateTime::now_utc();
        let ten_secs = std::time::Duration::from_secs(10);

        let (requests, queue) = mpsc::channel(1);
        drop(queue);
        let gone = writer(requests);
        assert_crashed(tokio::time::timeout(ten_secs, gone.append(&batch, now)).await.unwrap());

        let (requests, mut queue) = mpsc::channel(1);
        let dies = std::thread::spawn(move || drop(queue.blocking_recv()));
        let dying = writer(requests);
        assert_crashed(tokio::time::timeout(ten_secs, dying.append(&batch, now)).await.unwrap());
        dies.join().unwrap();

        // A thread that cannot open its connection, or panics trying.
        let fails =
            DocWriter::start(|| Connection::open_with_flags("/nonexistent/db", OpenFlags::SQLITE_OPEN_READ_WRITE));
        let fails = tokio::time::timeout(ten_secs, fails).await.unwrap();
        assert!(matches!(fails, Err(StoreError::Database(_))), "{fails:?}");
        let panics = DocWriter::start(|| panic!("test: the writer dies at start"));
        let panics = tokio::time::timeout(ten_secs, panics).await.unwrap();
        assert!(matches!(panics, Err(StoreError::Database(sqlx::Error::WorkerCrashed))), "{panics:?}");
    }
}
