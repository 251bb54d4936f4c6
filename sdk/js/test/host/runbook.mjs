export const step = (...args) => globalThis.host.runbook.step(...args);
export const log = (...args) => globalThis.host.runbook.log(...args);
export const now = (...args) => globalThis.host.runbook.now(...args);
export const sleep = (...args) => globalThis.host.runbook.sleep(...args);
export const confirm = (...args) => globalThis.host.runbook.confirm(...args);
export const dryRun = (...args) => globalThis.host.runbook.dryRun(...args);
