/**
 * The console's actions on many messages, and its login throttle, against a real node process
 * (chromium via playwright-core for the pages; plain HTTP for the login flood):
 *  - hold / release / delete / flush of every message matching the Queues page's filter: the
 *    confirmation states the count the node finds; the node applies the filter (its bulk
 *    route); a count that changed before the confirmation is refused, nothing done; a
 *    read-only user is refused by the node;
 *  - flush of one message (console button, and `tandem queue flush ID`): delivered at once,
 *    past its backoff and the dead-destination memory, while the others keep waiting;
 *  - failed logins: free, then a delay, then a lockout, per client address and per user
 *    (127.0.0.2 is another client), with Retry-After; counted in /metrics and logged.
 * Screenshots go to $TANDEM_TEST_OUTPUT (default .tmp/test-output/console).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { freePort } from './harness/ports.ts';
import { startNode, writeNodeConfig, REPO_ROOT, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { runCli } from './harness/tandem.ts';
import { eventually } from './harness/wait.ts';
import { hashPassword } from '../src/router/passwords.ts';

const CHROMIUM = '/usr/bin/chromium';
const OUT = process.env.TANDEM_TEST_OUTPUT ?? path.join(REPO_ROOT, '.tmp/test-output/console');
const TOKEN = 'console-bulk-admin-token-0123456789';

const procs = trackProcesses();
let browser: Browser | undefined;
let node: RunningNode | undefined;
let sink: Sink | undefined;
after(async () => {
  await browser?.close().catch(() => undefined);
  await node?.stop().catch(() => undefined);
  await sink?.stop().catch(() => undefined);
  await procs.stopAll();
});

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });

/** A login POST from `from` (a loopback address): the status and Retry-After. */
function login(port: number, user: string, password: string, from = '127.0.0.1'): Promise<{ status: number; retryAfter?: number; text: string }> {
  return new Promise((resolve, reject) => {
    const body = new URLSearchParams({ user, password, next: '/console/cluster' }).toString();
    const req = http.request({ host: '127.0.0.1', port, localAddress: from, method: 'POST', path: '/console/login', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, ...(res.headers['retry-after'] ? { retryAfter: Number(res.headers['retry-after']) } : {}) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const waitSeconds = (s: number) => new Promise((r) => setTimeout(r, s * 1000));

test('bulk actions on what a filter matches, flush of one message, login throttling', { timeout: 240_000 }, async () => {
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-console-bulk-'));
  const sinkPort = await freePort();
  const adminPort = await freePort();
  const logFile = path.join(dir, 'node.log');
  const config = writeNodeConfig(dir, {
    relay: { host: `127.0.0.1:${sinkPort}` }, // nothing listens yet: every message is deferred
    queue: { min_backoff: '10m', max_backoff: '1h' }, // … and stays deferred unless flushed
    admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN, console: {
      users: [
        { name: 'oper', password: await hashPassword('oper-secret'), role: 'operator' },
        { name: 'viewer', password: await hashPassword('viewer-secret'), role: 'read-only' },
      ],
      login: { free_failures: 2, delay: '2s', lockout_after: 4, lockout: '4s' },
    } },
  });
  node = await startNode({ config, logFile });
  const base = `http://127.0.0.1:${adminPort}/console`;
  const spoolDir = path.join(dir, 'spool', 'a');
  const where = (id: string) => ['incoming', 'active', 'deferred', 'hold'].find((s) => existsSync(path.join(spoolDir, s, id)));
  const tracking = () => readFileSync(path.join(dir, 'tracking.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, string>);
  const eventsOf = (event: string, ids: string[]) => tracking().filter((e) => e.event === event && ids.includes(e.queueId)).length;
  const send = async (to: string, testId: string) => {
    const r = await sendMail(node!.smtp.port, 'sender@client.test', [to], `Subject: ${testId}\r\nMessage-ID: <${testId}@client.test>\r\nX-Test-Id: ${testId}\r\n\r\nhello\r\n`);
    assert.ok(r.ok && r.queueId, r.response);
    return r.queueId!;
  };
  const deferred = (ids: string[]) => eventually(`${ids.length} message(s) deferred`, () => ids.every((id) => where(id) === 'deferred'));

  const holdIds = [await send('x1@hold.test', 'h1'), await send('x2@hold.test', 'h2'), await send('x3@hold.test', 'h3')];
  const keepIds = [await send('y1@keep.test', 'k1'), await send('y2@keep.test', 'k2')];
  const flushId = await send('f@flush.test', 'f1');
  await deferred([...holdIds, ...keepIds, flushId]);

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const logIn = async (user: string, password: string) => {
    const page = await (await browser!.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
    await page.goto(`${base}/login`);
    await page.fill('input[name=user]', user);
    await page.fill('input[name=password]', password);
    await Promise.all([page.waitForURL(/\/console\/cluster/), page.click('button')]);
    return page;
  };

  // a read-only user sees the count, and the node refuses the action
  const viewer = await logIn('viewer', 'viewer-secret');
  await viewer.goto(`${base}/queues?to=hold.test`);
  await Promise.all([viewer.waitForURL(/\/console\/confirm/), viewer.click('text=Hold all…')]);
  assert.equal(await viewer.getAttribute('.explain [data-count]', 'data-count'), '3');
  assert.match(await viewer.textContent('main') ?? '', /read-only\) cannot do this/);
  const viewerForm = Object.fromEntries(await viewer.locator('form.confirm input[type=hidden]').evaluateAll((els) => els.map((e) => [(e as HTMLInputElement).name, (e as HTMLInputElement).value])));
  const refused = await viewer.request.post(`${base}/do`, { form: viewerForm, maxRedirects: 0 });
  assert.equal(refused.status(), 403, 'a read-only user cannot hold');
  assert.match(await refused.text(), /read-only role/);
  assert.ok(holdIds.every((id) => where(id) === 'deferred'), 'nothing held by the refused request');

  // hold all that match "to hold.test": the confirmation states 3; a fourth arrives before the
  // click → refused, nothing done; asked again → 4 held, the others untouched
  const page = await logIn('oper', 'oper-secret');
  await page.goto(`${base}/queues?to=hold.test`);
  await shot(page, 'bulk-queues');
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Hold all…')]);
  assert.match(await page.textContent('.explain') ?? '', /with a recipient in hold\.test still pending on node a: 3 message\(s\)/);
  await shot(page, 'bulk-confirm');
  holdIds.push(await send('x4@hold.test', 'h4'));
  await deferred(holdIds);
  await Promise.all([page.waitForURL(/failed=/), page.click('form.confirm button')]);
  assert.match(await page.textContent('.error') ?? '', /4 message\(s\) match now, not 3 as confirmed/);
  assert.ok(holdIds.every((id) => where(id) === 'deferred'), 'a changed count: nothing held');
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Hold all…')]);
  assert.equal(await page.getAttribute('.explain [data-count]', 'data-count'), '4');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.match(await page.textContent('.flash') ?? '', /4 message\(s\): 4 held/);
  assert.ok(holdIds.every((id) => where(id) === 'hold'), 'the four files are in hold/');
  assert.ok([...keepIds, flushId].every((id) => where(id) === 'deferred'), 'messages outside the filter are untouched');
  assert.equal(eventsOf('held', holdIds), 4, 'the tracking log says held, once each');
  await shot(page, 'bulk-held');

  // release all on hold (a state filter)
  await page.goto(`${base}/queues?state=hold`);
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Release all…')]);
  assert.equal(await page.getAttribute('.explain [data-count]', 'data-count'), '4');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.match(await page.textContent('.flash') ?? '', /4 released/);
  assert.equal(eventsOf('released', holdIds), 4);
  await deferred(holdIds); // tried again at once, and deferred: the next hop is still down

  // delete all for keep.test, confirmed with the count → gone
  await page.goto(`${base}/queues?to=%40keep.test`);
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Delete all…')]);
  assert.match(await page.textContent('.explain') ?? '', /2 message\(s\).*cannot be undone/s);
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.ok(keepIds.every((id) => where(id) === undefined), 'both deleted');
  assert.equal(eventsOf('deleted', keepIds), 2);

  // the next hop is back: flush one message from its page → delivered now (its retry is 10
  // minutes away, and the destination is remembered as dead), the others keep waiting
  sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
  await page.goto(`${base}/queues/${flushId}`);
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Flush…')]);
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.match(await page.textContent('.flash') ?? '', /Flush .* done \(flushed\)/);
  await sink.waitForCount(1, 30_000);
  await eventually('the flushed message delivered', () => eventsOf('delivered', [flushId]) === 1);
  assert.ok(holdIds.every((id) => where(id) === 'deferred'), 'the other messages wait for their retry time');

  // `tandem queue flush ID`: the same for one message from the command line
  const cli = await runCli(['queue', 'flush', holdIds[0], '--admin', `127.0.0.1:${adminPort}`, '--token', TOKEN]);
  assert.equal(cli.code, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, /1 message\(s\) scheduled for immediate delivery/);
  await eventually('the message flushed by the CLI delivered', () => eventsOf('delivered', [holdIds[0]]) === 1);

  // flush all that match → the other three delivered, nothing sent twice, nothing deleted sent
  await page.goto(`${base}/queues?to=hold.test&state=deferred`);
  await Promise.all([page.waitForURL(/\/console\/confirm/), page.click('text=Flush all…')]);
  assert.equal(await page.getAttribute('.explain [data-count]', 'data-count'), '3');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  await sink.waitForCount(5, 30_000);
  await eventually('every hold.test message delivered', () => eventsOf('delivered', holdIds) === 4);
  const counts = sink.countsByTestId();
  assert.deepEqual(['h1', 'h2', 'h3', 'h4', 'f1'].map((t) => counts.get(t)), [1, 1, 1, 1, 1], 'each delivered once');
  assert.equal(counts.get('k1') ?? counts.get('k2'), undefined, 'the deleted messages were never sent');
  const actions = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"console-action"')).map((l) => JSON.parse(l));
  assert.ok(actions.some((a) => a.user === 'oper' && a.action === 'bulk-hold' && a.ok && a.matched === 4), 'the bulk hold is logged with its user');
  await browser.close();
  browser = undefined;

  // login throttling: 2 free failures, then a 2 s delay, at 4 a 4 s lockout; per address and per user
  let r = await login(adminPort, 'oper', 'wrong-1');
  assert.deepEqual([r.status, r.retryAfter], [401, undefined]);
  r = await login(adminPort, 'oper', 'wrong-2');
  assert.deepEqual([r.status, r.retryAfter], [401, undefined], 'two free failures');
  r = await login(adminPort, 'oper', 'wrong-3');
  assert.deepEqual([r.status, r.retryAfter], [401, 2], 'the third starts a delay');
  r = await login(adminPort, 'oper', 'oper-secret');
  assert.equal(r.status, 429, 'during the delay even the right password is refused (unchecked)');
  assert.match(r.text, /too many failed logins/);
  await waitSeconds(r.retryAfter!);
  r = await login(adminPort, 'oper', 'wrong-4');
  assert.deepEqual([r.status, r.retryAfter], [401, 4], 'the fourth locks out');
  assert.equal((await login(adminPort, 'oper', 'oper-secret', '127.0.0.2')).status, 429, 'the user is locked out from another address too');
  assert.equal((await login(adminPort, 'viewer', 'viewer-secret', '127.0.0.1')).status, 429, 'and the address for every user');
  assert.equal((await login(adminPort, 'viewer', 'viewer-secret', '127.0.0.2')).status, 303, 'another user from another address is not affected');
  await waitSeconds(4);
  assert.equal((await login(adminPort, 'oper', 'oper-secret')).status, 303, 'the lockout ends');

  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const metric = (re: RegExp) => Number(metrics.match(re)?.[1] ?? 0);
  assert.equal(metric(/^tandem_console_logins_total\{result="failed"\} (\d+)/m), 4);
  assert.equal(metric(/^tandem_console_logins_total\{result="throttled"\} (\d+)/m), 3);
  assert.equal(metric(/^tandem_console_login_blocks_total\{by="address",kind="lockout"\} (\d+)/m), 1);
  assert.equal(metric(/^tandem_console_login_blocks_total\{by="address",kind="delay"\} (\d+)/m), 1);
  const failedLogins = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"console-login-failed"')).map((l) => JSON.parse(l));
  assert.equal(failedLogins.length, 4, 'each failure logged');
  assert.ok(failedLogins.some((l) => l.user === 'oper' && l.client === '127.0.0.1' && l.lockout === true), 'the lockout is logged with user and address');
});
