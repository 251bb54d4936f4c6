-- An accepted alert is claimed by the dispatcher that handles it
-- (`dispatching`, since `claimed_at`), so replicas and retries never
-- dispatch it twice; a claim older than a few minutes is a crashed host's
-- and may be taken again.
ALTER TABLE inbox ADD COLUMN claimed_at BIGINT;

-- A run being re-planned (`stale`, for a moment) is still the open run of
-- its alert.
DROP INDEX IF EXISTS runs_one_open_per_fingerprint;
CREATE UNIQUE INDEX runs_one_open_per_fingerprint ON runs (fingerprint, playbook)
    WHERE fingerprint IS NOT NULL AND status IN ('running', 'parked', 'in-doubt', 'stale');
