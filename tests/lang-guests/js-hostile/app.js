// A JavaScript playbook that misbehaves on purpose, by the alert's `mode`
// label: `throw` (an Error escapes run), `page` (pages, and lets any error
// escape), `spin` (never returns), `stdlib` (reads the time and randomness,
// and tries `fetch`, catching what is refused), `fetch` (lets the error
// escape), anything else finishes. It declares a
// page to `ceo`: loaded without that grant it must be refused.

import { playbook, Description, Outcome, pager, step } from './stepgate.js';

export const { describe, run } = playbook({
  describe() {
    return new Description('js-hostile', '0.1.0').summary('misbehaves on purpose').answers('Hostile').page('ceo');
  },
  run(alert) {
    const mode = alert.label('mode');
    const outcome = step('Misbehave', () => {
      if (mode === 'throw') throw new TypeError('the ledger does not add up');
      if (mode === 'page') pager.page('ceo', 'critical', 'hostile', 'a page it is granted');
      if (mode === 'spin') {
        let n = 0;
        for (;;) n += 1;
      }
      if (mode === 'stdlib') return stdlib();
      if (mode === 'fetch') fetch('http://127.0.0.1/');
      return undefined;
    });
    return outcome ?? new Outcome('all good');
  },
});

/** What a new author reaches for first, and what each does. */
function stdlib() {
  const now = new Date().toISOString();
  const ms = Date.now();
  const started = performance.now();
  const random = Math.random();
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  let fetched;
  try {
    fetch('http://127.0.0.1/');
    fetched = 'fetch: allowed';
  } catch (e) {
    fetched = `fetch: ${e.name}: ${e.message}`;
  }
  return new Outcome('stdlib')
    .field('now', now)
    .field('time_ms', ms)
    .field('monotonic_ms', Math.round(performance.now() - started))
    .field('random', String(random))
    .field('urandom', Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''))
    .todo(fetched);
}
