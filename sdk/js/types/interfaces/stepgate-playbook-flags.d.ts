/// <reference path="./stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/flags@0.1.0' {
  /**
   * The flag's current value, or none if it is not set. A read.
   */
  export function get(name: string): string | undefined;
  /**
   * Sets the flag to `value` and returns the value it had before. A
   * write: it passes the gate and carries a `reason`. In a dry run
   * nothing changes and the current value is returned.
   */
  export function set(name: string, value: string, reason: string): string | undefined;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
}
