-- Per-tenant quotas and the API key lifecycle (docs/security.md, "Quotas and rate limits" and
-- "API keys"). A NULL limit is unlimited. The scheduler enforces max_queued_jobs, max_jobs_per_day
-- and max_priority in the submit's transaction; max_watches and submits_per_minute are counted in
-- each scheduler replica's memory.
ALTER TABLE tenants
    ADD COLUMN max_queued_jobs    bigint   CHECK (max_queued_jobs >= 0),
    ADD COLUMN max_jobs_per_day   bigint   CHECK (max_jobs_per_day >= 0),
    ADD COLUMN max_watches        integer  CHECK (max_watches >= 0),
    ADD COLUMN submits_per_minute integer  CHECK (submits_per_minute >= 0),
    ADD COLUMN max_priority       smallint CHECK (max_priority BETWEEN 0 AND 9);

-- A key is valid until revoked_at or expires_at. `prefix` is the non-secret name listings show
-- and `revoke` takes; it is NULL for keys registered by an older scheduler (before this migration,
-- or by an old replica during a rolling update), which are named 'sha256:' and 8 digits of their
-- hash instead. Keys the config lists are marked from_config, and revoked at start once the config
-- stops listing them (revoked_by 'config': listing them again restores them, so a scheduler started
-- on the wrong config does not lose them for good); a key the operator revoked ('operator') stays
-- revoked.
ALTER TABLE api_keys
    ADD COLUMN prefix        text,
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN revoked_at    timestamptz,
    ADD COLUMN revoked_by    text CHECK (revoked_by IN ('operator', 'config')),
    ADD COLUMN from_config   boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT revoked_by_whom CHECK ((revoked_at IS NULL) = (revoked_by IS NULL));
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- The quota counts: a tenant's unfinished jobs, and the jobs of its batches of the last day.
CREATE INDEX jobs_tenant_open ON jobs (tenant_id)
    WHERE state IN ('pending', 'queued', 'running', 'retryable');
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at);
