// stepgate: write incident playbooks in JavaScript.
//
// A playbook is a WebAssembly component that the stepgate host runs step by
// step: every database query, RPC call, flag change and page goes through
// the host, which checks it against the operator's grants, simulates writes
// in a dry run, asks a human where policy says so, and journals everything.
// This module hides the WIT bindings (componentize-js imports them as
// `stepgate:playbook/...@0.1.0`): you write plain JavaScript.
//
//   import { playbook, Description, Outcome, Decimal, db, flags, step } from './stepgate.js';
//
//   export const { describe, run } = playbook({
//     describe() {
//       return new Description('drift-check', '1.0.0')
//         .answers('ReconciliationDriftHigh').dbRead('plaza').flagWrite('PLAZA_CUSTODIED_MODE_DISABLED');
//     },
//     run(alert) {
//       const held = step('Triage', () =>
//         db.query('plaza', 'SELECT sum(amount) AS held FROM escrow_holds').first().decimal('held'));
//       if (held.gt(Decimal.parse('1000'))) {
//         step('Mitigate', () => flags.set('PLAZA_CUSTODIED_MODE_DISABLED', '1', 'runbook: unexplained drift'));
//       }
//       return new Outcome(`${held} USDC held`).severity('SEV-1').field('held_usdc', held);
//     },
//   });
//
// Build it with `stepgate build DIR` (componentize-js, with this module and
// the WIT contract the host speaks). Money is a `Decimal` (a BigInt and a
// scale), never a JS number. 64-bit integers are BigInt. A failed call
// throws a `StepgateError` carrying the WIT error; anything thrown out of
// `run` ends the run as a clean playbook error (`failed`), never a crash.

import * as wdb from 'stepgate:playbook/db@0.1.0';
import * as wflags from 'stepgate:playbook/flags@0.1.0';
import * as wpager from 'stepgate:playbook/pager@0.1.0';
import * as wrpc from 'stepgate:playbook/rpc@0.1.0';
import * as wrunbook from 'stepgate:playbook/runbook@0.1.0';

// The sandbox, in JavaScript's own words. Time and randomness work and
// replay the same: `Date.now()` reads the run's journaled time (as
// `runbook.now()` does), `performance.now()` counts from the run's first
// time reading, `Math.random()` and `crypto.getRandomValues()` are seeded
// by the run id. There is no network: `fetch` throws an Error naming the
// capability to use instead (in a component only; Node keeps its own).
if (typeof process === 'undefined') {
  globalThis.fetch = function fetch() {
    throw new Error('fetch(): no network in a playbook: call endpoints through rpc (http.get, http.post, rpc.call)');
  };
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const KINDS = ['not-granted', 'denied', 'invalid', 'timeout', 'backend', 'failed'];

/** A stepgate call failed, or the playbook could not finish. `kind` is the
 *  WIT error case, `text` what the host said; `message` is "kind: text". */
export class StepgateError extends Error {
  constructor(kind, text) {
    super(`${kind.replace('-', ' ')}: ${text}`);
    this.name = 'StepgateError';
    this.kind = kind;
    this.text = text;
  }
  /** The WIT error: componentize-js maps a thrown object's `payload` to `err`. */
  get payload() {
    return { tag: this.kind, val: this.text };
  }
  static failed(text) {
    return new StepgateError('failed', text);
  }
  isDenied() {
    return this.kind === 'denied';
  }
}

function isWitError(p) {
  return p != null && typeof p === 'object' && KINDS.includes(p.tag) && typeof p.val === 'string';
}

/** Calls a WIT import; its error (a ComponentError with a `payload`) comes
 *  back as a StepgateError. */
function wit(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    if (e != null && typeof e === 'object' && 'payload' in e && isWitError(e.payload)) {
      throw new StepgateError(e.payload.tag, e.payload.val);
    }
    throw e;
  }
}

/** What `run` returns for anything thrown out of it. */
function toErr(e) {
  if (e instanceof StepgateError) return e.payload;
  if (e != null && typeof e === 'object' && 'payload' in e && isWitError(e.payload)) return e.payload;
  if (e != null && typeof e === 'object' && typeof e.message === 'string') {
    return { tag: 'failed', val: `${e.name || 'Error'}: ${e.message}` };
  }
  return { tag: 'failed', val: String(e) };
}

// ---------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------

/** An exact decimal: `units / 10^scale`, units a BigInt. */
export class Decimal {
  constructor(units, scale) {
    if (!Number.isInteger(scale) || scale < 0 || scale > 28) {
      throw new StepgateError('invalid', `a decimal's scale is a whole number from 0 to 28, not ${scale}`);
    }
    this.units = BigInt(units);
    this.scale = scale;
  }
  /** From integer units: `Decimal.fromUnits(1500000n, 6)` is 1.500000. */
  static fromUnits(units, scale) {
    return new Decimal(units, scale);
  }
  /** From text: "-12.50" (a JS number is refused: it may not be exact). */
  static parse(text) {
    if (typeof text !== 'string') {
      throw new StepgateError('invalid', `Decimal.parse takes text, not a ${typeof text}: a JS number may not be exact`);
    }
    const m = /^([+-]?)(\d+)(?:\.(\d+))?$/.exec(text.trim());
    if (!m) throw new StepgateError('invalid', `not a decimal: ${JSON.stringify(text)}`);
    const frac = m[3] || '';
    const units = BigInt(m[2] + frac);
    return new Decimal(m[1] === '-' ? -units : units, frac.length);
  }
  rescale(scale) {
    if (scale < this.scale) throw new StepgateError('invalid', 'rescaling would round');
    return new Decimal(this.units * 10n ** BigInt(scale - this.scale), scale);
  }
  static #aligned(a, b) {
    const scale = Math.max(a.scale, b.scale);
    return [a.rescale(scale), b.rescale(scale), scale];
  }
  add(other) {
    const [a, b, scale] = Decimal.#aligned(this, other);
    return new Decimal(a.units + b.units, scale);
  }
  sub(other) {
    const [a, b, scale] = Decimal.#aligned(this, other);
    return new Decimal(a.units - b.units, scale);
  }
  cmp(other) {
    const [a, b] = Decimal.#aligned(this, other);
    return a.units < b.units ? -1 : a.units > b.units ? 1 : 0;
  }
  gt(other) {
    return this.cmp(other) > 0;
  }
  abs() {
    return new Decimal(this.units < 0n ? -this.units : this.units, this.scale);
  }
  toString() {
    const negative = this.units < 0n;
    let digits = (negative ? -this.units : this.units).toString();
    if (this.scale > 0) {
      digits = digits.padStart(this.scale + 1, '0');
      digits = `${digits.slice(0, -this.scale)}.${digits.slice(-this.scale)}`;
    }
    return negative ? `-${digits}` : digits;
  }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

const I64 = [-(2n ** 63n), 2n ** 63n - 1n];

function int64(n) {
  if (n < I64[0] || n > I64[1]) throw new StepgateError('invalid', `${n} does not fit a 64-bit integer`);
  return { tag: 'int', val: n };
}

/** Text as Rust's `i64::from_str` reads it: digits, an optional sign. */
function strictInt(text) {
  if (!/^[+-]?[0-9]+$/.test(text)) return undefined;
  const n = BigInt(text);
  return n < I64[0] || n > I64[1] ? undefined : n;
}

// A JS number is an int when it is a safe whole number (a count), else a
// float; money is a Decimal, big integers are BigInt.
function toValue(v) {
  if (v === null || v === undefined) return { tag: 'null' };
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'bigint') return int64(v);
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) return { tag: 'int', val: BigInt(v) };
    if (Number.isInteger(v)) throw new StepgateError('invalid', `${v} is past 2^53: pass a BigInt`);
    return { tag: 'float', val: v };
  }
  if (typeof v === 'string') return { tag: 'text', val: v };
  if (v instanceof Decimal) return { tag: 'decimal', val: v.toString() };
  if (ArrayBuffer.isView(v)) return { tag: 'bytes', val: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) };
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new StepgateError('invalid', 'an invalid Date is no instant');
    // RFC 3339 in UTC, milliseconds only when there are some.
    return { tag: 'timestamp', val: v.toISOString().replace('.000Z', 'Z') };
  }
  // One parameter: `= ANY($1)` on PostgreSQL, `json_each(?1)` on SQLite.
  if (Array.isArray(v)) {
    // A JS number has no int/float kind: an array holding a fraction is
    // all floats, as the array's elements must be of one kind.
    const fractional = v.some((x) => typeof x === 'number' && !Number.isInteger(x));
    return { tag: 'array', val: v.map((x) => (fractional && typeof x === 'number' ? { tag: 'float', val: x } : toElement(x))) };
  }
  throw new StepgateError('invalid', `cannot pass ${typeof v} to stepgate: use null, boolean, bigint, string, Decimal, bytes, a Date, or an array of these`);
}

/** An array's item as the WIT `element` of the same kind. */
function toElement(item) {
  if (Array.isArray(item)) {
    throw new StepgateError('invalid', 'an array parameter holds values, not arrays: arrays do not nest');
  }
  return toValue(item);
}

/** A value as the Rust SDK's messages show it: `Value::Text("x")`. */
function debug(v) {
  const casePart = v.tag.charAt(0).toUpperCase() + v.tag.slice(1);
  switch (v.tag) {
    case 'null':
      return 'Value::Null';
    case 'text':
    case 'decimal':
    case 'timestamp':
      return `Value::${casePart}(${JSON.stringify(v.val)})`;
    case 'bytes':
      return `Value::Bytes([${Array.from(v.val).join(', ')}])`;
    case 'float':
      return `Value::Float(${Number.isInteger(v.val) ? v.val.toFixed(1) : v.val})`;
    default:
      return `Value::${casePart}(${v.val})`;
  }
}

function fromValue(v) {
  switch (v.tag) {
    case 'null':
      return null;
    case 'decimal':
      return Decimal.parse(v.val);
    default:
      return v.val;
  }
}

// ---------------------------------------------------------------------------
// Description, outcome, alert, export
// ---------------------------------------------------------------------------

/** What a playbook says about itself: `describe()` returns one. */
export class Description {
  constructor(name, version) {
    Object.assign(this, { name, version, text: '', alerts: [], capabilities: [] });
  }
  summary(text) {
    this.text = text;
    return this;
  }
  answers(alert) {
    this.alerts.push(alert);
    return this;
  }
  #needs(tag, val) {
    this.capabilities.push({ tag, val });
    return this;
  }
  dbRead(conn) { return this.#needs('db-read', conn); }
  dbWrite(conn) { return this.#needs('db-write', conn); }
  rpc(endpoint, method) { return this.#needs('rpc', { endpoint, method }); }
  /** An HTTP route on an endpoint, e.g. `'POST /admin/dlq/replay'`. */
  http(endpoint, route) { return this.rpc(endpoint, route); }
  flagRead(glob) { return this.#needs('flag-read', glob); }
  flagWrite(glob) { return this.#needs('flag-write', glob); }
  page(target) { return this.#needs('page', target); }
  notify(channel) { return this.#needs('notify', channel); }
  toWit() {
    const { name, version, text: summary, alerts, capabilities } = this;
    return { name, version, summary, alerts, capabilities };
  }
}

/** What a playbook reports when it finishes. */
export class Outcome {
  constructor(summary) {
    Object.assign(this, { summary, level: undefined, fields: [], checklist: [] });
  }
  severity(severity) {
    this.level = severity;
    return this;
  }
  /** A named figure; money as a Decimal. */
  field(name, value) {
    this.fields.push([name, value]);
    return this;
  }
  /** Something a human must still do. */
  todo(item) {
    this.checklist.push(item);
    return this;
  }
  toWit() {
    return {
      summary: this.summary,
      severity: this.level,
      fields: this.fields.map(([k, v]) => [k, toValue(v)]),
      checklist: [...this.checklist],
    };
  }
}

/** The alert that started the run. */
export class Alert {
  constructor(wit) {
    this.name = wit.name;
    this.resolved = wit.status === 'resolved';
    this.labels = new Map(wit.labels);
    this.annotations = new Map(wit.annotations);
    this.startsAt = wit.startsAt ?? null;
    this.fingerprint = wit.fingerprint ?? null;
  }
  label(key) {
    return this.labels.get(key) ?? null;
  }
  annotation(key) {
    return this.annotations.get(key) ?? null;
  }
  /** An Ethereum address from the label `key`, lower-cased. A missing or
   *  malformed one throws a playbook error: there is no default address. */
  address(key) {
    const value = this.labels.get(key);
    if (value === undefined) {
      throw StepgateError.failed(
        `the alert has no \`${key}\` label: add the address to the alert rule's labels (stepgate has no default address)`,
      );
    }
    if (!/^0x[0-9a-fA-F]{40}$/.test(value)) throw StepgateError.failed(`\`${key}\` = \`${value}\` is not an address`);
    return value.toLowerCase();
  }
  /** A named setting: the annotation `key` as a positive whole number, or
   *  `fallback` without it. Anything else throws a playbook error. */
  setting(key, fallback) {
    const text = this.annotations.get(key);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (/^\s*[0-9]+\s*$/.test(text) && Number.isSafeInteger(n) && n > 0) return n;
    throw StepgateError.failed(
      `the annotation \`${key}\` is \`${text}\`, not a positive whole number (leave it out for the default, ${fallback})`,
    );
  }
  /** When the alert started firing, in milliseconds since the Unix epoch
   *  (`startsAt`, RFC 3339 in UTC), or null. Compare with
   *  `runbook.nowMillis()` for how long it has fired. */
  startsAtMs() {
    if (typeof this.startsAt !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(this.startsAt)) {
      return null;
    }
    const ms = Date.parse(this.startsAt);
    return Number.isNaN(ms) ? null : ms;
  }
}

/** The world's exports for `impl` ({ describe(), run(alert) }):
 *  `export const { describe, run } = playbook({...})`. */
export function playbook(impl) {
  return {
    describe() {
      return impl.describe().toWit();
    },
    run(alert) {
      let outcome;
      try {
        outcome = impl.run(new Alert(alert));
      } catch (e) {
        return { tag: 'err', val: toErr(e) };
      }
      if (!(outcome instanceof Outcome)) {
        return { tag: 'err', val: { tag: 'failed', val: 'run() did not return an Outcome' } };
      }
      return { tag: 'ok', val: outcome.toWit() };
    },
  };
}

// ---------------------------------------------------------------------------
// Steps and the run itself
// ---------------------------------------------------------------------------

/** Runs `f` as the step `name`: every call in it is shown and journaled
 *  under that name. Returns what `f` returns. */
export function step(name, f) {
  wrunbook.step(name);
  return f();
}

export const runbook = {
  info: (message) => wrunbook.log('info', message),
  warn: (message) => wrunbook.log('warn', message),
  error: (message) => wrunbook.log('error', message),
  /** Milliseconds since the Unix epoch (BigInt), from the host. */
  nowMillis: () => wrunbook.now(),
  /** The run's time as a Date, to bind in a query where it would say
   *  `now()`: journaled, so a resumed run (and the re-check of an
   *  approval) asks the same question. */
  now: () => new Date(Number(wrunbook.now())),
  sleep: (millis) => wit(wrunbook.sleep, BigInt(millis)),
  confirm: (question) => wit(wrunbook.confirm, question),
  /** Whether this run is a dry run (writes planned, none made). For
   *  wording only: say "planned", not "done"; decide the same way. */
  dryRun: () => wrunbook.dryRun(),
};

// ---------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------

/** One row, values by column name. */
export class Row {
  constructor(columns, values) {
    this.columns = columns;
    this.values = values;
  }
  value(column) {
    const i = this.columns.indexOf(column);
    if (i < 0) throw new StepgateError('invalid', `no column \`${column}\`; the row has ${this.columns.join(', ')}`);
    return this.values[i];
  }
  /** The value as JS: null, boolean, BigInt, number (float), string, Decimal, bytes. */
  get(column) {
    return fromValue(this.value(column));
  }
  #typed(column, expected, convert) {
    const v = this.value(column);
    let out;
    try {
      out = convert(v);
    } catch {
      out = undefined;
    }
    if (out === undefined) throw new StepgateError('invalid', `column \`${column}\` holds ${debug(v)}, expected ${expected}`);
    return out;
  }
  /** An integer, as BigInt. */
  int(column) {
    return this.#typed(column, 'an integer', (v) =>
      v.tag === 'int' ? BigInt(v.val) : v.tag === 'decimal' || v.tag === 'text' ? strictInt(v.val) : undefined);
  }
  /** An exact decimal; a float is refused (money is never a float). */
  decimal(column) {
    return this.#typed(column, 'an exact decimal (a float is refused: money is never a float)', (v) =>
      v.tag === 'decimal' || v.tag === 'text' ? Decimal.parse(v.val) : v.tag === 'int' ? new Decimal(v.val, 0) : undefined);
  }
  text(column) {
    return this.#typed(column, 'text', (v) =>
      v.tag === 'text' || v.tag === 'decimal' || v.tag === 'timestamp' ? v.val : undefined);
  }
  bool(column) {
    return this.#typed(column, 'a boolean', (v) =>
      v.tag === 'boolean' ? v.val : v.tag === 'int' ? BigInt(v.val) !== 0n : undefined);
  }
}

/** The rows a query returned. */
export class Rows {
  constructor(wit) {
    this.columns = wit.columns;
    this.rows = wit.rows.map((values) => new Row(wit.columns, values));
  }
  get length() {
    return this.rows.length;
  }
  [Symbol.iterator]() {
    return this.rows[Symbol.iterator]();
  }
  /** The first row; `invalid` if there is none. */
  first() {
    if (this.rows.length === 0) throw new StepgateError('invalid', 'the query returned no rows');
    return this.rows[0];
  }
}

/** Databases named in the operator's config. Parameters are bound by the
 *  host: `$1` (PostgreSQL) or `?1` (SQLite), never spliced in. */
export const db = {
  query: (conn, sql, params = []) => new Rows(wit(wdb.query, conn, sql, params.map(toValue))),
  /** A write: rows changed (BigInt; in a dry run, the rows it would change). */
  execute: (conn, sql, params, reason) => wit(wdb.execute, conn, sql, params.map(toValue), reason),
};

/** Orders strings by code point, as Rust orders `str` (JS's own sort
 *  compares UTF-16 code units, which differs past U+FFFF). */
export function byCodePoint(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** JSON as the Rust SDK writes it: compact, object keys sorted by code
 *  point, a Decimal as its text; what JSON cannot hold is refused. */
export function canonicalJson(value) {
  if (value instanceof Decimal) return JSON.stringify(value.toString());
  if (value !== null && typeof value === 'object' && typeof value.toJSON === 'function') {
    return canonicalJson(value.toJSON());
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort(byCodePoint);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new StepgateError('invalid', `JSON: ${value} is not a number JSON can hold`);
  }
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') {
    throw new StepgateError('invalid', `JSON: cannot write ${typeof value}`);
  }
  return JSON.stringify(value);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** JSON as strictly as the Rust SDK reads it: UTF-8 only, no byte-order
 *  mark. A failure is `invalid`. */
function parseJson(text) {
  try {
    const s = typeof text === 'string' ? text : UTF8.decode(text);
    if (s.startsWith('\uFEFF')) throw new Error('a byte-order mark');
    return JSON.parse(s);
  } catch (e) {
    throw new StepgateError('invalid', `JSON: ${e.message}`);
  }
}

/** JSON-RPC methods on endpoints named in the config. */
export const rpc = {
  /** A read method; its decoded `result`. */
  call: (endpoint, method, params) => rpc.send(endpoint, method, params, ''),
  /** A method the config classes as a write; `reason` is required. */
  send: (endpoint, method, params, reason) =>
    parseJson(wit(wrpc.call, endpoint, method, params == null ? '[]' : canonicalJson(params), reason)),
};

function request(endpoint, method, path, body, reason) {
  const headers = body === undefined ? [] : [['content-type', 'application/json']];
  const raw = body === undefined ? new Uint8Array() : new TextEncoder().encode(canonicalJson(body));
  const answer = wit(wrpc.http, endpoint, { method, path, headers, body: raw }, reason);
  let parsed = null;
  try {
    parsed = answer.body.length ? parseJson(answer.body) : null;
  } catch {
    parsed = null;
  }
  const dryRun = answer.headers.some(([k, v]) => k.toLowerCase() === 'x-stepgate-dry-run' && v === 'true');
  return {
    status: answer.status,
    body: parsed,
    dryRun,
    /** Whether the status is 2xx, or the write was planned in a dry run. */
    ok() {
      return dryRun || (answer.status >= 200 && answer.status < 300);
    },
  };
}

/** HTTP admin APIs named in the config, with JSON bodies. */
export const http = {
  /** A read; `query` (an object or [name, value] pairs) is encoded for you.
   *  The granted route must end in `?*` to allow a query string. */
  get: (endpoint, path, query) => request(endpoint, 'GET', withQuery(path, query), undefined, ''),
  post: (endpoint, path, body, reason) => request(endpoint, 'POST', path, body, reason),
  put: (endpoint, path, body, reason) => request(endpoint, 'PUT', path, body, reason),
  patch: (endpoint, path, body, reason) => request(endpoint, 'PATCH', path, body, reason),
  delete: (endpoint, path, reason) => request(endpoint, 'DELETE', path, undefined, reason),
};

/** `path` with `query` (an object or [name, value] pairs) appended, each
 *  part percent-encoded (all but A-Z a-z 0-9 - . _ ~): `/jobs?state=failed`. */
export function withQuery(path, query) {
  if (query == null) return path;
  const pairs = Array.isArray(query) ? query : Object.entries(query);
  if (pairs.length === 0) return path;
  const encode = (text) =>
    encodeURIComponent(String(text)).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const encoded = pairs.map(([k, v]) => `${encode(k)}=${encode(v)}`).join('&');
  return `${path}${path.includes('?') ? '&' : '?'}${encoded}`;
}

/** Feature flags and kill switches. */
export const flags = {
  get: (name) => wit(wflags.get, name) ?? null,
  /** Sets a flag; returns the value it had before. */
  set: (name, value, reason) => wit(wflags.set, name, value, reason) ?? null,
};

/** What became of a write, in the words an outcome or a page may use: no
 *  message claims a write that was refused, failed or only planned in a
 *  dry run. `kind`: 'made', 'planned', 'refused' or 'failed'. */
export class Fate {
  constructor(kind, why = null, value = null) {
    this.kind = kind;
    this.why = why;
    /** What the write returned, when it passed (a db.execute's row count). */
    this.value = value;
  }
  /** Makes one write (`write()`) and returns its fate. Anything thrown
   *  that is not a StepgateError is rethrown. */
  static of(write) {
    const done = Fate.#attempt(write);
    if ('fate' in done) return done.fate;
    return new Fate(wrunbook.dryRun() ? 'planned' : 'made', null, done.value ?? null);
  }
  /** As `of`, for an HTTP write: an answer other than 2xx is a failure. */
  static ofHttp(write) {
    const done = Fate.#attempt(write);
    if ('fate' in done) return done.fate;
    const answer = done.value;
    if (answer.dryRun) return new Fate('planned');
    if (answer.ok()) return new Fate('made');
    return new Fate('failed', `the endpoint answered HTTP ${answer.status}`);
  }
  static fromError(e) {
    return new Fate(e.isDenied() ? 'refused' : 'failed', e.message);
  }
  /** Runs `write`: `{ value }`, or `{ fate }` for a StepgateError it threw. */
  static #attempt(write) {
    try {
      return { value: write() };
    } catch (e) {
      if (!(e instanceof StepgateError)) throw e;
      return { fate: Fate.fromError(e) };
    }
  }
  /** Made, or planned in a dry run: decide on this. */
  passed() {
    return this.kind === 'made' || this.kind === 'planned';
  }
  whyNot() {
    return this.passed() ? null : this.why;
  }
  /** For "halted": "halted", "would be halted (dry run)", "NOT halted (refused: …)", "NOT halted (failed: …)". */
  say(done) {
    switch (this.kind) {
      case 'made':
        return done;
      case 'planned':
        return `would be ${done} (dry run)`;
      case 'refused':
        return `NOT ${done} (refused: ${this.why})`;
      default:
        return `NOT ${done} (failed: ${this.why})`;
    }
  }
}

/** Paging humans and posting to channels. Severity: 'critical', 'error', 'warning', 'info'. */
export const pager = {
  page: (target, severity, summary, details) => wit(wpager.page, target, severity, summary, details),
  notify: (channel, message) => wit(wpager.notify, channel, message),
  /** Pages `target`; if the page does not go out, says so on `checklist`,
   *  so a failing pager never costs a run its outcome. */
  pageOrNote: (target, severity, summary, details, checklist) => {
    try {
      pager.page(target, severity, summary, details);
    } catch (e) {
      if (!(e instanceof StepgateError)) throw e;
      checklist.push(`${target} was NOT told (${e.message}): tell them by hand: ${summary}`);
    }
  },
  /** Posts `message` to `channel`, or says on `checklist` that it did not go out. */
  notifyOrNote: (channel, message, checklist) => {
    try {
      pager.notify(channel, message);
    } catch (e) {
      if (!(e instanceof StepgateError)) throw e;
      checklist.push(`${channel} was NOT told (${e.message}): tell them by hand: ${message}`);
    }
  },
};
