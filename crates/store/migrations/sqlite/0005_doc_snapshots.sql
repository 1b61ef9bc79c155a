-- Snapshots move out of the `documents` row, SQLite flavour. Keep in step with
-- ../postgres/0005_doc_snapshots.sql.
--
-- Every append rewrites its document's row (`last_seq`, `size_bytes`,
-- `updated_at`), and SQLite rebuilds a whole row to update any column of it:
-- with the snapshot inline, each append to a compacted document read its
-- entire snapshot (13 ms per append for a 10 MiB one, on the one writer every
-- document shares). The row now holds only counters; the snapshot is written
-- by compaction alone and read by loads alone.
--
-- Invariants (0002's, restated): the log holds exactly the seqs
-- `snapshot_seq + 1 ..= last_seq`; `snapshot_bytes` = length of the
-- `doc_snapshots` row's data (0 without one); `size_bytes` = `snapshot_bytes`
-- + the lengths of the log entries.
CREATE TABLE doc_snapshots (
    app_id TEXT NOT NULL,
    name   TEXT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (app_id, name),
    FOREIGN KEY (app_id, name) REFERENCES documents (app_id, name) ON DELETE CASCADE
);
INSERT INTO doc_snapshots (app_id, name, data)
    SELECT app_id, name, snapshot FROM documents WHERE snapshot IS NOT NULL;
ALTER TABLE documents ADD COLUMN snapshot_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE documents SET snapshot_bytes = COALESCE(LENGTH(snapshot), 0);
ALTER TABLE documents DROP COLUMN snapshot;
