-- Webhooks (docs/webhooks.md): subscriptions, the outbox of their events and its delivery log.
--
-- Events are written by triggers in the transaction of the change that causes them, so an event
-- exists exactly when its change committed: a batch's counters closing (batch.completed /
-- batch.failed) and a job becoming dead (job.failed). The scheduler's relay sends them.

-- The tenant's signing secret (`whsec_<base64>`), made when its first webhook is; after a
-- rotation the previous one signs too for a day.
ALTER TABLE tenants
    ADD COLUMN webhook_secret text,
    ADD COLUMN webhook_secret_previous text,
    ADD COLUMN webhook_secret_rotated_at timestamptz;

-- A tenant's webhook (batch_id NULL: every batch of it) or one batch's, from its manifest.
-- events: bits of batch.completed (1), batch.failed (2), job.failed (4).
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id    uuid REFERENCES batches (id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events      smallint NOT NULL CHECK (events BETWEEN 1 AND 7),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id) WHERE batch_id IS NULL;
CREATE INDEX webhooks_batch ON webhooks (batch_id) WHERE batch_id IS NOT NULL;

-- The outbox. `url` is copied from the webhook, so the log says where each event went after
-- the webhook is removed. `attempts` counts claims; `body` is written by the first attempt and
-- sent by every later one. An event is pending until delivered_at or gave_up_at is set.
CREATE TABLE webhook_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       uuid REFERENCES webhooks (id) ON DELETE SET NULL,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id         uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    job_id           uuid,
    kind             text NOT NULL CHECK (kind IN ('batch.completed', 'batch.failed', 'job.failed')),
    url              text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    body             text,
    delivered_at     timestamptz,
    gave_up_at       timestamptz,
    CONSTRAINT delivered_or_given_up CHECK (delivered_at IS NULL OR gave_up_at IS NULL)
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_events_batch ON webhook_events (batch_id, created_at, id);

CREATE TABLE webhook_attempts (
    event_id     uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    at           timestamptz NOT NULL DEFAULT now(),
    status       integer,
    error        text,
    duration_ms  bigint NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (event_id, attempt)
);

-- A batch's counters closing: every job final. batch.failed when a job is dead.
CREATE FUNCTION webhook_batch_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event_kind text := CASE WHEN NEW.dead > 0 THEN 'batch.failed' ELSE 'batch.completed' END;
    wanted smallint := CASE WHEN NEW.dead > 0 THEN 2 ELSE 1 END;
BEGIN
    INSERT INTO webhook_events (webhook_id, tenant_id, batch_id, kind, url)
    SELECT w.id, NEW.tenant_id, NEW.batch_id, event_kind, w.url
    FROM webhooks w
    WHERE w.tenant_id = NEW.tenant_id
      AND (w.batch_id IS NULL OR w.batch_id = NEW.batch_id)
      AND w.events & wanted <> 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER batch_progress_finished AFTER UPDATE ON batch_progress
    FOR EACH ROW WHEN (OLD.open AND NOT NEW.open)
    EXECUTE FUNCTION webhook_batch_finished();

-- Jobs becoming dead, per statement (a grouped write kills many at once).
CREATE FUNCTION webhook_jobs_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (webhook_id, tenant_id, batch_id, job_id, kind, url)
    SELECT w.id, n.tenant_id, n.batch_id, n.id, 'job.failed', w.url
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    JOIN webhooks w ON w.tenant_id = n.tenant_id AND (w.batch_id IS NULL OR w.batch_id = n.batch_id)
    WHERE n.state = 'dead' AND o.state <> 'dead' AND w.events & 4 <> 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_dead_webhooks AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_jobs_dead();
