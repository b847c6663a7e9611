-- Stored API keys. The secret is shown once, when the key is made; only its SHA-256 digest is kept. `name` is
-- the producer its events are stored under; `scopes` what it may do (ingest, read, admin); `tenant`, when set,
-- limits its reads to the events of the producers of that tenant's keys (and an admin key to that tenant's
-- keys). A revoked key stays, so that its events keep their tenant; `revoked_at` in the future is a rotation's
-- grace period. Every collector on the database reloads this table every few seconds
-- (COLLECTOR_KEY_REFRESH_MS). A small table: under Citus, a reference table.
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL,
    tenant text,
    scopes text[] NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_used_at timestamptz,
    -- The key this one was made to replace (`collector keys rotate`).
    replaces text,
    CHECK (octet_length(secret_sha256) = 32),
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'admin'])
);

CREATE INDEX api_keys_name ON api_keys (name);
