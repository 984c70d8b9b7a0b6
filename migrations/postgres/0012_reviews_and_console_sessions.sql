-- Reviews and the web console (README, "Web console"). A succeeded job's image may carry the latest
-- verdict of a reviewer: who (their API key's prefix) and when. Only a succeeded job is reviewed;
-- the columns go with the job's row when retention deletes it.
ALTER TABLE jobs
    ADD COLUMN review       text CHECK (review IN ('approved', 'rejected')),
    ADD COLUMN reviewed_by  text,
    ADD COLUMN reviewed_at  timestamptz,
    ADD CONSTRAINT review_complete
        CHECK ((review IS NULL) = (reviewed_by IS NULL) AND (review IS NULL) = (reviewed_at IS NULL)),
    ADD CONSTRAINT review_of_succeeded CHECK (review IS NULL OR state = 'succeeded');

-- Console sign-ins: the sha256 of the cookie's token, the API key's sha256 (the session ends with
-- the key) and the CSRF token its forms carry. Neither the token nor the key is stored.
CREATE TABLE console_sessions (
    token_sha256  text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    key_sha256    text NOT NULL REFERENCES api_keys (key_sha256) ON DELETE CASCADE,
    csrf          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
