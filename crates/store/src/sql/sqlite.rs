//! The embedded engine: one SQLite file, WAL journal.

use super::{MigrationFile, migrator};
use crate::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[MigrationFile] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "documents", include_str!("../../migrations/sqlite/0002_documents.sql")),
    (3, "security", include_str!("../../migrations/sqlite/0003_security.sql")),
    (4, "members", include_str!("../../migrations/sqlite/0004_members.sql")),
];

/// SQLite serialises writers anyway; a few connections let reads run
/// alongside the writer (WAL) without holding many file handles.
const POOL_SIZE: u32 = 4;

/// How long a writer waits for another to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// [`Store`](crate::Store) on an embedded SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` and
    /// applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
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
            .pragma("wal_autocheckpoint", AUTOCHECKPOINT_PAGES.to_string());
        let pool = SqlitePoolOptions::new().max_connections(POOL_SIZE).connect_with(options).await?;
        tokio::spawn(checkpointer(pool.clone()));
        Self::migrated(pool).await
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
        let store = Self { pool };
        // Audit rows written before the hash chain existed get chained
        // once; later starts find none.
        crate::Store::backfill_audit_chain(&store).await?;
        Ok(store)
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Store;
    use domain::ids::TenantId;
    use domain::keys::KeyState;
    use time::OffsetDateTime;

    /// A database the old rotation race left with several active keys per
    /// tenant still migrates: the newest stays active, the others retire.
    #[tokio::test]
    async fn migration_3_keeps_the_newest_active_key_per_tenant() {
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .unwrap();
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
