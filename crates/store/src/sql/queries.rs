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
        "id, email, password_hash, is_operator, created_at, name"
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
macro_rules! node_cols {
    () => {
        "id, region, url, draining, instance, started_at, last_heartbeat_at, connections, documents"
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
        concat!(
            "seq, tenant_id, at, actor_type, actor_id, action, target_type, target_id, ip, details, ",
            "chain_seq, prev_hash, hash"
        )
    };
}
macro_rules! invite_cols {
    () => {
        "id, tenant_id, email, role, token_hash, invited_by, created_at, expires_at, accepted_at, accepted_by"
    };
}
macro_rules! mfa_cols {
    () => {
        "user_id, secret_enc, master_key_version, created_at, enabled_at, last_step"
    };
}
macro_rules! webhook_cols {
    () => {
        "id, tenant_id, app_id, url, events, secret_enc, master_key_version, created_at, updated_at"
    };
}
macro_rules! job_cols {
    () => {
        concat!(
            "id, event_id, webhook_id, tenant_id, event_type, payload, attempt, status, next_attempt_at, ",
            "locked_until, created_at, updated_at"
        )
    };
}
macro_rules! delivery_cols {
    () => {
        "seq, webhook_id, job_id, event_id, event_type, attempt, at, status_code, latency_ms, error"
    };
}

macro_rules! key_state {
    () => {
        "SELECT state FROM signing_keys WHERE tenant_id = $1 AND kid = $2"
    };
}
macro_rules! lock_tenant {
    () => {
        "SELECT id FROM tenants WHERE id = $1"
    };
}
macro_rules! lock_user {
    () => {
        "SELECT id FROM users WHERE id = $1"
    };
}
macro_rules! unchained_audit {
    () => {
        concat!("SELECT ", audit_cols!(), " FROM audit_events WHERE chain_seq IS NULL ORDER BY seq")
    };
}
macro_rules! claim_jobs {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_jobs SET locked_until = $2 WHERE id IN (SELECT id FROM webhook_jobs ",
            "WHERE status = 'pending' AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) ",
            "ORDER BY next_attempt_at, id LIMIT $3",
            $lock,
            ") RETURNING ",
            job_cols!()
        )
    };
}

/// The statements that read rows a write transaction then decides on, for
/// PostgreSQL: the row locks make a concurrent writer of those rows wait for
/// this transaction (or this one wait for it, then read what it committed).
pub mod locking {
    /// The state a key revocation decides on.
    pub const KEY_STATE: &str = concat!(key_state!(), " FOR UPDATE");
    /// Serialises a tenant's membership, role and invite changes, so rules
    /// spanning several rows (the last `super_admin`, a role in use) hold.
    pub const LOCK_TENANT: &str = concat!(lock_tenant!(), " FOR UPDATE");
    /// Serialises a user's password resets: taken before any reset token
    /// is touched, so two resets of one user cannot deadlock.
    pub const LOCK_USER: &str = concat!(lock_user!(), " FOR UPDATE");
    /// Audit rows from before the hash chain; two stores starting together
    /// chain each row once (the second finds them chained after the wait).
    pub const UNCHAINED_AUDIT: &str = concat!(unchained_audit!(), " FOR UPDATE");
    /// Due jobs, skipping those another dispatcher is claiming right now.
    pub const CLAIM_JOBS: &str = claim_jobs!(" FOR UPDATE SKIP LOCKED");
}

/// The same statements for SQLite, whose write transaction (`BEGIN
/// IMMEDIATE`) already excludes every other writer, and which has no
/// `FOR UPDATE`.
pub mod plain {
    pub const KEY_STATE: &str = key_state!();
    pub const LOCK_TENANT: &str = lock_tenant!();
    pub const LOCK_USER: &str = lock_user!();
    pub const UNCHAINED_AUDIT: &str = unchained_audit!();
    pub const CLAIM_JOBS: &str = claim_jobs!("");
}

pub const PING: &str = "SELECT 1";

// ---- setup, users, sessions ----------------------------------------------
pub const INSERT_SETUP_STATE: &str = "INSERT INTO setup_state (id, completed_at) VALUES (1, $1)";
pub const COUNT_USERS: &str = "SELECT COUNT(*) AS n FROM users";
pub const INSERT_USER: &str = concat!("INSERT INTO users (", user_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6)");
/// Names an existing account that has no name yet (`$1` id, `$2` name).
pub const NAME_USER_IF_UNNAMED: &str = "UPDATE users SET name = $2 WHERE id = $1 AND name IS NULL";
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
/// `$1` now: a reset is useless once expired or used.
pub const DELETE_DEAD_RESETS: &str = "DELETE FROM password_resets WHERE expires_at <= $1 OR used_at IS NOT NULL";
/// `$1` = now - retention: invites accepted, or expired, before then.
pub const DELETE_OLD_INVITES: &str =
    "DELETE FROM invites WHERE accepted_at <= $1 OR (accepted_at IS NULL AND expires_at <= $1)";
/// `$1` = now - retention: finished jobs last touched before then.
pub const DELETE_OLD_JOBS: &str =
    "DELETE FROM webhook_jobs WHERE status IN ('delivered', 'failed') AND updated_at <= $1";
/// `$1` = now - retention.
pub const DELETE_OLD_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE at <= $1";

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
/// even under PostgreSQL's READ COMMITTED: the doc row (`part` 0: its
/// `last_seq`), the parts of its current snapshot generation in order
/// (`part` 1; none before the first compaction), then its log in seq order
/// (`part` 2). The log holds only entries after the snapshot (the switch to
/// a new generation deletes the rest in the same transaction).
pub const LOAD_DOC: &str = "SELECT CAST(0 AS BIGINT) AS part, NULL AS data, d.snapshot_seq AS seq, d.last_seq \
     FROM documents d WHERE d.app_id = $1 AND d.name = $2 \
     UNION ALL \
     SELECT CAST(1 AS BIGINT), p.data, p.part, CAST(NULL AS BIGINT) FROM doc_snapshot_parts p \
     JOIN documents d ON d.app_id = p.app_id AND d.name = p.name AND d.snapshot_gen = p.gen \
     WHERE p.app_id = $1 AND p.name = $2 \
     UNION ALL \
     SELECT CAST(2 AS BIGINT), data, seq, CAST(NULL AS BIGINT) FROM doc_updates WHERE app_id = $1 AND name = $2 \
     ORDER BY part, seq";
/// Switches the doc to snapshot generation `$6` (written beforehand by
/// [`PUT_SNAPSHOT_PART`]), covering the log up to `$4` (`$3` is the new
/// snapshot's length), if that covers at least what the stored snapshot
/// does, no seq beyond the last assigned, and the generation is still the
/// `$7` the compaction started from. On PostgreSQL this takes the row lock
/// first, so no append for the doc can commit until the switch has.
pub const SET_DOC_SNAPSHOT: &str = "UPDATE documents SET snapshot_seq = $4, snapshot_bytes = $3, compacted_at = $5, \
     snapshot_gen = $6 \
     WHERE app_id = $1 AND name = $2 AND snapshot_seq <= $4 AND last_seq >= $4 AND snapshot_gen = $7";
/// One part of a snapshot being written (see migration 0009).
pub const PUT_SNAPSHOT_PART: &str =
    "INSERT INTO doc_snapshot_parts (app_id, name, gen, part, data) VALUES ($1, $2, $3, $4, $5)";
/// How many parts generation `$3` has and their total length: checked
/// before switching to it, so a snapshot is never switched to half-written.
pub const SNAPSHOT_PART_TOTALS: &str = "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(data)), 0) AS bytes \
     FROM doc_snapshot_parts WHERE app_id = $1 AND name = $2 AND gen = $3";
/// The generations of the doc's parts other than `$3` (the current one):
/// what a crash left behind, or what the last switch replaced.
pub const STALE_SNAPSHOT_GENS: &str =
    "SELECT DISTINCT gen FROM doc_snapshot_parts WHERE app_id = $1 AND name = $2 AND gen <> $3";
/// Deletes up to `$4` parts of generation `$3` (a short transaction each).
pub const DELETE_SNAPSHOT_PARTS: &str = "DELETE FROM doc_snapshot_parts \
     WHERE app_id = $1 AND name = $2 AND gen = $3 AND part IN (SELECT part FROM doc_snapshot_parts \
     WHERE app_id = $1 AND name = $2 AND gen = $3 ORDER BY part LIMIT $4)";
pub const GET_DOC_SEQS: &str =
    "SELECT snapshot_seq, last_seq, snapshot_gen FROM documents WHERE app_id = $1 AND name = $2";
pub const DELETE_DOC_UPDATES_UPTO: &str = "DELETE FROM doc_updates WHERE app_id = $1 AND name = $2 AND seq <= $3";
pub const RECOUNT_DOC_SIZE: &str = "UPDATE documents SET size_bytes = snapshot_bytes + \
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
/// plus the log.
pub const DOC_LOG_STATS: &str = "SELECT last_seq - snapshot_seq AS n, \
     size_bytes - snapshot_bytes AS bytes FROM documents WHERE app_id = $1 AND name = $2";

// ---- audit -----------------------------------------------------------------
pub const INSERT_AUDIT: &str = "INSERT INTO audit_events \
     (tenant_id, at, actor_type, actor_id, action, target_type, target_id, ip, details, chain_seq, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/// Reserves `$2` positions at the end of chain `$1` (creating its head with
/// `$3`, the genesis hash): answers the chain's new `last_seq` and the hash
/// of the entry before the reserved ones (`last_hash` is left as it was; the
/// caller stores the new one with `SET_AUDIT_HEAD_HASH`). On PostgreSQL the
/// upsert locks the head row until commit, so appends to one chain take
/// their positions one after the other; on SQLite it is the transaction's
/// first write, and `BEGIN IMMEDIATE` already made it the only writer.
pub const RESERVE_AUDIT_SEQS: &str = "INSERT INTO audit_heads (chain, last_seq, last_hash) VALUES ($1, $2, $3) \
     ON CONFLICT (chain) DO UPDATE SET last_seq = audit_heads.last_seq + excluded.last_seq \
     RETURNING last_seq, last_hash";
pub const SET_AUDIT_HEAD_HASH: &str = "UPDATE audit_heads SET last_hash = $2 WHERE chain = $1";
pub const SET_AUDIT_CHAIN: &str = "UPDATE audit_events SET chain_seq = $2, prev_hash = $3, hash = $4 WHERE seq = $1";
// Two texts rather than `IS NOT DISTINCT FROM`, which PostgreSQL cannot
// answer from the (tenant_id, seq) index.
pub const LIST_TENANT_AUDIT: &str =
    concat!("SELECT ", audit_cols!(), " FROM audit_events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2");
pub const LIST_PLATFORM_AUDIT: &str =
    concat!("SELECT ", audit_cols!(), " FROM audit_events WHERE tenant_id IS NULL ORDER BY seq DESC LIMIT $1");
/// Chains are named by `COALESCE(tenant_id, '')`, which the migration
/// indexes, so one text serves tenant and platform chains. `$2` is the
/// exclusive upper bound on `seq`; a NULL filter matches everything.
pub const LIST_AUDIT_PAGE: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_events WHERE COALESCE(tenant_id, '') = $1 AND seq < $2 ",
    "AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR actor_id = $4) ",
    "AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at <= $6) ORDER BY seq DESC LIMIT $7"
);
pub const AUDIT_CHAIN_ROWS: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_events WHERE COALESCE(tenant_id, '') = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3"
);
pub const AUDIT_HEAD: &str = "SELECT last_seq, last_hash FROM audit_heads WHERE chain = $1";
pub const AUDIT_CHAINS: &str = "SELECT chain FROM audit_heads ORDER BY chain";

// ---- members and custom roles ----------------------------------------------
pub const LIST_MEMBERS: &str = "SELECT m.user_id, u.email, u.name, m.role, m.created_at, f.enabled_at AS mfa_enabled_at \
     FROM memberships m JOIN users u ON u.id = m.user_id LEFT JOIN user_mfa f ON f.user_id = m.user_id \
     WHERE m.tenant_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3";
pub const GET_MEMBER: &str = "SELECT m.user_id, u.email, u.name, m.role, m.created_at, f.enabled_at AS mfa_enabled_at \
     FROM memberships m JOIN users u ON u.id = m.user_id LEFT JOIN user_mfa f ON f.user_id = m.user_id \
     WHERE m.tenant_id = $1 AND m.user_id = $2";
pub const SET_MEMBER_ROLE: &str = "UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2";
pub const DELETE_MEMBERSHIP: &str = "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2";
pub const COUNT_SUPER_ADMINS: &str =
    "SELECT COUNT(*) AS n FROM memberships WHERE tenant_id = $1 AND role = 'super_admin'";
pub const COUNT_CUSTOM_ROLE: &str = "SELECT COUNT(*) AS n FROM custom_roles WHERE tenant_id = $1 AND name = $2";
pub const INSERT_ROLE: &str =
    "INSERT INTO custom_roles (tenant_id, name, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)";
pub const GET_ROLE: &str = "SELECT tenant_id, name, permissions, created_at, updated_at FROM custom_roles \
     WHERE tenant_id = $1 AND name = $2";
pub const LIST_ROLES: &str = "SELECT tenant_id, name, permissions, created_at, updated_at FROM custom_roles \
     WHERE tenant_id = $1 ORDER BY name";
pub const UPDATE_ROLE: &str =
    "UPDATE custom_roles SET permissions = $3, updated_at = $4 WHERE tenant_id = $1 AND name = $2";
/// Members holding role `$2`, plus invites that could still grant it.
pub const COUNT_ROLE_USES: &str = "SELECT \
     (SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = $2) + \
     (SELECT COUNT(*) FROM invites WHERE tenant_id = $1 AND role = $2 AND accepted_at IS NULL AND expires_at > $3) \
     AS n";
pub const DELETE_ROLE: &str = "DELETE FROM custom_roles WHERE tenant_id = $1 AND name = $2";

// ---- invites and password resets ---------------------------------------------
pub const INSERT_INVITE: &str =
    concat!("INSERT INTO invites (", invite_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
/// `$2` is the exclusive lower bound (`''` for the first page).
pub const LIST_PENDING_INVITES: &str = concat!(
    "SELECT ",
    invite_cols!(),
    " FROM invites WHERE tenant_id = $1 AND accepted_at IS NULL AND id > $2 ORDER BY id LIMIT $3"
);
pub const DELETE_INVITE: &str = "DELETE FROM invites WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL";
pub const GET_INVITE_BY_TOKEN: &str = concat!("SELECT ", invite_cols!(), " FROM invites WHERE token_hash = $1");
/// The compare-and-set that makes an invite single-use (on PostgreSQL the
/// losers wait on the row lock, then re-check the WHERE and match nothing).
pub const ACCEPT_INVITE: &str = concat!(
    "UPDATE invites SET accepted_at = $2, accepted_by = $3 ",
    "WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2 RETURNING ",
    invite_cols!()
);
pub const INSERT_RESET: &str =
    "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5)";
pub const RESET_USER: &str = "SELECT user_id FROM password_resets WHERE token_hash = $1";
/// Single use, as `ACCEPT_INVITE`.
pub const CONSUME_RESET: &str = "UPDATE password_resets SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id";
pub const USE_USER_RESETS: &str = "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL";
pub const SET_USER_PASSWORD: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";
pub const REVOKE_USER_REFRESH: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE kind = 'user' AND subject = $1 AND revoked_at IS NULL";

// ---- MFA ---------------------------------------------------------------------
/// Replaces a pending secret, never an enabled one (no row changes then).
pub const PUT_PENDING_MFA: &str = "INSERT INTO user_mfa (user_id, secret_enc, master_key_version, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET secret_enc = excluded.secret_enc, \
     master_key_version = excluded.master_key_version, created_at = excluded.created_at \
     WHERE user_mfa.enabled_at IS NULL";
pub const GET_MFA: &str = concat!("SELECT ", mfa_cols!(), " FROM user_mfa WHERE user_id = $1");
pub const LIST_ALL_MFA: &str = concat!("SELECT ", mfa_cols!(), " FROM user_mfa ORDER BY user_id");
pub const ENABLE_MFA: &str =
    "UPDATE user_mfa SET enabled_at = $2, last_step = $3 WHERE user_id = $1 AND enabled_at IS NULL";
pub const DELETE_RECOVERY_CODES: &str = "DELETE FROM mfa_recovery_codes WHERE user_id = $1";
pub const INSERT_RECOVERY_CODE: &str =
    "INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2) ON CONFLICT (user_id, code_hash) DO NOTHING";
/// Compare-and-set on the time step: a code is accepted at most once, and
/// never one older than the last accepted.
pub const CONSUME_TOTP_STEP: &str = "UPDATE user_mfa SET last_step = $2 \
     WHERE user_id = $1 AND enabled_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)";
pub const CONSUME_RECOVERY_CODE: &str = "UPDATE mfa_recovery_codes SET used_at = $3 \
     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL";
pub const COUNT_UNUSED_CODES: &str =
    "SELECT COUNT(*) AS n FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL";
/// The recovery codes go by ON DELETE CASCADE.
pub const DELETE_MFA: &str = "DELETE FROM user_mfa WHERE user_id = $1";
pub const REWRAP_MFA: &str = "UPDATE user_mfa SET secret_enc = $2, master_key_version = $3 WHERE user_id = $1";

// ---- webhooks and their outbox -------------------------------------------------
/// Stored for the app, under the app's tenant, only if the app belongs to `$2`.
pub const INSERT_WEBHOOK: &str = concat!(
    "INSERT INTO webhooks (",
    webhook_cols!(),
    ") SELECT $1, tenant_id, id, $4, $5, $6, $7, $8, $9 FROM apps WHERE id = $3 AND tenant_id = $2"
);
pub const GET_WEBHOOK: &str =
    concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE tenant_id = $1 AND app_id = $2 AND id = $3");
/// `$2` is the exclusive lower bound (`''` for the first page).
pub const LIST_WEBHOOKS: &str =
    concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3");
pub const TENANT_WEBHOOKS: &str =
    concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE tenant_id = $1 ORDER BY id");
pub const LIST_ALL_WEBHOOKS: &str = concat!("SELECT ", webhook_cols!(), " FROM webhooks ORDER BY id");
pub const UPDATE_WEBHOOK: &str = "UPDATE webhooks SET url = $4, events = $5, updated_at = $6 \
     WHERE tenant_id = $1 AND app_id = $2 AND id = $3";
pub const SET_WEBHOOK_SECRET: &str =
    "UPDATE webhooks SET secret_enc = $2, master_key_version = $3, updated_at = $4 WHERE id = $1";
pub const REWRAP_WEBHOOK: &str = "UPDATE webhooks SET secret_enc = $2, master_key_version = $3 WHERE id = $1";
/// Jobs, deliveries go by ON DELETE CASCADE.
pub const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE tenant_id = $1 AND app_id = $2 AND id = $3";
/// A job for webhook `$3` under its tenant; nothing for a webhook deleted
/// meanwhile, or for an (event, webhook) already enqueued.
pub const INSERT_OUTBOX_EVENT: &str = "INSERT INTO event_outbox \
     (id, tenant_id, app_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub const PENDING_OUTBOX_EVENTS: &str =
    "SELECT id, tenant_id, app_id, event_type, payload, created_at FROM event_outbox ORDER BY id LIMIT $1";
pub const DELETE_OUTBOX_EVENT: &str = "DELETE FROM event_outbox WHERE id = $1";
pub const ENQUEUE_JOB: &str = "INSERT INTO webhook_jobs \
     (id, event_id, webhook_id, tenant_id, event_type, payload, status, next_attempt_at, created_at, updated_at) \
     SELECT $1, $2, id, tenant_id, $4, $5, 'pending', $6, $7, $7 FROM webhooks WHERE id = $3 \
     ON CONFLICT (event_id, webhook_id) DO NOTHING";
pub const GET_JOB: &str = concat!("SELECT ", job_cols!(), " FROM webhook_jobs WHERE id = $1");
/// Only a pending job takes an outcome; the lease ends with it. `$3` NULL
/// keeps `next_attempt_at`.
pub const FINISH_JOB: &str = "UPDATE webhook_jobs SET attempt = attempt + 1, status = $2, \
     next_attempt_at = COALESCE($3, next_attempt_at), locked_until = NULL, updated_at = $4 \
     WHERE id = $1 AND status = 'pending' RETURNING webhook_id, event_id, event_type, attempt";
pub const COUNT_JOB: &str = "SELECT COUNT(*) AS n FROM webhook_jobs WHERE id = $1";
pub const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries \
     (webhook_id, job_id, event_id, event_type, attempt, at, status_code, latency_ms, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// `$2` is the exclusive upper bound on `seq`.
pub const LIST_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_cols!(),
    " FROM webhook_deliveries WHERE webhook_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

// ---- node registry --------------------------------------------------------
/// `$1` id, `$2` region, `$3` url, `$4` instance, `$5` started_at, `$6` now,
/// `$7` connections, `$8` documents. A new instance starts undrained.
pub const NODE_HEARTBEAT: &str = concat!(
    "INSERT INTO nodes (",
    node_cols!(),
    ") VALUES ($1, $2, $3, FALSE, $4, $5, $6, $7, $8) ",
    "ON CONFLICT (id) DO UPDATE SET region = excluded.region, url = excluded.url, ",
    "draining = CASE WHEN nodes.instance = excluded.instance THEN nodes.draining ELSE FALSE END, ",
    "instance = excluded.instance, started_at = excluded.started_at, ",
    "last_heartbeat_at = excluded.last_heartbeat_at, connections = excluded.connections, ",
    "documents = excluded.documents RETURNING ",
    node_cols!()
);
pub const GET_NODE: &str = concat!("SELECT ", node_cols!(), " FROM nodes WHERE id = $1");
pub const LIST_NODES: &str = concat!("SELECT ", node_cols!(), " FROM nodes WHERE id > $1 ORDER BY id LIMIT $2");
pub const SET_NODE_DRAINING: &str = concat!("UPDATE nodes SET draining = $2 WHERE id = $1 RETURNING ", node_cols!());
