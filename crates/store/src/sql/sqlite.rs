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
}
