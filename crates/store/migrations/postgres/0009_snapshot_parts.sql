-- A snapshot is stored in parts, PostgreSQL flavour. Keep in step with
-- ../sqlite/0009_snapshot_parts.sql, which says why (SQLite's one write lock
-- was held for a whole large snapshot). Here rows lock on their own, but the
-- document's row was locked for the whole write, holding that document's
-- appends; and one schema keeps one set of queries for both engines.
CREATE TABLE doc_snapshot_parts (
    app_id TEXT COLLATE "C" NOT NULL,
    name   TEXT COLLATE "C" NOT NULL,
    gen    BIGINT NOT NULL,
    part   BIGINT NOT NULL,
    data   BYTEA  NOT NULL,
    PRIMARY KEY (app_id, name, gen, part),
    FOREIGN KEY (app_id, name) REFERENCES documents (app_id, name) ON DELETE CASCADE
);
INSERT INTO doc_snapshot_parts (app_id, name, gen, part, data)
    SELECT app_id, name, 0, 0, data FROM doc_snapshots;
DROP TABLE doc_snapshots;
ALTER TABLE documents ADD COLUMN snapshot_gen BIGINT NOT NULL DEFAULT 0;
