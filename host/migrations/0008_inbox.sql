-- Alerts accepted by `stepgate serve`, stored before the hook answers 2xx:
-- nothing accepted is lost across a restart. `status`: new (not yet
-- dispatched), started, attached (to an open run of the same
-- fingerprint), unrouted, resolved.
CREATE TABLE inbox (
    id           TEXT PRIMARY KEY NOT NULL,
    received_at  BIGINT NOT NULL,
    source       TEXT NOT NULL,
    alert        TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL,
    run_ids      TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX inbox_by_status ON inbox (status, received_at);

-- The alert a run answers (dedup: one open run per fingerprint and
-- playbook), and when that alert resolved.
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
ALTER TABLE runs ADD COLUMN resolved_at BIGINT;
CREATE INDEX runs_by_fingerprint ON runs (fingerprint, playbook, status);
