//! Runs the store contract (`store::contract`) against every engine, each
//! test on a database of its own: a fresh SQLite file under the temp dir,
//! and a fresh PostgreSQL database created for the test and dropped after.
//!
//! PostgreSQL comes from `WIRESOCKET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the user must be allowed
//! to create databases). If it cannot be reached the PostgreSQL tests fail:
//! they never skip, so CI cannot pass without having run them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sqlx::postgres::{PgConnectOptions, PgConnection};
// The package itself, linked with its `contract` feature (see Cargo.toml).
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::path::PathBuf;
use std::time::Duration;
use store::Store;
use store::sql::{PostgresStore, SqliteStore};
use wiresocket_store as store;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store on a database of its own, removed when dropped (also when the
/// test panics).
trait TestDb: Sized {
    type S: Store;
    async fn new() -> Self;
    fn store(&self) -> &Self::S;
    /// A second store on the same database, as after a restart.
    async fn reopen(&self) -> Self::S;
}

struct SqliteDb {
    store: SqliteStore,
    dir: PathBuf,
}

impl TestDb for SqliteDb {
    type S = SqliteStore;

    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("wiresocket-store-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("wiresocket.db")).await.unwrap();
        Self { store, dir }
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn reopen(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.join("wiresocket.db")).await.unwrap()
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        // Open connections do not stop an unlink on Unix.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct PgDb {
    // Fields drop in order: the store's pool before the database.
    store: PostgresStore,
    options: PgConnectOptions,
    _database: DropDatabase,
}

/// Drops the test database when it goes out of scope.
struct DropDatabase {
    admin: PgConnectOptions,
    name: String,
}

fn pg_url() -> String {
    std::env::var("WIRESOCKET_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

async fn pg_admin(admin: &PgConnectOptions) -> PgConnection {
    let url = pg_url();
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(admin)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL is unreachable at {url}: {e}\n\
             The PostgreSQL contract tests need a running server (they never skip): start it \
             (e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main start`) or set WIRESOCKET_TEST_DATABASE_URL."
        ),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s (set WIRESOCKET_TEST_DATABASE_URL)"),
    }
}

impl TestDb for PgDb {
    type S = PostgresStore;

    async fn new() -> Self {
        let url = pg_url();
        let admin: PgConnectOptions =
            url.parse().unwrap_or_else(|e| panic!("WIRESOCKET_TEST_DATABASE_URL={url:?} is not a PostgreSQL URL: {e}"));
        let name = format!("wiresocket_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = pg_admin(&admin).await;
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} at {url}: {e}"));
        conn.close().await.unwrap();
        let options = admin.clone().database(&name);
        let database = DropDatabase { admin, name };
        let store = PostgresStore::connect_with(options.clone()).await.unwrap();
        Self { store, options, _database: database }
    }

    fn store(&self) -> &PostgresStore {
        &self.store
    }

    async fn reopen(&self) -> PostgresStore {
        PostgresStore::connect_with(self.options.clone()).await.unwrap()
    }
}

impl Drop for DropDatabase {
    /// Best effort: `WITH (FORCE)` ends the store's open connections. Drop
    /// cannot await, so this runs on a thread with a runtime of its own.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Expands, for one engine, a `#[tokio::test]` per contract test plus the
/// tests that need raw access to the database.
macro_rules! engine_tests {
    ($db:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = <$db as TestDb>::new().await;
                store::contract::$name(db.store()).await;
            }
        )*

        /// Migrations run at every start; the second run must be a no-op
        /// that keeps the data.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn migrations_are_idempotent() {
            let db = <$db as TestDb>::new().await;
            let user = store::contract::user();
            db.store().create_user(&user).await.unwrap();
            let again = db.reopen().await;
            let third = db.reopen().await;
            assert_eq!(again.get_user(user.id).await.unwrap(), Some(user.clone()));
            assert_eq!(third.count_users().await.unwrap(), 1);
        }

        /// The whole suite on one store, as other crates would run it.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_all_on_one_store() {
            let db = <$db as TestDb>::new().await;
            store::contract::run_all(db.store()).await;
        }

        /// Audit rows from before migration 4 (no chain columns) are chained
        /// when a store opens, once, in `seq` order per chain; appends then
        /// continue each chain.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn audit_backfill_chains_old_rows() {
            use domain::ids::TenantId;
            use store::contract::{audit_event, verify_chain};
            let db = <$db as TestDb>::new().await;
            let (s, pool) = (db.store(), db.store().pool());
            let t = TenantId::new();
            let plant = |tenant: Option<TenantId>, action: &'static str| async move {
                sqlx::query(
                    "INSERT INTO audit_events (tenant_id, at, actor_type, action, details) \
                     VALUES ($1, 1700000000, 'system', $2, '{\"k\": [1, 2]}')",
                )
                .bind(tenant.map(|t| t.to_string()))
                .bind(action)
                .execute(pool)
                .await
                .unwrap();
            };
            plant(Some(t), "old.1").await;
            plant(None, "old.platform").await;
            plant(Some(t), "old.2").await;
            assert_eq!(s.audit_head(Some(t)).await.unwrap(), None);
            assert_eq!(s.audit_chain_rows(Some(t), 0, 10).await.unwrap(), vec![]);

            // Opening the store chains them.
            let reopened = db.reopen().await;
            assert_eq!(reopened.backfill_audit_chain().await.unwrap(), 0);
            assert_eq!(verify_chain(s, Some(t), 1).await, Ok(2));
            assert_eq!(verify_chain(s, None, 1).await, Ok(1));
            // More old rows (say, written by an old binary still running)
            // go after what the chain holds.
            plant(Some(t), "old.3").await;
            assert_eq!(s.backfill_audit_chain().await.unwrap(), 1);
            assert_eq!(s.backfill_audit_chain().await.unwrap(), 0);
            s.append_audit(&audit_event(Some(t), "new.4")).await.unwrap();
            let rows = s.audit_chain_rows(Some(t), 0, 10).await.unwrap();
            let chain: Vec<_> = rows.iter().map(|r| (r.chain_seq, r.action.as_str())).collect();
            assert_eq!(chain, vec![(1, "old.1"), (2, "old.2"), (3, "old.3"), (4, "new.4")]);
            assert_eq!(verify_chain(s, Some(t), 3).await, Ok(4));
            assert_eq!(s.audit_chains().await.unwrap(), vec![None, Some(t)]);
        }

        /// Whoever edits or deletes audit rows behind the store's back (raw
        /// SQL) is caught by the verifier.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn audit_tampering_is_detected() {
            use domain::audit::ChainBreak;
            use domain::ids::TenantId;
            use store::contract::{audit_event, verify_chain};
            let db = <$db as TestDb>::new().await;
            let (s, pool) = (db.store(), db.store().pool());
            let tenants: Vec<_> = (0..4).map(|_| TenantId::new()).collect();
            for n in 1..=5 {
                let batch: Vec<_> = tenants.iter().map(|&t| audit_event(Some(t), &format!("app.event_{n}"))).collect();
                s.append_audit_many(&batch).await.unwrap();
            }
            for &t in &tenants {
                assert_eq!(verify_chain(s, Some(t), 2).await, Ok(5));
            }
            let tamper = |sql: &'static str, t: TenantId, chain_seq: i64| async move {
                let done = sqlx::query(sql).bind(t.to_string()).bind(chain_seq).execute(pool).await.unwrap();
                assert_eq!(done.rows_affected(), 1, "{sql}");
            };
            let brk = |chain_seq, reason| Err(ChainBreak { chain_seq, reason });

            tamper("UPDATE audit_events SET action = 'app.created' WHERE tenant_id = $1 AND chain_seq = $2", tenants[0], 3)
                .await;
            assert_eq!(verify_chain(s, Some(tenants[0]), 2).await, brk(3, "hash"));
            tamper("DELETE FROM audit_events WHERE tenant_id = $1 AND chain_seq = $2", tenants[1], 3).await;
            assert_eq!(verify_chain(s, Some(tenants[1]), 2).await, brk(3, "gap"));
            tamper("DELETE FROM audit_events WHERE tenant_id = $1 AND chain_seq = $2", tenants[2], 5).await;
            assert_eq!(verify_chain(s, Some(tenants[2]), 2).await, brk(5, "head"));
            // Re-hashing an edited row does not help: the next row's link breaks.
            let row = s.audit_chain_rows(Some(tenants[3]), 1, 1).await.unwrap().remove(0);
            let forged = store::AuditRecord { ip: Some("10.0.0.1".to_owned()), ..row.clone() };
            sqlx::query("UPDATE audit_events SET ip = $2, hash = $3 WHERE seq = $1")
                .bind(row.seq)
                .bind("10.0.0.1")
                .bind(forged.chain_hash(row.chain_seq, &row.prev_hash))
                .execute(pool)
                .await
                .unwrap();
            assert_eq!(verify_chain(s, Some(tenants[3]), 2).await, brk(3, "prev_hash"));
        }

        /// A stored value the records cannot hold is `Corrupt`, not a panic.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn corrupt_rows_are_errors() {
            use store::contract::{app, key, now, user};
            use store::StoreError;
            let db = <$db as TestDb>::new().await;
            let (s, pool) = (db.store(), db.store().pool());
            let owner = user();
            s.create_user(&owner).await.unwrap();
            let t = store::contract::tenant();
            let k = key(t.id, now());
            s.create_tenant(&t, owner.id, "super_admin", &k).await.unwrap();
            let a = app(t.id, domain::plan::PlanId::Pro);
            s.create_app(&a, None, &[]).await.unwrap();

            let plant = [
                ("UPDATE signing_keys SET state = 'bogus' WHERE kid = $1", k.kid.clone()),
                ("UPDATE apps SET allowed_domains = 'not json' WHERE id = $1", a.id.to_string()),
                ("UPDATE users SET id = 'not-a-uuid' WHERE id = $1", {
                    let lonely = user();
                    s.create_user(&lonely).await.unwrap();
                    lonely.id.to_string()
                }),
            ];
            for (sql, id) in plant {
                assert_eq!(sqlx::query(sql).bind(id).execute(pool).await.unwrap().rows_affected(), 1);
            }
            assert!(matches!(s.get_signing_key(&k.kid).await, Err(StoreError::Corrupt(_))));
            assert!(matches!(s.list_signing_keys(t.id).await, Err(StoreError::Corrupt(_))));
            assert!(matches!(s.get_app_by_id(a.id).await, Err(StoreError::Corrupt(_))));
            assert!(matches!(s.list_apps(t.id, None, 10).await, Err(StoreError::Corrupt(_))));
            let by_email = sqlx::query("SELECT email FROM users WHERE id = 'not-a-uuid'")
                .fetch_one(pool)
                .await
                .unwrap();
            let email: String = sqlx::Row::get(&by_email, "email");
            match s.get_user_by_email(&email).await {
                Err(StoreError::Corrupt(why)) => assert!(why.contains("id"), "{why}"),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    };
}

/// Expands every contract test for each engine, from the suite's own list.
macro_rules! per_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            engine_tests!(SqliteDb; $($name),*);
        }

        mod postgres {
            use super::*;
            engine_tests!(PgDb; $($name),*);
        }

        const WIRED: &[&str] = &[$(stringify!($name)),*];
    };
}

store::for_each_contract_test!(per_engine);

#[test]
fn every_contract_test_is_wired() {
    let suite: Vec<&str> = store::contract::ALL.iter().map(|(name, _)| *name).collect();
    assert_eq!(WIRED, suite.as_slice(), "per_engine! and store::contract::ALL come from one list");
}
