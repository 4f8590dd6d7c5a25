CREATE SEQUENCE IF NOT EXISTS "idem_records_fence";
CREATE TABLE IF NOT EXISTS "idem_records" (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    status       text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
    owner        bytea       NOT NULL,
    fence        bigint      NOT NULL,
    lease_until  timestamptz,
    outcome_kind text        CHECK (outcome_kind IN ('ok', 'err')),
    outcome      bytea,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS "idem_records_expires_at" ON "idem_records" (expires_at);
