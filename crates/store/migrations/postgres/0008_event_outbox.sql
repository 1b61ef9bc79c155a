-- The transactional outbox of events (webhooks). A change that some
-- webhook may report writes its event here in the SAME transaction as the
-- change itself, so a crash right after the commit loses neither: the
-- dispatcher turns each row into one job per subscribed webhook and deletes
-- the row, both in one transaction (and again after a restart, for rows a
-- crash left behind; jobs are unique per (event, webhook), so a repeat adds
-- nothing). `id` is the event id (a UUIDv7, so ordered by creation).
CREATE TABLE event_outbox (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL,
    app_id     TEXT COLLATE "C",
    event_type TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
