-- loa-finn example system: the billing WAL (the source of truth the
-- runbook audits), the billing DLQ's poison entries and the credits they
-- hold. PostgreSQL.

CREATE TABLE wal_entries (
    id           bigserial PRIMARY KEY,
    event_type   text NOT NULL,        -- credit_mint, reserve, finalize, ...
    account_id   text NOT NULL,
    amount_micro bigint NOT NULL,
    payment_id   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wal_entries_event ON wal_entries (event_type, created_at);

-- Entries of the `billing:dlq:poison` stream, and how an admin resolved them.
CREATE TABLE billing_dlq_poison (
    entry_id     text PRIMARY KEY,
    wal_entry_id bigint,
    error        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolution   text CHECK (resolution IN ('FINALIZE_ACKED', 'VOIDED'))
);

CREATE TABLE held_credits (
    wal_entry_id bigint PRIMARY KEY REFERENCES wal_entries (id),
    account_id   text NOT NULL,
    amount_micro bigint NOT NULL,
    released_at  timestamptz
);
