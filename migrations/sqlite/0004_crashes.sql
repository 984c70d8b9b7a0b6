-- Crash isolation: see migrations/postgres/0004_crashes.sql.
ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0 CHECK (crashes >= 0);
