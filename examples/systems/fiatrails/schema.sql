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
