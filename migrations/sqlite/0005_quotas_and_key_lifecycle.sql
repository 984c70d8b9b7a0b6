-- Per-tenant quotas and the API key lifecycle: see migrations/postgres/0005_quotas_and_key_lifecycle.sql.
ALTER TABLE tenants ADD COLUMN max_queued_jobs INTEGER CHECK (max_queued_jobs >= 0);
ALTER TABLE tenants ADD COLUMN max_jobs_per_day INTEGER CHECK (max_jobs_per_day >= 0);
ALTER TABLE tenants ADD COLUMN max_watches INTEGER CHECK (max_watches >= 0);
ALTER TABLE tenants ADD COLUMN submits_per_minute INTEGER CHECK (submits_per_minute >= 0);
ALTER TABLE tenants ADD COLUMN max_priority INTEGER CHECK (max_priority BETWEEN 0 AND 9);

ALTER TABLE api_keys ADD COLUMN prefix TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_by TEXT CHECK (revoked_by IN ('operator', 'config'));
ALTER TABLE api_keys ADD COLUMN from_config INTEGER NOT NULL DEFAULT 0 CHECK (from_config IN (0, 1));
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE INDEX jobs_tenant_open ON jobs (tenant_id)
    WHERE state IN ('pending', 'queued', 'running', 'retryable');
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at);
