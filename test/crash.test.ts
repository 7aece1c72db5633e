/**
 * Crash tests: a real node process killed with SIGKILL to its whole process group (a machine
 * crash leaves no child alive), restarted on the same spool. Every message that got a 250 must
 * reach the sink; duplicates are counted and bounded by the deliveries in flight at the kill.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, duplicates } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { runLoad } from './harness/load.ts';
import { killQueuedAndRecover } from './harness/crash.ts';
import { freePort } from './harness/ports.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const TOTAL_CONCURRENCY = 20;

function nodeConfig(dir: string, smtpPort: number, relayPort: number): string {
  return `
node: { id: crash, hostname: crash.test }
smtp: { listen: "127.0.0.1:${smtpPort}" }
spool: { root: ${dir}/spool }
relay: { host: "127.0.0.1:${relayPort}", networks: ["127.0.0.0/8"] }
queue: { min_backoff: 500ms, max_backoff: 2s, total_concurrency: ${TOTAL_CONCURRENCY} }
delivery: { connect_timeout: 2s }
tracking: { path: ${dir}/tracking.log }
`;
}

test('kill -9 under steady load: every accepted message is delivered after a restart', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-crash-'));
  const sink = await startSink();
  const smtpPort = await freePort();
  const config = writeNodeConfig(dir, {}, nodeConfig(dir, smtpPort, sink.port));
  const start = (name: string) => startNode({ config, listen: `127.0.0.1:${smtpPort}`, logFile: path.join(dir, `${name}.out`) });
  let node: RunningNode = await start('node-1');

  const total = 2400;
  const load = runLoad({
    host: '127.0.0.1', port: smtpPort, total, concurrency: 8, sizeBytes: 2048,
    from: 'load@client.test', to: (i) => `rcpt${i}@remote.test`,
    maxAttempts: 200, retryMinMs: 50, retryMaxMs: 500,
  });
  // kill at a random moment while the load runs: after 15-60 % of the messages reached the sink
  const killAt = Math.floor(total * (0.15 + Math.random() * 0.45));
  await eventually(`${killAt} deliveries`, () => sink.count() >= killAt, 120_000);
  await node.proc.killHard();
  const deliveredAtKill = sink.count();
  node = await start('node-2');

  const result = await load;
  assert.equal(result.rejected.size, 0, `no message may be refused: ${[...result.rejected.values()][0]}`);
  assert.equal(result.failed.size, 0, `every message gets accepted eventually: ${[...result.failed.values()][0]}`);
  const accepted = result.accepted;
  assert.equal(accepted.size, total);

  await eventually('every accepted message at the sink', () => {
    const got = sink.countsByTestId();
    for (const id of accepted) if (!got.has(id)) return false;
    return true;
  }, 120_000);
  const got = sink.countsByTestId();
  const dups = duplicates(got);
  // Two kinds of duplicate are allowed (at-least-once): a message the client sent again because
  // it never saw the 250 (uncertain at the client), and a delivery in flight at the kill (the
  // next hop said 250, the spool had not yet recorded it). The second kind is bounded by the
  // messages the queue manager works on at once.
  let fromClient = 0;
  let inFlight = 0;
  for (const [id, n] of got) if (n > 1) (result.uncertain.has(id) ? (fromClient += n - 1) : (inFlight += n - 1));
  const inFlightBound = Math.max(TOTAL_CONCURRENCY * 2, 50);
  console.log(`# crash test: killed after ${deliveredAtKill} deliveries; ${accepted.size} accepted, ${got.size} distinct delivered, ${dups} duplicate(s): ${inFlight} in flight at the kill (bound ${inFlightBound}), ${fromClient} resent by the client after a lost 250 (${result.uncertain.size} uncertain)`);
  assert.ok(inFlight <= inFlightBound, `${inFlight} duplicates exceed the deliveries that can be in flight (${inFlightBound})`);
  assert.ok(fromClient <= result.uncertain.size);
  await eventually('the spool to drain', () => ['incoming', 'active', 'deferred'].every((s) => readdirSync(path.join(dir, 'spool', 'crash', s)).length === 0), 30_000);
  await node.proc.stop();
  await sink.stop();
});

test('next hop down, everything queued, then kill -9: all of it is delivered exactly once after restart', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-crash-q-'));
  const sinkPort = await freePort();
  const smtpPort = await freePort();
  const config = writeNodeConfig(dir, {}, nodeConfig(dir, smtpPort, sinkPort));
  const start = (name: string) => startNode({ config, listen: `127.0.0.1:${smtpPort}`, logFile: path.join(dir, `${name}.out`) });
  await killQueuedAndRecover({ start, smtpPort, sinkPort, deferred: path.join(dir, 'spool', 'crash', 'deferred'), total: 400, concurrency: 4, to: (i) => `r${i}@remote.test` });
});
