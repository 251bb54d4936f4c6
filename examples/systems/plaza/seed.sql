-- A clean ledger (every account sums to zero) and 12,500 USDC held in
-- escrow. Whether the drift against the hot wallet is explained depends on
-- the chain: see rpc-fixture.json and the two alert payloads.

INSERT INTO ledger_entries (txn_id, account_id, amount, direction, created_at) VALUES
  ('t-1001', 'order:1001', 4000000000,  1, '2026-11-22T10:00:00Z'),
  ('t-1001', 'order:1001', 4000000000, -1, '2026-11-22T10:00:05Z'),
  ('t-1002', 'order:1002', 6500000000,  1, '2026-11-22T11:30:00Z'),
  ('t-1002', 'order:1002', 6500000000, -1, '2026-11-22T11:30:04Z'),
  ('t-1003', 'order:1003', 2000000000,  1, '2026-11-23T07:15:00Z'),
  ('t-1003', 'order:1003', 2000000000, -1, '2026-11-23T07:15:03Z'),
  ('t-0990', 'order:0990', 1250000000,  1, '2026-11-20T09:00:00Z'),
  ('t-0990', 'order:0990', 1250000000, -1, '2026-11-20T09:00:02Z');

INSERT INTO escrow_holds (order_id, amount, state, created_at) VALUES
  ('order:1001', 4000000000, 'held',     '2026-11-22T10:00:05Z'),
  ('order:1002', 6500000000, 'held',     '2026-11-22T11:30:04Z'),
  ('order:1003', 2000000000, 'held',     '2026-11-23T07:15:03Z'),
  ('order:0990', 1250000000, 'released', '2026-11-20T09:00:02Z');
