-- Spot exchange seed: the escalation case of each playbook.
--   * Ledger invariant: BTC-USDT and ETH-USDT lag the engine and one
--     transaction double-posted (it does not sum to zero).
--   * Settlement lag: BTC-USDT at 4.2 s (over T3 = 3 s), ETH-USDT at
--     1.6 s (over T2 = 1 s).
--   * Split brain: two nodes of group `majors` hold a live lease.

INSERT INTO ledger_entries (tx_id, account_id, asset, amount, idempotency_key, created_at)
SELECT 'tx-' || g, 'acct-' || (g % 7), 'USDT', 100, 'idem-' || g || '-a', now() - interval '30 minutes'
FROM generate_series(1, 20) AS g;
INSERT INTO ledger_entries (tx_id, account_id, asset, amount, idempotency_key, created_at)
SELECT 'tx-' || g, 'acct-' || ((g + 3) % 7), 'USDT', -100, 'idem-' || g || '-b', now() - interval '30 minutes'
FROM generate_series(1, 20) AS g;
-- tx-21 posted its credit twice (a consumer retry without its key).
INSERT INTO ledger_entries (tx_id, account_id, asset, amount, idempotency_key, created_at) VALUES
    ('tx-21', 'acct-1', 'BTC', 0.5, 'idem-21-a', now() - interval '10 minutes'),
    ('tx-21', 'acct-1', 'BTC', 0.5, 'idem-21-a', now() - interval '10 minutes'),
    ('tx-21', 'acct-4', 'BTC', -0.5, 'idem-21-b', now() - interval '10 minutes');

INSERT INTO engine_positions (symbol, engine_seq, ledger_seq, mode) VALUES
    ('BTC-USDT', 918244, 918231, 'NORMAL'),
    ('ETH-USDT', 512009, 512001, 'NORMAL'),
    ('SOL-USDT', 77120, 77120, 'NORMAL');

INSERT INTO settlement_lag (symbol, lag_ms_p99, measured_at) VALUES
    ('BTC-USDT', 4200, now() - interval '1 minute'),
    ('ETH-USDT', 1600, now() - interval '1 minute'),
    ('SOL-USDT', 300, now() - interval '1 minute'),
    ('BTC-USDT', 900, now() - interval '2 hours');

INSERT INTO ops_policy (name, value) VALUES
    ('settlement_lag_t2_ms', 1000),
    ('settlement_lag_t3_ms', 3000);

INSERT INTO kafka_consumer_lag (consumer, partition, lag, errors_5m) VALUES
    ('ledger', 0, 18000, 0), ('ledger', 1, 22000, 3), ('analytics', 0, 900000, 0);

INSERT INTO engine_leases (node, symbol_group, fencing_token, durable_seq, lease_until) VALUES
    ('engine-a', 'majors', 42, 918244, now() + interval '20 seconds'),
    ('engine-b', 'majors', 41, 918240, now() + interval '15 seconds'),
    ('engine-c', 'alts', 17, 77120, now() + interval '20 seconds');

-- Kafka has been down for 4 minutes: 1,800 events wait in the outbox.
INSERT INTO outbox (topic, payload, created_at, published_at)
SELECT 'trades', jsonb_build_object('seq', g), now() - interval '4 minutes' + (interval '100 milliseconds' * g), NULL
FROM generate_series(1, 1800) AS g;
