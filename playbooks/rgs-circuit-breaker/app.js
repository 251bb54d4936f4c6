// RGS §5 "Circuit breaker tripped for an operator" and §10 "Operator wallet
// down > 10 min", in JavaScript (it stands alone: no Rust original).
//
// §10's signal is §5's breaker left open, so one playbook answers both
// alerts and decides by how long the breaker has been open:
//
// - Triage (§5): why did it open? The operator's last 20 failed wallet
//   calls, by endpoint: every endpoint failing with 5xx or timeouts is the
//   wallet down; one endpoint failing with answers the operator means as
//   valid (a 2xx or 4xx with a body) is our retry classifier mistreating
//   them; a handful of failures is a flap.
// - Wallet down: the breaker stays open (nothing here closes it); the
//   operator is told on `rgs-operators`. Open 10 minutes or more (§10): the
//   pending winners are counted, `rgs-incidents` told, and the
//   operator-portal's incident banner posted (approved), so support can
//   forward it to players. Open an hour or more with no acknowledgement
//   from the operator: their compliance contact is asked for, and on-call
//   paged.
// - Classifier: on-call is paged to patch it (a hotfix per
//   change-management §4); flap: the threshold change is a regated change,
//   on the checklist.

import { playbook, Description, Fate, Outcome, StepgateError, db, http, pager, step } from './stepgate.js';

const DB = 'rgs';
const ADMIN = 'rgs_admin';
const BANNER = '/admin/operators/banner';
const ONCALL = 'rgs-oncall';
const INCIDENTS = 'rgs-incidents';
const OPERATORS = 'rgs-operators';

/** §10: a wallet down this long gets the banner (the runbook's 10 min). */
const WALLET_DOWN_MINUTES = 10;
/** §10: unacknowledged this long, the operator's compliance contact. */
const ESCALATE_MINUTES = 60;
/** Fewer failed calls than this behind an open breaker: a flap. */
const FLAP_FAILURES = 5;

const BREAKER =
  'SELECT b.state, EXTRACT(EPOCH FROM now() - b.opened_at)::bigint AS open_seconds, ' +
  'b.operator_acknowledged_at IS NOT NULL AS acknowledged, o.name, o.compliance_contact ' +
  'FROM circuit_breakers b JOIN operators o ON o.id = b.operator_id WHERE b.operator_id = $1';
const FAILED_CALLS =
  'SELECT endpoint, response_status, response_body IS NOT NULL AS answered FROM wallet_calls ' +
  'WHERE operator_id = $1 AND succeeded = false ORDER BY created_at DESC LIMIT 20';
const PENDING_WINS =
  'SELECT currency, count(*) AS wins, sum(amount_micro)::bigint AS amount_micro FROM pending_wallet_jobs ' +
  "WHERE operator_id = $1 AND endpoint = 'WIN' AND completed_at IS NULL GROUP BY currency ORDER BY currency";

const Cause = Object.freeze({
  WALLET_DOWN: 'wallet down',
  CLASSIFIER: 'our retry classifier',
  FLAP: 'a flap',
});

/** The operator from the alert's `operator` label (RGS ids: letters, digits, `-`, `_`). */
function operatorOf(alert) {
  const id = alert.label('operator');
  if (id === null) throw StepgateError.failed('the alert has no `operator` label (circuit_breaker_state{operator="<X>"})');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw StepgateError.failed(`\`operator\` = \`${id}\` is not an operator id`);
  return id;
}

/** Why the breaker opened, from the failed calls: a cause and the words for it. */
function diagnose(failures) {
  const byEndpoint = new Map();
  for (const f of failures) byEndpoint.set(f.endpoint, (byEndpoint.get(f.endpoint) ?? 0) + 1);
  const endpoints = [...byEndpoint.keys()].sort();
  const seen = endpoints.map((e) => `${e} ${byEndpoint.get(e)}`).join(', ');
  if (failures.length < FLAP_FAILURES) {
    return { cause: Cause.FLAP, endpoints, seen: `only ${failures.length} failed call(s) (${seen || 'none'})` };
  }
  // Answers the operator meant as valid: a status under 500 with a body.
  const valid = failures.filter((f) => f.status !== null && f.status < 500 && f.answered);
  if (endpoints.length === 1 && valid.length === failures.length) {
    return { cause: Cause.CLASSIFIER, endpoints, seen: `${seen}, every one answered ${[...new Set(valid.map((f) => f.status))].join('/')}` };
  }
  return { cause: Cause.WALLET_DOWN, endpoints, seen };
}

const units = (micro) => {
  const negative = micro < 0n;
  const m = negative ? -micro : micro;
  return `${negative ? '-' : ''}${m / 1000000n}.${(m % 1000000n).toString().padStart(6, '0')}`;
};

export const { describe, run } = playbook({
  describe() {
    return new Description('rgs-circuit-breaker', '1.0.0')
      .summary(
        'RGS §5 circuit breaker tripped and §10 operator wallet down: finds why the breaker opened (wallet down, ' +
          'our classifier, a flap), tells the operator, posts the operator-portal banner once the wallet is down 10 ' +
          'minutes (approved) and asks for their compliance contact after an unacknowledged hour; never closes the breaker.',
      )
      .answers('CircuitBreakerOpen')
      .answers('OperatorWalletDown')
      .dbRead(DB)
      .http(ADMIN, `POST ${BANNER}`)
      .page(ONCALL)
      .notify(INCIDENTS)
      .notify(OPERATORS);
  },

  run(alert) {
    const operator = operatorOf(alert);
    const walletDown = alert.setting('wallet_down_minutes', WALLET_DOWN_MINUTES);
    const escalateAfter = alert.setting('escalate_minutes', ESCALATE_MINUTES);
    const triage = step('Triage: why did it open?', () => {
      const breaker = db.query(DB, BREAKER, [operator]).rows[0];
      if (breaker === undefined) throw StepgateError.failed(`no circuit breaker is recorded for operator \`${operator}\``);
      const failures = [...db.query(DB, FAILED_CALLS, [operator])].map((r) => ({
        endpoint: r.text('endpoint'),
        status: r.get('response_status') === null ? null : Number(r.int('response_status')),
        answered: r.bool('answered'),
      }));
      return {
        // half-open is still open: no bets reach the operator but probes.
        open: breaker.text('state') !== 'closed',
        // Unknown (no opened_at recorded) is taken as past every threshold.
        minutes: breaker.get('open_seconds') === null ? null : Number(breaker.int('open_seconds') / 60n),
        acknowledged: breaker.bool('acknowledged'),
        name: breaker.text('name'),
        contact: breaker.get('compliance_contact'),
        ...diagnose(failures),
      };
    });
    const who = `${triage.name} (${operator})`;
    const checklist = [];
    if (!triage.open) {
      return step('Closed again', () => {
        const summary = `The circuit breaker of ${who} is closed again (it had opened on ${triage.seen}): nothing to do`;
        pager.notifyOrNote(INCIDENTS, `RGS ${alert.name}: ${summary}`, checklist);
        checklist.push('RCA: dwell time (first failure, breaker open, first recovery) and the bets rejected meanwhile');
        return outcome(summary, 'SEV3', triage, checklist);
      });
    }
    if (triage.cause === Cause.CLASSIFIER) {
      return step('Mitigate: our classifier', () => {
        const summary = `The breaker of ${who} opened on ${triage.seen}: our retry classifier is treating valid answers as failures; the breaker stays open`;
        pager.pageOrNote(ONCALL, 'error', `RGS SEV2: ${summary}`, 'patch the retry classifier and ship a hotfix per change-management.md §4', checklist);
        checklist.push(`Patch the retry classifier for ${triage.endpoints.join(', ')} and ship a hotfix per change-management.md §4`);
        return outcome(summary, 'SEV2', triage, checklist);
      });
    }
    if (triage.cause === Cause.FLAP) {
      return step('Mitigate: a flap', () => {
        const summary = `The breaker of ${who} opened on ${triage.seen}: a false-positive flap; it closes after the cooldown and a successful probe`;
        pager.notifyOrNote(INCIDENTS, `RGS ${alert.name}: ${summary}`, checklist);
        checklist.push('If it flaps again: adjust the CircuitBreaker thresholds (a regated change, see change-management)');
        return outcome(summary, 'SEV3', triage, checklist);
      });
    }
    const age = triage.minutes === null ? 'for an unknown time' : `${triage.minutes} min`;
    return step('Mitigate: the wallet is down', () => {
      pager.notifyOrNote(
        OPERATORS,
        `${who}: your wallet has failed ${triage.seen} and the RGS circuit breaker is open (${age}): no new bets reach you until it answers; it closes by itself after the cooldown and a successful probe`,
        checklist,
      );
      if (triage.minutes !== null && triage.minutes < walletDown) {
        const summary = `The wallet of ${who} is down (${triage.seen}); the breaker stays open (${age}); the operator is told`;
        checklist.push(`If it is still down at ${walletDown} min, this playbook posts the operator-portal banner (OperatorWalletDown)`);
        return outcome(summary, 'SEV2', triage, checklist);
      }
      let pending = 'an unknown number of pending winners';
      try {
        const rows = [...db.query(DB, PENDING_WINS, [operator])];
        const wins = rows.reduce((n, r) => n + r.int('wins'), 0n);
        const amounts = rows.map((r) => `${units(r.int('amount_micro'))} ${r.text('currency')}`).join(' + ');
        pending = `${wins} pending winner(s)${amounts ? ` (${amounts})` : ''}`;
      } catch (e) {
        if (!(e instanceof StepgateError)) throw e;
        checklist.push(`Count the pending winners by hand (${e.message})`);
      }
      const escalate = (triage.minutes === null || triage.minutes >= escalateAfter) && !triage.acknowledged;
      const message = `The wallet of ${triage.name} is down; bets are paused until it recovers. Pending winnings will be paid when it does.`;
      pager.notifyOrNote(
        INCIDENTS,
        `RGS ${alert.name}: the wallet of ${who} is down ${age} with ${pending}; stepgate asks an approver to post the operator-portal banner; decide in stepgate now`,
        checklist,
      );
      const banner = Fate.ofHttp(() =>
        http.post(ADMIN, BANNER, { operator, message }, `RGS §10: the wallet of ${operator} has been down ${age}; post the incident banner so support can forward it to players`),
      );
      if (!banner.passed()) checklist.push(`The banner is NOT posted (${banner.whyNot()}): post it in the operator portal by hand`);
      if (escalate) {
        const contact = triage.contact ?? 'NO compliance contact on record';
        pager.notifyOrNote(
          OPERATORS,
          `${who}: your wallet has been down ${age} without an acknowledgement; the RGS escalates to your compliance contact (${contact})`,
          checklist,
        );
        pager.pageOrNote(ONCALL, 'error', `RGS SEV2: ${who} wallet down ${age}, unacknowledged`, `escalate to the compliance contact: ${contact}`, checklist);
        if (triage.contact === null) checklist.push(`${who} has no compliance contact on record: find one through the account manager`);
      }
      const summary =
        `The wallet of ${who} is down ${age} (${triage.seen}) with ${pending}; the breaker stays open; ` +
        `banner ${banner.say('posted')}` +
        (escalate ? `; unacknowledged past ${escalateAfter} min: the operator's compliance contact asked for` : '');
      pager.notifyOrNote(INCIDENTS, `RGS ${alert.name}: ${summary}`, checklist);
      checklist.push('When it recovers: watch the pending winners drain; RCA: duration, queue depth at reopen, drain time, void-refunded bets');
      return outcome(summary, 'SEV2', triage, checklist);
    });
  },
});

function outcome(summary, severity, triage, checklist) {
  const out = new Outcome(summary)
    .severity(severity)
    .field('cause', triage.open ? triage.cause : 'closed')
    .field('open_minutes', BigInt(triage.minutes ?? -1))
    .field('failing_endpoints', triage.endpoints.join(','));
  for (const item of checklist) out.todo(item);
  return out;
}
