/**
 * A cluster's start, with real node processes on shared storage (docs/ha.md "Takeover"): a peer
 * never seen beating since a node started is dead to it after 4 x dead_after, but its spool is
 * taken over only if it holds mail.
 *   - b starts long after a, its spool empty: a takes nothing over (it says why in its log), and
 *     b delivers its own spool from its start, with no claim to wait out and no handback;
 *   - after a whole-cluster power cut (both killed) with mail queued on b, only a comes back:
 *     a takes b's spool over and delivers every message once.
 * Timings: the fast profile (100 ms / 700 ms / 1 s), so never-seen means 4 s.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { runLoad } from './harness/load.ts';
import { freePort } from './harness/ports.ts';
import { createCluster, type TestCluster } from './harness/cluster.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const FAST = { heartbeat_interval: '100ms', fence_after: '700ms', dead_after: '1s' };
const log = (cluster: TestCluster, id: string) => readFileSync(path.join(cluster.dir, `${id}.out`), 'utf8');
const events = (cluster: TestCluster, kind: string, since: number) => cluster.trackingEvents().filter((e) => e.event === kind && Date.parse(e.t) >= since);

test('a node that starts long after its peer, its spool empty, is not taken over: it delivers its own spool from its start', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-start-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address, cluster: FAST });
  try {
    const startedAt = Date.now();
    await cluster.start('a');
    // the moment a would have taken b's spool over (4 x dead_after after a's start)
    await cluster.waitFor('a to decide that b\'s empty spool needs no takeover', async () => log(cluster, 'a').includes('"event":"takeover-not-needed"'), 30_000);
    const a = await cluster.status('a');
    assert.equal(a.peers[0].status.type, 'dead', 'b is dead to a (never seen for 4 x dead_after)');
    assert.deepEqual(a.secondaries, [], 'no secondary over b\'s spool');
    assert.deepEqual(events(cluster, 'takeover', startedAt), []);

    await cluster.start('b');
    const b = await cluster.status('b');
    assert.notEqual(b.ownSpool, 'claimed-by-other', 'nobody claimed b\'s spool: b delivers it from its start');
    assert.deepEqual(b.claims.filter((c: any) => c.spool === 'b' && c.kind === 'claim'), []);
    await cluster.waitFor('a and b alive to each other, b delivering', async () => {
      const [sa, sb] = [await cluster.status('a'), await cluster.status('b')];
      return sa.peers[0].status.type === 'alive' && sb.peers[0].status.type === 'alive' && sb.ownSpool === 'delivering';
    }, 30_000);
    const smtp = cluster.addresses.get('b')!.smtp;
    const load = await runLoad({ host: smtp.host, port: smtp.port, total: 20, concurrency: 2, sizeBytes: 500, from: 'c@client.test', to: (i) => `r${i}@remote.test`, runId: 'late-b-' });
    assert.equal(load.accepted.size, 20, 'b accepts mail at once');
    await sink.waitForCount(20, 30_000);
    assert.deepEqual(events(cluster, 'takeover', startedAt), [], 'no takeover');
    assert.deepEqual(events(cluster, 'handback', startedAt), [], 'so no handback');
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

test('after a power cut of the whole cluster only a comes back: b\'s spool, holding mail, is taken over and every message delivered once', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-powercut-'));
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${sinkPort}`, cluster: FAST });
  try {
    await cluster.start('a');
    await cluster.start('b');
    await cluster.waitFor('b delivering its own spool', async () => (await cluster.status('b')).ownSpool === 'delivering', 30_000);
    const smtp = cluster.addresses.get('b')!.smtp;
    const load = await runLoad({ host: smtp.host, port: smtp.port, total: 30, concurrency: 3, sizeBytes: 500, from: 'c@client.test', to: (i) => `r${i}@remote.test`, runId: 'on-b-' });
    assert.equal(load.accepted.size, 30);
    const deferred = path.join(dir, 'spool', 'b', 'deferred');
    await cluster.waitFor('b\'s queue deferred (next hop down)', async () => readdirSync(deferred).length === 30, 30_000);
    await cluster.kill('a');
    await cluster.kill('b');

    const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
    try {
      const backAt = Date.now();
      await cluster.start('a');
      await cluster.waitForTakeover('a', 'b', backAt, 30_000);
      await sink.waitForCount(30, 60_000);
      const got = sink.countsByTestId();
      for (const id of load.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
      const took = events(cluster, 'takeover', backAt)[0];
      assert.ok(Date.parse(took.t) - backAt >= 4 * 1000 - 200, 'not before b had been silent for 4 x dead_after since a started');
    } finally {
      await sink.stop();
    }
  } finally {
    await cluster.stopAll();
  }
});
