// FiatRails "Degraded Mode Operations", in JavaScript (it stands alone: no
// Rust original).
//
// - RPC completely down (`RPCCompletelyDown`): confirmed only when neither
//   the provider nor the fallback answers `eth_blockNumber` (one that
//   answers is the failover playbook's case, not this one). Then the
//   incident channel is told, degraded mode is switched on
//   (`FIATRAILS_DEGRADED_MODE=true`: the API accepts intents, stores them
//   and answers webhooks 503) and the status page says minting is
//   unavailable (each approved). When the RPC answers again with degraded
//   mode still on, the same alert's next run switches it off (approved) and
//   leaves the backlog to process on the checklist.
// - Database down (`DatabaseDown`): confirmed when `SELECT 1` fails. Then
//   every write is rejected (`FIATRAILS_READ_ONLY=true`, approved). The
//   runbook's in-memory fallback (`DB_FALLBACK_MODE=memory`: idempotency
//   only until a restart) is never switched on here: a human weighs it.
//
// Flags are read first: a mode already on is not set again.

import { playbook, Description, Fate, Outcome, StepgateError, db, flags, pager, rpc, runbook, step } from './stepgate.js';

const DB = 'fiatrails';
const PRIMARY = 'fiatrails_rpc';
const FALLBACK = 'fiatrails_rpc_fallback';
const DEGRADED = 'FIATRAILS_DEGRADED_MODE';
const PROVIDER = 'FIATRAILS_RPC_PROVIDER';
const READ_ONLY = 'FIATRAILS_READ_ONLY';
const INFRA = 'infrastructure';
const INCIDENTS = 'fiatrails-incidents';
const STATUS = 'fiatrails-status';

/** Whether `endpoint` answers `eth_blockNumber`: the block, or null and why. */
function probe(endpoint) {
  try {
    const block = rpc.call(endpoint, 'eth_blockNumber');
    return typeof block === 'string' ? { block } : { why: `answered ${JSON.stringify(block)}` };
  } catch (e) {
    if (!(e instanceof StepgateError)) throw e;
    return { why: e.message };
  }
}

/** A flag's value, or null when unset or unreadable (then `why`). */
function read(name) {
  try {
    return { value: flags.get(name) };
  } catch (e) {
    if (!(e instanceof StepgateError)) throw e;
    return { value: null, why: e.message };
  }
}

const on = (flag) => flag.value === 'true';

function outcome(summary, severity, fields, checklist) {
  const out = new Outcome(summary).severity(severity);
  for (const [k, v] of Object.entries(fields)) out.field(k, v);
  for (const item of checklist) out.todo(item);
  return out;
}

function rpcDown(alert) {
  const checklist = [];
  const seen = step('Confirm: does any provider answer?', () => ({
    primary: probe(PRIMARY),
    fallback: probe(FALLBACK),
    degraded: read(DEGRADED),
    provider: read(PROVIDER),
  }));
  const answers = ['primary', 'fallback'].filter((p) => 'block' in seen[p]);
  // The provider the API uses (after a failover, the fallback); null when
  // the flag cannot be read or holds neither name.
  let inUse = null;
  if (!seen.provider.why && [null, 'primary'].includes(seen.provider.value)) inUse = 'primary';
  else if (seen.provider.value === 'fallback') inUse = 'fallback';
  if (inUse === null) {
    checklist.push(`${PROVIDER} is ${seen.provider.why ? `unreadable (${seen.provider.why})` : `\`${seen.provider.value}\``}: which provider the API uses is unknown`);
  }
  if (seen.degraded.why) checklist.push(`${DEGRADED} could not be read (${seen.degraded.why}): check it by hand`);
  if (answers.length > 0 && !on(seen.degraded)) {
    return step('Not completely down', () => {
      const summary = `The RPC is not completely down (${answers.join(' and ')} answer${answers.length > 1 ? '' : 's'}): degraded mode stays off; a single provider down is the failover playbook's case`;
      pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
      return outcome(summary, 'WARNING', { degraded_mode: 'off' }, checklist);
    });
  }
  // Degraded mode ends only when the provider the API uses answers (or,
  // when that is unknown, both do).
  const recovered = inUse === null ? answers.length === 2 : answers.includes(inUse);
  if (answers.length > 0 && !recovered) {
    return step('Degraded mode stays on', () => {
      const using = inUse === null ? 'the provider the API uses is unknown' : `the provider the API uses (${inUse}) does not`;
      const summary = `Degraded mode stays on: the ${answers.join(' and ')} answer${answers.length > 1 ? '' : 's'}, but ${using}`;
      pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
      checklist.push(`Point the API at ${answers[0]} (${PROVIDER}=${answers[0]}); this alert's next run then switches degraded mode off`);
      return outcome(summary, 'CRITICAL', { degraded_mode: 'on' }, checklist);
    });
  }
  if (answers.length > 0) {
    return step('Recovery: leave degraded mode', () => {
      pager.notifyOrNote(
        INCIDENTS,
        `FiatRails ${alert.name}: the RPC answers again (${answers.join(', ')}); stepgate asks an approver to switch degraded mode off; decide in stepgate now`,
        checklist,
      );
      const fate = Fate.of(() => flags.set(DEGRADED, 'false', `FiatRails runbook, degraded mode: the RPC answers again (${answers.join(', ')})`));
      if (!fate.passed()) checklist.push(`Degraded mode is NOT off (${fate.whyNot()}): unset DEGRADED_MODE and restart the API by hand`);
      checklist.push('Process the queued intents: node scripts/process-backlog.js, then watch the DLQ');
      checklist.push('Post the all-clear on the status page');
      const summary = `The RPC answers again: degraded mode ${fate.say('switched off')}`;
      pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
      return outcome(summary, 'WARNING', { degraded_mode: fate.say('switched off') }, checklist);
    });
  }
  return step('Degraded mode: accept intents, do not execute', () => {
    const why = `provider: ${seen.primary.why}; fallback: ${seen.fallback.why}`;
    pager.pageOrNote(
      INFRA,
      'critical',
      'FiatRails RPC completely down: minting stops',
      `${why}. stepgate asks an approver to switch degraded mode on and post to the status page; decide in stepgate now`,
      checklist,
    );
    let degraded;
    // Made, planned (a dry run) or already on.
    let isDegraded = on(seen.degraded);
    if (isDegraded) {
      degraded = 'already on';
    } else {
      const fate = Fate.of(() => flags.set(DEGRADED, 'true', `FiatRails runbook, degraded mode: the RPC is completely down (${why})`));
      if (!fate.passed()) checklist.push(`Degraded mode is NOT on (${fate.whyNot()}): export DEGRADED_MODE=true and restart the API by hand`);
      degraded = fate.say('switched on');
      isDegraded = fate.passed();
    }
    // The public post says intents are accepted: only true in degraded mode.
    let posted = null;
    if (isDegraded) {
      posted = Fate.of(() => pager.notify(STATUS, 'Minting is temporarily unavailable: new mint intents are accepted and will be processed when service returns.'));
      if (!posted.passed()) checklist.push(`The status page is NOT updated (${posted.whyNot()}): post "Minting temporarily unavailable" with an ETA by hand`);
    } else {
      checklist.push('The status page is NOT updated: degraded mode is not on, so "intents are accepted" would be false; post an outage notice by hand');
    }
    checklist.push('Give the status page an ETA once the provider gives one');
    checklist.push('When the RPC answers again, this alert\'s next run switches degraded mode off');
    const summary = `The RPC is completely down (${why}): degraded mode ${degraded}; status page ${posted === null ? 'NOT updated (degraded mode is not on)' : posted.say('updated')}`;
    pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
    return outcome(summary, 'CRITICAL', { degraded_mode: degraded }, checklist);
  });
}

function databaseDown(alert) {
  const checklist = [];
  const seen = step('Confirm: does the database answer?', () => {
    let down = null;
    try {
      db.query(DB, 'SELECT 1 AS up');
    } catch (e) {
      if (!(e instanceof StepgateError)) throw e;
      down = e.message;
    }
    return { down, readOnly: read(READ_ONLY) };
  });
  if (seen.down === null && on(seen.readOnly)) {
    return step('Recovery: leave read-only mode', () => {
      pager.notifyOrNote(
        INCIDENTS,
        `FiatRails ${alert.name}: the database answers stepgate again; the operator confirms it is restored and the API's own pool is healthy, then stepgate asks an approver to switch read-only mode off; decide in stepgate now`,
        checklist,
      );
      // One answer to stepgate is not the API's pool, nor a finished
      // restore: a human confirms both before writes come back.
      let ready = false;
      try {
        ready = runbook.confirm("The database is restored (if it needed to be) and the API's own connection pool is healthy?");
      } catch (e) {
        if (!(e instanceof StepgateError)) throw e;
        checklist.push(`The confirmation did not happen (${e.message}): switch read-only off by hand once the database is restored`);
      }
      if (!ready) {
        checklist.push('Switch read-only off once the database is restored and the API reaches it (this alert\'s next run asks again)');
        const summary = 'The FiatRails database answers stepgate, but its restore and the API\'s pool are NOT confirmed: read-only mode stays on';
        pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
        return outcome(summary, 'CRITICAL', { read_only: 'on' }, checklist);
      }
      const fate = Fate.of(() => flags.set(READ_ONLY, 'false', 'FiatRails runbook, degraded mode: the database is restored and the API reaches it'));
      if (!fate.passed()) checklist.push(`Read-only mode is NOT off (${fate.whyNot()}): unset READ_ONLY and restart the API by hand`);
      checklist.push('Check idempotency keys and the DLQ for requests refused while read-only');
      const summary = `The FiatRails database answers again: read-only mode ${fate.say('switched off')}`;
      pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
      return outcome(summary, 'WARNING', { read_only: fate.say('switched off') }, checklist);
    });
  }
  if (seen.down === null) {
    return step('The database answers', () => {
      const state = seen.readOnly.why ? `unknown (${READ_ONLY} unreadable: ${seen.readOnly.why})` : 'off';
      if (seen.readOnly.why) checklist.push(`Check ${READ_ONLY} by hand: the flag store did not answer`);
      const summary = `The FiatRails database answers: read-only mode ${state}`;
      pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}; check the API's own connection pool`, checklist);
      return outcome(summary, 'WARNING', { read_only: seen.readOnly.why ? 'unknown' : 'off' }, checklist);
    });
  }
  return step('Reject all writes', () => {
    pager.pageOrNote(
      INFRA,
      'critical',
      'FiatRails database down: idempotency and the DLQ are unavailable',
      `${seen.down}. stepgate asks an approver to switch the API to read only; decide in stepgate now`,
      checklist,
    );
    let readOnly;
    if (on(seen.readOnly)) {
      readOnly = 'already on';
    } else {
      const fate = Fate.of(() => flags.set(READ_ONLY, 'true', `FiatRails runbook, degraded mode: the database is down (${seen.down})`));
      if (!fate.passed()) checklist.push(`Read-only mode is NOT on (${fate.whyNot()}): export READ_ONLY=true and restart the API by hand`);
      readOnly = fate.say('switched on');
    }
    checklist.push('Restore the database from the latest backup (Database Backup & Restore), then switch read-only off');
    checklist.push('DB_FALLBACK_MODE=memory keeps idempotency only until a restart: a human decides, never this playbook');
    const summary = `The FiatRails database is down (${seen.down}): read-only mode ${readOnly}`;
    pager.notifyOrNote(INCIDENTS, `FiatRails ${alert.name}: ${summary}`, checklist);
    return outcome(summary, 'CRITICAL', { read_only: readOnly }, checklist);
  });
}

export const { describe, run } = playbook({
  describe() {
    return new Description('fiatrails-degraded-mode', '1.0.0')
      .summary(
        'FiatRails degraded mode: with the RPC completely down (provider and fallback), switches degraded mode on ' +
          'and posts to the status page (each approved), and off again once it answers; with the database down, ' +
          'switches the API to read only (approved). Never the in-memory fallback.',
      )
      .answers('RPCCompletelyDown')
      .answers('DatabaseDown')
      .dbRead(DB)
      .rpc(PRIMARY, 'eth_blockNumber')
      .rpc(FALLBACK, 'eth_blockNumber')
      .flagRead(PROVIDER)
      .flagRead(DEGRADED)
      .flagWrite(DEGRADED)
      .flagRead(READ_ONLY)
      .flagWrite(READ_ONLY)
      .page(INFRA)
      .notify(INCIDENTS)
      .notify(STATUS);
  },

  run(alert) {
    if (alert.name === 'DatabaseDown') return databaseDown(alert);
    return rpcDown(alert);
  },
});
