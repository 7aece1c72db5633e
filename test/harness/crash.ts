/*
 * crash.ts - the hard crash case of every durability test: next hop down, every message
 * accepted and deferred, the node's whole process group SIGKILLed (a machine crash leaves no
 * child alive), then the next hop comes up and the node starts again on the same spool.
 *
 * Exports:
 *   killQueuedAndRecover(opts): Promise<void>   asserts that all `total` messages were accepted
 *       and deferred before the kill, and that after the restart each arrives at the sink exactly
 *       once and the spool drains; stops the restarted node and the sink.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { runLoad } from './load.ts';
import type { RunningNode } from './node.ts';
import { startSink, duplicates } from './sink.ts';
import { eventually } from './wait.ts';

export interface KillQueuedOptions {
  /** Starts the node (the same spool and SMTP port each time); `name` names its log file. */
  start: (name: string) => Promise<RunningNode>;
  smtpPort: number;
  /** Where the next hop will listen once it comes up (nothing listens there before the kill). */
  sinkPort: number;
  /** The node's spool folder `deferred/`. */
  deferred: string;
  total: number;
  concurrency: number;
  /** The recipient of message i (at the next hop's domain). */
  to: (i: number) => string;
}

export async function killQueuedAndRecover(o: KillQueuedOptions): Promise<void> {
  let node = await o.start('node-1');
  const result = await runLoad({ host: '127.0.0.1', port: o.smtpPort, total: o.total, concurrency: o.concurrency, sizeBytes: 1024, from: 'load@client.test', to: o.to });
  assert.equal(result.accepted.size, o.total);
  await eventually('every message deferred (next hop down)', () => readdirSync(o.deferred).length === o.total, 60_000);
  await node.proc.killHard(); // the node's whole process group

  const sink = await startSink({ listen: `127.0.0.1:${o.sinkPort}` });
  node = await o.start('node-2');
  await sink.waitForCount(o.total, 90_000);
  await eventually('the spool to drain', () => readdirSync(o.deferred).length === 0, 30_000);
  const got = sink.countsByTestId();
  for (const id of result.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
  assert.equal(duplicates(got), 0);
  await node.stop();
  await sink.stop();
}
