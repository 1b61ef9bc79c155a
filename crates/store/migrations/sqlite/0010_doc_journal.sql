-- The document log's journal, SQLite flavour. Keep in step with
-- ../postgres/0010_doc_journal.sql.
--
-- On a SQLite file, appends go to an append-only journal beside the database
-- (`<file>-doclog/`) and are folded into `documents` and `doc_updates` in
-- batches (see the store's `sql/doclog.rs`). Each fold records here, in its
-- own transaction, the journal position it covers, so a restart folds only
-- what comes after it. One row.
CREATE TABLE doc_journal (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    segment_no  BIGINT  NOT NULL,
    byte_offset BIGINT  NOT NULL
);
INSERT INTO doc_journal (id, segment_no, byte_offset) VALUES (1, 0, 0);
