//! The server engine: PostgreSQL.

use super::{MigrationFile, migrator};
use crate::Result;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::time::Duration;

const MIGRATIONS: &[MigrationFile] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "documents", include_str!("../../migrations/postgres/0002_documents.sql")),
    (3, "security", include_str!("../../migrations/postgres/0003_security.sql")),
    (4, "members", include_str!("../../migrations/postgres/0004_members.sql")),
    (5, "doc_snapshots", include_str!("../../migrations/postgres/0005_doc_snapshots.sql")),
    (6, "nodes", include_str!("../../migrations/postgres/0006_nodes.sql")),
    (7, "user_names", include_str!("../../migrations/postgres/0007_user_names.sql")),
    (8, "event_outbox", include_str!("../../migrations/postgres/0008_event_outbox.sql")),
    (9, "snapshot_parts", include_str!("../../migrations/postgres/0009_snapshot_parts.sql")),
    (10, "doc_journal", include_str!("../../migrations/postgres/0010_doc_journal.sql")),
];

const POOL_SIZE: u32 = 10;

/// How long a caller waits for a free connection (or for the server to
/// answer at startup) before the call fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Store`](crate::Store) on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?…`) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options).await
    }

    /// Like [`connect`](Self::connect), also trusting the CA certificates in
    /// `ca_file` (PEM) for TLS, besides the public roots. TLS itself is the
    /// URL's `sslmode`; with `verify-ca` or `verify-full` the server's
    /// certificate must chain to one of them.
    pub async fn connect_with_ca(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self> {
        let mut options: PgConnectOptions = url.parse()?;
        if let Some(ca) = ca_file {
            options = options.ssl_root_cert(ca);
        }
        Self::connect_with(options).await
    }

    /// Like [`connect`](Self::connect), from parsed options.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating, so several replicas
        // starting together apply each migration once.
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

    /// None: appends go through the pool. (The hand-offs that a SQLite
    /// writer thread saves are network round trips here, already one per
    /// statement whatever thread sends them.)
    fn doc_writer(&self) -> Option<&super::doclog::DocWriter> {
        None
    }

    /// Document writes are never refused here: every process commits its
    /// own.
    fn doc_log_refusal(&self) -> crate::Result<()> {
        Ok(())
    }

    /// None: concurrent appends here commit in any order, so the data
    /// plane keeps its own ordered persister for this engine.
    fn ordered_appender(&self) -> Option<std::sync::Arc<dyn crate::DocAppender>> {
        None
    }

    /// The raw pool, for tests that need to plant rows the trait cannot
    /// write (e.g. corrupt ones). Not for application code: it would
    /// branch storage on the engine.
    #[cfg(any(test, feature = "contract"))]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl_store!(PostgresStore, sqlx::Postgres, begin_write = "BEGIN", locks = locking);
