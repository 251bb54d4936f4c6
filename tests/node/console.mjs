// Drives the web console in Debian's Chromium (headless, through
// playwright-core) for tests/tests/console.rs, which starts the server,
// parks the runs and checks the state store afterwards. Every expectation
// that fails ends this script with exit code 1 and says what it saw.
//
// Input (environment): STEPGATE_URL, CHROMIUM_BIN, SHOTS (a directory),
// TOKEN_ALICE / TOKEN_CAROL / TOKEN_BOB / TOKEN_OPS, RUN_XSS (quorum 1,
// a hostile reason), RUN_Q2 (quorum 2), RUN_STALE (its plan is changed
// while bob looks at it), RUN_PLAN (two pages, approved as one plan). Output: one line per stage; `READY stale` asks
// the test to change the world and answer `GO` on stdin.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const url = process.env.STEPGATE_URL;
const shots = process.env.SHOTS;
const env = (name) => {
  const value = process.env[name];
  if (!value) fail(`${name} is not set`);
  return value;
};

function fail(why) {
  console.error(`FAIL: ${why}`);
  process.exit(1);
}

function expect(ok, why) {
  if (!ok) fail(why);
}

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const browser = await chromium.launch({
  executablePath: env('CHROMIUM_BIN'),
  args: ['--no-sandbox', '--disable-gpu'],
});

async function signIn(token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', (d) => { errors.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  await page.goto(`${url}/ui/`);
  expect(page.url().endsWith('/ui/login'), `an anonymous visit went to ${page.url()}, not the sign-in page`);
  await page.fill('#token', token);
  await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
  expect(page.url().endsWith('/ui/'), `after signing in the page is ${page.url()}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'sg_session');
  expect(session && session.httpOnly && session.sameSite === 'Strict', `the session cookie is ${JSON.stringify(session)}`);
  return { context, page, errors };
}

async function decide(page, runId, seq, button, reason) {
  await page.goto(`${url}/ui/runs/${runId}/approvals/${seq}`);
  await page.fill('#why', reason);
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.click(`#decide button.${button}`),
  ]);
  return response;
}

async function waitForStatus(page, status) {
  await page.waitForFunction(
    (want) => {
      const badge = document.querySelector('#timeline .status');
      return badge && badge.textContent === want;
    },
    status,
    { timeout: 60000 },
  );
}

// 1. A wrong token is refused.
{
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${url}/ui/login`);
  await page.fill('#token', 'sg_not-a-token');
  await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
  const error = await page.textContent('#error');
  expect(error.includes('not recognised'), `a wrong token was answered: ${error}`);
  await context.close();
  console.log('ok: a wrong token is refused');
}

// 2. Alice sees what waits, with the hostile reason inert.
const alice = await signIn(env('TOKEN_ALICE'));
{
  const { page } = alice;
  const rows = await page.locator('#pending tr').count();
  expect(rows === 5, `the approvals page lists ${rows - 1} requests, not 4`);
  const hostile = await page.locator('#pending').textContent();
  expect(hostile.includes('<img src=x onerror='), `the hostile reason is not shown as text: ${hostile}`);
  expect(await page.locator('#pending img').count() === 0, 'the hostile reason became an <img> element');
  expect(await page.evaluate(() => window.__xss === undefined), 'the hostile reason ran a script');
  await page.screenshot({ path: `${shots}/console-approvals.png`, fullPage: true });
  console.log('ok: the approvals page lists the four requests, the hostile reason inert');
}

// 3. Alice reviews the plan of the quorum-1 write and approves it; the
// run page follows the run to its end.
{
  const { page } = alice;
  const run = env('RUN_XSS');
  await page.goto(`${url}/ui/runs/${run}/approvals/1`);
  const diff = await page.textContent('#diff');
  expect(diff.includes('PLAZA_TEST_FLAG') && diff.includes('(unset)') && diff.includes('1'),
    `the write's diff says: ${diff}`);
  const reason = await page.textContent('#reason');
  expect(reason.includes('<script>'), `the reason is shown as: ${reason}`);
  expect(await page.locator('#reason script, #reason img').count() === 0, 'the reason became markup on the plan page');
  const digest = await page.textContent('#digest');
  expect(/^[0-9a-f]{64}$/.test(digest), `the digest shown is ${digest}`);
  await page.screenshot({ path: `${shots}/console-plan.png`, fullPage: true });
  await decide(page, run, 1, 'approve', 'checked the flag by hand: pausing is right');
  expect(page.url().endsWith(`/ui/runs/${run}`), `after approving the page is ${page.url()}`);
  await waitForStatus(page, 'done');
  const timeline = await page.textContent('#timeline');
  expect(timeline.includes('flags.set') && timeline.includes('approved') && timeline.includes('by alice'),
    `the finished timeline says: ${timeline}`);
  await page.screenshot({ path: `${shots}/console-run.png`, fullPage: true });
  expect(await page.evaluate(() => window.__xss === undefined), 'a hostile string ran a script');
  expect(alice.errors.length === 0, `the pages raised: ${alice.errors.join('; ')}`);
  console.log('ok: approved from the plan page; the run page followed the run to done');
}

// 3b. A run that will page twice shows its whole plan; approved as one,
// both pages go out without asking again.
{
  const { page } = alice;
  const run = env('RUN_PLAN');
  await page.goto(`${url}/ui/runs/${run}/approvals/1`);
  const items = await page.locator('#whole-plan li').count();
  expect(items === 2, `the whole plan lists ${items} writes, not 2`);
  const listed = await page.textContent('#whole-plan');
  expect(listed.includes('first page') && listed.includes('second page'), `the whole plan says: ${listed}`);
  await page.locator('#whole-plan').scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${shots}/console-whole-plan.png`, fullPage: true });
  await page.fill('#why-all', 'both pages are the runbook');
  await Promise.all([page.waitForNavigation(), page.click('#approve-all button.approve')]);
  expect(page.url().endsWith(`/ui/runs/${run}`), `after approving the plan the page is ${page.url()}`);
  await waitForStatus(page, 'done');
  console.log('ok: a whole plan approved as one; the run made both writes');
}

// 4. Quorum 2: alice's approval is one of two; carol's settles it.
{
  const run = env('RUN_Q2');
  await decide(alice.page, run, 1, 'approve', 'first of two: the flag is right');
  const status = await alice.page.textContent('#timeline .status');
  expect(status === 'parked', `after one of two approvals the run is ${status}`);
  const carol = await signIn(env('TOKEN_CAROL'));
  await carol.page.goto(`${url}/ui/runs/${run}/approvals/1`);
  const decided = await carol.page.textContent('#decisions');
  expect(decided.includes('alice approved'), `carol sees the decisions: ${decided}`);
  await decide(carol.page, run, 1, 'approve', 'second of two');
  await waitForStatus(carol.page, 'done');
  await carol.context.close();
  console.log('ok: a quorum of two took alice and carol');
}

// 5. The operator who started a run may not approve it, in the page or by
// posting the form anyway.
{
  const ops = await signIn(env('TOKEN_OPS'));
  const run = env('RUN_STALE');
  await ops.page.goto(`${url}/ui/runs/${run}/approvals/3`);
  const note = await ops.page.textContent('#cannot-decide');
  expect(note.includes('You started this run'), `the operator's plan page says: ${note}`);
  const answer = await ops.page.evaluate(async ({ run }) => {
    const csrf = document.querySelector('meta[name=csrf-token]').content;
    const digest = document.querySelector('#digest').textContent;
    const body = new URLSearchParams({ csrf, plan: digest, reason: 'my own', decision: 'approve' });
    const r = await fetch(`/ui/runs/${run}/approvals/3`, { method: 'POST', body });
    return { status: r.status, text: await r.text() };
  }, { run });
  expect(answer.status === 403 && answer.text.includes('may not decide its own writes'),
    `a self-approval was answered ${answer.status}`);
  // Without the session's CSRF token, nothing is decided either.
  const forged = await ops.page.evaluate(async ({ run }) => {
    const body = new URLSearchParams({ csrf: 'forged', plan: 'x', reason: 'r', decision: 'approve' });
    const r = await fetch(`/ui/runs/${run}/approvals/3`, { method: 'POST', body });
    return r.status;
  }, { run });
  expect(forged === 403, `a form without the CSRF token was answered ${forged}`);
  await ops.context.close();
  console.log('ok: self-approval and a forged form refused');
}

// 6. Bob looks at a plan; the world changes and the run re-plans; bob's
// decision on what he saw is refused, and the new plan shown.
{
  const bob = await signIn(env('TOKEN_BOB'));
  const run = env('RUN_STALE');
  await bob.page.goto(`${url}/ui/runs/${run}/approvals/3`);
  const seen = await bob.page.textContent('#digest');
  await bob.page.fill('#why', 'looks right');
  console.log('READY stale');
  const go = await nextLine();
  expect(go.trim() === 'GO', `the test answered ${go}`);
  const [response] = await Promise.all([
    bob.page.waitForNavigation(),
    bob.page.click('#decide button.approve'),
  ]);
  expect(response.status() === 409, `a decision on a stale plan was answered ${response.status()}`);
  const error = await bob.page.textContent('#error');
  expect(error.includes('plan changed'), `the refusal says: ${error}`);
  const now = await bob.page.textContent('#digest');
  expect(now !== seen && /^[0-9a-f]{64}$/.test(now), `the page shows digest ${now} after ${seen}`);
  await bob.context.close();
  console.log('ok: a stale plan refused, the new one shown');
}

await alice.context.close();
await browser.close();
console.log('DONE');
process.exit(0);
