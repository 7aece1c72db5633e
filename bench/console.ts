/**
 * console.ts — benchmark the console's queue page with a large queue: time to first paint of
 * the message list in chromium, and the server's time for the page.
 *
 *   node --import tsx bench/console.ts [--messages N=100000]
 *
 * N deferred messages (next attempt in a day, 3 recipients over 500 domains) are written
 * straight into a spool with the Spool API — without fsync, to set up faster; the node does
 * not depend on it — then `tandem start` runs on it (relay host: a closed port) with a console
 * user. Once the node's queue manager holds all N, chromium (playwright-core, /usr/bin/chromium)
 * logs in and opens /console/queues: first contentful paint and load time of --loads loads
 * (default 7), with the load average, and the server time
 * of GET /console/queues (page 1, and page 1000 of the list), and of the confirmation page of a
 * bulk action (the node counts what matches: by state alone from the folder listing, by
 * recipient domain), of the admin API's qshape and of /metrics (counts by state), and the
 * page's size. Prints a summary and one JSON
 * line {"bench":"console",...}. The temp folder is removed at the end.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { Spool } from '../src/spool/index.ts';
import type { Envelope } from '../src/spool/types.ts';
import { startNode, writeNodeConfig } from '../test/harness/node.ts';
import { buildTestMessage } from '../test/harness/load.ts';
import { trackProcesses } from '../test/harness/procs.ts';
import { freePort } from '../test/harness/ports.ts';
import { hashPassword } from '../src/router/passwords.ts';
import { machineInfo } from './procstat.ts';
import { median } from './stats.ts';

const { values } = parseArgs({ options: { messages: { type: 'string', default: '100000' }, loads: { type: 'string', default: '7' } } });
const total = Number(values.messages);
const loads = Number(values.loads);
const procs = trackProcesses();
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-bench-console-'));

async function fill(): Promise<void> {
  const noSync = {
    open: async (p: string, flags: number, mode?: number) => {
      const { open } = await import('node:fs/promises');
      const h = await open(p, flags, mode);
      return Object.assign(h, { sync: async () => {}, datasync: async () => {} });
    },
  };
  const spool = await Spool.open(path.join(dir, 'spool', 'c'), { nodeId: 'c', fsyncDir: async () => {}, io: noSync as never });
  const body = buildTestMessage('console-bench', 'load@client.test', 'x@remote.test', 2048);
  let i = 0;
  const worker = async () => {
    while (i < total) {
      const n = i++;
      const queueId = spool.newQueueId();
      const rcpts = [0, 1, 2].map((k) => `user${n * 3 + k}@domain${(n * 7 + k) % 500}.example`);
      const env: Envelope = {
        queueId, nodeId: 'c', sender: `sender${n % 1000}@client.test`, recipients: rcpts.map((r) => ({ address: r, original: r })),
        arrivedAt: Date.now() - (n % 400) * 60_000, messageId: `<cb-${n}@bench>`, client: { address: '127.0.0.1', helo: 'bench' },
      };
      await spool.commit(env, body);
      await spool.appendStatus(queueId, 'incoming', [{ type: 'deferral', at: Date.now(), attempts: 1, nextAttemptAt: Date.now() + 86_400_000, lastReply: '4.4.1 bench: no answer' }]);
      await spool.move(queueId, 'incoming', 'deferred', { durable: false });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`machine: ${m.nproc} CPUs, ${m.cpuModel}, Node ${m.node}`);
  const t0 = Date.now();
  await fill();
  console.log(`queued ${total} deferred messages in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const adminPort = await freePort();
  const config = writeNodeConfig(dir, {
    node: { id: 'c' }, relay: { host: `127.0.0.1:${await freePort()}` }, queue: { min_backoff: '1h', max_backoff: '2h' },
    admin: { token: 'bench-token-0123456789', console: { users: [{ name: 'op', password: await hashPassword('op'), role: 'operator' }] } },
  });
  const started = Date.now();
  const node = await startNode({ config, admin: `127.0.0.1:${adminPort}`, readyTimeoutMs: 600_000 });
  const base = `http://127.0.0.1:${adminPort}`;
  for (;;) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const queued = [...text.matchAll(/^tandem_queue_messages\{state="\w+"\} (\d+)/gm)].reduce((a, x) => a + Number(x[1]), 0);
    if (queued >= total) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const holding = (Date.now() - started) / 1000;
  // the start-up scan through: every message's envelope in the queue manager's index
  await node.proc.waitForLine((l) => l.json?.event === 'spool-recovered', 1_800_000);
  console.log(`node ready and holding ${total} messages ${holding.toFixed(1)} s after start; start-up scan (envelope index) through after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage();
  await page.goto(`${base}/console/login`);
  await page.fill('input[name=user]', 'op');
  await page.fill('input[name=password]', 'op');
  await Promise.all([page.waitForURL(/cluster/), page.click('button')]);
  const paints: Array<{ fcp: number; load: number }> = [];
  const loadAvgBefore = loadavg()[0];
  for (let i = 0; i < loads; i++) {
    await page.goto(`${base}/console/queues`);
    await page.waitForSelector('table.messages tbody tr');
    paints.push(await page.evaluate(() => {
      const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN;
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      return { fcp, load: nav.loadEventEnd };
    }));
  }
  const cookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
  const serverMs = async (url: string) => { const t = performance.now(); await (await fetch(url, { headers: { cookie } })).text(); return performance.now() - t; };
  const page1 = await serverMs(`${base}/console/queues`);
  const page1000 = await serverMs(`${base}/console/queues?page=1000`);
  const filtered = await serverMs(`${base}/console/queues?to=domain7.example`);
  const bulkByState = await serverMs(`${base}/console/confirm?action=bulk-hold&state=deferred`);
  const bulkByDomain = await serverMs(`${base}/console/confirm?action=bulk-hold&to=domain7.example`);
  const bearer = { authorization: 'Bearer bench-token-0123456789' };
  const apiMs = async (url: string) => { const t = performance.now(); await (await fetch(url, { headers: bearer })).text(); return performance.now() - t; };
  const shapeApi = await apiMs(`${base}/queue/shape`);
  const countsApi = await apiMs(`${base}/metrics`);
  const pageBytes = (await (await fetch(`${base}/console/queues`, { headers: { cookie } })).text()).length;
  const loadAvgAfter = loadavg()[0];
  await page.screenshot({ path: path.join(dir, 'queues.png') });
  await browser.close();
  await node.stop();
  const figures = {
    messages: total, firstPaintMs: paints.map((p) => Math.round(p.fcp)), loadMs: paints.map((p) => Math.round(p.load)),
    serverPage1Ms: Math.round(page1), serverPage1000Ms: Math.round(page1000), serverFilteredMs: Math.round(filtered),
    bulkConfirmByStateMs: Math.round(bulkByState), bulkConfirmByDomainMs: Math.round(bulkByDomain),
    shapeApiMs: Math.round(shapeApi), metricsMs: Math.round(countsApi), pageBytes, loadAverage: [loadAvgBefore, loadAvgAfter].map((x) => Number(x.toFixed(1))),
  };
  const sorted = [...figures.firstPaintMs].sort((a, b) => a - b);
  console.log(`queue page first contentful paint (${loads} loads): ${figures.firstPaintMs.join(', ')} ms (median ${median(sorted)}, max ${sorted[sorted.length - 1]}); load event: ${figures.loadMs.join(', ')} ms; page ${pageBytes} bytes; load average ${figures.loadAverage.join(' → ')}`);
  console.log(`server time: page 1 ${figures.serverPage1Ms} ms, page 1000 ${figures.serverPage1000Ms} ms, filtered by recipient domain ${figures.serverFilteredMs} ms`);
  console.log(`bulk-action confirmation (the node counts the match): by state ${figures.bulkConfirmByStateMs} ms, by recipient domain ${figures.bulkConfirmByDomainMs} ms`);
  console.log(`admin API: GET /queue/shape ${figures.shapeApiMs} ms, GET /metrics (counts by state) ${figures.metricsMs} ms`);
  console.log(JSON.stringify({ bench: 'console', machine: m, ...figures }));
}

main()
  .catch((err) => { console.error(err); process.exitCode = 1; })
  .finally(async () => { await procs.stopAll(); rmSync(dir, { recursive: true, force: true }); });
