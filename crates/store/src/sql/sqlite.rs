//! The embedded engine: one SQLite file, WAL journal.

use super::doclog::DocWriter;
use super::{MigrationFile, migrator};
use crate::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

const MIGRATIONS: &[MigrationFile] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "documents", include_str!("../../migrations/sqlite/0002_documents.sql")),
    (3, "security", include_str!("../../migrations/sqlite/0003_security.sql")),
    (4, "members", include_str!("../../migrations/sqlite/0004_members.sql")),
    (5, "doc_snapshots", include_str!("../../migrations/sqlite/0005_doc_snapshots.sql")),
    (6, "nodes", include_str!("../../migrations/sqlite/0006_nodes.sql")),
    (7, "user_names", include_str!("../../migrations/sqlite/0007_user_names.sql")),
    (8, "event_outbox", include_str!("../../migrations/sqlite/0008_event_outbox.sql")),
    (9, "snapshot_parts", include_str!("../../migrations/sqlite/0009_snapshot_parts.sql")),
    (10, "doc_journal", include_str!("../../migrations/sqlite/0010_doc_journal.sql")),
];

/// SQLite serialises writers anyway; a few connections let reads run
/// alongside the writer (WAL) without holding many file handles.
const POOL_SIZE: u32 = 4;

/// How long a writer waits for another to finish before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's own checkpoint threshold, a fallback for [`checkpointer`].
const AUTOCHECKPOINT_PAGES: u32 = 20_000;
/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Runs `PASSIVE` checkpoints (they never block writers or readers) off the
/// write path until the pool is closed.
async fn checkpointer(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "background WAL checkpoint failed; retrying");
        }
    }
}

/// The pool's connection settings for the file at `path`.
fn pool_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable in WAL mode except for the last commits
        // before a power loss, at a fraction of FULL's fsyncs.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Checkpoints copy the WAL into the database and fsync. Left to
        // SQLite they run inside whichever commit crosses the threshold
        // (the document persister's, stalling every room for
        // milliseconds); here a background task runs them instead, and
        // this high threshold only backs it up.
        .pragma("wal_autocheckpoint", AUTOCHECKPOINT_PAGES.to_string())
}

/// Where the document log's journal (see [`DocWriter`]) of the database file
/// at `path` lives: a directory beside it, `<file>-doclog`.
pub(super) fn journal_dir(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push("-doclog");
    path.with_file_name(name)
}

/// A connection of the document log writer (see [`DocWriter`]) to the file
/// at `path`, which the pool has created and migrated: the same settings as
/// [`pool_options`]. Blocking; called on the writer's thread.
pub(super) fn writer_connection(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
    Ok(conn)
}

/// The document writers of the files open in this process, by journal.
static WRITERS: std::sync::LazyLock<tokio::sync::Mutex<HashMap<PathBuf, Weak<DocWriter>>>> =
    std::sync::LazyLock::new(Default::default);

/// The document writer of the database file at `path`: the one a store of
/// this process already has open on it (a journal has one writer; another
/// process is refused by its lock), or a new one.
async fn shared_writer(path: &Path) -> Result<Arc<DocWriter>> {
    let dir = journal_dir(&std::fs::canonicalize(path).map_err(|e| crate::StoreError::Database(sqlx::Error::Io(e)))?);
    let mut writers = WRITERS.lock().await;
    writers.retain(|_, w| w.strong_count() > 0);
    if let Some(writer) = writers.get(&dir).and_then(Weak::upgrade).filter(|w| w.is_open()) {
        return Ok(writer);
    }
    let path: PathBuf = path.to_owned();
    let writer = Arc::new(DocWriter::start(dir.clone(), move || writer_connection(&path)).await?);
    writers.insert(dir, Arc::downgrade(&writer));
    Ok(writer)
}

/// [`Store`](crate::Store) on an embedded SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Journals the document log appends of a file-backed store and folds
    /// them into its tables; `None` in memory, where a second connection
    /// would open a database of its own.
    /// Shared by the clones: the thread ends with the last of them.
    doc_writer: Option<Arc<DocWriter>>,
    /// Opened beside a running server ([`SqliteStore::open_beside_server`]):
    /// document writes belong to the server's journal and are refused here.
    docs_refused: bool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` and
    /// applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let pool = SqlitePoolOptions::new().max_connections(POOL_SIZE).connect_with(pool_options(path)).await?;
        tokio::spawn(checkpointer(pool.clone()));
        let mut store = Self::migrated(pool).await?;
        // After the migrations: the writer's statements need the schema.
        match shared_writer(path).await {
            Ok(writer) => store.doc_writer = Some(writer),
            Err(e) => {
                store.pool.close().await;
                return Err(e);
            }
        }
        Ok(store)
    }

    /// The database file at `path` for an administration command that may
    /// run while a server has it open (`audit verify`, the master-key
    /// commands): everything but the document log, whose journal the server
    /// owns. Document writes (appends, compactions, deletes) are refused;
    /// document reads see what the server has folded.
    pub async fn open_beside_server(path: &Path) -> Result<Self> {
        let pool = SqlitePoolOptions::new().max_connections(POOL_SIZE).connect_with(pool_options(path)).await?;
        let mut store = Self::migrated(pool).await?;
        store.docs_refused = true;
        Ok(store)
    }

    /// Refuses document writes on a store opened beside a server.
    fn doc_log_refusal(&self) -> Result<()> {
        if self.docs_refused {
            return Err(crate::StoreError::Database(sqlx::Error::Protocol(
                "this store was opened beside the server, which writes the documents".into(),
            )));
        }
        Ok(())
    }

    /// A private in-memory database, for tests and throwaway runs. It lives
    /// on one connection that is never recycled (each SQLite in-memory
    /// connection is its own database), so calls are serialised.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        migrator(MIGRATIONS).run(&pool).await?;
        let store = Self { pool, doc_writer: None, docs_refused: false };
        // Audit rows written before the hash chain existed get chained
        // once; later starts find none.
        crate::Store::backfill_audit_chain(&store).await?;
        Ok(store)
    }

    /// Waits for in-flight queries (document appends included) and closes
    /// every connection. Appends after this fail.
    pub async fn close(&self) {
        if let Some(writer) = &self.doc_writer {
            writer.close().await;
        }
        self.pool.close().await;
    }

    /// Where document log appends go instead of the pool, if anywhere.
    pub(super) fn doc_writer(&self) -> Option<&DocWriter> {
        self.doc_writer.as_deref()
    }

    /// The writer as the trait's ordered appender.
    fn ordered_appender(&self) -> Option<Arc<dyn crate::DocAppender>> {
        self.doc_writer.clone().map(|w| w as Arc<dyn crate::DocAppender>)
    }

    /// The raw pool, for tests that need to plant rows the trait cannot
    /// write (e.g. corrupt ones). Not for application code: it would
    /// branch storage on the engine.
    #[cfg(any(test, feature = "contract"))]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, begin_write = "BEGIN IMMEDIATE", locks = plain);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::Store;
    use domain::ids::TenantId;
    use domain::keys::KeyState;
    use time::OffsetDateTime;

    /// One in-memory database (one connection, kept), migrated by the test.
    async fn memory_pool() -> SqlitePool {
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true);
        SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// A database the old rotation race left with several active keys per
    /// tenant still migrates: the newest stays active, the others retire.
    #[tokio::test]
    async fn migration_3_keeps_the_newest_active_key_per_tenant() {
        let pool = memory_pool().await;
        migrator(&MIGRATIONS[..2]).run(&pool).await.unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        for t in [a, b] {
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, 'tenant', 0)")
                .bind(t.to_string())
                .execute(&pool)
                .await
                .unwrap();
        }
        // In insertion (`seq`) order; `retired` keeps its own grace end.
        let planted = [("retired", a, "retiring", Some(5)), ("a1", a, "active", None), ("a2", a, "active", None)];
        let planted = planted.into_iter().chain([("a3", a, "active", None), ("b1", b, "active", None)]);
        for (kid, tenant, state, retires_at) in planted {
            sqlx::query(
                "INSERT INTO signing_keys (kid, tenant_id, state, public_n, public_e, private_key_enc, \
                 master_key_version, created_at, retires_at) VALUES ($1, $2, $3, 'n', 'e', x'00', 1, 0, $4)",
            )
            .bind(kid)
            .bind(tenant.to_string())
            .bind(state)
            .bind(retires_at)
            .execute(&pool)
            .await
            .unwrap();
        }

        let before = OffsetDateTime::now_utc().unix_timestamp();
        let store = SqliteStore::migrated(pool).await.unwrap();
        let after = OffsetDateTime::now_utc().unix_timestamp();
        let keys: Vec<_> = store
            .list_signing_keys(a)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.kid, k.state, k.retires_at.map(|t| t.unix_timestamp())))
            .collect();
        assert_eq!(keys[0], ("a3".to_owned(), KeyState::Active, None));
        for (i, kid) in [(1, "a2"), (2, "a1")] {
            let (got, state, retires_at) = &keys[i];
            assert_eq!((got.as_str(), *state), (kid, KeyState::Retiring));
            assert!((before + 1800..=after + 1800).contains(&retires_at.unwrap()), "{retires_at:?}");
        }
        assert_eq!(keys[3], ("retired".to_owned(), KeyState::Retiring, Some(5)));
        assert_eq!(store.list_signing_keys(b).await.unwrap()[0].state, KeyState::Active);
    }

    /// Documents compacted before migration 5 keep their snapshots, sizes
    /// and logs once the snapshots have moved to their own table.
    #[tokio::test]
    async fn migration_5_moves_snapshots_out_of_the_document_row() {
        let pool = memory_pool().await;
        migrator(&MIGRATIONS[..4]).run(&pool).await.unwrap();
        // The owner as version 4 stored users (later migrations add columns).
        let owner = crate::contract::user();
        sqlx::query("INSERT INTO users (id, email, password_hash, is_operator, created_at) VALUES ($1, $2, 'x', 0, 0)")
            .bind(owner.id.to_string())
            .bind(&owner.email)
            .execute(&pool)
            .await
            .unwrap();
        let old = SqliteStore { pool: pool.clone(), doc_writer: None, docs_refused: false };
        let tenant = crate::contract::tenant();
        let key = crate::contract::key(tenant.id, crate::contract::now());
        crate::Store::create_tenant(&old, &tenant, owner.id, "super_admin", &key).await.unwrap();
        let app = crate::contract::app(tenant.id, domain::plan::PlanId::Pro);
        crate::Store::create_app(&old, &app, None, &[]).await.unwrap();
        // "compacted": a 5-byte snapshot for seqs 1..=3, then seq 4 in the
        // log; "fresh": never compacted, seq 1 in the log.
        for (name, snapshot, snapshot_seq, size) in [("compacted", Some(&b"snap!"[..]), 3, 7), ("fresh", None, 0, 2)] {
            sqlx::query(
                "INSERT INTO documents (app_id, name, snapshot, snapshot_seq, last_seq, size_bytes, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $4 + 1, $5, 0, 0)",
            )
            .bind(app.id.to_string())
            .bind(name)
            .bind(snapshot)
            .bind(snapshot_seq)
            .bind(size)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO doc_updates (app_id, name, seq, data) VALUES ($1, $2, $3 + 1, x'0102')")
                .bind(app.id.to_string())
                .bind(name)
                .bind(snapshot_seq)
                .execute(&pool)
                .await
                .unwrap();
        }
        let store = SqliteStore::migrated(pool).await.unwrap();
        let compacted = crate::contract::doc_key(app.id, "compacted");
        let state = store.load_doc(&compacted).await.unwrap().unwrap();
        assert_eq!(
            (state.snapshot.as_deref(), state.updates, state.last_seq),
            (Some(&b"snap!"[..]), vec![vec![1, 2]], 4)
        );
        assert_eq!(store.doc_log_stats(&compacted).await.unwrap(), (1, 2));
        assert_eq!(store.get_doc(&compacted).await.unwrap().unwrap().size_bytes, 7);
        let fresh = crate::contract::doc_key(app.id, "fresh");
        let state = store.load_doc(&fresh).await.unwrap().unwrap();
        assert_eq!((state.snapshot, state.updates, state.last_seq), (None, vec![vec![1, 2]], 1));
        assert_eq!(store.doc_log_stats(&fresh).await.unwrap(), (1, 2));
        // Appending after the migration goes on from the old seqs.
        let now = OffsetDateTime::now_utc();
        assert_eq!(store.append_doc_updates(&[(compacted, vec![3])], now).await.unwrap(), vec![5]);
    }

    /// Every append rewrites its document's row, and SQLite rewrites a row
    /// whole (reading all of it): the row must not hold the snapshot, or
    /// each append to a compacted document reads the entire snapshot.
    #[tokio::test]
    async fn the_row_an_append_rewrites_stays_small_after_compaction() {
        let (store, dir) = file_store().await;
        let app = crate::contract::doc_app(&store).await;
        let key = crate::contract::doc_key(app.id, "big");
        let now = OffsetDateTime::now_utc();
        let seq = store.append_doc_updates(&[(key.clone(), vec![1; 1024])], now).await.unwrap()[0];
        store.compact_doc(&key, &vec![7; 1024 * 1024], seq, now).await.unwrap();
        store.append_doc_updates(&[(key.clone(), vec![2])], now).await.unwrap();
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('documents')").fetch_all(&store.pool).await.unwrap();
        assert!(columns.len() >= 5, "{columns:?}");
        for column in columns {
            let len: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT LENGTH(\"{column}\") FROM documents WHERE name = 'big'"
            )))
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert!(len.unwrap_or(0) < 256, "documents.{column} holds {len:?} bytes");
        }
        assert_eq!(store.load_doc(&key).await.unwrap().unwrap().snapshot, Some(vec![7; 1024 * 1024]));
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Parts of generation `generation` of the doc named `name`.
    async fn parts_of(store: &SqliteStore, name: &str, generation: i64) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM doc_snapshot_parts WHERE name = $1 AND gen = $2")
            .bind(name)
            .bind(generation)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    async fn wait_for_parts(store: &SqliteStore, name: &str, generation: i64, n: i64) {
        for _ in 0..1000 {
            if parts_of(store, name, generation).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("part {n} of generation {generation} never committed on its own");
    }

    /// A compaction commits its snapshot part by part: held between two
    /// parts, it holds no lock, so appends to other documents (and to its
    /// own) go through meanwhile; the old snapshot serves loads until the
    /// switch; a compaction that dies mid-way leaves the old one whole, and
    /// the next one deletes what it left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_compaction_writes_its_snapshot_in_parts_without_holding_the_writer() {
        let (store, dir) = file_store().await;
        let app = crate::contract::doc_app(&store).await;
        let name = format!("large-{}", uuid::Uuid::new_v4());
        let (big, other) = (crate::contract::doc_key(app.id, &name), crate::contract::doc_key(app.id, "other"));
        let now = OffsetDateTime::now_utc();
        store.append_doc_updates(&[(big.clone(), vec![1])], now).await.unwrap();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        super::super::PART_GATES.lock().unwrap().push((name.clone(), gate.clone()));
        let snapshot: Vec<u8> = (0..4 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
        let compaction = tokio::spawn({
            let (store, big, snapshot) = (store.clone(), big.clone(), snapshot.clone());
            async move { store.compact_doc(&big, &snapshot, 1, now).await }
        });
        wait_for_parts(&store, &name, 1, 1).await;
        let appended = tokio::time::timeout(Duration::from_secs(20), async {
            store.append_doc_updates(&[(other.clone(), vec![9])], now).await.unwrap();
            store.append_doc_updates(&[(big.clone(), vec![2])], now).await.unwrap()
        })
        .await
        .expect("an append waited for the whole compaction");
        assert_eq!(appended, vec![2]);
        let before = store.load_doc(&big).await.unwrap().unwrap();
        assert_eq!((before.snapshot, before.updates), (None, vec![vec![1], vec![2]]));
        gate.add_permits(1_000);
        compaction.await.unwrap().unwrap();
        let after = store.load_doc(&big).await.unwrap().unwrap();
        assert_eq!((after.snapshot.as_ref(), after.updates, after.last_seq), (Some(&snapshot), vec![vec![2]], 2));
        assert_eq!(parts_of(&store, &name, 1).await, 16);
        assert_eq!(store.get_doc(&big).await.unwrap().unwrap().size_bytes, 4 * 1024 * 1024 + 1);

        // A compaction that dies between its parts.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        super::super::PART_GATES.lock().unwrap().retain(|(n, _)| n != &name);
        super::super::PART_GATES.lock().unwrap().push((name.clone(), gate.clone()));
        let dying = tokio::spawn({
            let (store, big) = (store.clone(), big.clone());
            async move { store.compact_doc(&big, &[5; 1024 * 1024], 2, now).await }
        });
        wait_for_parts(&store, &name, 2, 1).await;
        dying.abort();
        assert!(dying.await.unwrap_err().is_cancelled());
        assert_eq!(store.load_doc(&big).await.unwrap().unwrap().snapshot.as_ref(), Some(&snapshot));
        super::super::PART_GATES.lock().unwrap().retain(|(n, _)| n != &name);
        store.compact_doc(&big, b"small", 2, now).await.unwrap();
        let state = store.load_doc(&big).await.unwrap().unwrap();
        assert_eq!((state.snapshot.as_deref(), state.updates.len()), (Some(&b"small"[..]), 0));
        let gens: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT gen FROM doc_snapshot_parts WHERE name = $1")
            .bind(&name)
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(gens, vec![2], "the dead compaction's parts and the replaced snapshot are gone");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh file-backed store in a directory of its own.
    async fn file_store() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("doclog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir.join("db.sqlite")).await.unwrap(), dir)
    }

    /// The writer's connection is set up as the pool's are.
    #[tokio::test]
    async fn the_writer_connection_has_the_pools_settings() {
        let (store, dir) = file_store().await;
        let writer = writer_connection(&dir.join("db.sqlite")).unwrap();
        for pragma in ["synchronous", "foreign_keys", "busy_timeout", "wal_autocheckpoint"] {
            let sql = format!("PRAGMA {pragma}");
            let pooled: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_one(&store.pool).await.unwrap();
            let own: i64 = writer.query_row(&sql, [], |row| row.get(0)).unwrap();
            assert_eq!(own, pooled, "{pragma}");
        }
        let mode: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert!(store.doc_writer().is_some());
        assert!(SqliteStore::open_in_memory().await.unwrap().doc_writer().is_none());
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Appends from many tasks on several runtime threads, on clones of one
    /// store, number each doc's entries without gaps or duplicates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn appends_from_many_tasks_are_gap_free() {
        let (store, dir) = file_store().await;
        let app = crate::contract::doc_app(&store).await;
        let keys: Vec<_> = (0..2).map(|d| crate::contract::doc_key(app.id, &format!("doc{d}"))).collect();
        let now = OffsetDateTime::now_utc();
        let tasks: Vec<_> = (0..8_u32)
            .map(|task| {
                let (store, keys) = (store.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for n in 0..50_u32 {
                        let key = &keys[usize::from(n % 3 == 0)];
                        let data = [task.to_le_bytes(), n.to_le_bytes()].concat();
                        let seq = store.append_doc_updates(&[(key.clone(), data.clone())], now).await.unwrap();
                        seqs.push((key.clone(), seq[0], data));
                    }
                    seqs
                })
            })
            .collect();
        let mut by_doc: std::collections::HashMap<_, std::collections::BTreeMap<i64, Vec<u8>>> = Default::default();
        for task in tasks {
            for (key, seq, data) in task.await.unwrap() {
                assert!(by_doc.entry(key).or_default().insert(seq, data).is_none(), "seq {seq} given twice");
            }
        }
        for key in &keys {
            let entries = by_doc.remove(key).unwrap();
            let n = i64::try_from(entries.len()).unwrap();
            assert_eq!(entries.keys().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
            let state = store.load_doc(key).await.unwrap().unwrap();
            assert_eq!(state.updates, entries.into_values().collect::<Vec<_>>());
        }
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The writer thread lives as long as some clone of the store does.
    #[tokio::test]
    async fn the_writer_thread_ends_with_the_last_clone() {
        let (store, dir) = file_store().await;
        let mut ended = store.doc_writer().unwrap().take_ended().unwrap();
        let clone = store.clone();
        drop(store);
        let app = crate::contract::doc_app(&clone).await;
        let key = crate::contract::doc_key(app.id, "x");
        assert_eq!(clone.append_doc_updates(&[(key, vec![1])], OffsetDateTime::now_utc()).await.unwrap(), vec![1]);
        assert_eq!(ended.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty), "still running");
        drop(clone);
        let gone = tokio::time::timeout(Duration::from_secs(10), ended).await;
        assert!(gone.is_ok(), "the writer thread outlived its store");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Closing any clone stops the writer: appends fail after, promptly.
    #[tokio::test]
    async fn appends_after_close_fail() {
        let (store, dir) = file_store().await;
        let app = crate::contract::doc_app(&store).await;
        let key = crate::contract::doc_key(app.id, "x");
        let clone = store.clone();
        tokio::time::timeout(Duration::from_secs(10), store.close()).await.unwrap();
        let batch = [(key, vec![1])];
        let append = clone.append_doc_updates(&batch, OffsetDateTime::now_utc());
        let result = tokio::time::timeout(Duration::from_secs(10), append).await.unwrap();
        assert!(matches!(result, Err(crate::StoreError::Database(sqlx::Error::PoolClosed))), "{result:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Not a check: times 10,000 single-entry appends one after the other
    /// (`cargo test -p wiresocket-store --lib -- --ignored --nocapture
    /// sequential_append_timing`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing, run by hand"]
    async fn sequential_append_timing() {
        let (store, dir) = file_store().await;
        let app = crate::contract::doc_app(&store).await;
        let key = crate::contract::doc_key(app.id, "timed");
        let now = OffsetDateTime::now_utc();
        let started = std::time::Instant::now();
        for n in 0..10_000_u32 {
            store.append_doc_updates(&[(key.clone(), n.to_le_bytes().to_vec())], now).await.unwrap();
        }
        let took = started.elapsed();
        println!("10000 sequential single-entry appends: {took:?} ({:?} each)", took / 10_000);
        // The same on a document compacted into a 10 MiB snapshot.
        let big = crate::contract::doc_key(app.id, "compacted");
        let seq = store.append_doc_updates(&[(big.clone(), vec![0])], now).await.unwrap()[0];
        let snapshot: Vec<u8> =
            (0..10 * 1024 * 1024_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        store.compact_doc(&big, &snapshot, seq, now).await.unwrap();
        let started = std::time::Instant::now();
        for n in 0..1_000_u32 {
            store.append_doc_updates(&[(big.clone(), n.to_le_bytes().to_vec())], now).await.unwrap();
        }
        let took = started.elapsed();
        println!("1000 appends to a doc with a 10 MiB snapshot: {took:?} ({:?} each)", took / 1_000);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Checkpoints happen in the background, not inside commits: with
    /// SQLite's own threshold far away, the database file still takes in
    /// what was committed, within a second.
    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() {
        let dir = std::env::temp_dir().join(format!("ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let threshold: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&store.pool).await.unwrap();
        assert_eq!(threshold, i64::from(AUTOCHECKPOINT_PAGES));
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();
        sqlx::query("CREATE TABLE filler (b BLOB)").execute(&store.pool).await.unwrap();
        for _ in 0..64 {
            sqlx::query("INSERT INTO filler VALUES (zeroblob(32768))").execute(&store.pool).await.unwrap();
        }
        // 2 MiB committed: far below the fallback threshold (80 MiB of pages).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + 2 * 1024 * 1024 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint moved the WAL into the database");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
