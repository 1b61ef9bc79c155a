//! Every statement the SQL stores run, written once for both engines.
//!
//! The dialect is the intersection of SQLite and PostgreSQL: `$N`
//! placeholders (SQLite takes `$1` as a named parameter and sqlx's SQLite
//! driver binds it by the number in its name, so a placeholder may repeat,
//! as in PostgreSQL), `ON CONFLICT … DO UPDATE`, `CASE`, partial unique
//! indexes. Values are text, integers and bytes, so no casts are needed.

// The column lists are shared by every SELECT of a table, so the decoders in
// `super::decode` can rely on the names.
macro_rules! user_cols {
    () => {
        "id, email, password_hash, is_operator, created_at"
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

pub const INSERT_SESSION: &str =
    "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub const GET_SESSION: &str = "SELECT token_hash, user_id, created_at, expires_at FROM sessions WHERE token_hash = $1";
pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_hash = $1";
pub const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
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
pub const RETIRE_ACTIVE_KEYS: &str = "UPDATE signing_keys SET state = 'retiring', retires_at = $2 \
     WHERE tenant_id = $1 AND state = 'active'";
pub const REVOKE_KEY: &str = "UPDATE signing_keys SET state = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND kid = $2 AND state <> 'revoked'";
pub const KEY_EXISTS: &str = "SELECT COUNT(*) AS n FROM signing_keys WHERE tenant_id = $1 AND kid = $2";
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
pub const SET_APP_PLAN: &str = "UPDATE apps SET plan = $2, updated_at = $3 WHERE id = $1";
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
pub const DELETE_EXPIRED_JTIS: &str = "DELETE FROM denied_jtis WHERE expires_at <= $1";

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
