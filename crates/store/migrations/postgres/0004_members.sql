-- Members, roles, invites, password resets, MFA, webhooks and the audit hash
-- chain, PostgreSQL flavour. Keep in step with ../sqlite/0004_members.sql (the
-- files differ in column types, collations and constraint names). Ids use
-- the "C" collation, as in 0001.

-- The audit hash chain (see `domain::audit`). Each tenant's entries form a
-- chain, the platform's (tenant_id NULL) one more; `audit_heads` holds each
-- chain's last position and hash, keyed by the tenant id or '' for the
-- platform. Appends lock the head, so a chain cannot fork; the unique index
-- makes a fork unstorable anyway. Rows from before this migration have NULL
-- chain columns until the store chains them at startup (in `seq` order).
ALTER TABLE audit_events ADD COLUMN chain_seq BIGINT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_chain ON audit_events ((COALESCE(tenant_id, '')), chain_seq);
-- Filtered listing pages by `seq` within a chain, with one query text for
-- tenant and platform chains.
CREATE INDEX audit_events_chain_order ON audit_events ((COALESCE(tenant_id, '')), seq);
CREATE TABLE audit_heads (
    chain     TEXT COLLATE "C" PRIMARY KEY,
    last_seq  BIGINT NOT NULL,
    last_hash TEXT   NOT NULL
);

-- Counting a tenant's super_admins, finding the members holding a role.
CREATE INDEX memberships_role ON memberships (tenant_id, role);
-- A password reset revokes the user's refresh tokens.
CREATE INDEX refresh_tokens_user_subject ON refresh_tokens (subject) WHERE kind = 'user';

-- `permissions` is a JSON array of {"resource": …, "action": …}.
CREATE TABLE custom_roles (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
    permissions TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Tokens are stored as hashes only. `invited_by` has no foreign key: the
-- invite's history outlives the inviter's account.
CREATE TABLE invites (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email       TEXT   NOT NULL,
    role        TEXT   NOT NULL,
    token_hash  TEXT COLLATE "C" NOT NULL,
    invited_by  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT COLLATE "C",
    CONSTRAINT invites_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX invites_tenant ON invites (tenant_id, id);

CREATE TABLE password_resets (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX password_resets_user_id ON password_resets (user_id);

-- A TOTP secret is pending until `enabled_at`. Recovery codes hang off the
-- secret, so disabling MFA (deleting the secret) deletes them too.
CREATE TABLE user_mfa (
    user_id            TEXT COLLATE "C" PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_enc         BYTEA   NOT NULL,
    master_key_version BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    enabled_at         BIGINT,
    last_step          BIGINT
);
CREATE TABLE mfa_recovery_codes (
    user_id   TEXT COLLATE "C" NOT NULL REFERENCES user_mfa (user_id) ON DELETE CASCADE,
    code_hash TEXT   NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- `events` is a JSON array of event types.
CREATE TABLE webhooks (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    tenant_id          TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    app_id             TEXT COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    url                TEXT   NOT NULL,
    events             TEXT   NOT NULL,
    secret_enc         BYTEA   NOT NULL,
    master_key_version BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX webhooks_app_id ON webhooks (app_id, id);
CREATE INDEX webhooks_tenant_id ON webhooks (tenant_id, id);

-- The durable outbox: one job per (event, webhook), written before any
-- attempt, so a restart loses nothing; a dispatcher leases jobs with
-- `locked_until`, and a crashed dispatcher's lease simply runs out.
CREATE TABLE webhook_jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    event_id        TEXT COLLATE "C" NOT NULL,
    webhook_id      TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id       TEXT COLLATE "C" NOT NULL,
    event_type      TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    attempt         BIGINT NOT NULL DEFAULT 0,
    status          TEXT   NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT webhook_jobs_event_webhook_key UNIQUE (event_id, webhook_id)
);
CREATE INDEX webhook_jobs_due ON webhook_jobs (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_jobs_webhook_id ON webhook_jobs (webhook_id);

CREATE TABLE webhook_deliveries (
    seq         BIGSERIAL PRIMARY KEY,
    webhook_id  TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    job_id      TEXT COLLATE "C" NOT NULL,
    event_id    TEXT COLLATE "C" NOT NULL,
    event_type  TEXT    NOT NULL,
    attempt     BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,
    status_code BIGINT,
    latency_ms  BIGINT  NOT NULL,
    error       TEXT
);
CREATE INDEX webhook_deliveries_webhook_id ON webhook_deliveries (webhook_id, seq);
