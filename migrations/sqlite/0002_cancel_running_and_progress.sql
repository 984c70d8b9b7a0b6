-- As migrations/postgres/0002: running jobs can be cancelled; workers report denoising progress.

ALTER TABLE jobs ADD COLUMN steps_done integer;
ALTER TABLE jobs ADD COLUMN steps_total integer;

DROP TRIGGER jobs_state_machine;
CREATE TRIGGER jobs_state_machine BEFORE UPDATE OF state ON jobs
WHEN NEW.state <> OLD.state AND NOT (
       (OLD.state = 'pending'   AND NEW.state IN ('queued', 'running', 'cancelled'))
    OR (OLD.state = 'queued'    AND NEW.state IN ('running', 'pending', 'cancelled'))
    OR (OLD.state = 'running'   AND NEW.state IN ('succeeded', 'retryable', 'dead', 'pending', 'cancelled'))
    OR (OLD.state = 'retryable' AND NEW.state IN ('pending', 'cancelled'))
)
BEGIN
    SELECT RAISE(ABORT, 'invalid job state transition');
END;
