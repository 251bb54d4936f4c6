-- A clean ledger (every account sums to zero) and 12,500 USDC held in
-- escrow. Whether the drift against the hot wallet is explained depends on
-- the chain: see rpc-fixture.json and the two alert payloads. Ids are
-- explicit so the same file loads into SQLite and PostgreSQL.

INSERT INTO ledger_entries (id, txn_id, account_id, amount, direction, created_at) VALUES
  (1, 't-1001', 'order:1001', 4000000000,  1, '2026-11-22T10:00:00Z'),
  (2, 't-1001', 'order:1001', 4000000000, -1, '2026-11-22T10:00:05Z'),
  (3, 't-1002', 'order:1002', 6500000000,  1, '2026-11-22T11:30:00Z'),
  (4, 't-1002', 'order:1002', 6500000000, -1, '2026-11-22T11:30:04Z'),
  (5, 't-1003', 'order:1003', 2000000000,  1, '2026-11-23T07:15:00Z'),
  (6, 't-1003', 'order:1003', 2000000000, -1, '2026-11-23T07:15:03Z'),
  (7, 't-0990', 'order:0990', 1250000000,  1, '2026-11-20T09:00:00Z'),
  (8, 't-0990', 'order:0990', 1250000000, -1, '2026-11-20T09:00:02Z');

INSERT INTO escrow_holds (id, order_id, amount, state, created_at) VALUES
  (1, 'order:1001', 4000000000, 'held',     '2026-11-22T10:00:05Z'),
  (2, 'order:1002', 6500000000, 'held',     '2026-11-22T11:30:04Z'),
  (3, 'order:1003', 2000000000, 'held',     '2026-11-23T07:15:03Z'),
  (4, 'order:0990', 1250000000, 'released', '2026-11-20T09:00:02Z');

-- One release the resolver service made on the escrow.
INSERT INTO contract_releases (id, escrow, order_id, recipient, amount, released_at) VALUES
  (1, '0x4e0c2a7b1f6e3d5a9b8c7d6e5f4a3b2c1d0e9f8a', '0x00000000000000000000000000000000000000000000000000000000000003f2', '0x3b9f2c1d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c', 2000000000, '2026-11-23T07:20:00Z');

-- A dispute open since 08:40 without a verdict; its arbitration.run job
-- failed three times on the LLM provider.
INSERT INTO disputes (urn, order_id, opened_at, verdict, screener_flagged, acknowledged_at) VALUES
  ('urn:plaza:dispute:7001', 'order:1002', '2026-11-23T08:40:00Z', NULL, FALSE, NULL);
INSERT INTO arbitration_jobs (id, dispute_urn, state, attempts, last_error, enqueued_at) VALUES
  (1, 'urn:plaza:dispute:7001', 'failed', 3, 'LLM provider: 529 overloaded', '2026-11-23T08:40:02Z');

-- Nightly backups: the last two succeeded, tonight's has not run yet.
INSERT INTO backup_runs (id, started_at, finished_at, succeeded, error, object_key) VALUES
  (1, '2026-11-22T02:00:00Z', '2026-11-22T02:06:10Z', TRUE, NULL, 'pg/2026-11-22.sql.age'),
  (2, '2026-11-23T02:00:00Z', '2026-11-23T02:06:40Z', TRUE, NULL, 'pg/2026-11-23.sql.age');
