-- Per-model limits (docs/security.md, "Limits"): what the latest started worker of a model says
-- its jobs may ask for; submit refuses a job over them. NULL: no worker said (no limits).

ALTER TABLE served_models ADD COLUMN limits jsonb;
