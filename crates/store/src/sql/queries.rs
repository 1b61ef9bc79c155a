//! Every statement the SQL stores run, written once for both engines.
//!
//! The dialect is the intersection of SQLite and PostgreSQL: `$N`
//! placeholders (SQLite takes `$1` as a named parameter and sqlx's SQLite
//! driver binds it by the number in its name, so a placeholder may repeat,
//! as in PostgreSQL), `ON CONFLICT … DO UPDATE`, `RETURNING`, `CASE`,
//! partial unique indexes. Values are text, integers and bytes, so casts are
//! needed only to give a constant column a type (PostgreSQL reads a bare `0`
//! as a 4-byte integer).

use std::sync::LazyLock;

// The column lists are shared by every SELECT of a table, so the decoders in
// `super::decode` can rely on the names.
macro_rules! user_cols {
    () => {
        "id, email, password_hash, is_operator, created_at"
    };
}
macro_rules! session_cols {
    () => {
        "token_hash, user_id, created_at, expires_at, family_id"
    };
}
macro_rules! key_cols {
    () => {
        concat!(
            "kid, tenant_id, state, public_n, public_e, private_key_enc, master_key_version, ",
            "created_at, retires_at, revoked_at"
        )
    };
}
macro_rules! app_cols {
    () => {
        concat!(
            "id, tenant_id, name, client_id, client_secret_hash, region, plan, allowed_domains, environment, ",
            "created_at, updated_at, secret_rotated_at"
        )
    };
}
macro_rules! invoice_cols {
    () => {
        "id, app_id, tenant_id, lines, total_cents, created_at"
    };
}
macro_rules! refresh_cols {
    () => {
        "token_hash, family_id, kind, subject, client_id, scope, created_at, expires_at, used_at, revoked_at"
    };
}
macro_rules! doc_cols {
    () => {
        "app_id, name, size_bytes, created_at, updated_at"
    };
}
macro_rules! audit_cols {
    () => {
        "seq, tenant_id, at, actor_type, actor_id, action, target_type, target_id, ip, details"
    };
}

pub const PING: &str = "SELECT 1";

// ---- setup, users, sessions ----------------------------------------------
pub const INSERT_SETUP_STATE: &str = "INSERT INTO setup_state (id, completed_at) VALUES (1, $1)";
pub const COUNT_USERS: &str = "SELECT COUNT(*) AS n FROM users";
pub const INSERT_USER: &str = concat!("INSERT INTO users (", user_cols!(), ") VALUES ($1, $2, $3, $4, $5)");
pub const GET_USER: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
pub const GET_USER_BY_EMAIL: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE email = $1");

pub const INSERT_SESSION: &str = concat!("INSERT INTO sessions (", session_cols!(), ") VALUES ($1, $2, $3, $4, $5)");
pub const GET_SESSION: &str = concat!("SELECT ", session_cols!(), " FROM sessions WHERE token_hash = $1");
pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_hash = $1";
pub const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
pub const DELETE_FAMILY_SESSIONS: &str = "DELETE FROM sessions WHERE family_id = $1";
pub const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";

// ---- tenants and memberships ---------------------------------------------
pub const INSERT_TENANT: &str = "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)";
pub const GET_TENANT: &str = "SELECT id, name, created_at FROM tenants WHERE id = $1";
pub const INSERT_MEMBERSHIP: &str =
    "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)";
pub const GET_MEMBERSHIP: &str = "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2";
pub const LIST_USER_TENANTS: &str = "SELECT t.id, t.name, t.created_at, m.role \
     FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
     WHERE m.user_id = $1 ORDER BY t.id";

// ---- signing keys ----------------------------------------------------------
/// `$3` is the state to store (the stores pass `active` for new keys).
pub const INSERT_KEY: &str =
    concat!("INSERT INTO signing_keys (", key_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
pub const LIST_TENANT_KEYS: &str =
    concat!("SELECT ", key_cols!(), " FROM signing_keys WHERE tenant_id = $1 ORDER BY created_at DESC, seq DESC");
pub const LIST_ALL_KEYS: &str = concat!("SELECT ", key_cols!(), " FROM signing_keys ORDER BY tenant_id, seq");
pub const GET_KEY: &str = concat!("SELECT ", key_cols!(), " FROM signing_keys WHERE kid = $1");
/// Runs before the new key's insert in the same transaction, so the partial
/// unique index (one active key per tenant) sees the old key retired.
pub const RETIRE_ACTIVE_KEYS: &str = "UPDATE signing_keys SET state = 'retiring', retires_at = $2 \
     WHERE tenant_id = $1 AND state = 'active'";
macro_rules! key_state {
    () => {
        "SELECT state FROM signing_keys WHERE tenant_id = $1 AND kid = $2"
    };
}
/// The state a revocation decides on, for SQLite, whose write transaction
/// (`BEGIN IMMEDIATE`) already excludes every other writer.
pub const KEY_STATE: &str = key_state!();
/// The same for PostgreSQL: the row lock makes a concurrent rotation or
/// revocation of the key wait for this transaction (or this one wait for
/// it, then read the state it committed). SQLite has no `FOR UPDATE`.
pub const KEY_STATE_FOR_UPDATE: &str = concat!(key_state!(), " FOR UPDATE");
pub const REVOKE_KEY: &str = "UPDATE signing_keys SET state = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND kid = $2 AND state <> 'revoked'";
pub const REWRAP_KEY: &str = "UPDATE signing_keys SET private_key_enc = $2, master_key_version = $3 WHERE kid = $1";

// ---- apps, plans, invoices -------------------------------------------------
pub const INSERT_APP: &str =
    concat!("INSERT INTO apps (", app_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)");
pub const GET_TENANT_APP: &str = concat!("SELECT ", app_cols!(), " FROM apps WHERE tenant_id = $1 AND id = $2");
pub const GET_APP: &str = concat!("SELECT ", app_cols!(), " FROM apps WHERE id = $1");
pub const GET_APP_BY_CLIENT_ID: &str = concat!("SELECT ", app_cols!(), " FROM apps WHERE client_id = $1");
/// `$2` is the exclusive lower bound (`''` for the first page).
pub const LIST_APPS: &str =
    concat!("SELECT ", app_cols!(), " FROM apps WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3");
pub const UPDATE_APP: &str = "UPDATE apps SET name = $3, allowed_domains = $4, environment = $5, updated_at = $6 \
     WHERE tenant_id = $1 AND id = $2";
pub const DELETE_APP: &str = "DELETE FROM apps WHERE tenant_id = $1 AND id = $2";
pub const SET_APP_SECRET: &str = "UPDATE apps SET client_secret_hash = $2, secret_rotated_at = $3, updated_at = $3 \
     WHERE id = $1";
/// Compare-and-set on the plan: `$4` is the plan the change was priced
/// from. On PostgreSQL a concurrent change waits on the row lock and then
/// re-checks the WHERE, so of two changes from the same plan one matches.
pub const SET_APP_PLAN: &str = "UPDATE apps SET plan = $2, updated_at = $3 WHERE id = $1 AND plan = $4";
pub const APP_EXISTS: &str = "SELECT COUNT(*) AS n FROM apps WHERE id = $1";
/// The invoice's tenant is the app's, whatever the record says.
pub const INSERT_INVOICE: &str = concat!(
    "INSERT INTO invoices (",
    invoice_cols!(),
    ") SELECT $1, id, tenant_id, $3, $4, $5 FROM apps WHERE id = $2"
);
/// `$2` is the exclusive lower bound (`''` for the first page).
pub const LIST_INVOICES: &str =
    concat!("SELECT ", invoice_cols!(), " FROM invoices WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3");

// ---- refresh tokens and the deny-list --------------------------------------
/// `$11` is `app_id`: the subject for app tokens, NULL for user tokens.
pub const INSERT_REFRESH: &str = concat!(
    "INSERT INTO refresh_tokens (",
    refresh_cols!(),
    ", app_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);
pub const GET_REFRESH: &str = concat!("SELECT ", refresh_cols!(), " FROM refresh_tokens WHERE token_hash = $1");
/// The compare-and-set at the heart of rotation: only one caller can move
/// `used_at` from NULL, whatever the engine's isolation level (on
/// PostgreSQL the losers wait on the row lock and then re-check the WHERE).
pub const MARK_REFRESH_USED: &str = "UPDATE refresh_tokens SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2";
pub const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL";
pub const DELETE_EXPIRED_REFRESH: &str = "DELETE FROM refresh_tokens WHERE expires_at <= $1";

/// Never shortens an existing denial.
pub const DENY_JTI: &str = "INSERT INTO denied_jtis (jti, expires_at) VALUES ($1, $2) \
     ON CONFLICT (jti) DO UPDATE SET expires_at = CASE \
     WHEN excluded.expires_at > denied_jtis.expires_at THEN excluded.expires_at \
     ELSE denied_jtis.expires_at END";
pub const IS_JTI_DENIED: &str = "SELECT COUNT(*) AS n FROM denied_jtis WHERE jti = $1 AND expires_at > $2";
pub const LIST_DENIED_JTIS: &str = "SELECT jti, expires_at FROM denied_jtis WHERE expires_at > $1";
pub const DELETE_EXPIRED_JTIS: &str = "DELETE FROM denied_jtis WHERE expires_at <= $1";

// ---- documents ---------------------------------------------------------------
/// Reserves `$3` seqs for a doc (creating its row) and adds `$4` bytes; answers
/// the last seq reserved, so the batch's entries get `last_seq - $3 + 1 ..= last_seq`.
/// On PostgreSQL the upsert locks the row until commit, so concurrent batches
/// for one doc take their seqs one after the other.
pub const RESERVE_DOC_SEQS: &str = "INSERT INTO documents \
     (app_id, name, snapshot_seq, last_seq, size_bytes, created_at, updated_at) VALUES ($1, $2, 0, $3, $4, $5, $5) \
     ON CONFLICT (app_id, name) DO UPDATE SET last_seq = documents.last_seq + excluded.last_seq, \
     size_bytes = documents.size_bytes + excluded.size_bytes, updated_at = excluded.updated_at \
     RETURNING last_seq";

/// Log entries per multi-row INSERT, largest first. A batch is cut greedily
/// into chunks of these sizes, so a batch of n costs about n / 64 round trips
/// while only this many statement texts are ever prepared (sqlx caches them
/// per connection). 64 rows × 4 parameters stay far below both engines'
/// parameter limits.
pub const DOC_UPDATE_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The next chunk of a multi-row insert of log entries when `remaining` rows
/// are left: its row count (the largest of [`DOC_UPDATE_CHUNKS`] not above
/// `remaining`, at least 1) and `INSERT INTO doc_updates (app_id, name, seq,
/// data) VALUES ($1, $2, $3, $4), …` with that many rows.
pub fn insert_doc_updates(remaining: usize) -> (usize, &'static str) {
    static TEXTS: LazyLock<[String; DOC_UPDATE_CHUNKS.len()]> = LazyLock::new(|| {
        DOC_UPDATE_CHUNKS.map(|rows| {
            let values: Vec<String> = (0..rows)
                .map(|row| {
                    let p = 4 * row;
                    format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4)
                })
                .collect();
            format!("INSERT INTO doc_updates (app_id, name, seq, data) VALUES {}", values.join(", "))
        })
    });
    let i = DOC_UPDATE_CHUNKS.iter().position(|&n| n <= remaining).unwrap_or(DOC_UPDATE_CHUNKS.len() - 1);
    (DOC_UPDATE_CHUNKS[i], TEXTS[i].as_str())
}

/// The whole state in one statement, hence from one snapshot of the data
/// even under PostgreSQL's READ COMMITTED: the doc row (`part` 0: snapshot
/// and `last_seq`), then its log in seq order (`part` 1). The log holds only
/// entries after the snapshot (compaction deletes the rest in the same
/// transaction that stores the snapshot).
pub const LOAD_DOC: &str = "SELECT CAST(0 AS BIGINT) AS part, snapshot AS data, snapshot_seq AS seq, last_seq \
     FROM documents WHERE app_id = $1 AND name = $2 \
     UNION ALL \
     SELECT CAST(1 AS BIGINT), data, seq, CAST(NULL AS BIGINT) FROM doc_updates WHERE app_id = $1 AND name = $2 \
     ORDER BY part, seq";
/// Stores the snapshot if it covers at least what the stored one does and
/// no seq beyond the last assigned. On PostgreSQL this takes the row lock
/// first, so no append for the doc can commit until the compaction has.
pub const SET_DOC_SNAPSHOT: &str = "UPDATE documents SET snapshot = $3, snapshot_seq = $4, compacted_at = $5 \
     WHERE app_id = $1 AND name = $2 AND snapshot_seq <= $4 AND last_seq >= $4";
pub const GET_DOC_SEQS: &str = "SELECT snapshot_seq, last_seq FROM documents WHERE app_id = $1 AND name = $2";
pub const DELETE_DOC_UPDATES_UPTO: &str = "DELETE FROM doc_updates WHERE app_id = $1 AND name = $2 AND seq <= $3";
pub const RECOUNT_DOC_SIZE: &str = "UPDATE documents SET size_bytes = COALESCE(LENGTH(snapshot), 0) + \
     COALESCE((SELECT SUM(LENGTH(u.data)) FROM doc_updates u WHERE u.app_id = $1 AND u.name = $2), 0) \
     WHERE app_id = $1 AND name = $2";
pub const GET_DOC: &str = concat!("SELECT ", doc_cols!(), " FROM documents WHERE app_id = $1 AND name = $2");
/// `$2` is the exclusive lower bound (`''` for the first page; names are never empty).
pub const LIST_DOCS: &str =
    concat!("SELECT ", doc_cols!(), " FROM documents WHERE app_id = $1 AND name > $2 ORDER BY name LIMIT $3");
/// The log goes by ON DELETE CASCADE.
pub const DELETE_DOC: &str = "DELETE FROM documents WHERE app_id = $1 AND name = $2";
pub const COUNT_DOCS: &str = "SELECT COUNT(*) AS n FROM documents WHERE app_id = $1";
/// From the doc row alone, by the invariants in the migration: the log is
/// seqs `snapshot_seq + 1 ..= last_seq`, and `size_bytes` is the snapshot
/// plus the log. (Neither engine reads a large value to answer `LENGTH`.)
pub const DOC_LOG_STATS: &str = "SELECT last_seq - snapshot_seq AS n, \
     size_bytes - COALESCE(LENGTH(snapshot), 0) AS bytes FROM documents WHERE app_id = $1 AND name = $2";

// ---- audit -----------------------------------------------------------------
pub const INSERT_AUDIT: &str = "INSERT INTO audit_events \
     (tenant_id, at, actor_type, actor_id, action, target_type, target_id, ip, details) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
// Two texts rather than `IS NOT DISTINCT FROM`, which PostgreSQL cannot
// answer from the (tenant_id, seq) index.
pub const LIST_TENANT_AUDIT: &str =
    concat!("SELECT ", audit_cols!(), " FROM audit_events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2");
pub const LIST_PLATFORM_AUDIT: &str =
    concat!("SELECT ", audit_cols!(), " FROM audit_events WHERE tenant_id IS NULL ORDER BY seq DESC LIMIT $1");
