/**
 * The console's Queues page and bulk actions over a queue larger than the queue manager's
 * memory (queue.active_message_limit 20, 60 messages queued, next hop down), against a real
 * node process and chromium (playwright-core): the list shows every queued message (not only
 * those in memory) with paging and filters; a bulk action by recipient domain touches exactly
 * the matching messages, on disk too (hold/ checked on disk, tracking lines counted), and the
 * confirmation page states that number; the list stays right after a delete, a restart (the
 * index is read again from the spool), and deliveries that leave some recipients pending.
 * Screenshots go to $TANDEM_TEST_OUTPUT (default .tmp/test-output/console).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { freePort } from './harness/ports.ts';
import { startNode, writeNodeConfig, REPO_ROOT, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { eventually } from './harness/wait.ts';
import { hashPassword } from '../src/router/passwords.ts';

const CHROMIUM = '/usr/bin/chromium';
const OUT = process.env.TANDEM_TEST_OUTPUT ?? path.join(REPO_ROOT, '.tmp/test-output/console');
const TOKEN = 'console-index-admin-token-0123456789';

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

interface Sent { i: number; id: string; sender: string; recipients: string[] }

test('the Queues page and bulk actions see every queued message, those only on disk too', { timeout: 240_000 }, async () => {
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-console-index-'));
  const sinkPort = await freePort();
  const adminPort = await freePort();
  const config = writeNodeConfig(dir, {
    relay: { host: `127.0.0.1:${sinkPort}` }, // nothing listens yet: every message is deferred
    queue: { min_backoff: '10m', max_backoff: '1h', active_message_limit: 20 },
    admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN, console: { users: [{ name: 'oper', password: await hashPassword('oper-secret'), role: 'operator' }] } },
  });
  const logFile = path.join(dir, 'node.log');
  node = await startNode({ config, logFile });
  const base = `http://127.0.0.1:${adminPort}/console`;
  const spoolDir = path.join(dir, 'spool', 'a');
  const where = (id: string) => ['incoming', 'active', 'deferred', 'hold'].find((s) => existsSync(path.join(spoolDir, s, id)));
  const tracking = () => readFileSync(path.join(dir, 'tracking.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, string>);
  const eventsOf = (event: string, ids: string[]) => tracking().filter((e) => e.event === event && ids.includes(e.queueId)).length;

  // 60 messages: recipients over three domains, every tenth with a second recipient in big.test
  const domains = ['big.test', 'mid.test', 'other.test'];
  const sent: Sent[] = await Promise.all(Array.from({ length: 60 }, async (_, i) => {
    const sender = `s${i % 4}@send${i % 2}.test`;
    const recipients = [`u${i}@${domains[i % 3]}`, ...(i % 10 === 0 ? [`extra${i}@big.test`] : [])];
    const r = await sendMail(node!.smtp.port, sender, recipients, `Subject: m${i}\r\nMessage-ID: <m${i}@client.test>\r\nX-Test-Id: m${i}\r\n\r\nhello ${i}\r\n`);
    assert.ok(r.ok && r.queueId, r.response);
    return { i, id: r.queueId!, sender, recipients };
  }));
  await eventually('all 60 deferred', () => sent.every((m) => where(m.id) === 'deferred'), 60_000);
  const ids = (ms: Sent[]) => ms.map((m) => m.id).sort();
  const toDomain = (d: string) => (m: Sent) => m.recipients.some((r) => r.endsWith(`@${d}`));

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const logIn = async (): Promise<Page> => {
    const page = await (await browser!.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
    await page.goto(`${base}/login`);
    await page.fill('input[name=user]', 'oper');
    await page.fill('input[name=password]', 'oper-secret');
    await Promise.all([page.waitForURL(/\/console\/cluster/), page.click('button')]);
    return page;
  };
  let page = await logIn();
  /** The list under `query`: the total it states and the ids of every page. */
  const listed = async (query: string): Promise<{ total: number; ids: string[]; pages: number }> => {
    const out: string[] = [];
    let total = -1;
    let pages = 0;
    for (let p = 1; ; p++) {
      await page.goto(`${base}/queues?${query}${query ? '&' : ''}page=${p}`);
      total = Number(await page.getAttribute('.list-total', 'data-total'));
      out.push(...await page.locator('table.messages tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')!)));
      pages = p;
      if (!(await page.locator('a[rel=next]').count())) break;
    }
    return { total, ids: out.sort(), pages };
  };
  const confirmCount = async (query: string, label: string): Promise<number> => {
    await page.goto(`${base}/queues?${query}`);
    await Promise.all([page.waitForURL(/\/console\/confirm/), page.click(`text=${label} all…`)]);
    return Number(await page.getAttribute('.explain [data-count]', 'data-count'));
  };

  // every message listed (not only the 20 in memory), 50 a page, newest first
  const all = await listed('');
  assert.equal(all.total, 60, 'the page counts every queued message');
  assert.equal(all.pages, 2);
  assert.deepEqual(all.ids, ids(sent), 'both pages together list each message once');
  await page.goto(`${base}/queues`);
  const first = await page.locator('table.messages tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')!));
  assert.equal(first.length, 50);
  assert.deepEqual(first, [...first].sort().reverse(), 'newest first');
  assert.equal(await page.textContent('[data-count=deferred]'), '60');
  await page.screenshot({ path: path.join(OUT, 'index-queues.png'), fullPage: true });

  // filters: the same messages as the model says, from memory and disk alike
  for (const [query, want] of [
    ['to=big.test', sent.filter(toDomain('big.test'))],
    ['from=send1.test', sent.filter((m) => m.sender.endsWith('@send1.test'))],
    ['from=S1%40send1.test', sent.filter((m) => m.sender === 's1@send1.test')],
    ['to=u7%40mid.test', sent.filter((m) => m.recipients.includes('u7@mid.test'))],
    ['to=big.test&from=send0.test', sent.filter((m) => toDomain('big.test')(m) && m.sender.endsWith('@send0.test'))],
  ] as Array<[string, Sent[]]>) {
    const got = await listed(query);
    assert.equal(got.total, want.length, query);
    assert.deepEqual(got.ids, ids(want), query);
  }

  // hold every message with a recipient in big.test: the count asked is the number held, on disk
  const big = sent.filter(toDomain('big.test'));
  assert.equal(big.length, 24);
  assert.equal(await confirmCount('to=big.test', 'Hold'), 24, 'the confirmation counts the messages on disk too');
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.match(await page.textContent('.flash') ?? '', /24 message\(s\): 24 held/);
  assert.ok(big.every((m) => where(m.id) === 'hold'), 'the 24 files are in hold/');
  assert.ok(sent.filter((m) => !big.includes(m)).every((m) => where(m.id) === 'deferred'), 'the others are untouched');
  assert.equal(eventsOf('held', ids(big)), 24, 'tracking: held, once each');
  assert.deepEqual((await listed('state=hold')).ids, ids(big));
  assert.equal(await page.textContent('[data-count=hold]'), '24');

  // delete every message from s0@send0.test (held or not)
  const s0 = sent.filter((m) => m.sender === 's0@send0.test');
  assert.equal(await confirmCount('from=s0%40send0.test', 'Delete'), s0.length);
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.ok(s0.every((m) => where(m.id) === undefined), 'their files are gone');
  assert.equal(eventsOf('deleted', ids(s0)), s0.length, 'tracking: deleted, once each');
  let queued = sent.filter((m) => !s0.includes(m));
  assert.deepEqual((await listed('')).ids, ids(queued));

  // a restart: the index is read again from the spool, the same list and filters
  await node.stop();
  node = await startNode({ config, logFile });
  await node.proc.waitForLine((l) => l.json?.event === 'spool-recovered', 60_000);
  page = await logIn();
  assert.deepEqual((await listed('')).ids, ids(queued), 'after a restart: every message still listed');
  assert.deepEqual((await listed('state=hold')).ids, ids(big.filter((m) => !s0.includes(m))), 'held ones still held');
  assert.deepEqual((await listed('to=other.test')).ids, ids(queued.filter(toDomain('other.test'))));

  // the next hop comes up, refusing the extra recipients for now: flush everything (the held
  // ones stay held), then release the held ones
  sink = await startSink({ listen: `127.0.0.1:${sinkPort}`, failRcpt: [{ pattern: '^extra', code: 451 }] });
  assert.equal(await confirmCount('', 'Flush'), queued.length);
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  const held = big.filter((m) => !s0.includes(m));
  assert.equal(await confirmCount('state=hold', 'Release'), held.length);
  await Promise.all([page.waitForURL(/done=/), page.click('form.confirm button')]);
  assert.equal(eventsOf('released', ids(held)), held.length, 'tracking: released, once each');
  const mains = queued.map((m) => m.recipients[0]);
  await eventually('every first recipient delivered', () => {
    const got = new Set(sink!.readRecords().flatMap((r) => r.to));
    return mains.every((a) => got.has(a));
  }, 60_000);
  // left: the messages whose extra recipient was deferred, with only that one pending
  queued = queued.filter((m) => m.recipients.length > 1);
  await eventually('only the partly delivered messages left', async () => (await listed('')).total === queued.length, 30_000);
  assert.deepEqual((await listed('')).ids, ids(queued));
  assert.deepEqual((await listed('to=big.test')).ids, ids(queued), 'their pending recipient is in big.test');
  assert.equal((await listed('to=mid.test')).total, 0, 'a delivered recipient no longer matches');
  assert.equal((await listed(`to=${encodeURIComponent(queued[0].recipients[0])}`)).total, 0);
  assert.deepEqual((await listed(`to=${encodeURIComponent(queued[0].recipients[1])}`)).ids, [queued[0].id]);
  await page.goto(`${base}/queues`);
  const cells = await page.locator('table.messages tbody tr td:nth-child(5)').allTextContents();
  assert.deepEqual(cells.sort(), queued.map((m) => m.recipients[1]).sort(), 'the list shows the recipients still pending');
  assert.ok(queued.every((m) => where(m.id) === 'deferred'));
  const perRcpt = new Map<string, number>();
  for (const r of sink.readRecords()) for (const a of r.to) perRcpt.set(a, (perRcpt.get(a) ?? 0) + 1);
  assert.ok(mains.every((a) => perRcpt.get(a) === 1), 'each delivered once');
  assert.ok(s0.every((m) => !perRcpt.has(m.recipients[0])), 'deleted messages never sent');
  await page.screenshot({ path: path.join(OUT, 'index-after.png'), fullPage: true });
});
