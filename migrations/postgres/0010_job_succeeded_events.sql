-- Webhooks may ask for job.succeeded (bit 8): one event per job whose image is stored, written by
-- the same statement trigger as job.failed, in the transaction that records the success.

ALTER TABLE webhooks
    DROP CONSTRAINT webhooks_events_check,
    ADD CONSTRAINT webhooks_events_check CHECK (events BETWEEN 1 AND 15);
ALTER TABLE webhook_events
    DROP CONSTRAINT webhook_events_kind_check,
    ADD CONSTRAINT webhook_events_kind_check
        CHECK (kind IN ('batch.completed', 'batch.failed', 'job.failed', 'job.succeeded'));

DROP TRIGGER jobs_dead_webhooks ON jobs;
DROP FUNCTION webhook_jobs_dead();

-- Jobs becoming final, per statement (a grouped write finishes many at once): dead is
-- job.failed (bit 4), succeeded is job.succeeded (bit 8).
CREATE FUNCTION webhook_jobs_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (webhook_id, tenant_id, batch_id, job_id, kind, url)
    SELECT w.id, n.tenant_id, n.batch_id, n.id,
           CASE n.state WHEN 'dead' THEN 'job.failed' ELSE 'job.succeeded' END, w.url
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    JOIN webhooks w ON w.tenant_id = n.tenant_id AND (w.batch_id IS NULL OR w.batch_id = n.batch_id)
    WHERE n.state IN ('dead', 'succeeded') AND o.state <> n.state
      AND w.events & (CASE n.state WHEN 'dead' THEN 4 ELSE 8 END) <> 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_final_webhooks AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_jobs_final();
