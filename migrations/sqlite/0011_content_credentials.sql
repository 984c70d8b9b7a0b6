-- As migrations/postgres/0011_content_credentials.sql: whether a tenant's images get content
-- credentials when a manifest does not say; on by default.
ALTER TABLE tenants ADD COLUMN content_credentials INTEGER NOT NULL DEFAULT 1
    CHECK (content_credentials IN (0, 1));
