-- As migrations/postgres/0003: which models workers serve, now and ever.

CREATE TABLE served_models (
    model          TEXT PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 64),
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL
);

CREATE TABLE worker_models (
    worker_id   TEXT NOT NULL CHECK (length(worker_id) BETWEEN 1 AND 256),
    model       TEXT NOT NULL REFERENCES served_models (model) ON DELETE CASCADE,
    seen_at     INTEGER NOT NULL,
    live_until  INTEGER NOT NULL CHECK (live_until >= seen_at),
    PRIMARY KEY (worker_id, model)
);

CREATE INDEX worker_models_model ON worker_models (model, live_until);
