-- A user's display name, as given when accepting an invitation (NULL when
-- never given). Same in both engines.
ALTER TABLE users ADD COLUMN name TEXT;
