/// <reference path="./stepgate-playbook-types.d.ts" />
declare module 'stepgate:playbook/rpc@0.1.0' {
  /**
   * Calls JSON-RPC 2.0 `method` on `endpoint` with `params-json` (a JSON
   * array or object) and returns the `result` member as JSON text.
   * 
   * Each method is classed read or write in the config; a write passes
   * the gate like any other write and needs a `reason` (reads pass "").
   * A JSON-RPC error object comes back as `backend` with its code and
   * message.
   */
  export function call(endpoint: string, method: string, paramsJson: string, reason: string): string;
  /**
   * Sends `request` to HTTP `endpoint`. GET and HEAD are reads; every
   * other method is a write unless the config classes the route a read,
   * and a write needs a `reason`.
   */
  export function http(endpoint: string, request: HttpRequest, reason: string): HttpResponse;
  export type Error = import('stepgate:playbook/types@0.1.0').Error;
  /**
   * An HTTP request to an admin API endpoint. `path` is relative to the
   * endpoint's base URL.
   */
  export interface HttpRequest {
    method: string,
    path: string,
    headers: Array<[string, string]>,
    body: Uint8Array,
  }
  /**
   * The endpoint's answer.
   */
  export interface HttpResponse {
    status: number,
    headers: Array<[string, string]>,
    body: Uint8Array,
  }
}
