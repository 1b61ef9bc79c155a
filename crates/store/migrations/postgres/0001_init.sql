-- WireSocket schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql:
-- the two files differ only in column types (BOOLEAN vs INTEGER, BYTEA vs BLOB,
-- BIGSERIAL vs AUTOINCREMENT) so that one set of queries serves both engines.
-- Ids are hyphenated UUIDv7 text, times are Unix seconds, JSON is text.
-- Ids use the "C" collation so that text order is byte order (= creation
-- order for UUIDv7) whatever the database's default collation is.

-- One row once setup has run; the CHECK makes it a singleton, so concurrent
-- setups race on this primary key and exactly one wins.
CREATE TABLE setup_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    completed_at BIGINT  NOT NULL
);

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_operator   BOOLEAN NOT NULL,
    created_at    BIGINT  NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE sessions (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE tenants (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id, tenant_id);

-- `seq` records insertion order, so "newest first" is stable even for keys
-- created within the same second.
CREATE TABLE signing_keys (
    seq                BIGSERIAL PRIMARY KEY,
    kid                TEXT COLLATE "C" NOT NULL,
    tenant_id          TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    state              TEXT   NOT NULL,
    public_n           TEXT   NOT NULL,
    public_e           TEXT   NOT NULL,
    private_key_enc    BYTEA  NOT NULL,
    master_key_version BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    retires_at         BIGINT,
    revoked_at         BIGINT,
    CONSTRAINT signing_keys_kid_key UNIQUE (kid)
);
CREATE INDEX signing_keys_tenant ON signing_keys (tenant_id, state);

CREATE TABLE apps (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    tenant_id          TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               TEXT   NOT NULL,
    client_id          TEXT   NOT NULL,
    client_secret_hash TEXT   NOT NULL,
    region             TEXT   NOT NULL,
    plan               TEXT   NOT NULL,
    allowed_domains    TEXT   NOT NULL,
    environment        TEXT   NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    secret_rotated_at  BIGINT,
    CONSTRAINT apps_client_id_key UNIQUE (client_id)
);
CREATE INDEX apps_tenant_id ON apps (tenant_id, id);
-- The one-free-app-per-tenant rule, held by the database under concurrency.
CREATE UNIQUE INDEX apps_one_free_per_tenant ON apps (tenant_id) WHERE plan = 'free';

CREATE TABLE invoices (
    id          TEXT COLLATE "C" PRIMARY KEY,
    app_id      TEXT COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lines       TEXT   NOT NULL,
    total_cents BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX invoices_app_id ON invoices (app_id, id);

-- `app_id` repeats `subject` for app tokens so that deleting an app deletes
-- its tokens by cascade; it is NULL for user tokens.
CREATE TABLE refresh_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    family_id  TEXT COLLATE "C" NOT NULL,
    kind       TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    app_id     TEXT COLLATE "C" REFERENCES apps (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_app_id ON refresh_tokens (app_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE denied_jtis (
    jti        TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX denied_jtis_expires_at ON denied_jtis (expires_at);

-- Append-only. No foreign key on tenant_id: the trail outlives what it talks about.
CREATE TABLE audit_events (
    seq         BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT COLLATE "C",
    at          BIGINT NOT NULL,
    actor_type  TEXT   NOT NULL,
    actor_id    TEXT,
    action      TEXT   NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    ip          TEXT,
    details     TEXT   NOT NULL
);
CREATE INDEX audit_events_tenant_id ON audit_events (tenant_id, seq);
