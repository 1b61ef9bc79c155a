//! The embedded engine: one SQLite file, WAL journal.

use super::{MigrationFile, migrator};
use crate::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[MigrationFile] = &[(1, "init", include_str!("../../migrations/sqlite/0001_init.sql"))];

/// SQLite serialises writers anyway; a few connections let reads run
/// alongside the writer (WAL) without holding many file handles.
const POOL_SIZE: u32 = 4;

/// How long a writer waits for another to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new().max_connections(POOL_SIZE).connect_with(options).await?;
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
        Ok(Self { pool })
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

impl_store!(SqliteStore, sqlx::Sqlite, begin_write = "BEGIN IMMEDIATE");
