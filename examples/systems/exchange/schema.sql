-- Spot exchange example system: what the ops playbooks read (the ledger,
-- engine vs ledger sequence per symbol, settlement lag, the ops policy's
-- thresholds, the ledger consumer's Kafka lag, engine leases and fencing
-- tokens). The emergency controls (SetSymbolMode, WithdrawalsHalt) are the
-- admin API's. PostgreSQL.

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    tx_id           text NOT NULL,
    account_id      text NOT NULL,
    asset           text NOT NULL,
    amount          numeric(38, 18) NOT NULL,
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE engine_positions (
    symbol     text PRIMARY KEY,
    engine_seq bigint NOT NULL,
    ledger_seq bigint NOT NULL,
    mode       text NOT NULL DEFAULT 'NORMAL'
);

CREATE TABLE settlement_lag (
    symbol      text NOT NULL,
    lag_ms_p99  bigint NOT NULL,
    measured_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops_policy (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

CREATE TABLE kafka_consumer_lag (
    consumer   text NOT NULL,
    partition  integer NOT NULL,
    lag        bigint NOT NULL,
    errors_5m  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, partition)
);

CREATE TABLE engine_leases (
    node          text PRIMARY KEY,
    symbol_group  text NOT NULL,
    fencing_token bigint NOT NULL,
    durable_seq   bigint NOT NULL,
    lease_until   timestamptz NOT NULL
);

-- The Trading Core's transactional outbox: events waiting to be published
-- to Kafka (§3.5).
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
