-- pixelfarm schema for the embedded mode (SQLite). Same tables and rules as
-- migrations/postgres/0001_initial.sql; times are unix milliseconds, ids are uuid text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_sha256  TEXT PRIMARY KEY CHECK (length(key_sha256) = 64),
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE batches (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    name             TEXT NOT NULL,
    model            TEXT NOT NULL,
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 9),
    idempotency_key  TEXT,
    tags             TEXT NOT NULL DEFAULT '{}',
    manifest         TEXT NOT NULL,
    job_count        INTEGER NOT NULL CHECK (job_count > 0),
    created_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    batch_id        TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    model           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    key             TEXT NOT NULL,
    params          TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'queued', 'running', 'succeeded', 'retryable', 'dead', 'cancelled')),
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    run_after       INTEGER,
    queued_at       INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    object_key      TEXT,
    sha256          TEXT,
    timings         TEXT,
    device_seconds  REAL NOT NULL DEFAULT 0,
    error_kind      TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (batch_id, key),
    CHECK (attempt >= 0 AND max_attempts >= 1 AND attempt <= max_attempts),
    CHECK ((finished_at IS NOT NULL) = (state IN ('succeeded', 'dead', 'cancelled'))),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL)),
    CHECK (state <> 'running' OR started_at IS NOT NULL),
    CHECK (state <> 'queued' OR queued_at IS NOT NULL),
    CHECK (state <> 'succeeded' OR (object_key IS NOT NULL AND length(sha256) = 64)),
    CHECK (state <> 'retryable' OR run_after IS NOT NULL),
    CHECK (state <> 'dead' OR last_error IS NOT NULL)
);

CREATE INDEX jobs_dispatch ON jobs (model, tenant_id, priority DESC, id) WHERE state = 'pending';
CREATE INDEX jobs_batch ON jobs (batch_id, id);
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_retry ON jobs (run_after) WHERE state = 'retryable';
CREATE INDEX jobs_queued ON jobs (queued_at) WHERE state = 'queued';

CREATE TRIGGER jobs_state_machine BEFORE UPDATE OF state ON jobs
WHEN NEW.state <> OLD.state AND NOT (
       (OLD.state = 'pending'   AND NEW.state IN ('queued', 'running', 'cancelled'))
    OR (OLD.state = 'queued'    AND NEW.state IN ('running', 'pending', 'cancelled'))
    OR (OLD.state = 'running'   AND NEW.state IN ('succeeded', 'retryable', 'dead', 'pending'))
    OR (OLD.state = 'retryable' AND NEW.state IN ('pending', 'cancelled'))
)
BEGIN
    SELECT RAISE(ABORT, 'invalid job state transition');
END;
