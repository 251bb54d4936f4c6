// FiatRails: DLQGrowing (CRITICAL: the DLQ has > 10 items for 5+ min), in
// JavaScript.
//
// The same playbook as `playbooks/fiatrails-dlq` (Rust), written with the
// JavaScript SDK: it runs the Rust version's scenarios and must decide
// exactly as it does (tests/tests/languages.rs enforces it).
//
// Codifies the runbook's alert response and its "Dead-Letter Queue
// Processing" section:
// - Diagnosis: read the DLQ items (with each intent's user); which RPC
//   provider does the API use now (FIATRAILS_RPC_PROVIDER), and does it
//   answer (`eth_blockNumber`)?
// - Classify each item by its last error: RPC down or a nonce issue → safe
//   to retry; user not compliant → re-checked (`isCompliant` on the
//   UserRegistry: attestations lag); a contract bug → wait for the fix.
// - Remediation: the incident channel is told first. While the RPC is down
//   nothing is replayed and nobody is marked failed. Otherwise the safe
//   items and the users compliant again are replayed in one bulk replay
//   (approved), and the items of users still not compliant are marked
//   failed (one approved database write, by item id).

import { playbook, Description, Fate, Outcome, StepgateError, db, flags, http, pager, rpc, step } from './stepgate.js';

const DB = 'fiatrails';
const PRIMARY = 'fiatrails_rpc';
const FALLBACK = 'fiatrails_rpc_fallback';
const PROVIDER = 'FIATRAILS_RPC_PROVIDER';
const ADMIN = 'fiatrails_admin';
const REPLAY = '/admin/dlq/replay';
const INCIDENTS = 'fiatrails-incidents';
const IS_COMPLIANT = '0xa200e5d0';

const OPEN_ITEMS =
  'SELECT d.id, d.last_error, m.user_address FROM dlq_items d ' +
  'LEFT JOIN mint_intents m ON m.intent_id = d.intent_id ' +
  "WHERE d.status = 'open' ORDER BY d.created_at LIMIT 500";
const MARK_FAILED =
  "UPDATE dlq_items SET status = 'failed' " + "WHERE status = 'open' AND id = ANY(string_to_array($1, ','))";

/** The alert's threshold (items) unless it says otherwise. */
const DEFAULT_THRESHOLD = 10;

/** The classes, in the order the runbook treats them. */
const Class = Object.freeze({
  RETRY: 'retry', // RPC was down, or a nonce issue since resolved: safe to retry.
  PERMANENT: 'permanent', // The user was not compliant: re-checked.
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

const isAddress = (hex) => hex.length === 40 && /^[0-9a-fA-F]*$/.test(hex);

/** A JSON-RPC read whose result must be a string, as Rust's
 *  `rpc::call::<String>` decodes it: `{ ok }` or `{ err }`. */
function callString(endpoint, method, params) {
  try {
    const result = rpc.call(endpoint, method, params);
    if (typeof result !== 'string') {
      throw new StepgateError('invalid', `JSON: invalid type: ${JSON.stringify(result)}, expected a string`);
    }
    return { ok: result };
  } catch (e) {
    if (!(e instanceof StepgateError)) throw e;
    return { err: e.message };
  }
}

/** The provider the API uses now, and whether it answers. */
function probe() {
  let endpoint = PRIMARY;
  let unsure = null;
  try {
    const p = flags.get(PROVIDER);
    if (p === 'fallback') endpoint = FALLBACK;
    else if (p !== null && p !== 'primary') unsure = `${PROVIDER} is \`${p}\`, neither primary nor fallback`;
  } catch (e) {
    if (!(e instanceof StepgateError)) throw e;
    unsure = `${PROVIDER} could not be read (${e.message})`;
  }
  return { endpoint, block: callString(endpoint, 'eth_blockNumber'), unsure };
}

const up = (rpcState) => 'ok' in rpcState.block;

/** Whether `user` is compliant now: `{ ok: bool }` or `{ err }`. */
function compliant(rpcState, registry, user) {
  const hex = user.startsWith('0x') ? user.slice(2) : user;
  if (!isAddress(hex)) return { err: `\`${user}\` is not an address` };
  const call = { to: registry, data: `${IS_COMPLIANT}${hex.toLowerCase().padStart(64, '0')}` };
  const word = callString(rpcState.endpoint, 'eth_call', [call, 'latest']);
  if ('err' in word) return word;
  // Exactly one 32-byte word, 0 or 1: an empty `0x` is not a "no".
  const hexWord = word.ok.startsWith('0x') ? word.ok.slice(2) : '';
  if (hexWord.length !== 64 || !/^[0-9a-fA-F]*$/.test(hexWord)) {
    return {
      err: `isCompliant answered \`${word.ok}\`, not one 32-byte word (is \`user_registry\` the UserRegistry on this network?)`,
    };
  }
  const digits = hexWord.replace(/^0+/, '');
  if (digits === '') return { ok: false };
  if (digits === '1') return { ok: true };
  return { err: `isCompliant answered \`${word.ok}\`, not a boolean` };
}

/** The UserRegistry from the alert's `user_registry` label. */
function registry(alert) {
  const value = alert.label('user_registry');
  if (value === null) {
    return { err: 'the alert has no `user_registry` label (add the UserRegistry\'s address to the alert rule)' };
  }
  const hex = value.startsWith('0x') ? value.slice(2) : '';
  if (isAddress(hex)) return { ok: value.toLowerCase() };
  return { err: `\`user_registry\` = \`${value}\` is not an address` };
}

/** Re-checks every item refused as not compliant; nothing is marked
 *  failed without a fresh `false` from the UserRegistry. */
function recheck(alert, rpcState, byClass, checklist) {
  const out = { retry: byClass.get(Class.RETRY).map((i) => i.id), failed: [], again: 0, held: 0 };
  const refused = byClass.get(Class.PERMANENT);
  if (refused.length === 0) return out;
  if (!up(rpcState)) {
    out.held = refused.length;
    return out;
  }
  const reg = registry(alert);
  if ('err' in reg) {
    checklist.push(
      `${refused.length} item(s) failed as not compliant and were NOT re-checked: ${reg.err}; re-check with isCompliant(address) before marking them failed`,
    );
    out.held = refused.length;
    return out;
  }
  for (const item of refused) {
    let answer;
    if (item.id.includes(',')) answer = { err: 'its id contains a comma' };
    else if (item.user === null) answer = { err: 'its intent has no user address' };
    else answer = compliant(rpcState, reg.ok, item.user);
    if ('err' in answer) {
      out.held += 1;
      checklist.push(`${item.id}: compliance NOT re-checked (${answer.err}); check isCompliant by hand before marking it failed`);
    } else if (answer.ok) {
      out.again += 1;
      out.retry.push(item.id);
    } else {
      out.failed.push(item.id);
    }
  }
  return out;
}

export const { describe, run } = playbook({
  describe() {
    return new Description('fiatrails-dlq', '1.0.0')
      .summary(
        'FiatRails DLQGrowing: classifies the dead-letter items by their last error, ' +
          're-checks the compliance of users refused as not compliant, replays the safe ones ' +
          'in one approved bulk replay once the RPC provider the API uses answers, marks the ' +
          'users still not compliant failed, and leaves contract bugs for the fix.',
      )
      .answers('DLQGrowing')
      .dbRead(DB)
      .dbWrite(DB)
      .flagRead(PROVIDER)
      .rpc(PRIMARY, 'eth_blockNumber')
      .rpc(PRIMARY, 'eth_call')
      .rpc(FALLBACK, 'eth_blockNumber')
      .rpc(FALLBACK, 'eth_call')
      .http(ADMIN, `POST ${REPLAY}`)
      .notify(INCIDENTS);
  },

  run(alert) {
    // As Rust's `u64::from_str`: digits after an optional `+`, within 64 bits.
    const annotated = alert.annotation('threshold');
    const threshold =
      annotated !== null && /^\+?\d+$/.test(annotated) && BigInt(annotated) < 2n ** 64n
        ? BigInt(annotated)
        : BigInt(DEFAULT_THRESHOLD);
    const [items, rpcState] = step('Diagnosis', () => {
      const items = [...db.query(DB, OPEN_ITEMS)].map((row) => {
        const user = row.get('user_address');
        return { id: row.text('id'), lastError: row.text('last_error'), user: user === null ? null : row.text('user_address') };
      });
      return [items, probe()];
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
        .field('rpc_up', up(rpcState))
        .field('rpc_provider', rpcState.endpoint);
    if (BigInt(items.length) <= threshold) {
      return base(
        `${items.length} item(s) in the DLQ, not over ${threshold}: the auto-retry is draining it`,
      ).severity('WARNING');
    }
    const checklist = [];
    if (rpcState.unsure !== null) {
      checklist.push(`Which RPC provider the API uses is not known (${rpcState.unsure}); stepgate probed ${rpcState.endpoint}`);
    }
    const { retry, failed, again, held } = step('Re-check compliance', () => recheck(alert, rpcState, byClass, checklist));
    return step('Remediation', () => {
      if (up(rpcState) && (retry.length > 0 || failed.length > 0)) {
        // The humans first: both writes wait for an approver.
        const asks = [];
        if (retry.length > 0) asks.push(`replay ${retry.length} item(s)`);
        if (failed.length > 0) asks.push(`mark ${failed.length} failed (users still not compliant)`);
        try {
          pager.notify(
            INCIDENTS,
            `CRITICAL DLQGrowing (alert ${alert.name}): stepgate asks an approver to ${asks.join(' and ')}; decide in stepgate now`,
          );
        } catch (e) {
          if (!(e instanceof StepgateError)) throw e;
          checklist.push(`${INCIDENTS} was NOT told before the approvals (${e.message}): tell them`);
        }
      }
      let marked = null;
      let markedRows = 0n;
      if (failed.length > 0) {
        const reason = `FiatRails runbook, Dead-Letter Queue Processing: ${failed.length} item(s) failed as \`User not compliant\` and the UserRegistry still says not compliant; mark them failed`;
        marked = Fate.of(() => db.execute(DB, MARK_FAILED, [failed.join(',')], reason));
        // The rows it changed: an item the auto-retry resolved meanwhile is no longer open.
        markedRows = marked.passed() ? BigInt(marked.value ?? 0n) : 0n;
        if (marked.whyNot() !== null) {
          checklist.push(`Marking ${failed.join(', ')} failed was not done (${marked.whyNot()}): do it by hand`);
        } else {
          if (markedRows < BigInt(failed.length)) {
            checklist.push(`Only ${markedRows} of ${failed.length} item(s) were still open to mark failed: check the others' status`);
          }
          checklist.push('Notify the users no longer compliant, and refund their intents (refundIntent, operator key)');
        }
      }
      let replayed = null;
      if (!up(rpcState)) {
        checklist.unshift(
          `Fix the RPC first (${rpcState.endpoint} does not answer: ${rpcState.block.err}; see HighRPCErrorRate), then replay the ${retry.length} safe item(s) and re-check the ${count(Class.PERMANENT)} not compliant`,
        );
      } else if (retry.length > 0) {
        const reason = `FiatRails runbook, DLQGrowing remediation 3 / bulk replay: ${retry.length} item(s) failed on RPC or nonce errors or are compliant again, and ${rpcState.endpoint} answers (block ${rpcState.block.ok}); replay them`;
        replayed = Fate.ofHttp(() => http.post(ADMIN, REPLAY, { item_ids: retry }, reason));
        if (replayed.whyNot() !== null) {
          checklist.push(`The bulk replay was not done (${replayed.whyNot()}): replay by hand (node scripts/replay-dlq.js)`);
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
      // What was done, from each write's own result.
      let replaySaid;
      if (replayed !== null) replaySaid = replayed.say('replayed');
      else replaySaid = up(rpcState) ? 'nothing to send' : 'held: the RPC is down';
      let markedSaid = 'none marked failed';
      if (marked !== null && marked.passed() && markedRows < BigInt(failed.length)) {
        markedSaid = `only ${markedRows} ${marked.say('marked failed')}`;
      } else if (marked !== null) {
        markedSaid = marked.say('marked failed');
      }
      const summary =
        `${items.length} DLQ item(s): ${retry.length} to replay, ${replaySaid}; ` +
        `${count(Class.PERMANENT)} refused as not compliant: ${again} compliant again, ${held} not re-checked, ${failed.length} still not, ${markedSaid}; ` +
        `${count(Class.WAIT_FOR_FIX)} waiting for a contract fix; ${count(Class.UNKNOWN)} unknown`;
      pager.notifyOrNote(INCIDENTS, `CRITICAL DLQGrowing (alert ${alert.name}): ${summary}`, checklist);
      // Counts of what passed: made, or planned in a dry run.
      const passed = (fate, n) => (fate !== null && fate.passed() ? n : 0);
      const outcome = base(summary)
        .field('replayed', passed(replayed, retry.length))
        .field('marked_failed', marked !== null && marked.passed() ? markedRows : 0n)
        .field('compliant_again', again);
      for (const item of checklist) outcome.todo(item);
      return outcome;
    });
  },
});
