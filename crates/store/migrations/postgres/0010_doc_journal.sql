-- The document log's journal, PostgreSQL flavour. Keep in step with
-- ../sqlite/0010_doc_journal.sql.
--
-- Only the SQLite store journals appends (its writer owns the file); on
-- PostgreSQL appends commit to `doc_updates` directly and this row stays at
-- its start. It exists so both engines keep one schema and one numbering.
CREATE TABLE doc_journal (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    segment_no  BIGINT  NOT NULL,
    byte_offset BIGINT  NOT NULL
);
INSERT INTO doc_journal (id, segment_no, byte_offset) VALUES (1, 0, 0);
