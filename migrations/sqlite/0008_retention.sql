-- As migrations/postgres/0008_retention.sql: per-tenant retention of finished batches' job rows
-- (NULL: the scheduler's default, 0: forever), and when retention took a batch.
ALTER TABLE tenants ADD COLUMN job_retention_seconds INTEGER CHECK (job_retention_seconds >= 0);

ALTER TABLE batches ADD COLUMN jobs_purged_at INTEGER;
ALTER TABLE batches ADD COLUMN jobs_purge_pending INTEGER NOT NULL DEFAULT 0
    CHECK (jobs_purge_pending IN (0, 1) AND (jobs_purge_pending = 0 OR jobs_purged_at IS NOT NULL));

CREATE INDEX batches_unpurged ON batches (created_at) WHERE jobs_purged_at IS NULL;
CREATE INDEX batches_purging ON batches (id) WHERE jobs_purge_pending = 1;

-- Job rows are deleted by retention only, and a purged batch keeps its counts in batch_progress:
-- its status still says what it rendered, and the finished totals stay monotonic.
DROP TRIGGER jobs_progress_delete;
