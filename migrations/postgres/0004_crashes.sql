-- Crash isolation (docs/failure-modes.md): a lease that expires — the worker was killed, OOM-killed
-- or cut off from the database — is not an attempt that failed. The rescuer returns the job to
-- pending without spending an attempt and counts the expiry in `crashes` instead, so the other jobs
-- that were in flight on a crashed worker keep their attempts. A job whose leases keep expiring is
-- the likely cause (it crashes every worker that takes it): after `scheduler.max_crashes` expiries
-- it is dead with error_kind `crashed_worker`.
ALTER TABLE jobs
    ADD COLUMN crashes integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT crashes_counted CHECK (crashes >= 0);
