-- Content credentials (README, "Getting results out"): whether a tenant's images get a signed C2PA
-- manifest and the XMP digital source type when a manifest's `output.content_credentials` does not
-- say. On for every tenant, existing ones included.
ALTER TABLE tenants ADD COLUMN content_credentials boolean NOT NULL DEFAULT true;
