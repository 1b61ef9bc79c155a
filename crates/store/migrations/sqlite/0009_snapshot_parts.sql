-- A snapshot is stored in parts, SQLite flavour. Keep in step with
-- ../postgres/0009_snapshot_parts.sql.
--
-- SQLite has one write lock for the whole file: a compaction that wrote a
-- 10 MiB snapshot in one transaction held every other document's appends
-- for as long as that took. Compaction now writes the new snapshot as a new
-- generation of parts (a few hundred KiB each, one short transaction per
-- part, appends of every document interleaving between them), then switches
-- `documents.snapshot_gen` to it and drops the log it covers in one short
-- transaction. Loads read only the parts of the current generation, so a
-- crash mid-way leaves the old snapshot whole; the parts of other
-- generations it leaves behind are deleted by the document's next
-- compaction.
--
-- Invariants: the snapshot is the concatenation, in `part` order, of the
-- parts whose `gen` = `documents.snapshot_gen` (none: no snapshot);
-- `snapshot_bytes` is their total length.
CREATE TABLE doc_snapshot_parts (
    app_id TEXT   NOT NULL,
    name   TEXT   NOT NULL,
    gen    BIGINT NOT NULL,
    part   BIGINT NOT NULL,
    data   BLOB   NOT NULL,
    PRIMARY KEY (app_id, name, gen, part),
    FOREIGN KEY (app_id, name) REFERENCES documents (app_id, name) ON DELETE CASCADE
);
INSERT INTO doc_snapshot_parts (app_id, name, gen, part, data)
    SELECT app_id, name, 0, 0, data FROM doc_snapshots;
DROP TABLE doc_snapshots;
ALTER TABLE documents ADD COLUMN snapshot_gen BIGINT NOT NULL DEFAULT 0;
