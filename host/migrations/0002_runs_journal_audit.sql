-- Runs, their journals, and the audit log. Portable SQL: the same file
-- migrates the SQLite state file and a PostgreSQL state database.
-- Times are milliseconds since the Unix epoch; JSON is stored as text.

CREATE TABLE runs (
    id          TEXT PRIMARY KEY NOT NULL,
    playbook    TEXT NOT NULL,
    mode        TEXT NOT NULL,
    status      TEXT NOT NULL,
    alert       TEXT NOT NULL,
    started_by  TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    exit_code   INTEGER,
    outcome     TEXT
);

CREATE INDEX runs_by_status ON runs (status, started_at);

-- One row per capability call. A write is stored as `intended` before its
-- backend is called and updated to `done` after, so a write caught between
-- the two is known to be in doubt.
CREATE TABLE journal (
    run_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    phase   TEXT NOT NULL,
    entry   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Append-only; each record's hash covers the previous record's hash.
CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY NOT NULL,
    at         BIGINT NOT NULL,
    run_id     TEXT NOT NULL,
    record     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
