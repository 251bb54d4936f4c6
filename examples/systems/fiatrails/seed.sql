-- FiatRails seed: the DLQGrowing escalation case. 14 items in the DLQ:
-- 9 failed while the RPC was down (safe to retry), 2 on a nonce issue
-- (safe to retry), 2 for users no longer compliant (permanent), 1 on a
-- contract revert (waits for a fix).

INSERT INTO mint_intents (intent_id, user_address, amount_kes, status, created_at)
SELECT '0x' || lpad(to_hex(g), 64, '0'), '0x' || lpad(to_hex(1000 + g), 40, '0'), 1500.00 + g, 'pending', now() - interval '30 minutes'
FROM generate_series(1, 14) AS g;

INSERT INTO dlq_items (id, operation, intent_id, attempts, last_error, payload, created_at)
SELECT 'dlq-' || lpad(g::text, 3, '0'), 'executeMint', '0x' || lpad(to_hex(g), 64, '0'), 5,
       CASE WHEN g <= 9 THEN 'RPC timeout'
            WHEN g <= 11 THEN 'nonce too low'
            WHEN g <= 13 THEN 'User not compliant'
            ELSE 'execution reverted: Escrow: bad state' END,
       '{"intentId":"0x' || lpad(to_hex(g), 64, '0') || '"}', now() - interval '20 minutes' + (interval '1 minute' * g)
FROM generate_series(1, 14) AS g;

-- A planned HMAC rotation, four days into its seven-day transition; both
-- secrets still verify requests.
INSERT INTO hmac_rotations (reason, old_secret_ref, new_secret_ref, phase, started_at, revoke_after) VALUES
    ('scheduled', 'fiatrails/hmac-secret-v1', 'fiatrails/hmac-secret-v2', 'dual', now() - interval '4 days', now() + interval '3 days');
INSERT INTO hmac_verification_counts (secret_ref, hour, verifications) VALUES
    ('fiatrails/hmac-secret-v1', date_trunc('hour', now()) - interval '2 hours', 310),
    ('fiatrails/hmac-secret-v2', date_trunc('hour', now()) - interval '2 hours', 4120);
