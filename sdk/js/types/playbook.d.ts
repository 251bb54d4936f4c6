/// <reference path="./interfaces/stepgate-playbook-db.d.ts" />
/// <reference path="./interfaces/stepgate-playbook-flags.d.ts" />
/// <reference path="./interfaces/stepgate-playbook-pager.d.ts" />
/// <reference path="./interfaces/stepgate-playbook-rpc.d.ts" />
/// <reference path="./interfaces/stepgate-playbook-runbook.d.ts" />
/// <reference path="./interfaces/stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/playbook@0.1.0' {
  export type Alert = import('stepgate:playbook/types@0.1.0').Alert;
  export type Outcome = import('stepgate:playbook/types@0.1.0').Outcome;
  export type Description = import('stepgate:playbook/types@0.1.0').Description;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
  export type * as StepgatePlaybookDb010 from 'stepgate:playbook/db@0.1.0'; // import stepgate:playbook/db@0.1.0
  export type * as StepgatePlaybookFlags010 from 'stepgate:playbook/flags@0.1.0'; // import stepgate:playbook/flags@0.1.0
  export type * as StepgatePlaybookPager010 from 'stepgate:playbook/pager@0.1.0'; // import stepgate:playbook/pager@0.1.0
  export type * as StepgatePlaybookRpc010 from 'stepgate:playbook/rpc@0.1.0'; // import stepgate:playbook/rpc@0.1.0
  export type * as StepgatePlaybookRunbook010 from 'stepgate:playbook/runbook@0.1.0'; // import stepgate:playbook/runbook@0.1.0
  export type * as StepgatePlaybookTypes010 from 'stepgate:playbook/types@0.1.0'; // import stepgate:playbook/types@0.1.0
  /**
  * What this playbook is, which alerts it answers and what it needs.
  * Called once at load; it must not call any import.
  */
  export function describe(): Description;
  /**
  * Handles one alert. Return `ok` with the outcome, or `err` when the
  * playbook could not finish (a denied write it cannot work around, a
  * backend it cannot reach).
  */
  export function run(alert: Alert): Outcome;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
