-- Durable Yjs documents, SQLite flavour. Keep in step with ../postgres/0002_documents.sql
-- (the files differ in column types, collations and SQLite's WITHOUT ROWID).
--
-- A document is a snapshot (a full-state Yjs v1 update, NULL until the first
-- compaction) plus an append-only log of the updates since. Invariants, held by
-- the store's transactions and relied on by its queries:
--   * seqs are assigned from `last_seq`, one per update, so the log holds exactly
--     the seqs `snapshot_seq + 1 ..= last_seq` (compaction removes a prefix);
--   * `size_bytes` = length(snapshot) + the lengths of the log entries.
-- Names keep SQLite's default BINARY collation: byte order.
CREATE TABLE documents (
    app_id       TEXT   NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    snapshot     BLOB,
    snapshot_seq BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    compacted_at BIGINT,
    PRIMARY KEY (app_id, name)
);

-- WITHOUT ROWID clusters the log by (doc, seq): one b-tree to write per entry
-- instead of a table and an index, and a load reads adjacent pages.
CREATE TABLE doc_updates (
    app_id TEXT   NOT NULL,
    name   TEXT   NOT NULL,
    seq    BIGINT NOT NULL,
    data   BLOB   NOT NULL,
    PRIMARY KEY (app_id, name, seq),
    FOREIGN KEY (app_id, name) REFERENCES documents (app_id, name) ON DELETE CASCADE
) WITHOUT ROWID;
