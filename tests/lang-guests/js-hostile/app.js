// A JavaScript playbook that misbehaves on purpose, by the alert's `mode`
// label: `throw` (an Error escapes run), `page` (pages, and lets any error
// escape), `spin` (never returns), anything else finishes. It declares a
// page to `ceo`: loaded without that grant it must be refused.

import { playbook, Description, Outcome, pager, step } from './stepgate.js';

export const { describe, run } = playbook({
  describe() {
    return new Description('js-hostile', '0.1.0').summary('misbehaves on purpose').answers('Hostile').page('ceo');
  },
  run(alert) {
    const mode = alert.label('mode');
    step('Misbehave', () => {
      if (mode === 'throw') throw new TypeError('the ledger does not add up');
      if (mode === 'page') pager.page('ceo', 'critical', 'hostile', 'a page it is granted');
      if (mode === 'spin') {
        let n = 0;
        for (;;) n += 1;
      }
    });
    return new Outcome('all good');
  },
});
