-- The node registry, PostgreSQL flavour. Keep in step with ../sqlite/0006_nodes.sql.
--
-- One row per data-plane node that ever heartbeated. `draining` is the
-- operator's (drain/undrain) and survives heartbeats of the same process;
-- `instance` names the process, so a restarted node (same id, new instance)
-- comes back up. `down` is not stored: it is a heartbeat older than the
-- control plane's --node-timeout, decided when read.
CREATE TABLE nodes (
    id                TEXT COLLATE "C" PRIMARY KEY,
    region            TEXT NOT NULL,
    url               TEXT NOT NULL,
    draining          BOOLEAN NOT NULL DEFAULT FALSE,
    instance          TEXT NOT NULL,
    started_at        BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    connections       BIGINT NOT NULL,
    documents         BIGINT NOT NULL
);
