/**
 * memory.ts — benchmark a node's memory with a large queue and with large messages in flight.
 *
 *   node --import tsx bench/memory.ts [--messages N=1000000] [--size S=4096]
 *                                     [--big N=50] [--big-size S=10485760] [--skip-queue] [--skip-big]
 *
 * Part 1 (queue): N messages of S bytes are written straight into deferred/ of a spool folder
 * with the spool's own encoder (queuefile.ts: encodeQueueFile + a deferral record), each due in
 * 1–2 hours, as a node whose next hop is down leaves them (files are written without fsync: the
 * bench needs the files, not their durability). Then `tandem start` runs on that spool with its
 * relay host a closed port. Prints: time from the start to the first message accepted over SMTP
 * (ready line, then a real SMTP transaction), the RSS when the start-up scan is through
 * (`spool-recovered`), and the peak RSS.
 *
 * Part 2 (big): a fresh node relays to a sink that waits 30 s after each DATA (a slow next hop);
 * N messages of 10 MiB are sent at once over SMTP; the node's RSS is sampled every 100 ms while
 * they are in flight (received and being delivered) and the peak printed.
 * Ends with one JSON line {"bench":"memory",...}. The temporary folder is removed at the end.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { open, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Spool } from '../src/spool/index.ts';
import { encodeQueueFile, encodeStatusRecords } from '../src/spool/queuefile.ts';
import type { Envelope } from '../src/spool/types.ts';
import { freePort } from '../src/util/free-port.ts';
import { startSink } from '../test/harness/sink.ts';
import { startNode, writeNodeConfig } from '../test/harness/node.ts';
import { buildTestMessage } from '../test/harness/load.ts';
import { sendMail } from '../test/harness/smtp-client.ts';
import { trackProcesses } from '../test/harness/procs.ts';
import { machineInfo, peakRssBytes, runBenchmark } from './procstat.ts';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000000' },
    size: { type: 'string', default: '4096' },
    big: { type: 'string', default: '50' },
    'big-size': { type: 'string', default: String(10 * 1024 * 1024) },
    'skip-queue': { type: 'boolean', default: false },
    'skip-big': { type: 'boolean', default: false },
  },
});
const procs = trackProcesses();
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-memory-'));
const MiB = 1048576;

/** VmRSS of a process now, in bytes (0 when it is gone). */
function rssBytes(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Run fn(i) for i in [0, n) with at most `limit` at once. */
async function forEach(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < n) await fn(next++);
  }));
}

/** N deferred queue files, each due 1–2 hours from now, written with the spool's encoder. */
async function fillSpool(spoolDir: string, n: number, size: number): Promise<void> {
  const spool = await Spool.open(spoolDir, { nodeId: 'm' });
  const body = buildTestMessage('memory', 'load@client.test', 'r@remote.test', size);
  const now = Date.now();
  let done = 0;
  await forEach(n, 32, async (i) => {
    const queueId = spool.newQueueId();
    const env: Envelope = {
      queueId, nodeId: 'm', sender: 'load@client.test', recipients: [{ address: `r${i}@remote.test`, original: `r${i}@remote.test` }],
      arrivedAt: now, messageId: `<mem-${i}@bench>`, client: { address: '127.0.0.1', helo: 'bench' },
    };
    const nextAttemptAt = now + 3_600_000 + Math.floor(Math.random() * 3_600_000);
    const bytes = Buffer.concat([encodeQueueFile(env, body), encodeStatusRecords([{ type: 'deferral', at: now, attempts: 1, nextAttemptAt, lastReply: 'connect ECONNREFUSED (bench)' }])]);
    const file = path.join(spoolDir, 'deferred', queueId);
    const fh = await open(file, 'wx', 0o600);
    await fh.writeFile(bytes);
    await fh.close();
    const t = new Date(nextAttemptAt);
    await utimes(file, t, t); // the due time, as the queue manager keeps it
    if (++done % 100_000 === 0) console.log(`  ${done} written`);
  });
}

/** Start a node on `config` and send it one message: seconds to its ready line and to the 250. */
async function startAndProbe(config: string, size: number): Promise<{ node: Awaited<ReturnType<typeof startNode>>; readyMs: number; acceptMs: number }> {
  const started = Date.now();
  const node = await startNode({ config, readyTimeoutMs: 600_000 });
  const readyMs = Date.now() - started;
  const sent = await sendMail(node.smtp.port, 'probe@client.test', ['probe@remote.test'], buildTestMessage('probe', 'probe@client.test', 'probe@remote.test', size));
  if (!/^250/.test(sent.response)) throw new Error(`probe not accepted: ${sent.response}`);
  return { node, readyMs, acceptMs: Date.now() - started };
}

async function queuePart(n: number, size: number): Promise<Record<string, unknown>> {
  const down = await freePort(); // nothing listens there: the next hop is down
  // the same start on an empty spool first: what the machine needs to start a node at all
  const empty = await startAndProbe(writeNodeConfig(path.join(dir, 'e'), { node: { id: 'm' }, relay: { host: `127.0.0.1:${down}` } }), size);
  await empty.node.stop();
  console.log(`queue: empty spool: start → ready ${(empty.readyMs / 1000).toFixed(2)} s, → first message accepted ${(empty.acceptMs / 1000).toFixed(2)} s`);
  const spoolDir = path.join(dir, 'q', 'spool', 'm');
  const t0 = Date.now();
  await fillSpool(spoolDir, n, size);
  console.log(`queue: wrote ${n} deferred messages of ${size} bytes in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const config = writeNodeConfig(path.join(dir, 'q'), { node: { id: 'm' }, relay: { host: `127.0.0.1:${down}` } });
  const started = Date.now();
  const { node, readyMs, acceptMs } = await startAndProbe(config, size);
  const recovered = await node.proc.waitForLine((l) => l.json?.event === 'spool-recovered', 3_600_000);
  const scanMs = Date.now() - started;
  const rssAfterScan = rssBytes(node.proc.pid);
  const peak = peakRssBytes(node.proc.pid!);
  await node.stop();
  const figures = {
    messages: n, size, emptySpoolStartToAcceptedSeconds: empty.acceptMs / 1000, startToReadySeconds: readyMs / 1000, startToAcceptedSeconds: acceptMs / 1000, startToScannedSeconds: scanMs / 1000,
    rssAfterScanMiB: Math.round(rssAfterScan / MiB), peakRssMiB: Math.round(peak / MiB), recovered: recovered.json,
  };
  console.log(`queue: start → ready ${figures.startToReadySeconds.toFixed(2)} s, → first message accepted ${figures.startToAcceptedSeconds.toFixed(2)} s, → scan through ${figures.startToScannedSeconds.toFixed(1)} s`);
  console.log(`queue: RSS after the start-up scan ${figures.rssAfterScanMiB} MiB, peak ${figures.peakRssMiB} MiB (${JSON.stringify(recovered.json)})`);
  return figures;
}

async function bigPart(n: number, size: number): Promise<Record<string, unknown>> {
  const sink = await startSink({ delayMs: 30_000 });
  const config = writeNodeConfig(path.join(dir, 'b'), { node: { id: 'b' }, relay: { host: sink.address }, smtp: { max_message_size: `${Math.ceil(size / MiB) + 1}MiB` } });
  const node = await startNode({ config });
  const baseline = rssBytes(node.proc.pid);
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, rssBytes(node.proc.pid)); }, 100);
  const message = buildTestMessage('big', 'big@client.test', 'big@remote.test', size);
  const t0 = Date.now();
  await forEach(n, n, async () => {
    const r = await sendMail(node.smtp.port, 'big@client.test', ['big@remote.test'], message);
    if (!/^250/.test(r.response)) throw new Error(`big message not accepted: ${r.response}`);
  });
  const acceptedS = (Date.now() - t0) / 1000;
  await sink.waitForCount(n, 600_000);
  clearInterval(sampler);
  const totalS = (Date.now() - t0) / 1000;
  await node.stop();
  await sink.stop();
  const figures = { messages: n, size, baselineRssMiB: Math.round(baseline / MiB), peakRssInFlightMiB: Math.round(peak / MiB), acceptedSeconds: acceptedS, deliveredSeconds: totalS };
  console.log(`big: ${n} × ${(size / MiB).toFixed(0)} MiB to a next hop that takes 30 s per message: RSS idle ${figures.baselineRssMiB} MiB, peak while in flight ${figures.peakRssInFlightMiB} MiB (all accepted after ${acceptedS.toFixed(1)} s, delivered after ${totalS.toFixed(1)} s)`);
  return figures;
}

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`machine: ${m.nproc} CPUs, ${m.cpuModel}, Node ${m.node}`);
  const queue = values['skip-queue'] ? undefined : await queuePart(Number(values.messages), Number(values.size));
  const big = values['skip-big'] ? undefined : await bigPart(Number(values.big), Number(values['big-size']));
  console.log(JSON.stringify({ bench: 'memory', machine: m, queue, big }));
}

runBenchmark(main, { procs, dir });
