declare module 'stepgate:playbook/types@0.1.0' {
  /**
   * One element of an `array` value: a `value` that is not a list.
   */
  export type Element = ElementNull | ElementBoolean | ElementInt | ElementFloat | ElementText | ElementBytes | ElementDecimal | ElementTimestamp;
  export interface ElementNull {
    tag: 'null',
  }
  export interface ElementBoolean {
    tag: 'boolean',
    val: boolean,
  }
  export interface ElementInt {
    tag: 'int',
    val: bigint,
  }
  export interface ElementFloat {
    tag: 'float',
    val: number,
  }
  export interface ElementText {
    tag: 'text',
    val: string,
  }
  export interface ElementBytes {
    tag: 'bytes',
    val: Uint8Array,
  }
  export interface ElementDecimal {
    tag: 'decimal',
    val: string,
  }
  export interface ElementTimestamp {
    tag: 'timestamp',
    val: string,
  }
  /**
   * One value in a database row, a statement parameter or an outcome field.
   */
  export type Value = ValueNull | ValueBoolean | ValueInt | ValueFloat | ValueText | ValueBytes | ValueDecimal | ValueTimestamp | ValueArray;
  /**
   * SQL NULL, or an absent value.
   */
  export interface ValueNull {
    tag: 'null',
  }
  /**
   * A boolean.
   */
  export interface ValueBoolean {
    tag: 'boolean',
    val: boolean,
  }
  /**
   * A signed 64-bit integer.
   */
  export interface ValueInt {
    tag: 'int',
    val: bigint,
  }
  /**
   * A double-precision float. Never use it for an amount of money.
   */
  export interface ValueFloat {
    tag: 'float',
    val: number,
  }
  /**
   * UTF-8 text.
   */
  export interface ValueText {
    tag: 'text',
    val: string,
  }
  /**
   * Raw bytes.
   */
  export interface ValueBytes {
    tag: 'bytes',
    val: Uint8Array,
  }
  /**
   * An exact decimal number as text, e.g. "-12.500000".
   */
  export interface ValueDecimal {
    tag: 'decimal',
    val: string,
  }
  /**
   * A point in time as RFC 3339 text in UTC, e.g. "2026-11-23T09:00:00Z".
   */
  export interface ValueTimestamp {
    tag: 'timestamp',
    val: string,
  }
  /**
   * A list of elements of one kind (nulls allowed), as one statement
   * parameter: `WHERE id = ANY($1)` on PostgreSQL, where it binds as
   * an array (text, and an empty list, as `text[]`: cast it, as in
   * `$1::uuid[]`), and `WHERE id IN (SELECT value FROM json_each(?1))`
   * on SQLite, where it binds as JSON text.
   */
  export interface ValueArray {
    tag: 'array',
    val: Array<Element>,
  }
  /**
   * The one error every capability call can return. A playbook can match
   * on each case and decide what to do; none of them crashes the host.
   */
  export type Error = ErrorNotGranted | ErrorDenied | ErrorInvalid | ErrorTimeout | ErrorBackend | ErrorFailed;
  /**
   * The operator's config does not grant this call (connection,
   * endpoint, method, flag, target or channel). The text names the
   * missing grant.
   */
  export interface ErrorNotGranted {
    tag: 'not-granted',
    val: string,
  }
  /**
   * A gate or a human refused this write. The text says who or which
   * policy refused it, and why.
   */
  export interface ErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The call itself is wrong: bad SQL, a write statement sent to
   * `query`, a bad argument. The text says what to fix.
   */
  export interface ErrorInvalid {
    tag: 'invalid',
    val: string,
  }
  /**
   * The backend did not answer within its timeout.
   */
  export interface ErrorTimeout {
    tag: 'timeout',
    val: string,
  }
  /**
   * The backend answered with a failure (connection refused, an RPC
   * error object, a constraint violation).
   */
  export interface ErrorBackend {
    tag: 'backend',
    val: string,
  }
  /**
   * The playbook's own failure, returned from `run`: it could not
   * finish what it set out to do.
   */
  export interface ErrorFailed {
    tag: 'failed',
    val: string,
  }
  /**
   * Whether an alert is still firing or has resolved.
   * # Variants
   * 
   * ## `"firing"`
   * 
   * ## `"resolved"`
   */
  export type AlertStatus = 'firing' | 'resolved';
  /**
   * The alert that started this run, as Alertmanager (or a generic hook)
   * delivered it.
   */
  export interface Alert {
    /**
     * The alert name (the `alertname` label), e.g. "ReconciliationDriftHigh".
     */
    name: string,
    /**
     * Firing or resolved.
     */
    status: AlertStatus,
    /**
     * All labels, `alertname` included, sorted by key.
     */
    labels: Array<[string, string]>,
    /**
     * All annotations (summary, description, runbook_url...), sorted by key.
     */
    annotations: Array<[string, string]>,
    /**
     * When the alert started firing, RFC 3339, if the sender said.
     */
    startsAt?: string,
    /**
     * Alertmanager's fingerprint: the same alert always has the same one.
     */
    fingerprint?: string,
  }
  /**
   * What a playbook reports when it finishes.
   */
  export interface Outcome {
    /**
     * One line for the on-call engineer: what was found, what was done.
     */
    summary: string,
    /**
     * The severity the runbook assigns, e.g. "SEV-0", if the playbook
     * decided one.
     */
    severity?: string,
    /**
     * Named figures the decision rested on (drift, balances, counts).
     * Use `decimal` values for money.
     */
    fields: Array<[string, Value]>,
    /**
     * What a human must still do: postmortem, customer communication,
     * key rotation. Empty when nothing remains.
     */
    checklist: Array<string>,
  }
  /**
   * An endpoint and one method on it.
   */
  export interface RpcMethod {
    endpoint: string,
    method: string,
  }
  /**
   * One capability a playbook needs. `describe` lists them; the host
   * refuses to load a playbook that needs one the config does not grant.
   */
  export type Capability = CapabilityDbRead | CapabilityDbWrite | CapabilityRpc | CapabilityFlagRead | CapabilityFlagWrite | CapabilityPage | CapabilityNotify;
  /**
   * Read queries on a database connection (by config name).
   */
  export interface CapabilityDbRead {
    tag: 'db-read',
    val: string,
  }
  /**
   * Write statements on a database connection (by config name).
   */
  export interface CapabilityDbWrite {
    tag: 'db-write',
    val: string,
  }
  /**
   * A JSON-RPC method or HTTP route on an endpoint (by config name).
   */
  export interface CapabilityRpc {
    tag: 'rpc',
    val: RpcMethod,
  }
  /**
   * Reading flags whose names match this glob.
   */
  export interface CapabilityFlagRead {
    tag: 'flag-read',
    val: string,
  }
  /**
   * Setting flags whose names match this glob.
   */
  export interface CapabilityFlagWrite {
    tag: 'flag-write',
    val: string,
  }
  /**
   * Paging this target (by config name).
   */
  export interface CapabilityPage {
    tag: 'page',
    val: string,
  }
  /**
   * Posting to this channel (by config name).
   */
  export interface CapabilityNotify {
    tag: 'notify',
    val: string,
  }
  /**
   * What a playbook says about itself; `stepgate inspect` shows it.
   */
  export interface Description {
    /**
     * Stable name, e.g. "plaza-reconciliation-drift".
     */
    name: string,
    /**
     * The playbook's own version, e.g. "1.0.0".
     */
    version: string,
    /**
     * One paragraph: what incident it handles and how.
     */
    summary: string,
    /**
     * The alert names it answers.
     */
    alerts: Array<string>,
    /**
     * Every capability it may use.
     */
    capabilities: Array<Capability>,
  }
}
