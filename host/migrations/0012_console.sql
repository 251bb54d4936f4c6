-- What the dry run of a parked write said when it parked (a flag's value
-- then, the rows a statement would change), shown beside the write to
-- approvers; and when.
ALTER TABLE approval_requests ADD COLUMN preview TEXT;
ALTER TABLE approval_requests ADD COLUMN previewed_at BIGINT;

-- Web console sessions: a principal signed in with its token gets a
-- session cookie. Only the SHA-256 of the cookie is stored; `csrf` is the
-- token every state-changing form of the session must carry.
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY NOT NULL,
    principal   TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Slack: the message posted for each approval request (one per plan: a
-- re-planned request gets a new message), and the signatures of the
-- interactions already taken, so a replayed request decides nothing.
CREATE TABLE slack_messages (
    run_id       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    plan_digest  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    ts           TEXT,
    posted_at    BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq, plan_digest)
);

CREATE TABLE slack_seen (
    signature  TEXT PRIMARY KEY NOT NULL,
    at         BIGINT NOT NULL
);
