-- Batch progress kept as counters: one row per batch with its jobs per state, so reading a batch,
-- the backlog, the finished totals and a tenant's open jobs costs one row per batch, not one per
-- job. Triggers on `jobs` keep the row equal to a GROUP BY over the batch's job rows (counts and
-- device seconds; inserted, updated and deleted rows alike), in the transaction that changes the
-- jobs, and announce each changed batch on the channel `pixelfarm_batch_progress` (delivered at
-- commit) for the API's watches.
--
-- `first_started_at` is the first claim of any of the batch's jobs ever (a retry's claim moves a
-- job's `started_at` later but not this); `last_finished_at` the latest `finished_at` ever.

CREATE TABLE batch_progress (
    batch_id          uuid PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    -- The batch's owner and model, copied so usage and backlog read this table alone.
    tenant_id         uuid NOT NULL,
    model             text NOT NULL,
    pending           bigint NOT NULL DEFAULT 0,
    queued            bigint NOT NULL DEFAULT 0,
    running           bigint NOT NULL DEFAULT 0,
    succeeded         bigint NOT NULL DEFAULT 0,
    retryable         bigint NOT NULL DEFAULT 0,
    dead              bigint NOT NULL DEFAULT 0,
    cancelled         bigint NOT NULL DEFAULT 0,
    first_started_at  timestamptz,
    last_finished_at  timestamptz,
    device_seconds    double precision NOT NULL DEFAULT 0,
    -- The batch has unfinished jobs. A column of its own for the partial index below: it changes
    -- only when the batch opens or finishes, so the counters' updates stay HOT (no index entry).
    open              boolean GENERATED ALWAYS AS (pending + queued + running + retryable > 0) STORED,
    CONSTRAINT counts_not_negative
        CHECK (least(pending, queued, running, succeeded, retryable, dead, cancelled) >= 0)
-- Every job change rewrites its batch's row: room on the page keeps the new version HOT.
) WITH (fillfactor = 50);

-- Open jobs per tenant (quota, usage gauges) and per model (backlog): the open batches only.
CREATE INDEX batch_progress_open ON batch_progress (tenant_id) WHERE open;

-- What a statement did to one state of one batch; the trigger sums these per batch.
CREATE TYPE batch_progress_delta AS (
    batch_id        uuid,
    state           job_state,
    jobs            bigint,
    started_at      timestamptz,
    finished_at     timestamptz,
    device_seconds  double precision
);

-- One call per statement on `jobs`: the statement's rows become per-batch deltas, applied in
-- batch_id order (each UPDATE locks its row, so two statements touching the same batches lock
-- them in the same order and cannot deadlock), each changed batch announced.
CREATE FUNCTION batch_progress_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas batch_progress_delta[];
    d record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO batch_progress (batch_id, tenant_id, model)
            SELECT DISTINCT batch_id, tenant_id, model FROM new_rows ORDER BY batch_id
            ON CONFLICT (batch_id) DO NOTHING;
        deltas := ARRAY(
            SELECT (batch_id, state, count(*), min(started_at), max(finished_at),
                    sum(device_seconds))::batch_progress_delta
            FROM new_rows GROUP BY batch_id, state);
    ELSIF TG_OP = 'DELETE' THEN
        deltas := ARRAY(
            SELECT (batch_id, state, -count(*), NULL, NULL, -sum(device_seconds))::batch_progress_delta
            FROM old_rows GROUP BY batch_id, state);
    ELSE
        -- Only rows whose batch, state, times or device seconds changed: a heartbeat changes
        -- none of them, and costs no lock and no notification.
        deltas := ARRAY(
            SELECT (c.batch_id, c.state, sum(c.jobs), min(c.started_at), max(c.finished_at),
                    sum(c.device_seconds))::batch_progress_delta
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                (o.batch_id, o.state, -1, NULL::timestamptz, NULL::timestamptz, -o.device_seconds),
                (n.batch_id, n.state, 1, n.started_at, n.finished_at, n.device_seconds)
            ) AS c (batch_id, state, jobs, started_at, finished_at, device_seconds)
            WHERE (o.batch_id, o.state, o.started_at, o.finished_at, o.device_seconds)
                  IS DISTINCT FROM (n.batch_id, n.state, n.started_at, n.finished_at, n.device_seconds)
            GROUP BY c.batch_id, c.state);
    END IF;
    FOR d IN
        SELECT batch_id,
               coalesce(sum(jobs) FILTER (WHERE state = 'pending'), 0) AS pending,
               coalesce(sum(jobs) FILTER (WHERE state = 'queued'), 0) AS queued,
               coalesce(sum(jobs) FILTER (WHERE state = 'running'), 0) AS running,
               coalesce(sum(jobs) FILTER (WHERE state = 'succeeded'), 0) AS succeeded,
               coalesce(sum(jobs) FILTER (WHERE state = 'retryable'), 0) AS retryable,
               coalesce(sum(jobs) FILTER (WHERE state = 'dead'), 0) AS dead,
               coalesce(sum(jobs) FILTER (WHERE state = 'cancelled'), 0) AS cancelled,
               min(started_at) AS started_at, max(finished_at) AS finished_at,
               coalesce(sum(device_seconds), 0) AS device_seconds
        FROM unnest(deltas) GROUP BY batch_id ORDER BY batch_id
    LOOP
        -- No row: the batch is being deleted (its row went first, by cascade).
        UPDATE batch_progress SET
            pending = pending + d.pending,
            queued = queued + d.queued,
            running = running + d.running,
            succeeded = succeeded + d.succeeded,
            retryable = retryable + d.retryable,
            dead = dead + d.dead,
            cancelled = cancelled + d.cancelled,
            first_started_at = least(first_started_at, d.started_at),
            last_finished_at = greatest(last_finished_at, d.finished_at),
            device_seconds = device_seconds + d.device_seconds
        WHERE batch_id = d.batch_id;
        IF FOUND THEN
            PERFORM pg_notify('pixelfarm_batch_progress', d.batch_id::text);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Created before the backfill: creating a trigger locks `jobs` against writes until this
-- migration commits, so no change falls between the backfill and the triggers.
CREATE TRIGGER jobs_progress_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION batch_progress_track();
CREATE TRIGGER jobs_progress_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION batch_progress_track();
CREATE TRIGGER jobs_progress_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION batch_progress_track();

INSERT INTO batch_progress (batch_id, tenant_id, model, pending, queued, running, succeeded,
                            retryable, dead, cancelled, first_started_at, last_finished_at,
                            device_seconds)
SELECT b.id, b.tenant_id, b.model,
       count(j.id) FILTER (WHERE j.state = 'pending'),
       count(j.id) FILTER (WHERE j.state = 'queued'),
       count(j.id) FILTER (WHERE j.state = 'running'),
       count(j.id) FILTER (WHERE j.state = 'succeeded'),
       count(j.id) FILTER (WHERE j.state = 'retryable'),
       count(j.id) FILTER (WHERE j.state = 'dead'),
       count(j.id) FILTER (WHERE j.state = 'cancelled'),
       min(j.started_at), max(j.finished_at), coalesce(sum(j.device_seconds), 0)
FROM batches b LEFT JOIN jobs j ON j.batch_id = b.id
GROUP BY b.id;

-- Its readers (the quota and the usage gauges) count batch_progress now.
DROP INDEX jobs_tenant_open;
