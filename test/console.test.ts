/**
 * The web console in a real browser (Debian's chromium driven by playwright-core) against a real
 * two-node cluster: log in; the cluster view shows both nodes; kill -9 node a's process group →
 * b's view shows a dead and its spool taken over, live (no reload), within 5 s; a restarted →
 * the handback shows; hold / release / delete a queued message from the console (file in hold/,
 * tracking log says held; released → delivered; deleted → gone); a message received on a and
 * delivered by b's secondary found by recipient as one timeline with events of both nodes;
 * a read-only user and a forged POST without the CSRF token refused by the server; no session
 * → the login page. Screenshots of every page go to $TANDEM_TEST_OUTPUT (default
 * .tmp/test-output/console in the repository).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { freePort } from './harness/ports.ts';
import { createCluster, type TestCluster } from './harness/cluster.ts';
import { sendMail } from './harness/smtp-client.ts';
import { REPO_ROOT } from './harness/node.ts';
import { hashPassword } from '../src/router/passwords.ts';

const CHROMIUM = '/usr/bin/chromium';
const OUT = process.env.TANDEM_TEST_OUTPUT ?? path.join(REPO_ROOT, '.tmp/test-output/console');
const TOKEN = 'console-test-admin-token-0123456789';

const procs = trackProcesses();
let browser: Browser | undefined;
let cluster: TestCluster | undefined;
let sink: Sink | undefined;
after(async () => {
  await browser?.close().catch(() => undefined);
  await cluster?.stopAll();
  await sink?.stop().catch(() => undefined);
  await procs.stopAll();
});

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
const message = (id: string) => `Subject: console test ${id}\r\nMessage-ID: <${id}@client.test>\r\nX-Test-Id: ${id}\r\n\r\nhello\r\n`;
const inSpool = (dir: string, spool: string, state: string, id: string) => existsSync(path.join(dir, 'spool', spool, state, id));
const anywhere = (dir: string, spool: string, id: string) => ['incoming', 'active', 'deferred', 'hold'].some((s) => inSpool(dir, spool, s, id));

test('the console in chromium against a two-node cluster', { timeout: 240_000 }, async () => {
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-console-'));
  const sinkPort = await freePort();
  cluster = await createCluster({
    dir, relayHost: `127.0.0.1:${sinkPort}`,
    extra: {
      queue: { min_backoff: '1s', max_backoff: '2s' },
      admin: { token: TOKEN, console: { users: [
        { name: 'oper', password: await hashPassword('oper-secret'), role: 'operator' },
        { name: 'viewer', password: await hashPassword('viewer-secret'), role: 'read-only' },
      ] } },
    },
  });
  const c = cluster;
  await c.start('a');
  await c.start('b');
  await c.waitFor('a and b alive', async () => (await c.status('a')).peers[0].status.type === 'alive' && (await c.status('b')).peers[0].status.type === 'alive');
  const consoleB = `http://127.0.0.1:${c.addresses.get('b')!.admin.port}/console`;
  const smtp = (id: string) => c.addresses.get(id)!.smtp.port;

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await ctx.newPage();

  // no session → the login page
  await page.goto(`${consoleB}/queues`);
  assert.match(page.url(), /\/console\/login\?next=/);
  const noSession = await fetch(`${consoleB}/do`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'action=flush' });
  assert.equal(noSession.status, 401, 'an action without a session is refused');
  await page.fill('input[name=user]', 'oper');
  await page.fill('input[name=password]', 'wrong');
  await page.click('button');
  assert.match(await page.textContent('.error') ?? '', /Wrong user or password/);
  await shot(page, 'login');
  await page.fill('input[name=user]', 'oper');
  await page.fill('input[name=password]', 'oper-secret');
  await Promise.all([page.waitForURL(/\/console\/queues/), page.click('button')]);

  // the cluster view: both nodes alive
  await page.goto(`${consoleB}/cluster`);
  await page.waitForSelector('tr[data-node=a] [data-state=alive]');
  await page.waitForSelector('tr[data-node=b] [data-state=alive]');
  await shot(page, 'cluster');

  // messages queued while the next hop is down: two on b (hold/release, delete), one on a (takeover)
  const sent = async (node: string, id: string, to: string) => {
    const r = await sendMail(smtp(node), 'sender@client.test', [to], message(id));
    assert.ok(r.ok && r.queueId, r.response);
    return r.queueId!;
  };
  const heldId = await sent('b', 'm-hold', 'held@remote.test');
  const goneId = await sent('b', 'm-gone', 'gone@remote.test');
  const movedId = await sent('a', 'm-moved', 'moved@remote.test');
  await c.waitFor('the three messages deferred', async () => inSpool(dir, 'b', 'deferred', heldId) && inSpool(dir, 'b', 'deferred', goneId) && inSpool(dir, 'a', 'deferred', movedId));

  // kill -9 a: b's view (not reloaded) shows a dead and its spool delivered by b
  await page.goto(`${consoleB}/cluster`);
  const killedAt = Date.now();
  await c.kill('a');
  await page.waitForSelector('tr[data-node=a] [data-state=dead]', { timeout: 5000 });
  await page.waitForSelector('tr[data-spool=a][data-deliverer=b]', { timeout: Math.max(500, 5000 - (Date.now() - killedAt)) });
  const seenMs = Date.now() - killedAt;
  assert.ok(seenMs <= 5000, `takeover shown ${seenMs} ms after the kill`);
  await shot(page, 'cluster-takeover');
  console.log(`# console: a killed, b's console showed a dead and spool a taken over ${seenMs} ms later, without a reload`);

  // a read-only user: the page shows the action, the server refuses it
  const viewerCtx = await browser.newContext();
  const viewer = await viewerCtx.newPage();
  await viewer.goto(`${consoleB}/login`);
  await viewer.fill('input[name=user]', 'viewer');
  await viewer.fill('input[name=password]', 'viewer-secret');
  await Promise.all([viewer.waitForURL(/\/console\/cluster/), viewer.click('button')]);
  await viewer.goto(`${consoleB}/confirm?action=hold&node=b&id=${heldId}`);
  assert.match(await viewer.textContent('main') ?? '', /read-only\) cannot do this/);
  const viewerCsrf = await viewer.getAttribute('body', 'data-csrf');
  const refused = await viewer.request.post(`${consoleB}/do`, { form: { _csrf: viewerCsrf!, action: 'hold', node: 'b', id: heldId }, maxRedirects: 0 });
  assert.equal(refused.status(), 403, 'a read-only user cannot hold');
  assert.match(await refused.text(), /read-only role/);
  await viewerCtx.close();

  // a forged POST without the CSRF token (with the operator's cookie) is refused
  const forged = await page.request.post(`${consoleB}/do`, { form: { action: 'delete', node: 'b', id: heldId }, maxRedirects: 0 });
  assert.equal(forged.status(), 403);
  assert.ok(inSpool(dir, 'b', 'deferred', heldId), 'neither refused request changed the message');

  // hold from the message page, with the confirmation
  await page.goto(`${consoleB}/queues`);
  await page.waitForSelector(`tr[data-id="${heldId}"]`);
  await shot(page, 'queues');
  await page.click(`tr[data-id="${heldId}"] a`);
  await page.click('text=Hold…');
  assert.match(await page.textContent('.explain') ?? '', /moves to hold\//);
  await shot(page, 'confirm-hold');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  await c.waitFor('the held file in hold/', async () => inSpool(dir, 'b', 'hold', heldId));
  assert.ok(c.trackingEvents().some((e) => e.event === 'held' && e.queueId === heldId && e.node === 'b'), 'the tracking log says held');
  await shot(page, 'message-held');

  // delete with the confirmation → gone
  await page.goto(`${consoleB}/queues/${goneId}`);
  await page.click('text=Delete…');
  assert.match(await page.textContent('.explain') ?? '', /cannot be undone/);
  await Promise.all([page.waitForURL(/\/console\/queues\?done=/), page.click('form.confirm button')]);
  await c.waitFor('the deleted message gone', async () => !anywhere(dir, 'b', goneId));
  assert.ok(c.trackingEvents().some((e) => e.event === 'deleted' && e.queueId === goneId));

  // the next hop comes back; release → delivered; b's secondary delivers a's message
  sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
  await page.goto(`${consoleB}/queues/${heldId}`);
  await page.click('text=Release…');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  await c.waitFor('the released message delivered', async () => c.trackingEvents().some((e) => e.event === 'delivered' && e.queueId === heldId), 30_000);
  await c.waitFor('a\'s message delivered by b\'s secondary', async () => c.trackingEvents().some((e) => e.event === 'delivered' && e.queueId === movedId && e.node === 'b' && e.secondary === 'a'), 30_000);
  await sink.waitForCount(2, 10_000);
  assert.equal(sink.countsByTestId().get('m-gone'), undefined, 'the deleted message was never sent');

  // a back: the handback shows in the live view
  await page.goto(`${consoleB}/cluster`);
  await c.start('a');
  await page.waitForSelector('tr[data-spool=a][data-deliverer=a]', { timeout: 30_000 });
  assert.match(await page.textContent('tr[data-spool=a]') ?? '', /handed back by b/);
  await page.waitForSelector('tr[data-node=a] [data-state=alive]', { timeout: 30_000 });
  await shot(page, 'cluster-handback');

  // tracking: a's message by recipient, one timeline from both nodes (a's index answers again)
  await page.goto(`${consoleB}/tracking?to=moved@remote.test`);
  const timeline = page.locator(`section.timeline[data-queue-id="${movedId}"]`);
  await timeline.waitFor();
  const events = await timeline.locator('li').evaluateAll((lis) => lis.map((li) => `${li.getAttribute('data-event')}@${li.getAttribute('data-node')}`));
  assert.ok(events.includes('received@a') && events.includes('delivered@b'), `events of both nodes: ${events.join(', ')}`);
  assert.ok(events.includes('takeover@b'), `the takeover is in the timeline: ${events.join(', ')}`);
  assert.equal(await page.locator('section.timeline').count(), 1, 'one timeline for the message');
  await shot(page, 'tracking');

  // the other pages render
  await page.goto(`${consoleB}/operations`);
  await shot(page, 'operations');
  await page.goto(`${consoleB}/charts`);
  await page.waitForSelector('#chart-traffic[data-points]');
  assert.ok(await page.locator('#chart-traffic canvas').count() >= 1, 'the chart is drawn');
  await shot(page, 'charts');

  // CSP: no inline script allowed, nothing from another host
  const res = await fetch(`${consoleB}/login`);
  assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'/);
  assert.ok(readdirSync(OUT).filter((f) => f.endsWith('.png')).length >= 8);
});
