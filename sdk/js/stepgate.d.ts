// Types for stepgate.js, the JavaScript playbook SDK. The WIT-level types
// (Value, Error, Alert, Outcome, Description) are generated from the WIT
// by `jco guest-types` into ./types; these are the helpers over them.

/// <reference path="./types/playbook.d.ts" />

import type * as wit from 'stepgate:playbook/types@0.1.0';

export type ErrorKind = wit.Error['tag'];
export type Severity = 'critical' | 'error' | 'warning' | 'info';
/** A value a statement parameter or an outcome field can take. Money is a Decimal. */
export type Scalar = null | undefined | boolean | bigint | number | string | Decimal | Uint8Array | Date;
/** A statement parameter; an array is one parameter (`= ANY($1)`). */
export type Param = Scalar | Scalar[];

export class StepgateError extends Error {
  constructor(kind: ErrorKind, text: string);
  readonly kind: ErrorKind;
  readonly text: string;
  readonly payload: wit.Error;
  static failed(text: string): StepgateError;
  isDenied(): boolean;
}

export type FateKind = 'made' | 'planned' | 'refused' | 'failed';

/** What became of a write, in the words an outcome or a page may use. */
export class Fate {
  constructor(kind: FateKind, why?: string | null, value?: unknown);
  readonly kind: FateKind;
  readonly why: string | null;
  /** What the write returned, when it passed (a db.execute's row count). */
  readonly value: unknown;
  static of(write: () => unknown): Fate;
  static ofHttp(write: () => { status: number; dryRun: boolean; ok(): boolean }): Fate;
  static fromError(e: StepgateError): Fate;
  passed(): boolean;
  whyNot(): string | null;
  say(done: string): string;
}

export class Decimal {
  constructor(units: bigint | number | string, scale: number);
  readonly units: bigint;
  readonly scale: number;
  static fromUnits(units: bigint | number, scale: number): Decimal;
  static parse(text: string): Decimal;
  rescale(scale: number): Decimal;
  add(other: Decimal): Decimal;
  sub(other: Decimal): Decimal;
  cmp(other: Decimal): -1 | 0 | 1;
  gt(other: Decimal): boolean;
  abs(): Decimal;
  toString(): string;
}

export class Description {
  constructor(name: string, version: string);
  summary(text: string): this;
  answers(alert: string): this;
  dbRead(conn: string): this;
  dbWrite(conn: string): this;
  rpc(endpoint: string, method: string): this;
  http(endpoint: string, route: string): this;
  flagRead(glob: string): this;
  flagWrite(glob: string): this;
  page(target: string): this;
  notify(channel: string): this;
  toWit(): wit.Description;
}

export class Outcome {
  constructor(summary: string);
  severity(severity: string): this;
  field(name: string, value: Param): this;
  todo(item: string): this;
  toWit(): wit.Outcome;
}

export class Alert {
  readonly name: string;
  readonly resolved: boolean;
  readonly labels: Map<string, string>;
  readonly annotations: Map<string, string>;
  readonly startsAt: string | null;
  readonly fingerprint: string | null;
  label(key: string): string | null;
  /** An Ethereum address from the label `key`, lower-cased; throws when missing or malformed. */
  address(key: string): string;
  /** The annotation `key` as a positive whole number, or `fallback`. */
  setting(key: string, fallback: number): number;
  annotation(key: string): string | null;
  startsAtMs(): number | null;
}

export interface Implementation {
  describe(): Description;
  run(alert: Alert): Outcome;
}

export function playbook(impl: Implementation): {
  describe(): wit.Description;
  run(alert: wit.Alert): { tag: 'ok'; val: wit.Outcome } | { tag: 'err'; val: wit.Error };
};

export function step<T>(name: string, f: () => T): T;

export const runbook: {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  nowMillis(): bigint;
  /** The run's time, journaled: bind it where a query would say `now()`. */
  now(): Date;
  sleep(millis: bigint | number): void;
  confirm(question: string): boolean;
  /** Whether this run is a dry run (writes planned, none made): for wording only. */
  dryRun(): boolean;
};

export class Row {
  readonly columns: string[];
  value(column: string): wit.Value;
  get(column: string): null | boolean | bigint | number | string | Decimal | Uint8Array;
  int(column: string): bigint;
  decimal(column: string): Decimal;
  text(column: string): string;
  bool(column: string): boolean;
}

export class Rows implements Iterable<Row> {
  readonly columns: string[];
  readonly rows: Row[];
  readonly length: number;
  [Symbol.iterator](): Iterator<Row>;
  first(): Row;
}

export const db: {
  query(conn: string, sql: string, params?: Param[]): Rows;
  execute(conn: string, sql: string, params: Param[], reason: string): bigint;
};

export function canonicalJson(value: unknown): string;
export function byCodePoint(a: string, b: string): number;

export const rpc: {
  call(endpoint: string, method: string, params?: unknown): any;
  send(endpoint: string, method: string, params: unknown, reason: string): any;
};

export interface Response {
  status: number;
  body: any;
  dryRun: boolean;
  ok(): boolean;
}

export type Query = Record<string, string | number | bigint | boolean> | Array<[string, string | number | bigint | boolean]>;

export const http: {
  /** A read; `query` is encoded for you (the route must end in `?*`). */
  get(endpoint: string, path: string, query?: Query): Response;
  post(endpoint: string, path: string, body: unknown, reason: string): Response;
  put(endpoint: string, path: string, body: unknown, reason: string): Response;
  patch(endpoint: string, path: string, body: unknown, reason: string): Response;
  delete(endpoint: string, path: string, reason: string): Response;
};

/** `path` with `query` appended, each part percent-encoded. */
export function withQuery(path: string, query?: Query): string;

export const flags: {
  get(name: string): string | null;
  set(name: string, value: string, reason: string): string | null;
};

export const pager: {
  page(target: string, severity: Severity, summary: string, details: string): string;
  notify(channel: string, message: string): void;
  /** Pages, or says on `checklist` that the page did not go out. */
  pageOrNote(target: string, severity: Severity, summary: string, details: string, checklist: string[]): void;
  /** Posts, or says on `checklist` that the notice did not go out. */
  notifyOrNote(channel: string, message: string, checklist: string[]): void;
};
