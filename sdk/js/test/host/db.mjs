// The host's db interface, as a test fake: calls go to globalThis.host.db.
export const query = (...args) => globalThis.host.db.query(...args);
export const execute = (...args) => globalThis.host.db.execute(...args);
