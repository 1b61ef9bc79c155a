-- Security fixes, SQLite flavour. Keep in step with ../postgres/0003_security.sql
-- (the files differ in collations and in how "now" is read).

-- At most one active signing key per tenant, held by the database: two
-- concurrent rotations (or a rotation and a revocation with a replacement)
-- can no longer both leave an active key. The store retires before it
-- inserts, so one rotation on its own never trips this; racing ones get
-- `Conflict("key_conflict")` (see `conflict_code`).
--
-- A tenant the old race left with several active keys keeps its newest one
-- (highest `seq`) active; the others become `retiring` with a 30-minute
-- grace period (the server's default), so tokens they signed keep verifying
-- until they expire.
UPDATE signing_keys
SET state = 'retiring', retires_at = CAST(strftime('%s', 'now') AS INTEGER) + 1800
WHERE state = 'active'
  AND seq < (SELECT MAX(k.seq) FROM signing_keys k WHERE k.tenant_id = signing_keys.tenant_id AND k.state = 'active');
CREATE UNIQUE INDEX signing_keys_one_active_per_tenant ON signing_keys (tenant_id) WHERE state = 'active';

-- The refresh-token family issued with a session (NULL for sessions without
-- one, including every session created before this migration), so revoking
-- the family can end its sessions too.
ALTER TABLE sessions ADD COLUMN family_id TEXT;
CREATE INDEX sessions_family_id ON sessions (family_id);
