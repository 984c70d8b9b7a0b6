-- As migrations/postgres/0012_reviews_and_console_sessions.sql. SQLite adds no table constraint
-- to an existing table: that the three columns go together and only on a succeeded job is kept
-- by the store's one UPDATE that writes them.
ALTER TABLE jobs ADD COLUMN review TEXT CHECK (review IN ('approved', 'rejected'));
ALTER TABLE jobs ADD COLUMN reviewed_by TEXT;
ALTER TABLE jobs ADD COLUMN reviewed_at INTEGER;

CREATE TABLE console_sessions (
    token_sha256  TEXT PRIMARY KEY,
    key_sha256    TEXT NOT NULL REFERENCES api_keys (key_sha256) ON DELETE CASCADE,
    csrf          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
