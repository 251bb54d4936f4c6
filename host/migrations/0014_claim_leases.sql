-- A claim on an accepted alert is a lease, like a run's: its owner renews
-- it while the alert waits for a run slot, and once it runs out another
-- dispatcher (or the owner's successor) may take the alert. Claims taken
-- before this migration keep the five minutes they had.
ALTER TABLE inbox ADD COLUMN claim_owner TEXT;
ALTER TABLE inbox ADD COLUMN claim_until BIGINT;
UPDATE inbox SET claim_until = claimed_at + 300000 WHERE status = 'dispatching';

-- The accepted alert a server run was started for: an alert dispatched
-- again after a crash finds the run it already started instead of taking
-- it for another alert's, and no alert ever starts two runs of one
-- playbook, whoever dispatches it.
ALTER TABLE runs ADD COLUMN inbox_id TEXT;
CREATE UNIQUE INDEX runs_one_per_alert ON runs (inbox_id, playbook);
