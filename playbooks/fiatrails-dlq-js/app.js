// FiatRails: DLQGrowing (CRITICAL: the DLQ has > 10 items for 5+ min), in
// JavaScript.
//
// The same playbook as `playbooks/fiatrails-dlq` (Rust), written with the
// JavaScript SDK: it runs the Rust version's scenarios and must decide
// exactly as it does (tests/tests/languages.rs enforces it).
//
// Codifies the runbook's alert response and its "Dead-Letter Queue
// Processing" section:
// - Diagnosis: read the DLQ items; is the RPC up (`eth_blockNumber`)?
// - Classify each item by its last error: RPC down or a nonce issue → safe
//   to retry; user not compliant → permanent (mark failed, a human tells
//   the user and refunds the intent); a contract bug → wait for the fix.
// - Remediation: fix the RPC first: while it is down nothing is replayed.
//   Otherwise the safe items are replayed in one bulk replay (the admin
//   API's `replay-dlq`, approved), and the permanent ones are marked failed
//   (a database write, approved).

import { playbook, byCodePoint, Description, Outcome, StepgateError, db, http, pager, rpc, step } from './stepgate.js';

const DB = 'fiatrails';
const RPC = 'fiatrails_rpc';
const ADMIN = 'fiatrails_admin';
const REPLAY = '/admin/dlq/replay';
const INCIDENTS = 'fiatrails-incidents';

const OPEN_ITEMS =
  'SELECT id, operation, intent_id, attempts, last_error FROM dlq_items ' +
  "WHERE status = 'open' ORDER BY created_at LIMIT 500";
const MARK_FAILED = "UPDATE dlq_items SET status = 'failed' WHERE status = 'open' AND last_error = $1";

/** The alert's threshold (items) unless it says otherwise. */
const DEFAULT_THRESHOLD = 10;

/** The classes, in the order the runbook treats them. */
const Class = Object.freeze({
  RETRY: 'retry', // RPC was down, or a nonce issue since resolved: safe to retry.
  PERMANENT: 'permanent', // The user is not compliant.
  WAIT_FOR_FIX: 'wait-for-fix', // A contract bug: wait for the upgrade.
  UNKNOWN: 'unknown', // Nobody knows: a human looks.
});

function classify(error) {
  const e = error.toLowerCase();
  if (e.includes('not compliant')) return Class.PERMANENT;
  if (e.includes('rpc') || e.includes('timeout') || e.includes('nonce')) return Class.RETRY;
  if (e.includes('revert') || e.includes('contract')) return Class.WAIT_FOR_FIX;
  return Class.UNKNOWN;
}

export const { describe, run } = playbook({
  describe() {
    return new Description('fiatrails-dlq', '1.0.0')
      .summary(
        'FiatRails DLQGrowing: classifies the dead-letter items by their last error, replays ' +
          'the safe ones in one approved bulk replay once the RPC answers, marks permanent ' +
          'failures (users no longer compliant) failed, and leaves contract bugs for the fix.',
      )
      .answers('DLQGrowing')
      .dbRead(DB)
      .dbWrite(DB)
      .rpc(RPC, 'eth_blockNumber')
      .http(ADMIN, `POST ${REPLAY}`)
      .notify(INCIDENTS);
  },

  run(alert) {
    // As Rust's `usize::from_str`: digits after an optional `+`, within 64 bits.
    const annotated = alert.annotation('threshold');
    const threshold =
      annotated !== null && /^\+?\d+$/.test(annotated) && BigInt(annotated) < 2n ** 64n
        ? BigInt(annotated)
        : BigInt(DEFAULT_THRESHOLD);
    const [items, rpcUp] = step('Diagnosis', () => {
      const items = [...db.query(DB, OPEN_ITEMS)].map((row) => ({
        id: row.text('id'),
        lastError: row.text('last_error'),
      }));
      // The block number is a hex string; anything else means the node
      // is not answering properly (the Rust original decodes a String).
      let probe;
      try {
        const block = rpc.call(RPC, 'eth_blockNumber');
        if (typeof block !== 'string') {
          throw new StepgateError('invalid', `JSON: invalid type: ${JSON.stringify(block)}, expected a string`);
        }
        probe = { ok: block };
      } catch (e) {
        if (!(e instanceof StepgateError)) throw e;
        probe = { err: e.message };
      }
      return [items, probe];
    });
    const byClass = new Map(Object.values(Class).map((c) => [c, []]));
    for (const item of items) byClass.get(classify(item.lastError)).push(item);
    const count = (c) => byClass.get(c).length;
    const base = (summary) =>
      new Outcome(summary)
        .severity('CRITICAL')
        .field('dlq_depth', items.length)
        .field('safe_to_retry', count(Class.RETRY))
        .field('permanent', count(Class.PERMANENT))
        .field('wait_for_fix', count(Class.WAIT_FOR_FIX))
        .field('unknown', count(Class.UNKNOWN))
        .field('rpc_up', 'ok' in rpcUp);
    if (BigInt(items.length) <= threshold) {
      return base(
        `${items.length} item(s) in the DLQ, not over ${threshold}: the auto-retry is draining it`,
      ).severity('WARNING');
    }
    return step('Remediation', () => {
      const checklist = [];
      let replayed = 0;
      let marked = 0n;
      // Permanent failures do not depend on the RPC.
      const permanentErrors = [...new Set(byClass.get(Class.PERMANENT).map((i) => i.lastError))].sort(byCodePoint);
      for (const error of permanentErrors) {
        const reason = `FiatRails runbook, Dead-Letter Queue Processing: \`${error}\` is permanent; mark those items failed`;
        try {
          marked += db.execute(DB, MARK_FAILED, [error], reason);
        } catch (e) {
          if (!(e instanceof StepgateError && e.isDenied())) throw e;
          checklist.push(`Marking \`${error}\` items failed was refused (${e.message})`);
        }
      }
      if (marked > 0n) {
        checklist.push('Notify the users no longer compliant, and refund their intents (refundIntent, operator key)');
      }
      const retry = byClass.get(Class.RETRY).map((i) => i.id);
      if ('err' in rpcUp) {
        checklist.unshift(
          `Fix the RPC first (it does not answer: ${rpcUp.err}; see HighRPCErrorRate), then replay the ${retry.length} safe item(s)`,
        );
      } else if (retry.length > 0) {
        const reason = `FiatRails runbook, DLQGrowing remediation 3 / bulk replay: ${retry.length} item(s) failed on RPC or nonce errors and the RPC answers again (block ${rpcUp.ok}); replay them`;
        try {
          const answer = http.post(ADMIN, REPLAY, { item_ids: retry }, reason);
          if (answer.ok()) {
            replayed = retry.length;
          } else {
            checklist.push(`The bulk replay answered ${answer.status}: replay by hand (node scripts/replay-dlq.js)`);
          }
        } catch (e) {
          if (!(e instanceof StepgateError && e.isDenied())) throw e;
          checklist.push(`The bulk replay was refused (${e.message})`);
        }
      }
      if (count(Class.WAIT_FOR_FIX) > 0) {
        checklist.push(
          `${count(Class.WAIT_FOR_FIX)} item(s) hit a contract bug: they wait for the upgrade; check the intent status on-chain (getIntentStatus) before any replay`,
        );
      }
      if (count(Class.UNKNOWN) > 0) {
        checklist.push(`${count(Class.UNKNOWN)} item(s) with an unknown error: inspect them by hand`);
      }
      checklist.push('Watch the DLQ depth for the next hour; the auto-retry runs every 10 minutes');
      const summary =
        `${items.length} DLQ item(s): ${retry.length} safe to retry (${replayState(rpcUp, retry.length, replayed)}), ` +
        `${count(Class.PERMANENT)} permanent (marked failed: ${marked}), ${count(Class.WAIT_FOR_FIX)} waiting for a contract fix, ` +
        `${count(Class.UNKNOWN)} unknown`;
      pager.notify(INCIDENTS, `CRITICAL DLQGrowing (alert ${alert.name}): ${summary}`);
      const outcome = base(summary).field('replayed', replayed).field('marked_failed', marked);
      for (const item of checklist) outcome.todo(item);
      return outcome;
    });
  },
});

// What happened to the safe items, from the replay's own result.
function replayState(rpcUp, safe, replayed) {
  if (!('ok' in rpcUp)) return 'held: the RPC is down';
  if (safe === 0) return 'none to replay';
  return replayed > 0 ? 'replayed' : 'NOT replayed';
}
