-- As migrations/postgres/0006: the latest announced limits of a model, JSON text.

ALTER TABLE served_models ADD COLUMN limits TEXT;
