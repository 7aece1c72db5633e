/**
 * recovery.ts — benchmark a node starting on a large queue: how long until it serves SMTP, and
 * how long until the whole queue is delivered, with its peak memory.
 *
 *   node --import tsx bench/recovery.ts [--messages N=20000] [--size S=4096] [--deferred]
 *
 * N messages are committed straight into a spool folder with the Spool API (as a crashed node
 * would leave them: in incoming/, or with --deferred in deferred/ with a retry time already
 * past), then `tandem start` runs on that spool with a sink as relay host. Prints: time to
 * "ready" (SMTP listening), to the first delivery, and until the sink has all N, the delivery
 * rate, and the node's peak RSS; then one JSON line {"bench":"recovery",...}.
 * Exports nothing. The temporary folder is removed at the end.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Spool } from '../src/spool/index.ts';
import type { Envelope } from '../src/spool/types.ts';
import { startSink } from '../test/harness/sink.ts';
import { startNode, writeNodeConfig } from '../test/harness/node.ts';
import { buildTestMessage } from '../test/harness/load.ts';
import { trackProcesses } from '../test/harness/procs.ts';
import { machineInfo, peakRssBytes, runBenchmark } from './procstat.ts';

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '20000' }, size: { type: 'string', default: '4096' }, deferred: { type: 'boolean', default: false } },
});
const total = Number(values.messages);
const size = Number(values.size);
const procs = trackProcesses();
const dir = mkdtempSync(path.join(tmpdir(), 'tandem-recovery-'));

async function main(): Promise<void> {
  const m = machineInfo();
  console.log(`machine: ${m.nproc} CPUs, ${m.cpuModel}, Node ${m.node}`);
  const spool = await Spool.open(path.join(dir, 'spool', 'r'), { nodeId: 'r' });
  const t0 = Date.now();
  for (let i = 0; i < total; i++) {
    const queueId = spool.newQueueId();
    const env: Envelope = {
      queueId, nodeId: 'r', sender: 'load@client.test', recipients: [{ address: `r${i}@remote.test`, original: `r${i}@remote.test` }],
      arrivedAt: Date.now(), messageId: `<rec-${i}@bench>`, client: { address: '127.0.0.1', helo: 'bench' },
    };
    await spool.commit(env, buildTestMessage(`rec-${i}`, env.sender, env.recipients[0].address, size));
    if (values.deferred) {
      await spool.appendStatus(queueId, 'incoming', [{ type: 'deferral', at: Date.now(), attempts: 1, nextAttemptAt: Date.now(), lastReply: 'bench' }]);
      await spool.move(queueId, 'incoming', 'deferred');
    }
  }
  console.log(`queued ${total} messages of ${size} bytes in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const sink = await startSink();
  const config = writeNodeConfig(dir, { node: { id: 'r' }, relay: { host: sink.address } });
  const started = Date.now();
  const node = await startNode({ config, readyTimeoutMs: 600_000 });
  const readyMs = Date.now() - started;
  await sink.waitForCount(total, 900_000);
  const drainMs = Date.now() - started;
  const firstMs = Math.min(...sink.readRecords().map((r) => r.t)) - started;
  const peak = peakRssBytes(node.proc.pid);
  const recovered = node.proc.lines.find((l) => l.json?.event === 'spool-recovered')?.json;
  await node.stop();
  await sink.stop();
  const figures = {
    messages: total, size, state: values.deferred ? 'deferred' : 'incoming',
    readySeconds: readyMs / 1000, firstDeliverySeconds: firstMs / 1000, drainSeconds: drainMs / 1000,
    deliveredPerSec: Math.round(total / ((drainMs - readyMs) / 1000)),
    peakRssMiB: peak ? Math.round(peak / 1048576) : null, recovered: recovered?.queued,
  };
  console.log(`start to ready: ${figures.readySeconds.toFixed(2)} s (SMTP listening; the queue is scanned in the background)`);
  console.log(`start to first delivery: ${figures.firstDeliverySeconds.toFixed(2)} s`);
  console.log(`start to all delivered: ${figures.drainSeconds.toFixed(2)} s (${figures.deliveredPerSec} msg/s after ready)`);
  console.log(`peak RSS: ${figures.peakRssMiB} MiB`);
  console.log(JSON.stringify({ bench: 'recovery', machine: m, ...figures }));
}

runBenchmark(main, { procs, dir });
