-- Plaza example system: the two tables the reconciliation-drift playbook reads.
-- Amounts are USDC in integer micro-units (6 decimals), as on chain: an
-- exact integer in SQLite and PostgreSQL alike (SQLite would store a
-- NUMERIC decimal literal as a float).

CREATE TABLE ledger_entries (
    id          INTEGER PRIMARY KEY,
    txn_id      TEXT    NOT NULL,
    account_id  TEXT    NOT NULL,
    amount      BIGINT  NOT NULL CHECK (amount >= 0),
    direction   INTEGER NOT NULL CHECK (direction IN (-1, 1)),
    created_at  TEXT    NOT NULL
);

CREATE TABLE escrow_holds (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT    NOT NULL UNIQUE,
    amount      BIGINT  NOT NULL CHECK (amount > 0),
    state       TEXT    NOT NULL CHECK (state IN ('held', 'released', 'refunded')),
    created_at  TEXT    NOT NULL
);

-- The releases Plaza's resolver service made on the escrow contract
-- (contract mode): what plaza-resolver-key-compromise holds the chain's
-- Released events against. order_id is the bytes32 order id as 0x-hex.
CREATE TABLE contract_releases (
    id          INTEGER PRIMARY KEY,
    escrow      TEXT    NOT NULL,
    order_id    TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    amount      BIGINT  NOT NULL CHECK (amount > 0),
    released_at TEXT    NOT NULL
);

-- Disputes and their arbitration (plaza-disputed-receipt). Times are
-- RFC 3339 in UTC. arbitration_jobs mirrors the pgmq `arbitration.run`
-- queue: one row per enqueued run.
CREATE TABLE disputes (
    urn              TEXT    PRIMARY KEY,
    order_id         TEXT    NOT NULL,
    opened_at        TEXT    NOT NULL,
    verdict          TEXT,
    screener_flagged BOOLEAN NOT NULL DEFAULT FALSE,
    acknowledged_at  TEXT
);

CREATE TABLE arbitration_jobs (
    id          INTEGER PRIMARY KEY,
    dispute_urn TEXT    NOT NULL REFERENCES disputes (urn),
    state       TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'failed', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    enqueued_at TEXT    NOT NULL
);

-- Every run of the nightly backup script (pg_dump, age-encrypted, to R2):
-- what plaza-platform-alerts and plaza-backup-restore read.
CREATE TABLE backup_runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    succeeded   BOOLEAN NOT NULL,
    error       TEXT,
    object_key  TEXT
);

-- On-chain payouts from the hot wallet (plaza-hot-wallet-alerts): state
-- and the signer's or node's error when one failed.
CREATE TABLE payouts (
    id         INTEGER PRIMARY KEY,
    order_id   TEXT    NOT NULL,
    amount     BIGINT  NOT NULL CHECK (amount > 0),
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'confirmed', 'failed')),
    error      TEXT,
    created_at TEXT    NOT NULL
);
