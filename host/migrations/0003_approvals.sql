-- Durable approvals: a write that needs approval parks its run until
-- enough distinct principals decide it. Principals authenticate with bearer
-- tokens, stored only as SHA-256 hashes.

CREATE TABLE principals (
    name        TEXT PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE approval_requests (
    run_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    playbook    TEXT NOT NULL,
    op          TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    quorum      INTEGER NOT NULL,
    started_by  TEXT NOT NULL,
    status      TEXT NOT NULL,
    outcome     TEXT,
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE approval_decisions (
    run_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    principal  TEXT NOT NULL,
    approve    INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq, principal)
);
