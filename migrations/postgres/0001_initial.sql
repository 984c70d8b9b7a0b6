-- pixelfarm schema: tenants, API keys, batches, jobs, and the job state machine enforced in SQL.
-- The Rust side of the machine is services/core/src/state.rs; keep the two in step.

CREATE TYPE job_state AS ENUM
    ('pending', 'queued', 'running', 'succeeded', 'retryable', 'dead', 'cancelled');

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    -- Relative share of dispatch when several tenants have pending work.
    weight      integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the sha256 of a key is stored; the key is shown once, when created.
CREATE TABLE api_keys (
    key_sha256  text PRIMARY KEY CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batches (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    name             text NOT NULL,
    model            text NOT NULL,
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 9),
    idempotency_key  text,
    tags             jsonb NOT NULL DEFAULT '{}',
    -- The manifest exactly as submitted: the audit trail of what was asked.
    manifest         text NOT NULL,
    job_count        integer NOT NULL CHECK (job_count > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX batches_tenant ON batches (tenant_id, id);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    batch_id        uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    model           text NOT NULL,
    priority        smallint NOT NULL,
    key             text NOT NULL,
    params          jsonb NOT NULL,
    state           job_state NOT NULL DEFAULT 'pending',
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    lease_owner     text,
    lease_until     timestamptz,
    run_after       timestamptz,
    queued_at       timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    object_key      text,
    sha256          text,
    timings         jsonb,
    device_seconds  double precision NOT NULL DEFAULT 0,
    error_kind      text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch_id, key),
    CONSTRAINT attempts_bounded CHECK (attempt >= 0 AND max_attempts >= 1 AND attempt <= max_attempts),
    CONSTRAINT finished_iff_final
        CHECK ((finished_at IS NOT NULL) = (state IN ('succeeded', 'dead', 'cancelled'))),
    CONSTRAINT lease_iff_running
        CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL)),
    CONSTRAINT running_has_started CHECK (state <> 'running' OR started_at IS NOT NULL),
    CONSTRAINT queued_has_queued_at CHECK (state <> 'queued' OR queued_at IS NOT NULL),
    CONSTRAINT succeeded_has_object
        CHECK (state <> 'succeeded' OR (object_key IS NOT NULL AND sha256 ~ '^[0-9a-f]{64}$')),
    CONSTRAINT retryable_has_run_after CHECK (state <> 'retryable' OR run_after IS NOT NULL),
    CONSTRAINT dead_has_reason CHECK (state <> 'dead' OR last_error IS NOT NULL)
);

-- Dispatch: pending jobs of a model, per tenant, by priority then age.
CREATE INDEX jobs_dispatch ON jobs (model, tenant_id, priority DESC, id) WHERE state = 'pending';
CREATE INDEX jobs_batch ON jobs (batch_id, id);
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_retry ON jobs (run_after) WHERE state = 'retryable';
CREATE INDEX jobs_queued ON jobs (queued_at) WHERE state = 'queued';

-- Every state change must be an edge of the machine.
CREATE FUNCTION jobs_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
           (OLD.state = 'pending'   AND NEW.state IN ('queued', 'running', 'cancelled'))
        OR (OLD.state = 'queued'    AND NEW.state IN ('running', 'pending', 'cancelled'))
        OR (OLD.state = 'running'   AND NEW.state IN ('succeeded', 'retryable', 'dead', 'pending'))
        OR (OLD.state = 'retryable' AND NEW.state IN ('pending', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'job % cannot move from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_state_machine BEFORE UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_check_transition();
