/// <reference path="./stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/runbook@0.1.0' {
  /**
   * Marks the start of a named step ("Triage", "Mitigate"). Every call
   * after it is shown and journaled under this step.
   */
  export function step(name: string): void;
  /**
   * A line for the on-call engineer, shown under the current step.
   */
  export function log(level: Level, message: string): void;
  /**
   * Now, in milliseconds since the Unix epoch (UTC). Use it instead of
   * any other clock: a replay answers with the recorded time, so the
   * playbook decides the same way.
   */
  export function now(): bigint;
  /**
   * Waits `millis` milliseconds ("wait one block, re-check"). Counts
   * against the run's deadline; a wait past it returns `timeout`.
   */
  export function sleep(millis: bigint): void;
  /**
   * Asks a human `question` and returns the answer. An explicit decision
   * point: it passes the write gate, so a dry run answers yes (and says
   * so in the plan) and a live run asks the approver.
   */
  export function confirm(question: string): boolean;
  /**
   * Whether this run is a dry run: every write is planned and shown,
   * none is made. For wording only, so an outcome or a page says
   * "planned", never "halted", for a write that was not made; decide
   * the same way in both modes, or the dry run stops showing what a
   * live run would do.
   */
  export function dryRun(): boolean;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
  /**
   * How much a log line matters.
   * # Variants
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'debug' | 'info' | 'warn' | 'error';
}
