-- Snapshots move out of the `documents` row, PostgreSQL flavour. Keep in step
-- with ../sqlite/0005_doc_snapshots.sql, which says why (on SQLite every append
-- read the whole snapshot). PostgreSQL keeps a large value out of line and an
-- update copies only its pointer, so here the move only keeps one schema and
-- one set of queries for both engines.
CREATE TABLE doc_snapshots (
    app_id TEXT COLLATE "C" NOT NULL,
    name   TEXT COLLATE "C" NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (app_id, name),
    FOREIGN KEY (app_id, name) REFERENCES documents (app_id, name) ON DELETE CASCADE
);
INSERT INTO doc_snapshots (app_id, name, data)
    SELECT app_id, name, snapshot FROM documents WHERE snapshot IS NOT NULL;
ALTER TABLE documents ADD COLUMN snapshot_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE documents SET snapshot_bytes = COALESCE(LENGTH(snapshot), 0);
ALTER TABLE documents DROP COLUMN snapshot;
