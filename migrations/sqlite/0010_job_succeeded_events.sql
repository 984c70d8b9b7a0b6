-- Webhooks may ask for job.succeeded (bit 8): one event per job whose image is stored, written by
-- the trigger that writes job.failed, in the transaction that records the success.
--
-- SQLite cannot change a CHECK constraint, and sqlx runs every SQLite migration in a transaction,
-- where foreign keys cannot be switched off. So the three webhook tables are copied aside, dropped
-- children first (no ON DELETE action then touches a row kept), made again with the new checks,
-- and filled back. The triggers that name them are dropped first and made again after.

DROP TRIGGER batch_progress_finished;
DROP TRIGGER jobs_dead_webhooks;

CREATE TEMP TABLE webhooks_copy AS SELECT * FROM webhooks;
CREATE TEMP TABLE webhook_events_copy AS SELECT * FROM webhook_events;
CREATE TEMP TABLE webhook_attempts_copy AS SELECT * FROM webhook_attempts;
DROP TABLE webhook_attempts;
DROP TABLE webhook_events;
DROP TABLE webhooks;

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id    TEXT REFERENCES batches (id) ON DELETE CASCADE,
    url         TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events      INTEGER NOT NULL CHECK (events BETWEEN 1 AND 15),
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id) WHERE batch_id IS NULL;
CREATE INDEX webhooks_batch ON webhooks (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE webhook_events (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT REFERENCES webhooks (id) ON DELETE SET NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id         TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    job_id           TEXT,
    kind             TEXT NOT NULL CHECK (kind IN ('batch.completed', 'batch.failed', 'job.failed', 'job.succeeded')),
    url              TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    body             TEXT,
    delivered_at     INTEGER,
    gave_up_at       INTEGER,
    CHECK (delivered_at IS NULL OR gave_up_at IS NULL)
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_events_batch ON webhook_events (batch_id, created_at, id);

CREATE TABLE webhook_attempts (
    event_id     TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    at           INTEGER NOT NULL,
    status       INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (event_id, attempt)
);

INSERT INTO webhooks SELECT * FROM webhooks_copy;
INSERT INTO webhook_events SELECT * FROM webhook_events_copy;
INSERT INTO webhook_attempts SELECT * FROM webhook_attempts_copy;
DROP TABLE webhooks_copy;
DROP TABLE webhook_events_copy;
DROP TABLE webhook_attempts_copy;

CREATE TRIGGER batch_progress_finished AFTER UPDATE ON batch_progress
WHEN OLD.open AND NOT NEW.open
BEGIN
    INSERT INTO webhook_events (id, webhook_id, tenant_id, batch_id, kind, url, created_at,
                                next_attempt_at)
    SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
                 substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random()) % 4, 1) ||
                 substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
           w.id, NEW.tenant_id, NEW.batch_id,
           CASE WHEN NEW.dead > 0 THEN 'batch.failed' ELSE 'batch.completed' END, w.url,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM webhooks w
    WHERE w.tenant_id = NEW.tenant_id
      AND (w.batch_id IS NULL OR w.batch_id = NEW.batch_id)
      AND w.events & (CASE WHEN NEW.dead > 0 THEN 2 ELSE 1 END) <> 0;
END;

-- A job becoming final: dead is job.failed (bit 4), succeeded is job.succeeded (bit 8).
CREATE TRIGGER jobs_final_webhooks AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('dead', 'succeeded') AND OLD.state <> NEW.state
BEGIN
    INSERT INTO webhook_events (id, webhook_id, tenant_id, batch_id, job_id, kind, url,
                                created_at, next_attempt_at)
    SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
                 substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random()) % 4, 1) ||
                 substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
           w.id, NEW.tenant_id, NEW.batch_id, NEW.id,
           CASE NEW.state WHEN 'dead' THEN 'job.failed' ELSE 'job.succeeded' END, w.url,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM webhooks w
    WHERE w.tenant_id = NEW.tenant_id
      AND (w.batch_id IS NULL OR w.batch_id = NEW.batch_id)
      AND w.events & (CASE NEW.state WHEN 'dead' THEN 4 ELSE 8 END) <> 0;
END;
