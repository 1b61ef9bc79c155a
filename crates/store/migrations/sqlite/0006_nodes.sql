-- The node registry, SQLite flavour. Keep in step with ../postgres/0006_nodes.sql.
--
-- One row per data-plane node that ever heartbeated. `draining` is the
-- operator's (drain/undrain) and survives heartbeats of the same process;
-- `instance` names the process, so a restarted node (same id, new instance)
-- comes back up. `down` is not stored: it is a heartbeat older than the
-- control plane's --node-timeout, decided when read.
CREATE TABLE nodes (
    id                TEXT PRIMARY KEY,
    region            TEXT NOT NULL,
    url               TEXT NOT NULL,
    draining          INTEGER NOT NULL DEFAULT 0,
    instance          TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    connections       INTEGER NOT NULL,
    documents         INTEGER NOT NULL
);
