export const get = (...args) => globalThis.host.flags.get(...args);
export const set = (...args) => globalThis.host.flags.set(...args);
