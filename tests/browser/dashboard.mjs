// Drives the RustSocks dashboard in headless chromium and checks it against the
// API: node dashboard.mjs API_URL TOKEN SOCKS_HOST:PORT SCREENSHOT_DIR
// Exits non-zero, naming the failed check, on any mismatch, console error or
// script dialog other than the terminate confirmation.
import { chromium } from 'playwright-core';
import net from 'node:net';
import path from 'node:path';

const [base, token, socks, shots] = process.argv.slice(2);
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
const api = async (p) => (await fetch(base + p, { headers: { Authorization: `Bearer ${token}` } })).json();

/** Polls `fn` until it returns a truthy value (10 s at most). */
async function until(what, fn) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A SOCKS5 CONNECT to a closed port: makes an "upstream" telemetry event. */
function refusedConnect() {
  const [host, port] = socks.split(':');
  return new Promise((resolve) => {
    const s = net.connect(Number(port), host, () => s.write(Buffer.from([5, 1, 0])));
    s.once('data', () => { s.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, 0, 1])); s.once('data', () => { s.destroy(); resolve(); }); });
    s.on('error', resolve);
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(e.message));
const unexpectedDialogs = [];
page.on('dialog', async (d) => {
  if (d.type() === 'confirm') await d.accept();
  else { unexpectedDialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); }
});
const shot = async (name) => {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
};
const text = (sel) => page.locator(sel).first().innerText();

try {
  // The API needs a token: the page asks for it once, in a form, not in the URL.
  await page.goto(`${base}/#overview`);
  await page.locator('#token-input').waitFor();
  await page.fill('#token-input', token);
  await page.click('#token-form button');
  check(!page.url().includes(token), 'the token appeared in the URL');

  // Overview: the numbers are the API's.
  const active = await api('/api/sessions/active');
  await until('overview shows the active sessions', async () => (await text('#active-count')) === String(active.total));
  const pool = await api('/api/pool/stats');
  await until('overview shows the idle pool connections', async () => (await text('#pool-idle')).startsWith(String(pool.stats.total_idle)));
  await page.waitForTimeout(2500); // two samples for the charts
  await shot('overview');

  // Pool: one row per destination, totals as the API says.
  await page.goto(`${base}/#pool`);
  await page.locator('#pool-table').waitFor();
  const poolNow = await api('/api/pool/stats');
  check((await page.locator('#pool-table tbody tr').count()) === poolNow.stats.per_destination.length, 'pool table rows != destinations');
  check((await text('#pool-total-idle')) === String(poolNow.stats.total_idle), 'pool idle card != API');
  await page.locator('#pool-table th', { hasText: 'Created' }).click();
  await shot('pool');

  // Telemetry: the list, then an event arriving live.
  await page.goto(`${base}/#telemetry`);
  await page.locator('#events-table').waitFor();
  const before = await page.locator('#events-table tbody tr').count();
  const events = await api('/api/telemetry/events?limit=100');
  check(before === events.count, `telemetry rows ${before} != API ${events.count}`);
  await refusedConnect();
  await until('a live event appears', async () => (await page.locator('#events-table tbody tr').count()) > before);
  await page.selectOption('#cat', 'upstream');
  await until('the category filter applies', async () => {
    const cats = await page.locator('#events-table tbody tr td:nth-child(3)').allInnerTexts();
    return cats.length > 0 && cats.every((c) => c === 'upstream');
  });
  await shot('telemetry');

  // Sessions: active with live counts, history, the hostile name as text.
  await page.goto(`${base}/#sessions`);
  await page.locator('#history-table').waitFor();
  const live = await api('/api/sessions/active?page_size=20');
  check((await page.locator('#active-table tbody tr').count()) === live.sessions.length, 'active rows != API page');
  check((await text('#active-page')).includes(`(${live.total} active)`), 'active total != API');
  const hostile = '<img src=x onerror=alert(1)>:80';
  const cell = page.locator('#history-table td', { hasText: hostile });
  await until('the hostile destination is listed as text', async () => (await cell.count()) > 0);
  check((await page.locator('#history-table img').count()) === 0, 'an <img> element was created from data');
  const history = await api('/api/sessions/history?page_size=20');
  check((await page.locator('#history-table tbody tr').count()) === history.sessions.length, 'history rows != API page');
  check((await text('#history-page')).includes(`(${history.total} sessions)`), 'history total != API');
  await shot('sessions');

  // Detail of the hostile session.
  const hostileRow = page.locator('#history-table tbody tr', { hasText: hostile }).first();
  await hostileRow.locator('a.link').click();
  await page.locator('#session-detail').waitFor();
  check((await text('#session-detail')).includes(hostile), 'detail view lost the destination text');
  await shot('session-detail');

  // Terminate the active session (the confirmation is accepted).
  await page.goto(`${base}/#sessions`);
  await page.locator('#active-table').waitFor();
  await page.locator('#active-table button.danger').first().click();
  await until('the session is gone from the active list', async () => (await api('/api/sessions/active')).total === 0);
  await until('the page shows no active session', async () => (await page.locator('#active-table').count()) === 0);
  await shot('sessions-after-terminate');

  // ACL: the rules in force as the API gives them, a test of a request, a reload.
  await page.goto(`${base}/#acl`);
  await page.locator('#acl-rules').waitFor();
  const acl = await api('/api/acl');
  check(acl.rules.length > 0, 'the server has no ACL rules to show');
  check((await page.locator('#acl-rules tbody tr').count()) === acl.rules.length, 'ACL rule rows != API rules');
  check((await text('#acl-default')) === acl.default_policy, 'ACL default policy != API');
  const blockRule = acl.rules.find((r) => r.action === 'block' && (r.destinations || []).includes('192.0.2.0/24'));
  check(blockRule, 'the API lacks the block rule for 192.0.2.0/24');
  const blockRow = page.locator('#acl-rules tbody tr', { hasText: '192.0.2.0/24' });
  check((await blockRow.count()) === 1, 'no ACL row for the 192.0.2.0/24 rule');
  const blockRowText = await blockRow.first().innerText();
  check(blockRowText.includes('block') && blockRowText.includes(blockRule.origin), `ACL row lacks its action or origin: ${blockRowText}`);
  check(blockRowText.includes(blockRule.description), 'the rule description (HTML) is not shown as text');
  check((await page.locator('#acl-rules img').count()) === 0, 'an <img> element was created from a rule description');
  check((await page.locator('#acl-groups tbody tr').count()) === acl.groups.length, 'ACL group rows != API groups');
  // A request the rule blocks: SSH to 192.0.2.10.
  await page.fill('#acl-client', '198.51.100.7');
  await page.fill('#acl-destination', '192.0.2.10');
  await page.fill('#acl-port', '22');
  await page.selectOption('#acl-command', 'connect');
  await page.click('#acl-test-form button[type=submit]');
  await until('the test shows "block"', async () => (await text('#acl-decision')) === 'block');
  const blocked = await text('#acl-test-details');
  check(blocked.includes(blockRule.origin), `the test result does not name ${blockRule.origin}: ${blocked}`);
  check(blocked.includes('192.0.2.10'), 'the test result lacks the address checked');
  await shot('acl');
  // The same destination on another port: allowed by the default policy.
  await page.fill('#acl-port', '443');
  await page.click('#acl-test-form button[type=submit]');
  await until('the test shows "allow"', async () => (await text('#acl-decision')) === 'allow');
  check((await text('#acl-test-details')).includes('default'), 'the allowed test is not by the default policy');
  // A bad request: the API's message is shown. (Chromium logs the 400 itself to the
  // console: that one message is expected, any other is not.)
  const errorsBefore = consoleErrors.length;
  await page.fill('#acl-client', 'not-an-address');
  await page.click('#acl-test-form button[type=submit]');
  await until('a bad test request shows the error', async () => (await page.locator('#acl-test-error').count()) > 0);
  check((await text('#acl-test-error')).includes('IP address'), 'the error is not the API\'s message');
  await until('the 400 is logged', async () => consoleErrors.length > errorsBefore);
  for (const m of consoleErrors.splice(errorsBefore)) check(m.includes('status of 400'), `console error: ${m}`);
  // Reload: the server reads the same file again.
  await page.click('#acl-reload');
  await until('the reload is reported', async () => (await text('#acl-reload-result')).startsWith('Reloaded'));
  check((await api('/api/acl')).loaded_at !== acl.loaded_at, 'the reload did not change loaded_at');
  await until('the page shows the reloaded rules', async () => (await page.locator('#acl-rules tbody tr').count()) === acl.rules.length);
} catch (e) {
  failures.push(e.message);
}
await browser.close();
check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(' | ')}`);
check(unexpectedDialogs.length === 0, `script dialogs: ${unexpectedDialogs.join(' | ')}`);
if (failures.length) {
  console.error(`FAILED:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log('dashboard: all checks passed');
