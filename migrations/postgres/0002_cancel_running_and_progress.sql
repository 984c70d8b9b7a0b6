-- Running jobs can be cancelled: the lease ends with the state, so the worker's next heartbeat fails
-- and it stops the render between denoising steps. Workers report denoising progress with each
-- heartbeat (steps done / total of the current attempt; reset by the next claim).

ALTER TABLE jobs
    ADD COLUMN steps_done  integer,
    ADD COLUMN steps_total integer,
    ADD CONSTRAINT progress_bounded CHECK (
        (steps_done IS NULL) = (steps_total IS NULL)
        AND (steps_done IS NULL OR (steps_done BETWEEN 0 AND steps_total))
    );

CREATE OR REPLACE FUNCTION jobs_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
           (OLD.state = 'pending'   AND NEW.state IN ('queued', 'running', 'cancelled'))
        OR (OLD.state = 'queued'    AND NEW.state IN ('running', 'pending', 'cancelled'))
        OR (OLD.state = 'running'   AND NEW.state IN ('succeeded', 'retryable', 'dead', 'pending', 'cancelled'))
        OR (OLD.state = 'retryable' AND NEW.state IN ('pending', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'job % cannot move from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
