export const call = (...args) => globalThis.host.rpc.call(...args);
export const http = (...args) => globalThis.host.rpc.http(...args);
