// Unit tests of the JavaScript SDK in node, the host faked
// (test/hooks.mjs). In sdk/js:
// `node --import ./test/register.mjs --test test/stepgate.test.mjs`
// (scripts/test runs it).

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import {
  Alert, Decimal, Description, Fate, Outcome, StepgateError, byCodePoint, canonicalJson, db, flags, http, playbook, rpc,
  runbook, withQuery,
} from '../stepgate.js';

/** A ComponentError as componentize-js throws it for an import's err. */
function componentError(tag, val) {
  const e = new Error('[object Object] (see error.payload)');
  e.payload = { tag, val };
  return e;
}

beforeEach(() => {
  globalThis.host = { db: {}, flags: {}, pager: {}, rpc: {}, runbook: { step() {} } };
});

test('decimals are exact text, never JS numbers', () => {
  assert.equal(Decimal.fromUnits(5075000000n, 6).toString(), '5075.000000');
  assert.equal(Decimal.fromUnits(5n, 6).toString(), '0.000005');
  assert.equal(Decimal.fromUnits(-5n, 6).toString(), '-0.000005');
  assert.equal(Decimal.parse('-12.500000').toString(), '-12.500000');
  assert.equal(Decimal.parse('0.1').add(Decimal.parse('0.2')).toString(), '0.3');
  assert.equal(Decimal.parse('1.50').sub(Decimal.parse('2')).toString(), '-0.50');
  assert.equal(Decimal.parse('1000.000001').cmp(Decimal.parse('1000')), 1);
  assert.throws(() => Decimal.parse(1.5), (e) => e instanceof StepgateError && e.kind === 'invalid');
  assert.throws(() => Decimal.parse('1e5'), /not a decimal/);
});

test('JSON is read strictly and keys sort by code point', () => {
  assert.ok(byCodePoint('\u{FF01}', '\u{1F600}') < 0, 'U+FF01 before U+1F600, as in Rust');
  assert.equal(canonicalJson({ '\u{1F600}': 1, '\u{FF01}': 2, skipped: undefined }), '{"\u{FF01}":2,"\u{1F600}":1}');
  assert.throws(() => canonicalJson({ x: NaN }), (e) => e instanceof StepgateError && e.kind === 'invalid');
  globalThis.host.rpc.call = () => 'not json';
  assert.throws(() => rpc.call('node', 'eth_blockNumber'), (e) => e instanceof StepgateError && e.kind === 'invalid');
  assert.throws(() => new Decimal(5n, -2), /scale/);
  const alert = new Alert({ name: 'A', status: 'firing', labels: [['a', 'b']], annotations: [] });
  assert.equal(alert.label('constructor'), null);
});

test('JSON is written as the Rust SDK writes it', () => {
  assert.equal(
    canonicalJson({ flag: 'credits', enabled: false, n: [2n, { b: 1, a: Decimal.parse('1.50') }] }),
    '{"enabled":false,"flag":"credits","n":[2,{"a":"1.50","b":1}]}',
  );
});

test("a host error throws a StepgateError with the WIT error's kind", () => {
  globalThis.host.flags.set = () => {
    throw componentError('denied', 'needs two approvers');
  };
  assert.throws(
    () => flags.set('X', '1', 'why'),
    (e) => e instanceof StepgateError && e.isDenied() && e.message === 'denied: needs two approvers',
  );
  globalThis.host.flags.get = () => {
    throw componentError('not-granted', 'flag-read X');
  };
  assert.throws(() => flags.get('X'), { message: 'not granted: flag-read X' });
});

test('rows by column name, parameters as WIT values, money never a float', () => {
  let sent;
  globalThis.host.db.query = (conn, sql, params) => {
    sent = params;
    return {
      columns: ['id', 'held', 'ratio', 'n'],
      rows: [[{ tag: 'text', val: 'a' }, { tag: 'decimal', val: '12.500000' }, { tag: 'float', val: 0.1 }, { tag: 'int', val: 7n }]],
    };
  };
  const rows = db.query('ledger', 'SELECT 1', [Decimal.parse('2.0'), 3, 1.5, null, true]);
  assert.deepEqual(sent, [
    { tag: 'decimal', val: '2.0' }, { tag: 'int', val: 3n }, { tag: 'float', val: 1.5 }, { tag: 'null' }, { tag: 'boolean', val: true },
  ]);
  // An array is one parameter, its items elements of their own kinds.
  db.query('ledger', 'SELECT 1 WHERE id = ANY($1)', [[1, null, 'x'], []]);
  assert.deepEqual(sent, [
    { tag: 'array', val: [{ tag: 'int', val: 1n }, { tag: 'null' }, { tag: 'text', val: 'x' }] },
    { tag: 'array', val: [] },
  ]);
  assert.throws(() => db.query('ledger', 'SELECT $1', [[[1]]]), { message: /arrays do not nest/ });
  db.query('ledger', 'SELECT $1', [[1, 2.5, null]]);
  assert.deepEqual(sent, [
    { tag: 'array', val: [{ tag: 'float', val: 1 }, { tag: 'float', val: 2.5 }, { tag: 'null' }] },
  ]);
  const row = rows.first();
  assert.equal(row.decimal('held').toString(), '12.500000');
  assert.equal(row.int('n'), 7n);
  assert.equal(row.text('id'), 'a');
  assert.throws(() => row.decimal('ratio'), {
    message: 'invalid: column `ratio` holds Value::Float(0.1), expected an exact decimal (a float is refused: money is never a float)',
  });
  assert.throws(() => row.int('id'), { message: 'invalid: column `id` holds Value::Text("a"), expected an integer' });
  assert.throws(() => row.get('nope'), { message: 'invalid: no column `nope`; the row has id, held, ratio, n' });
});

test('an HTTP write in a dry run is ok, its body canonical JSON', () => {
  let request;
  globalThis.host.rpc.http = (endpoint, req) => {
    request = req;
    return { status: 0, headers: [['x-stepgate-dry-run', 'true']], body: new Uint8Array() };
  };
  const answer = http.post('admin', '/flags', { flag: 'x402', enabled: false }, 'step 2');
  assert.equal(new TextDecoder().decode(request.body), '{"enabled":false,"flag":"x402"}');
  assert.deepEqual(request.headers, [['content-type', 'application/json']]);
  assert.ok(answer.dryRun && answer.ok());
});

test('a fate never claims a write that was refused, failed or only planned', () => {
  let dry = true;
  globalThis.host.runbook.dryRun = () => dry;
  globalThis.host.db.execute = () => 2n;
  const write = () => db.execute('c', 'UPDATE t SET x = 1', [], 'why');
  assert.equal(Fate.of(write).say('marked'), 'would be marked (dry run)');
  dry = false;
  assert.equal(Fate.of(write).say('marked'), 'marked');
  globalThis.host.db.execute = () => {
    throw componentError('denied', 'policy');
  };
  const refused = Fate.of(write);
  assert.equal(refused.say('marked'), 'NOT marked (refused: denied: policy)');
  assert.ok(!refused.passed());
  globalThis.host.rpc.http = () => ({ status: 503, headers: [], body: new Uint8Array() });
  const failed = Fate.ofHttp(() => http.post('admin', '/replay', {}, 'why'));
  assert.equal(failed.say('replayed'), 'NOT replayed (failed: the endpoint answered HTTP 503)');
  assert.throws(() => Fate.of(() => {
    throw new TypeError('a bug');
  }), TypeError);
});

test('describe, an outcome, and every throw as a clean playbook error', () => {
  const world = (run) =>
    playbook({
      describe: () => new Description('p', '1').answers('A').http('admin', 'POST /x').page('ceo'),
      run,
    });
  const alert = { name: 'A', status: 'firing', labels: [['severity', 'critical']], annotations: [], fingerprint: 'fp' };
  assert.deepEqual(world(() => null).describe().capabilities, [
    { tag: 'rpc', val: { endpoint: 'admin', method: 'POST /x' } },
    { tag: 'page', val: 'ceo' },
  ]);
  assert.deepEqual(
    world((a) => new Outcome(a.label('severity')).severity('SEV-1').field('held', Decimal.parse('1.50')).field('n', 2)).run(alert),
    {
      tag: 'ok',
      val: {
        summary: 'critical', severity: 'SEV-1', checklist: [],
        fields: [['held', { tag: 'decimal', val: '1.50' }], ['n', { tag: 'int', val: 2n }]],
      },
    },
  );
  for (const [run, expected] of [
    [() => { throw new TypeError('boom'); }, { tag: 'failed', val: 'TypeError: boom' }],
    [() => { throw new StepgateError('timeout', '10s'); }, { tag: 'timeout', val: '10s' }],
    [() => { throw componentError('denied', 'no'); }, { tag: 'denied', val: 'no' }],
    [() => { throw 'a string'; }, { tag: 'failed', val: 'a string' }],
    [() => 'done', { tag: 'failed', val: 'run() did not return an Outcome' }],
  ]) {
    assert.deepEqual(world(run).run(alert), { tag: 'err', val: expected });
  }
});

test('an address label is checked and never defaulted', () => {
  const alert = (labels) => new Alert({ name: 'A', status: 'firing', labels, annotations: [], startsAt: null });
  const wallet = '0xAbCdEf0123456789aBcDeF0123456789AbCdEf01';
  assert.equal(alert([['wallet', wallet]]).address('wallet'), wallet.toLowerCase());
  assert.throws(() => alert([]).address('wallet'), (e) => e instanceof StepgateError && e.message.includes('no `wallet` label'));
  for (const bad of ['0x1234', 'ab'.repeat(20), `0x${'zz'.repeat(20)}`]) {
    assert.throws(() => alert([['wallet', bad]]).address('wallet'), StepgateError);
  }
});

test('a setting is a positive whole annotation or its default', () => {
  const alert = (annotations) => new Alert({ name: 'A', status: 'firing', labels: [], annotations, startsAt: null });
  assert.equal(alert([]).setting('lookback', 7), 7);
  assert.equal(alert([['lookback', '120']]).setting('lookback', 7), 120);
  for (const bad of ['0', '-3', '1.5', 'many', '', '9'.repeat(20), '9'.repeat(400)]) {
    assert.throws(() => alert([['lookback', bad]]).setting('lookback', 7), (e) => e instanceof StepgateError && e.message.includes('`lookback`'));
  }
});

test('alert start times are UTC milliseconds', () => {
  const at = (startsAt) => new Alert({ name: 'A', status: 'firing', labels: [], annotations: [], startsAt }).startsAtMs();
  assert.equal(at('2026-11-23T09:00:00Z'), 1795424400000);
  assert.equal(at('2024-02-29T12:30:15.250Z'), 1709209815250);
  assert.equal(at('2026-11-23T09:00:00+02:00'), null);
  assert.equal(at('yesterday'), null);
  assert.equal(at(undefined), null);
});

test("the run's time binds as an RFC 3339 timestamp", () => {
  globalThis.host.runbook.now = () => 1795424400250n;
  let sent;
  globalThis.host.db.query = (conn, sql, params) => {
    sent = params;
    return { columns: [], rows: [] };
  };
  const now = runbook.now();
  assert.ok(now instanceof Date);
  db.query('ledger', 'SELECT 1 WHERE $1 > $2', [now, new Date(Date.UTC(2026, 10, 23, 8, 45))]);
  assert.deepEqual(sent, [
    { tag: 'timestamp', val: '2026-11-23T09:00:00.250Z' },
    { tag: 'timestamp', val: '2026-11-23T08:45:00Z' },
  ]);
  assert.throws(() => db.query('ledger', 'SELECT $1', [new Date(NaN)]), { message: /invalid Date/ });
});

test('every HTTP verb, and a query encoded for you', () => {
  const sent = [];
  globalThis.host.rpc.http = (endpoint, req, reason) => {
    sent.push([req, reason]);
    return { status: 200, headers: [], body: new TextEncoder().encode('{}') };
  };
  http.get('queue', '/jobs', { state: 'failed', q: "a b&c=d/é!'" });
  http.get('queue', '/jobs?x=1', [['y', 2]]);
  http.put('queue', '/jobs/1', { state: 'retry' }, 'retry it');
  http.patch('queue', '/jobs/1', { state: 'retry' }, 'retry it');
  http.delete('queue', '/jobs/1', 'drop it');
  assert.equal(sent[0][0].path, '/jobs?state=failed&q=a%20b%26c%3Dd%2F%C3%A9%21%27');
  assert.equal(sent[1][0].path, '/jobs?x=1&y=2');
  assert.deepEqual(sent.map(([r]) => r.method), ['GET', 'GET', 'PUT', 'PATCH', 'DELETE']);
  assert.equal(sent[4][0].body.length, 0);
  assert.equal(sent[4][1], 'drop it');
  assert.equal(withQuery('/jobs', {}), '/jobs');
});
