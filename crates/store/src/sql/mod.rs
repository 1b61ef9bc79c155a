//! The SQL implementations of [`Store`](crate::Store): [`SqliteStore`]
//! (embedded, one file) and [`PostgresStore`].
//!
//! # Why one SQL text for two engines
//! Two hand-written implementations drift: a fix lands in one and not the
//! other, and the engine nobody runs locally rots. So the schema keeps to
//! types both engines read the same way (ids as text, times as Unix seconds,
//! JSON as text), every statement lives once in `queries` in the dialect
//! both accept (`$N` placeholders, `ON CONFLICT`, partial unique indexes),
//! and the trait body is written once in `impl_store!`, which expands for
//! each `(store type, sqlx database)` pair. The only per-engine facts are
//! the migrations' column types, how a write transaction begins, how a row
//! is locked for a read-then-write inside one (`FOR UPDATE` on PostgreSQL,
//! nothing on SQLite, whose write transaction is exclusive), and the
//! connection setup of [`SqliteStore`] and [`PostgresStore`].
//!
//! Rules that must hold under concurrency are held by the database: unique
//! indexes (one free app per tenant, one setup, one active signing key per
//! tenant, one job per event and webhook), compare-and-set updates
//! (refresh-token rotation, plan changes, single-use invite and reset
//! tokens, TOTP steps, recovery codes), upserts that lock a counter row
//! (document seqs, audit chain heads) and locked reads inside the write
//! transaction (key revocation; the tenant row for the last-`super_admin`
//! and role-in-use rules; `SKIP LOCKED` webhook job claims), never
//! read-then-write in Rust across transactions.

#[macro_use]
mod impl_store;
mod decode;
mod doclog;
mod postgres;
mod queries;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::{DocKey, Page, Result, StoreError};
use domain::ids::AppId;
use serde::Serialize;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Largest page a `list_*` call returns; smaller requests are honoured,
/// zero is read as one.
pub const MAX_PAGE: u32 = 500;

/// One embedded migration: version, description, SQL.
type MigrationFile = (i64, &'static str, &'static str);

/// Builds sqlx's runtime migrator from files embedded with `include_str!`
/// (the `migrate!` macro needs sqlx's `macros` feature, which we leave off
/// to keep build times down). sqlx records applied versions and their
/// checksums in `_sqlx_migrations`, so re-running at every start is a no-op
/// and an edited, already-applied file is refused.
fn migrator(files: &[MigrationFile]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

/// Maps a database error to the store's vocabulary: unique violations
/// become `Conflict` with a stable code, foreign-key violations `NotFound`
/// (the row the new one points to does not exist).
fn db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            // PostgreSQL names the constraint; SQLite only says
            // "UNIQUE constraint failed: table.column".
            let what =
                db.constraint().or_else(|| db.message().strip_prefix("UNIQUE constraint failed: ")).unwrap_or_default();
            return StoreError::Conflict(conflict_code(what));
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound;
        }
    }
    StoreError::Database(e)
}

/// The conflict code for a violated unique constraint, by its PostgreSQL
/// name or its SQLite column list (see the migrations).
fn conflict_code(constraint: &str) -> &'static str {
    match constraint {
        "setup_state_pkey" | "setup_state.id" => "setup_disabled",
        "users_email_key" | "users.email" => "email_taken",
        "apps_one_free_per_tenant" | "apps.tenant_id" => "free_plan_limit",
        "apps_client_id_key" | "apps.client_id" => "client_id_taken",
        "signing_keys_kid_key" | "signing_keys.kid" => "kid_taken",
        // The partial unique index `signing_keys_one_active_per_tenant`
        // (the table's only unique rule on `tenant_id`).
        "signing_keys_one_active_per_tenant" | "signing_keys.tenant_id" => "key_conflict",
        "memberships_pkey" | "memberships.tenant_id, memberships.user_id" => "already_member",
        "custom_roles_pkey" | "custom_roles.tenant_id, custom_roles.name" => "role_exists",
        "invites_token_hash_key" | "invites.token_hash" => "token_taken",
        _ => "conflict",
    }
}

/// Stored form of one permission of a custom role: `{"resource": …, "action": …}`.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Permission {
    resource: domain::role::Resource,
    action: domain::role::Action,
}

fn permissions_json(permissions: &[(domain::role::Resource, domain::role::Action)]) -> Result<String> {
    let list: Vec<Permission> = permissions.iter().map(|&(resource, action)| Permission { resource, action }).collect();
    to_json(&list)
}

/// The name of an audit chain in `audit_heads` (and of its rows, as
/// `COALESCE(tenant_id, '')`): the tenant id, or '' for the platform chain.
fn chain_name(tenant: Option<domain::ids::TenantId>) -> String {
    tenant.map(|t| t.to_string()).unwrap_or_default()
}

/// Stored form of a time: whole Unix seconds.
fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn opt_secs(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(secs)
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// A page from rows fetched with `LIMIT limit`: full means there may be more.
fn page<T>(items: Vec<T>, limit: u32, id: impl Fn(&T) -> String) -> Page<T> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n == limit);
    let next_after = if full { items.last().map(id) } else { None };
    Page { items, next_after }
}

/// One document's share of an append batch.
#[derive(Debug, PartialEq)]
struct DocAppend<'a> {
    app_id: String,
    name: &'a str,
    /// Where this doc's entries sit in the batch, in batch order.
    entries: Vec<usize>,
    count: i64,
    bytes: i64,
}

/// Groups an append batch by document, in key order. Every transaction that
/// locks several document rows thus takes the locks in the same order, so
/// two concurrent batches cannot deadlock on PostgreSQL.
fn group_by_doc(batch: &[(DocKey, Vec<u8>)]) -> Vec<DocAppend<'_>> {
    let mut docs: BTreeMap<(AppId, &str), DocAppend<'_>> = BTreeMap::new();
    for (i, (key, data)) in batch.iter().enumerate() {
        let doc = docs.entry((key.app_id, key.name.as_str())).or_insert_with(|| DocAppend {
            app_id: key.app_id.to_string(),
            name: &key.name,
            entries: Vec::new(),
            count: 0,
            bytes: 0,
        });
        doc.entries.push(i);
        doc.count += 1;
        doc.bytes += byte_len(data);
    }
    docs.into_values().collect()
}

/// The entries of an audit batch grouped by chain (see [`chain_name`]), in
/// chain order, each chain's entries in batch order. Every transaction that
/// locks several chain heads thus takes the locks in the same order, so
/// concurrent batches cannot deadlock on PostgreSQL.
fn group_by_chain(events: &[crate::AuditRecord]) -> Vec<(String, Vec<usize>)> {
    let mut chains: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        chains.entry(chain_name(event.tenant_id)).or_default().push(i);
    }
    chains.into_iter().collect()
}

/// A snapshot is written in parts of this size, one transaction each, so
/// no compaction holds SQLite's one write lock for longer than a part
/// takes (about a millisecond) however large the document.
const SNAPSHOT_PART_BYTES: usize = 256 * 1024;

/// Parts of a replaced snapshot deleted per transaction.
const PARTS_PER_DELETE: i64 = 4;

/// The parts `snapshot` is stored as; one (empty) part for an empty one, so
/// that it still reads back as a snapshot.
fn snapshot_parts(snapshot: &[u8]) -> Vec<&[u8]> {
    if snapshot.is_empty() { vec![snapshot] } else { snapshot.chunks(SNAPSHOT_PART_BYTES).collect() }
}

/// Why compacting up to `upto` is refused for a doc at (`snapshot_seq`,
/// `last_seq`), if it is.
fn compaction_refusal(snapshot_seq: i64, last_seq: i64, upto: i64) -> Result<()> {
    if upto < snapshot_seq {
        Err(StoreError::Conflict("stale_compaction"))
    } else if upto > last_seq {
        Err(StoreError::Conflict("seq_out_of_range"))
    } else {
        Ok(())
    }
}

/// Tests hold a compaction between its parts: a gate per document name,
/// taken (one permit) after each part is committed.
#[cfg(test)]
pub(crate) static PART_GATES: std::sync::Mutex<Vec<(String, std::sync::Arc<tokio::sync::Semaphore>)>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(test)]
async fn part_written(name: &str) {
    let gate = PART_GATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, g)| g.clone());
    if let Some(gate) = gate
        && let Ok(permit) = gate.acquire().await
    {
        permit.forget();
    }
}

fn byte_len(data: &[u8]) -> i64 {
    // A slice never holds more than isize::MAX bytes.
    i64::try_from(data.len()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The file-backed engines run in `tests/contract.rs`; this checks the
    /// single-connection in-memory variant copes with the suite too.
    #[tokio::test]
    async fn contract_on_in_memory_sqlite() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        crate::contract::run_all(&store).await;
    }

    #[test]
    fn conflict_codes_cover_both_engines() {
        for (pg, lite, code) in [
            ("setup_state_pkey", "setup_state.id", "setup_disabled"),
            ("users_email_key", "users.email", "email_taken"),
            ("apps_one_free_per_tenant", "apps.tenant_id", "free_plan_limit"),
            ("apps_client_id_key", "apps.client_id", "client_id_taken"),
            ("signing_keys_kid_key", "signing_keys.kid", "kid_taken"),
            ("signing_keys_one_active_per_tenant", "signing_keys.tenant_id", "key_conflict"),
            ("memberships_pkey", "memberships.tenant_id, memberships.user_id", "already_member"),
            ("custom_roles_pkey", "custom_roles.tenant_id, custom_roles.name", "role_exists"),
            ("invites_token_hash_key", "invites.token_hash", "token_taken"),
            ("apps_pkey", "apps.id", "conflict"),
        ] {
            assert_eq!(conflict_code(pg), code);
            assert_eq!(conflict_code(lite), code);
        }
    }

    #[test]
    fn append_batches_group_by_doc_in_key_order() {
        let (x, y) = (AppId::new(), AppId::new());
        let (a, b) = (x.min(y), x.max(y));
        let key = |app_id, name: &str| DocKey { app_id, name: name.to_owned() };
        let batch = vec![
            (key(b, "x"), vec![1]),
            (key(a, "y"), vec![2, 2]),
            (key(b, "x"), vec![3, 3, 3]),
            (key(a, "x"), vec![4]),
            (key(a, "y"), vec![5]),
        ];
        let groups: Vec<_> = group_by_doc(&batch).into_iter().map(|d| (d.name, d.entries, d.count, d.bytes)).collect();
        assert_eq!(groups, vec![("x", vec![3], 1, 1), ("y", vec![1, 4], 2, 3), ("x", vec![0, 2], 2, 4)]);
        assert!(group_by_doc(&[]).is_empty());
    }

    #[test]
    fn doc_update_inserts_come_in_few_sizes() {
        let mut sizes = Vec::new();
        let mut remaining = 500;
        while remaining > 0 {
            let (n, sql) = queries::insert_doc_updates(remaining);
            assert_eq!(sql.matches('(').count(), n + 1, "{sql}");
            assert!(sql.ends_with(&format!("${}, ${})", 4 * n - 1, 4 * n)), "{sql}");
            sizes.push(n);
            remaining -= n;
        }
        assert_eq!(sizes, vec![64, 64, 64, 64, 64, 64, 64, 32, 16, 4]);
    }

    #[test]
    fn page_has_a_cursor_only_when_full() {
        let p = page(vec![1, 2, 3], 3, |n| n.to_string());
        assert_eq!(p.next_after.as_deref(), Some("3"));
        let p = page(vec![1, 2], 3, |n| n.to_string());
        assert_eq!(p.next_after, None);
        assert_eq!(clamp_limit(0), 1);
        assert_eq!(clamp_limit(10_000), MAX_PAGE);
    }
}
