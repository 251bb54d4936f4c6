-- An approval is bound to its plan: what the run read and decided before
-- asking (shown to the approver) and its SHA-256, which every decision
-- records as the plan it approved.
ALTER TABLE approval_requests ADD COLUMN plan TEXT NOT NULL DEFAULT '';
ALTER TABLE approval_requests ADD COLUMN plan_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE approval_decisions ADD COLUMN plan_digest TEXT NOT NULL DEFAULT '';

-- What a re-plan set aside: journal entries read on stale data and the
-- approvals given for the stale plan, as JSON, never deleted.
CREATE TABLE superseded (
    run_id  TEXT NOT NULL,
    replan  INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    record  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX superseded_by_run ON superseded (run_id, replan, seq);
