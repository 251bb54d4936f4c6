-- Whole plans: when a live run parks on its first write, a dry run of the
-- rest of it lists the writes it would go on to make (`writes`, JSON, in
-- order, from `from_seq`); approvers may approve the list as one
-- (`plan_approvals`), valid while the run makes exactly those writes.
CREATE TABLE run_plans (
    digest          TEXT PRIMARY KEY NOT NULL,
    run_id          TEXT NOT NULL,
    from_seq        BIGINT NOT NULL,
    request_digest  TEXT NOT NULL,
    writes          TEXT NOT NULL,
    ended           TEXT NOT NULL,
    at              BIGINT NOT NULL
);
CREATE INDEX run_plans_by_run ON run_plans (run_id, from_seq);

CREATE TABLE plan_approvals (
    digest     TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    principal  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (digest, principal)
);
