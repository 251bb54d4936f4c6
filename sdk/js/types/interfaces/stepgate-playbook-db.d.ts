/// <reference path="./stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/db@0.1.0' {
  /**
   * Runs one read-only statement on connection `conn` and returns its
   * rows. A read: it runs for real in a dry run too.
   * 
   * The host parses the statement and refuses anything that is not a
   * single read (`invalid`), then runs it in a read-only transaction.
   */
  export function query(conn: string, sql: string, params: Array<Value>): Rows;
  /**
   * Runs one INSERT, UPDATE or DELETE on connection `conn` and returns the
   * number of rows it changed. A write: it needs a write grant, passes
   * the gate, and carries a `reason` that lands in the journal and the
   * audit log.
   * 
   * In a dry run the statement runs inside a transaction that is rolled
   * back, so the result is the real number of rows it would change.
   */
  export function execute(conn: string, sql: string, params: Array<Value>, reason: string): bigint;
  export type Value = import('stepgate:playbook/types@0.1.0').Value;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
  /**
   * The rows a query returned.
   */
  export interface Rows {
    /**
     * Column names, in select-list order.
     */
    columns: Array<string>,
    /**
     * Each row holds one value per column, in the same order.
     */
    rows: Array<Array<Value>>,
  }
}
