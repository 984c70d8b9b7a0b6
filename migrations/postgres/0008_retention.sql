-- Retention of finished batches' job rows (docs/failure-modes.md, "Retention"). The leader deletes
-- the job rows of a batch whose jobs are all final and whose last job finished more than the
-- retention ago, in chunks; the batch row stays (name, tags, the manifest as submitted: the audit
-- trail) and says when its jobs went.
--
-- tenants.job_retention_seconds: this tenant's retention; NULL follows the scheduler's
-- `scheduler.retention`, 0 keeps its job rows forever.
ALTER TABLE tenants
    ADD COLUMN job_retention_seconds bigint CHECK (job_retention_seconds >= 0);

-- batches.jobs_purged_at: when retention took the batch; from then on its jobs are not listed and
-- its rows are deleted. jobs_purge_pending: rows of it may remain (the purge goes chunk by chunk,
-- and a leader that dies midway leaves the rest to the next one).
ALTER TABLE batches
    ADD COLUMN jobs_purged_at timestamptz,
    ADD COLUMN jobs_purge_pending boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT purge_pending_is_purged CHECK (NOT jobs_purge_pending OR jobs_purged_at IS NOT NULL);

-- The batches retention looks at (oldest first), and the few it is deleting the rows of.
CREATE INDEX batches_unpurged ON batches (created_at) WHERE jobs_purged_at IS NULL;
CREATE INDEX batches_purging ON batches (id) WHERE jobs_purge_pending;

-- Job rows are deleted by retention only, and a purged batch keeps its counts in batch_progress:
-- its status still says what it rendered, and the finished totals stay monotonic.
DROP TRIGGER jobs_progress_delete ON jobs;
