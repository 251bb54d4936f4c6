export const page = (...args) => globalThis.host.pager.page(...args);
export const notify = (...args) => globalThis.host.pager.notify(...args);
