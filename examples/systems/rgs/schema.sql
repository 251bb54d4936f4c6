-- RGS (remote gaming server) example system: the tables the RGS incident
-- playbooks query, as the runbook's queries name them. PostgreSQL (the
-- runbook's queries use age(), date_trunc() and intervals). The database is
-- `yantra`, as in the runbook.

CREATE TABLE operators (
    id                 text PRIMARY KEY,
    name               text NOT NULL,
    compliance_contact text,
    active             boolean NOT NULL DEFAULT true,
    -- New settlements halted for this operator (§8, an unexplained drift).
    settlements_halted boolean NOT NULL DEFAULT false
);

-- Wallet calls the RGS still owes an operator: bets, wins, rollbacks.
CREATE TABLE pending_wallet_jobs (
    id               bigserial PRIMARY KEY,
    operator_id      text NOT NULL REFERENCES operators (id),
    endpoint         text NOT NULL CHECK (endpoint IN ('BET', 'WIN', 'ROLLBACK')),
    transaction_uuid uuid NOT NULL,
    amount_micro     bigint NOT NULL,
    currency         text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    last_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    manual_override  boolean NOT NULL DEFAULT false,
    override_reason  text
);
CREATE INDEX pending_wallet_jobs_open ON pending_wallet_jobs (endpoint, operator_id) WHERE completed_at IS NULL;

CREATE TABLE operator_credentials (
    id          bigserial PRIMARY KEY,
    operator_id text NOT NULL REFERENCES operators (id),
    kid         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    UNIQUE (operator_id, kid)
);

-- Every call the RGS made to an operator's wallet, and what came back.
CREATE TABLE wallet_calls (
    id               bigserial PRIMARY KEY,
    operator_id      text NOT NULL REFERENCES operators (id),
    endpoint         text NOT NULL,
    transaction_uuid uuid,
    amount_micro     bigint,
    currency         text,
    status           text NOT NULL,
    response_status  integer,
    response_body    text,
    succeeded        boolean NOT NULL,
    credential_id    bigint REFERENCES operator_credentials (id),
    source_ip        text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_calls_operator ON wallet_calls (operator_id, created_at);

-- Each operator's wallet circuit breaker (§5): open when the operator's
-- wallet failed too often; the operator acknowledges an outage in the
-- operator portal (§10).
CREATE TABLE circuit_breakers (
    operator_id              text PRIMARY KEY REFERENCES operators (id),
    state                    text NOT NULL CHECK (state IN ('closed', 'open', 'half-open')),
    opened_at                timestamptz,
    operator_acknowledged_at timestamptz
);

-- What the daily reconcile cron (scripts/reconcile.ts) found per operator,
-- currency and day; status MAJOR_DRIFT is its exit code 2 (§8).
CREATE TABLE reconciliations (
    operator_id  text NOT NULL REFERENCES operators (id),
    currency     text NOT NULL,
    day          date NOT NULL,
    ours_micro   bigint NOT NULL,
    theirs_micro bigint NOT NULL,
    status       text NOT NULL CHECK (status IN ('OK', 'MINOR_DRIFT', 'MAJOR_DRIFT')),
    PRIMARY KEY (operator_id, currency, day)
);

-- Signed requests the RGS rejected, with the request's Timestamp header
-- and our clock when it arrived (§4 clock skew, §3 replays).
CREATE TABLE signature_rejections (
    id          bigserial PRIMARY KEY,
    operator_id text NOT NULL REFERENCES operators (id),
    host        text NOT NULL,
    reason      text NOT NULL,
    request_ts  timestamptz NOT NULL,
    server_ts   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
