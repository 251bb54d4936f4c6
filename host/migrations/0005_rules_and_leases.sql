-- Per-write approval rules: what each request needs (quorum, groups,
-- timeout and what it means, escalation chain) as JSON, and how far its
-- escalation has gone. Principals belong to groups (a JSON list).
ALTER TABLE approval_requests ADD COLUMN requirement TEXT NOT NULL DEFAULT '{}';
ALTER TABLE approval_requests ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE principals ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';

-- Leases: the host running a run renews `lease_until` (ms since the epoch)
-- while it runs. A `running` run whose lease ran out lost its host, and
-- another host may take it over.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;
