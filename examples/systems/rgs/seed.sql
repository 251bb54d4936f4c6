-- RGS seed: the escalation case of each RGS playbook, relative to now().
--   * Stuck rollbacks: both active operators' wallets answer 503 / time out
--     on ROLLBACK (the retry path, or both wallets, are down: SEV1).
--   * Pending job queue: 1,200 WIN jobs of operator op-bravo that no runner
--     has attempted for 40 minutes (the runner is stopped).
--   * Credential leak: op-alpha's key `k-2025-07` signed calls from a new IP
--     in the last 24 hours.

INSERT INTO operators (id, name, compliance_contact, active) VALUES
    ('op-alpha', 'Alpha Casino', 'compliance@alpha.example', true),
    ('op-bravo', 'Bravo Games', 'compliance@bravo.example', true),
    ('op-charlie', 'Charlie Bet (offboarded)', NULL, false);

INSERT INTO operator_credentials (operator_id, kid, created_at, revoked_at) VALUES
    ('op-alpha', 'k-2024-11', now() - interval '400 days', now() - interval '200 days'),
    ('op-alpha', 'k-2025-07', now() - interval '120 days', NULL),
    ('op-bravo', 'k-2025-09', now() - interval '60 days', NULL);

-- Stuck rollbacks: 12 for op-alpha (503), 5 for op-bravo (timeout).
INSERT INTO pending_wallet_jobs (operator_id, endpoint, transaction_uuid, amount_micro, currency, attempts, last_error, last_attempt_at, created_at)
SELECT 'op-alpha', 'ROLLBACK', md5('alpha-rb-' || g)::uuid, 2500000, 'EUR', 9, 'HTTP_503', now() - interval '1 minute', now() - (interval '1 minute' * (10 + g))
FROM generate_series(1, 12) AS g;
INSERT INTO pending_wallet_jobs (operator_id, endpoint, transaction_uuid, amount_micro, currency, attempts, last_error, last_attempt_at, created_at)
SELECT 'op-bravo', 'ROLLBACK', md5('bravo-rb-' || g)::uuid, 1000000, 'USD', 7, 'TIMEOUT', now() - interval '1 minute', now() - (interval '1 minute' * (8 + g))
FROM generate_series(1, 5) AS g;

-- The swamp: 1,200 WIN jobs of op-bravo, last attempted 40 minutes ago.
INSERT INTO pending_wallet_jobs (operator_id, endpoint, transaction_uuid, amount_micro, currency, attempts, last_error, last_attempt_at, created_at)
SELECT 'op-bravo', 'WIN', md5('bravo-win-' || g)::uuid, 500000, 'USD', 3, 'TIMEOUT', now() - interval '40 minutes', now() - interval '45 minutes'
FROM generate_series(1, 1200) AS g;

-- Completed jobs (history).
INSERT INTO pending_wallet_jobs (operator_id, endpoint, transaction_uuid, amount_micro, currency, attempts, created_at, completed_at)
SELECT 'op-alpha', 'BET', md5('alpha-bet-' || g)::uuid, 2500000, 'EUR', 1, now() - interval '3 hours', now() - interval '3 hours'
FROM generate_series(1, 50) AS g;

-- The wallets' answers to the stuck rollbacks.
INSERT INTO wallet_calls (operator_id, endpoint, transaction_uuid, amount_micro, currency, status, response_status, response_body, succeeded, credential_id, source_ip, created_at)
SELECT 'op-alpha', 'ROLLBACK', md5('alpha-rb-' || g)::uuid, 2500000, 'EUR', 'HTTP_503', 503, '{"error":"service unavailable"}', false, 2, '203.0.113.10', now() - interval '1 minute'
FROM generate_series(1, 12) AS g;
INSERT INTO wallet_calls (operator_id, endpoint, transaction_uuid, amount_micro, currency, status, response_status, response_body, succeeded, credential_id, source_ip, created_at)
SELECT 'op-bravo', 'ROLLBACK', md5('bravo-rb-' || g)::uuid, 1000000, 'USD', 'TIMEOUT', NULL, NULL, false, 3, '198.51.100.7', now() - interval '1 minute'
FROM generate_series(1, 5) AS g;

-- op-alpha's key three days ago, from its usual IP.
INSERT INTO wallet_calls (operator_id, endpoint, transaction_uuid, amount_micro, currency, status, response_status, response_body, succeeded, credential_id, source_ip, created_at)
SELECT 'op-alpha', 'BET', md5('alpha-bet3d-' || g)::uuid, 2500000, 'EUR', 'RS_OK', 200, '{"status":"RS_OK"}', true, 2, '203.0.113.10', now() - interval '3 days' + (interval '1 minute' * g)
FROM generate_series(1, 20) AS g;

-- op-alpha's key in the last 24 hours: its usual IP, then a new one.
INSERT INTO wallet_calls (operator_id, endpoint, transaction_uuid, amount_micro, currency, status, response_status, response_body, succeeded, credential_id, source_ip, created_at)
SELECT 'op-alpha', 'BET', md5('alpha-bet24-' || g)::uuid, 2500000, 'EUR', 'RS_OK', 200, '{"status":"RS_OK"}', true, 2, '203.0.113.10', now() - interval '20 hours' + (interval '1 minute' * g)
FROM generate_series(1, 30) AS g;
INSERT INTO wallet_calls (operator_id, endpoint, transaction_uuid, amount_micro, currency, status, response_status, response_body, succeeded, credential_id, source_ip, created_at)
SELECT 'op-alpha', 'BET', md5('alpha-leak-' || g)::uuid, 90000000, 'EUR', 'RS_OK', 200, '{"status":"RS_OK"}', true, 2, '192.0.2.66', now() - interval '2 hours' + (interval '1 minute' * g)
FROM generate_series(1, 8) AS g;

-- Circuit breakers: op-alpha's opened 75 minutes ago on its failing
-- rollbacks, and op-alpha has not acknowledged the outage.
INSERT INTO circuit_breakers (operator_id, state, opened_at, operator_acknowledged_at) VALUES
    ('op-alpha', 'open', now() - interval '75 minutes', NULL),
    ('op-bravo', 'closed', NULL, NULL);

-- The reconcile of 2026-11-22: op-alpha's EUR is ours high by 10 EUR with
-- no unsettled job that day to account for it (MAJOR_DRIFT); op-bravo's
-- USD reconciles.
INSERT INTO reconciliations (operator_id, currency, day, ours_micro, theirs_micro, status) VALUES
    ('op-alpha', 'EUR', '2026-11-22', 1000500000, 990500000, 'MAJOR_DRIFT'),
    ('op-bravo', 'USD', '2026-11-22', 512000000, 512000000, 'OK');

-- Clock skew: op-bravo's pod bravo-2 runs 22 to 24 seconds ahead.
INSERT INTO signature_rejections (operator_id, host, reason, request_ts, server_ts, created_at)
SELECT 'op-bravo', 'bravo-2', 'clock_skew_outside_window', now() - interval '5 minutes' + (interval '1 second' * (22 + g % 3)), now() - interval '5 minutes', now() - interval '5 minutes'
FROM generate_series(1, 40) AS g;
