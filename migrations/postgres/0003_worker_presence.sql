-- Worker presence (docs/models.md): workers announce the models they serve every few seconds.
-- `served_models` remembers every model a worker ever announced, so the scheduler refuses at
-- submit a model nothing has ever served; `worker_models` says which workers serve which model
-- now (`live_until` in the future). A clean shutdown deletes the worker's rows; a killed worker's
-- rows expire, and rows expired for a day are pruned by the next announcement.

CREATE TABLE served_models (
    model          text PRIMARY KEY CHECK (model ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE worker_models (
    worker_id   text NOT NULL CHECK (length(worker_id) BETWEEN 1 AND 256),
    model       text NOT NULL REFERENCES served_models (model) ON DELETE CASCADE,
    seen_at     timestamptz NOT NULL,
    live_until  timestamptz NOT NULL CHECK (live_until >= seen_at),
    PRIMARY KEY (worker_id, model)
);

CREATE INDEX worker_models_model ON worker_models (model, live_until);
