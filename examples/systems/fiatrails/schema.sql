-- FiatRails example system: the dead-letter queue the DLQ playbook reads
-- (the runbook keeps it as /app/dlq/*.json; here it is the table the API
-- writes those items to) and the mint intents they belong to. PostgreSQL.

CREATE TABLE mint_intents (
    intent_id   text PRIMARY KEY,
    user_address text NOT NULL,
    amount_kes  numeric(20, 2) NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'executed', 'failed', 'refunded')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dlq_items (
    id          text PRIMARY KEY,
    operation   text NOT NULL,
    intent_id   text REFERENCES mint_intents (intent_id),
    attempts    integer NOT NULL,
    last_error  text NOT NULL,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- open: waiting in the DLQ; replayed, failed (permanent), reconciled
    status      text NOT NULL DEFAULT 'open'
);
CREATE INDEX dlq_items_open ON dlq_items (created_at) WHERE status = 'open';

-- HMAC secret rotations (fiatrails-hmac-rotation): secrets-manager
-- references only, never a secret's value.
CREATE TABLE hmac_rotations (
    id             bigserial PRIMARY KEY,
    reason         text NOT NULL CHECK (reason IN ('scheduled', 'compromise')),
    old_secret_ref text NOT NULL,
    new_secret_ref text NOT NULL,
    phase          text NOT NULL CHECK (phase IN ('dual', 'revoked')),
    started_at     timestamptz NOT NULL,
    revoke_after   timestamptz NOT NULL,
    revoked_at     timestamptz
);

-- The API's count of requests each secret verified, per hour (the
-- runbook's fiatrails_hmac_verifications_total, by secret).
CREATE TABLE hmac_verification_counts (
    secret_ref    text NOT NULL,
    hour          timestamptz NOT NULL,
    verifications bigint NOT NULL,
    PRIMARY KEY (secret_ref, hour)
);
