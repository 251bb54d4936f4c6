-- One open run per alert fingerprint and playbook, whichever replica
-- started it: a second replica's insert fails, and its alert joins the
-- open run instead. A run in doubt counts as open: a new run must not
-- make its write again before an operator resolves it.
CREATE UNIQUE INDEX runs_one_open_per_fingerprint ON runs (fingerprint, playbook)
    WHERE fingerprint IS NOT NULL AND status IN ('running', 'parked', 'in-doubt');
