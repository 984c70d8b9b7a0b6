-- Batch progress kept as counters: see migrations/postgres/0007_batch_progress.sql. SQLite has no
-- statement triggers: these row triggers apply each job row's change to its batch's row (a job's
-- batch never changes), and the store announces the changed batches itself after its commits.

CREATE TABLE batch_progress (
    batch_id          TEXT PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    model             TEXT NOT NULL,
    pending           INTEGER NOT NULL DEFAULT 0,
    queued            INTEGER NOT NULL DEFAULT 0,
    running           INTEGER NOT NULL DEFAULT 0,
    succeeded         INTEGER NOT NULL DEFAULT 0,
    retryable         INTEGER NOT NULL DEFAULT 0,
    dead              INTEGER NOT NULL DEFAULT 0,
    cancelled         INTEGER NOT NULL DEFAULT 0,
    first_started_at  INTEGER,
    last_finished_at  INTEGER,
    device_seconds    REAL NOT NULL DEFAULT 0,
    open              INTEGER GENERATED ALWAYS AS (pending + queued + running + retryable > 0) STORED,
    CHECK (min(pending, queued, running, succeeded, retryable, dead, cancelled) >= 0)
);
CREATE INDEX batch_progress_open ON batch_progress (tenant_id) WHERE open;

CREATE TRIGGER jobs_progress_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO batch_progress (batch_id, tenant_id, model, pending, queued, running, succeeded,
                                retryable, dead, cancelled, first_started_at, last_finished_at,
                                device_seconds)
    VALUES (NEW.batch_id, NEW.tenant_id, NEW.model,
            NEW.state = 'pending', NEW.state = 'queued', NEW.state = 'running',
            NEW.state = 'succeeded', NEW.state = 'retryable', NEW.state = 'dead',
            NEW.state = 'cancelled', NEW.started_at, NEW.finished_at, NEW.device_seconds)
    ON CONFLICT (batch_id) DO UPDATE SET
        pending = pending + excluded.pending,
        queued = queued + excluded.queued,
        running = running + excluded.running,
        succeeded = succeeded + excluded.succeeded,
        retryable = retryable + excluded.retryable,
        dead = dead + excluded.dead,
        cancelled = cancelled + excluded.cancelled,
        first_started_at = coalesce(min(first_started_at, excluded.first_started_at),
                                    first_started_at, excluded.first_started_at),
        last_finished_at = coalesce(max(last_finished_at, excluded.last_finished_at),
                                    last_finished_at, excluded.last_finished_at),
        device_seconds = device_seconds + excluded.device_seconds;
END;

-- A heartbeat changes none of these columns: it does not touch the batch's row.
CREATE TRIGGER jobs_progress_update AFTER UPDATE ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.started_at IS NOT NEW.started_at
    OR OLD.finished_at IS NOT NEW.finished_at OR OLD.device_seconds IS NOT NEW.device_seconds
BEGIN
    UPDATE batch_progress SET
        pending = pending - (OLD.state = 'pending') + (NEW.state = 'pending'),
        queued = queued - (OLD.state = 'queued') + (NEW.state = 'queued'),
        running = running - (OLD.state = 'running') + (NEW.state = 'running'),
        succeeded = succeeded - (OLD.state = 'succeeded') + (NEW.state = 'succeeded'),
        retryable = retryable - (OLD.state = 'retryable') + (NEW.state = 'retryable'),
        dead = dead - (OLD.state = 'dead') + (NEW.state = 'dead'),
        cancelled = cancelled - (OLD.state = 'cancelled') + (NEW.state = 'cancelled'),
        first_started_at = coalesce(min(first_started_at, NEW.started_at),
                                    first_started_at, NEW.started_at),
        last_finished_at = coalesce(max(last_finished_at, NEW.finished_at),
                                    last_finished_at, NEW.finished_at),
        device_seconds = device_seconds - OLD.device_seconds + NEW.device_seconds
    WHERE batch_id = NEW.batch_id;
END;

CREATE TRIGGER jobs_progress_delete AFTER DELETE ON jobs
BEGIN
    UPDATE batch_progress SET
        pending = pending - (OLD.state = 'pending'),
        queued = queued - (OLD.state = 'queued'),
        running = running - (OLD.state = 'running'),
        succeeded = succeeded - (OLD.state = 'succeeded'),
        retryable = retryable - (OLD.state = 'retryable'),
        dead = dead - (OLD.state = 'dead'),
        cancelled = cancelled - (OLD.state = 'cancelled'),
        device_seconds = device_seconds - OLD.device_seconds
    WHERE batch_id = OLD.batch_id;
END;

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

DROP INDEX jobs_tenant_open;
