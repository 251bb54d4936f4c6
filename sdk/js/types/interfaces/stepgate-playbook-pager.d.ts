/// <reference path="./stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/pager@0.1.0' {
  /**
   * Pages `target` (e.g. "ceo", "on-call") and returns the page's id.
   * In a dry run nobody is paged and the id starts with "dry-run-".
   */
  export function page(target: string, severity: Severity, summary: string, details: string): string;
  /**
   * Posts `message` to `channel` (e.g. "incident").
   */
  export function notify(channel: string, message: string): void;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
  /**
   * How urgently a page needs a human.
   * # Variants
   * 
   * ## `"critical"`
   * 
   * ## `"error"`
   * 
   * ## `"warning"`
   * 
   * ## `"info"`
   */
  export type Severity = 'critical' | 'error' | 'warning' | 'info';
}
