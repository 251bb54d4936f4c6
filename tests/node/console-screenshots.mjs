// The README's screenshots of the web console (scripts/console-screenshots
// runs this against the demo config): an approver signs in, looks at what
// waits and at the plan of RUN's write SEQ, approves the whole plan, and
// the run page follows the run to its end. Writes PNGs into OUT.
import { chromium } from 'playwright-core';

const { STEPGATE_URL: url, CHROMIUM_BIN, TOKEN, RUN, SEQ, OUT } = process.env;
const browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: ['--no-sandbox', '--disable-gpu'] });
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
await page.goto(`${url}/ui/login`);
await page.fill('#token', TOKEN);
await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
await page.screenshot({ path: `${OUT}/console-approvals.png` });
await page.goto(`${url}/ui/runs/${RUN}/approvals/${SEQ}`);
await page.screenshot({ path: `${OUT}/console-plan.png`, fullPage: true });
const all = await page.locator('#approve-all').count();
const form = all ? '#approve-all' : '#decide';
await page.fill(`${form} textarea`, 'Unexplained drift: the runbook says pause custodied mode and tell the CEO');
await Promise.all([page.waitForNavigation(), page.click(`${form} button.approve`)]);
await page.waitForFunction(() => document.querySelector('#timeline .status')?.textContent === 'done', null, { timeout: 60000 });
await page.screenshot({ path: `${OUT}/console-run.png`, fullPage: true });
await browser.close();
