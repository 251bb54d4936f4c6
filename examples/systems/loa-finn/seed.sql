-- loa-finn seed. Treasury compromise: 40 credit mints in the last 24 h,
-- 25 of them to one account in the last two hours. DLQ overflow: three
-- poison entries; arrakis finalized the first two (api.json) and has no
-- record of the third.

INSERT INTO wal_entries (event_type, account_id, amount_micro, payment_id, created_at)
SELECT 'credit_mint', 'acct-' || (g % 5), 5000000, 'pay-' || g, now() - interval '20 hours' + (interval '10 minutes' * g)
FROM generate_series(1, 15) AS g;
INSERT INTO wal_entries (event_type, account_id, amount_micro, payment_id, created_at)
SELECT 'credit_mint', 'acct-mallory', 200000000, 'pay-m' || g, now() - interval '2 hours' + (interval '2 minutes' * g)
FROM generate_series(1, 25) AS g;
-- Older mints, outside the audit window.
INSERT INTO wal_entries (event_type, account_id, amount_micro, payment_id, created_at)
SELECT 'credit_mint', 'acct-' || (g % 5), 5000000, 'pay-old' || g, now() - interval '3 days'
FROM generate_series(1, 10) AS g;

-- The reserves behind the poison entries (ids 1001..1003).
INSERT INTO wal_entries (id, event_type, account_id, amount_micro, payment_id, created_at) VALUES
    (1001, 'reserve', 'acct-1', 3000000, 'pay-r1', now() - interval '30 minutes'),
    (1002, 'reserve', 'acct-2', 1500000, 'pay-r2', now() - interval '28 minutes'),
    (1003, 'reserve', 'acct-3', 9000000, 'pay-r3', now() - interval '25 minutes');
INSERT INTO held_credits (wal_entry_id, account_id, amount_micro) VALUES
    (1001, 'acct-1', 3000000), (1002, 'acct-2', 1500000), (1003, 'acct-3', 9000000);
INSERT INTO billing_dlq_poison (entry_id, wal_entry_id, error, created_at) VALUES
    ('1732350000000-0', 1001, 'finalize: arrakis timeout', now() - interval '29 minutes'),
    ('1732350060000-0', 1002, 'finalize: arrakis timeout', now() - interval '27 minutes'),
    ('1732350120000-0', 1003, 'finalize: arrakis 502', now() - interval '24 minutes');
SELECT setval('wal_entries_id_seq', 2000);
