/**
 * tracking.ts — benchmark the tracking search index: generate a synthetic tracking log, index
 * it, search by recipient, report the index size.
 *
 *   node --import tsx bench/tracking.ts [--lines N=1000000] [--searches S=500]
 *
 * The generator writes lines as a busy node does: per message a `received`, a `routed`, then
 * per recipient (1-3) `delivered`, or `deferred` (then `delivered` or `bounced`), over 5,000
 * recipient domains and 200,000 mailboxes, one message a few milliseconds after the other.
 * Then: time to index the whole log from nothing (TrackingIndex.sync, the same code a node runs
 * when its index is lost), S searches by exact recipient and S/10 by domain (random existing
 * addresses, each returning whole timelines, limit 100): p50 / p99 of wall time and of CPU time
 * (the latter does not depend on what else runs on a shared machine); index size on disk.
 * Prints a summary and one JSON line {"bench":"tracking",...}. The temp folder is removed.
 */
import { mkdtempSync, rmSync, createWriteStream, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { once } from 'node:events';
import os from 'node:os';
import { TrackingIndex } from '../src/track/index-db.ts';
import { machineInfo } from './procstat.ts';
import { quantileOf } from "./stats.ts";

const { values } = parseArgs({ options: { lines: { type: 'string', default: '1000000' }, searches: { type: 'string', default: '500' } } });
const target = Number(values.lines);
const searches = Number(values.searches);
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-bench-tracking-'));

/** Deterministic pseudo-random numbers (so runs are comparable). */
let seed = 42;
const rnd = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) / 2 ** 32; }; // xorshift32
const pick = (n: number) => Math.floor(rnd() * n);
const address = (i: number) => `user${i}@domain${i % 5000}.example`;

async function generate(file: string): Promise<{ lines: number; messages: number; sample: string[] }> {
  const out = createWriteStream(file);
  let t = Date.parse('2026-12-01T00:00:00Z');
  let lines = 0;
  let messages = 0;
  const sample: string[] = [];
  const write = async (o: Record<string, unknown>) => {
    lines++;
    if (!out.write(`${JSON.stringify({ t: new Date(t).toISOString(), node: 'n1', ...o })}\n`)) await once(out, 'drain');
  };
  while (lines < target) {
    const queueId = `0${(t).toString(36).toUpperCase()}.${messages.toString(36).toUpperCase().padStart(8, '0')}.n1`;
    const messageId = `<${messages}.${t}@client.example>`;
    const sender = address(pick(200_000));
    const rcpts = Array.from({ length: 1 + pick(3) }, () => address(pick(200_000)));
    if (messages % 1000 === 0) sample.push(rcpts[0]);
    messages++;
    t += 1 + pick(8);
    await write({ event: 'received', queueId, messageId, sender, size: 2000 + pick(50_000), client: '192.0.2.7', recipients: rcpts.length });
    await write({ event: 'routed', queueId, messageId, sender, recipients: rcpts, nexthop: 'smtp:[198.51.100.25]:25' });
    for (const r of rcpts) {
      if (rnd() < 0.1) {
        await write({ event: 'deferred', queueId, messageId, sender, recipient: r, nexthop: 'smtp:[198.51.100.25]:25', reply: '4.4.1 connection timed out' });
        await write({ event: rnd() < 0.8 ? 'delivered' : 'bounced', queueId, messageId, sender, recipient: r, nexthop: 'smtp:[198.51.100.25]:25', reply: '2.0.0 Ok: queued as ABC' });
      } else {
        await write({ event: 'delivered', queueId, messageId, sender, recipient: r, nexthop: 'smtp:[198.51.100.25]:25', reply: '250 2.0.0 Ok: queued as 4XyZ', delay: 0.12 });
      }
    }
  }
  out.end();
  await once(out, 'finish');
  return { lines, messages, sample };
}

const pct = (xs: number[], p: number): number => quantileOf(xs, p / 100);

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`machine: ${m.nproc} CPUs, ${m.cpuModel}, Node ${m.node}`);
  const log = path.join(dir, 'tracking.log');
  const g0 = Date.now();
  const gen = await generate(log);
  const logBytes = statSync(log).size;
  console.log(`generated ${gen.lines} lines (${gen.messages} messages, ${(logBytes / 1048576).toFixed(0)} MiB) in ${((Date.now() - g0) / 1000).toFixed(1)} s`);

  const idx = new TrackingIndex(path.join(dir, 'index.db'), log, 'n1');
  const i0 = performance.now();
  await idx.sync();
  const indexSeconds = (performance.now() - i0) / 1000;
  const st = idx.stats();
  console.log(`indexed ${st.events} events in ${indexSeconds.toFixed(1)} s (${Math.round(st.events / indexSeconds)} lines/s); index ${(st.bytes / 1048576).toFixed(0)} MiB on disk (log ${(logBytes / 1048576).toFixed(0)} MiB)`);

  // wall time, and CPU time of this process (what the search costs, whatever else runs on the machine)
  const cpu: number[] = [];
  const time = (fn: () => unknown) => {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    fn();
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    return performance.now() - t0;
  };
  const exact: number[] = [];
  let found = 0;
  for (let i = 0; i < searches; i++) {
    const to = gen.sample[pick(gen.sample.length)];
    exact.push(time(() => { found += idx.search({ to, limit: 100 }).messages.length; }));
  }
  const exactCpu = cpu.splice(0);
  const domain: number[] = [];
  for (let i = 0; i < Math.max(1, searches / 10); i++) domain.push(time(() => idx.search({ to: `domain${pick(5000)}.example`, limit: 100 })));
  const figures = {
    lines: gen.lines, messages: gen.messages, logMiB: Math.round(logBytes / 1048576), indexSeconds: Number(indexSeconds.toFixed(1)),
    indexMiB: Math.round(st.bytes / 1048576), recipientP50ms: Number(pct(exact, 50).toFixed(2)), recipientP99ms: Number(pct(exact, 99).toFixed(2)),
    domainP50ms: Number(pct(domain, 50).toFixed(2)), domainP99ms: Number(pct(domain, 99).toFixed(2)), avgFound: Number((found / searches).toFixed(1)),
    recipientCpuP50ms: Number(pct(exactCpu, 50).toFixed(2)), recipientCpuP99ms: Number(pct(exactCpu, 99).toFixed(2)),
    domainCpuP50ms: Number(pct(cpu, 50).toFixed(2)), domainCpuP99ms: Number(pct(cpu, 99).toFixed(2)),
    loadAverage: os.loadavg()[0],
  };
  console.log(`search by recipient (${searches}): p50 ${figures.recipientP50ms} ms, p99 ${figures.recipientP99ms} ms; CPU p50 ${figures.recipientCpuP50ms} ms, p99 ${figures.recipientCpuP99ms} ms (${figures.avgFound} messages per answer)`);
  console.log(`search by domain (${domain.length}, 100 newest messages with their timelines): p50 ${figures.domainP50ms} ms, p99 ${figures.domainP99ms} ms; CPU p50 ${figures.domainCpuP50ms} ms, p99 ${figures.domainCpuP99ms} ms`);
  console.log(`load average during the run: ${figures.loadAverage.toFixed(1)} (on ${m.nproc} CPUs)`);
  await idx.close();
  console.log(JSON.stringify({ bench: 'tracking', machine: m, ...figures }));
}

main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => rmSync(dir, { recursive: true, force: true }));
