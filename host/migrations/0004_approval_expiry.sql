-- An approval request may expire: undecided past this time (ms since the
-- Unix epoch) it counts as denied. NULL: it waits as long as it takes.
ALTER TABLE approval_requests ADD COLUMN expires_at BIGINT;
