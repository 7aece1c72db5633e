/**
 * The chaos test: real HAProxy in front of two real node processes (PROXY protocol v2, health
 * checks on /health), delivering to a real SMTP sink. A load generator that behaves like an MTA
 * (retries on lost connections and 4xx) sends 5,000 distinct messages; at a random moment node a
 * is killed with SIGKILL to its whole process group. Asserted:
 *   - every message that got a 250 reaches the sink;
 *   - duplicates are counted, and bounded by the deliveries that can be in flight at the kill
 *     (plus messages the client itself sent again because the kill ate a 250);
 *   - the killed node's queued messages are delivered by b's secondary process;
 *   - a restarted a gets its spool back (handback), and no message is delivered both by b's
 *     secondary and by a.
 * Run twice: on shared storage (one spool root), and on replicated storage (each node's spool
 * on its own "disk", copies over the replication port; after the kill a's disk is deleted, so
 * b's secondary delivers from its copies alone, and a comes back with an empty spool).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { runLoad } from './harness/load.ts';
import { createCluster } from './harness/cluster.ts';
import { startHaproxy } from './harness/haproxy.ts';
import { opensslMissing } from './harness/cluster-certs.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const TOTAL = 5000;
const TOTAL_CONCURRENCY = 10;

test('chaos: 5,000 messages through HAProxy, one node killed with kill -9 at a random moment, then restarted', { timeout: 600_000 }, () => chaos('shared'));

test('chaos, replicated storage (no shared folder): 5,000 messages, kill -9 at a random moment, the killed node\'s disk deleted', { timeout: 600_000, skip: opensslMissing }, () => chaos('replicated'));

async function chaos(storage: 'shared' | 'replicated'): Promise<void> {
  const replicated = storage === 'replicated';
  const dir = mkdtempSync(path.join(os.tmpdir(), `tandem-chaos-${storage}-`));
  const sink = await startSink();
  const cluster = await createCluster({
    dir, relayHost: sink.address, ...(replicated ? { replicated: {} } : {}),
    extra: { smtp: { proxy_protocol: ['127.0.0.1'] }, queue: { total_concurrency: TOTAL_CONCURRENCY, min_backoff: '1s', max_backoff: '2s' } },
  });
  await cluster.start('a');
  await cluster.start('b');
  const lb = await startHaproxy({ backends: cluster.ids.map((id) => ({ name: id, smtp: cluster.addresses.get(id)!.smtp, admin: cluster.addresses.get(id)!.admin })) });
  try {
    for (const id of cluster.ids) await lb.waitServerState(id, 'UP', 15_000);
    const load = runLoad({ host: lb.smtp.host, port: lb.smtp.port, total: TOTAL, concurrency: 8, sizeBytes: 2048, from: 'load@client.test', to: (i) => `r${i}@remote.test`, runId: 'chaos-', maxAttempts: 100 });

    const killAfter = Math.floor(TOTAL * (0.15 + Math.random() * 0.45));
    await cluster.waitFor(`${killAfter} deliveries before the kill`, async () => sink.count() >= killAfter, 300_000);
    // the next hop stalls for a moment (its process stopped), so that a has a backlog when it dies
    const spoolA = cluster.spoolOf('a');
    const queuedOnA = () => ['incoming', 'active', 'deferred'].reduce((n, s) => n + readdirSync(path.join(spoolA, s)).length, 0);
    process.kill(-sink.proc.pid, 'SIGSTOP');
    let queuedAtKill: number;
    try {
      queuedAtKill = await cluster.waitFor('a backlog on a', async () => { const n = queuedOnA(); return n >= TOTAL_CONCURRENCY * 5 && n; }, 60_000);
      await cluster.kill('a');
    } finally {
      process.kill(-sink.proc.pid, 'SIGCONT');
    }
    const killedAt = Date.now();
    if (replicated) rmSync(path.join(dir, 'disk-a'), { recursive: true, force: true }); // a's disk is gone with it
    await lb.waitServerState('a', 'DOWN', 10_000);
    const downMs = Date.now() - killedAt;

    const result = await load;
    assert.equal(result.rejected.size, 0, `no message refused: ${[...result.rejected.values()][0]}`);
    assert.equal(result.failed.size, 0, `every message accepted in the end: ${[...result.failed.values()][0]}`);
    assert.equal(result.accepted.size, TOTAL);
    await cluster.waitFor('every accepted message at the sink', async () => {
      const got = sink.countsByTestId();
      for (const id of result.accepted) if (!got.has(id)) return false;
      return true;
    }, 180_000);
    await cluster.waitFor('a\'s spool drained by b\'s secondary', async () => (replicated
      ? (await cluster.status('b')).replication.holding.a === 0
      : ['incoming', 'active', 'deferred'].every((s) => readdirSync(path.join(spoolA, s)).length === 0)), 60_000);
    const events = cluster.trackingEvents();
    const bySecondary = events.filter((e) => e.event === 'delivered' && e.secondary === 'a');
    assert.ok(bySecondary.length >= queuedAtKill - TOTAL_CONCURRENCY * 2, `a had ${queuedAtKill} messages queued at the kill: b's secondary delivered ${bySecondary.length}`);
    assert.ok(events.some((e) => e.event === 'takeover' && e.spool === 'a' && e.node === 'b'));

    const got = sink.countsByTestId();
    let fromClient = 0;
    let inFlight = 0;
    for (const [id, n] of got) if (n > 1) (result.uncertain.has(id) ? (fromClient += n - 1) : (inFlight += n - 1));
    // transactions a can have in flight (queue.total_concurrency); replicated: plus the deliveries
    // whose discard notice had not reached b (the next hop was stalled for a while before the
    // kill, so those are the in-flight ones again)
    const bound = replicated ? 2 * TOTAL_CONCURRENCY : TOTAL_CONCURRENCY;
    console.log(`# chaos (${storage}): kill after ${killAfter} deliveries, ${queuedAtKill} queued on a; HAProxy marked a DOWN ${downMs} ms after the kill; ${bySecondary.length} recipient(s) delivered by b's secondary; duplicates: ${inFlight} in flight (bound ${bound}), ${fromClient} resent by the client (${result.uncertain.size} uncertain)`);
    assert.ok(inFlight <= bound, `${inFlight} duplicates exceed the deliveries in flight (${bound})`);
    assert.ok(fromClient <= result.uncertain.size);

    // a comes back: handback, and nothing delivered by both b's secondary and a
    const before = sink.count();
    await cluster.start('a');
    await cluster.waitFor('the handback of a\'s spool', async () => (await cluster.status('a')).ownSpool === 'delivering' && (await cluster.status('b')).secondaries.length === 0);
    await lb.waitServerState('a', 'UP', 15_000);
    const after = await runLoad({ host: lb.smtp.host, port: lb.smtp.port, total: 200, concurrency: 4, sizeBytes: 1024, from: 'load@client.test', to: (i) => `s${i}@remote.test`, runId: 'after-' });
    await sink.waitForCount(before + after.accepted.size, 60_000);
    const final = cluster.trackingEvents().filter((e) => e.event === 'delivered');
    const secondaryIds = new Set(final.filter((e) => e.secondary === 'a').map((e) => `${e.queueId} ${e.recipient}`));
    const byAAfter = final.filter((e) => e.node === 'a' && !e.secondary && secondaryIds.has(`${e.queueId} ${e.recipient}`));
    assert.equal(byAAfter.length, 0, 'no recipient delivered both by b\'s secondary and by a after the handback');
    assert.ok(final.some((e) => e.node === 'a' && !e.secondary && e.queueId.endsWith('.a')), 'a delivers from its own spool again');
    for (const id of after.accepted) assert.equal(sink.countsByTestId().get(id), 1);
  } finally {
    await lb.stop();
    await cluster.stopAll();
    await sink.stop();
  }
}
