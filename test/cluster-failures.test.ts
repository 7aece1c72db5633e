/**
 * Cluster failures with real node processes over a shared spool root:
 *   - three nodes, two killed one after the other: the last survivor delivers both queues;
 *   - one node loses the shared storage: it fences itself within cluster.fence_after, and only
 *     then is its spool taken over; when the storage is back it gets its spool back;
 *   - heartbeats and claim files forged without the secret change nothing.
 * Every test counts deliveries per message at the sink: each accepted message exactly once
 * (the next hop is down while the queues build up, so no delivery is in flight at a kill).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readdirSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { runLoad, type LoadResult } from './harness/load.ts';
import { freePort } from './harness/ports.ts';
import { createCluster, type TestCluster } from './harness/cluster.ts';
import { sendMail } from './harness/smtp-client.ts';
import { Sealer } from '../src/cluster/index.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const queuedIn = (root: string, spool: string) =>
  ['incoming', 'active', 'deferred'].reduce((n, s) => n + readdirSync(path.join(root, spool, s)).length, 0);

async function queueOn(cluster: TestCluster, id: string, total: number, runId: string): Promise<LoadResult> {
  const smtp = cluster.addresses.get(id)!.smtp;
  const r = await runLoad({ host: smtp.host, port: smtp.port, total, concurrency: 4, sizeBytes: 800, from: 'load@client.test', to: (i) => `${runId}${i}@remote.test`, runId });
  assert.equal(r.accepted.size, total, `every message to ${id} accepted`);
  return r;
}

function assertExactlyOnce(sink: Sink, ...loads: LoadResult[]): void {
  const got = sink.countsByTestId();
  for (const l of loads) for (const id of l.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
}

// alive, and each delivering its own spool: a node slow to start (a loaded machine) may have had
// its empty spool taken over before it came up; the test begins once that is handed back
const allSeeEachOther = (cluster: TestCluster, ids: string[]) => cluster.waitFor(`${ids.join(', ')} to see each other alive, each with its own spool`, async () => {
  for (const id of ids) {
    const s = await cluster.status(id);
    if (!s.peers.filter((p: any) => ids.includes(p.id)).every((p: any) => p.status.type === 'alive')) return false;
    if (s.ownSpool !== 'delivering' || s.secondaries.length > 0) return false;
  }
  return true;
}, 60_000);

test('three nodes, two killed one after the other: the last survivor runs two secondaries and delivers both queues', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-three-'));
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, ids: ['a', 'b', 'c'], relayHost: `127.0.0.1:${sinkPort}` });
  try {
    for (const id of cluster.ids) await cluster.start(id);
    await allSeeEachOther(cluster, cluster.ids);
    const onA = await queueOn(cluster, 'a', 40, 'on-a-');
    const onB = await queueOn(cluster, 'b', 40, 'on-b-');
    const root = path.join(dir, 'spool');
    await cluster.waitFor('both queues deferred (next hop down)', async () => readdirSync(path.join(root, 'a', 'deferred')).length === 40 && readdirSync(path.join(root, 'b', 'deferred')).length === 40);

    const killedAt = Date.now();
    await cluster.kill('a');
    await cluster.waitForTakeover('b', 'a', killedAt);
    assert.equal((await cluster.status('c')).secondaries.length, 0, 'only the partner takes over');
    await cluster.kill('b');
    const c = await cluster.waitFor('c to run secondaries for both a and b', async () => {
      const s = await cluster.status('c');
      return s.secondaries.length === 2 && s;
    });
    assert.deepEqual(c.secondaries.map((s: any) => s.spool).sort(), ['a', 'b']);
    // (a node slow to start may have had its empty spool taken over and handed back at start-up)
    const takeovers = cluster.trackingEvents().filter((e) => e.event === 'takeover' && Date.parse(e.t) >= killedAt).map((e) => `${e.node}:${e.spool}`);
    assert.deepEqual(takeovers.sort(), ['b:a', 'c:a', 'c:b']);

    const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
    await sink.waitForCount(80, 60_000);
    await cluster.waitFor('both queues drained', async () => queuedIn(root, 'a') === 0 && queuedIn(root, 'b') === 0);
    assertExactlyOnce(sink, onA, onB);
    await sink.stop();
  } finally {
    await cluster.stopAll();
  }
});

test('a node that loses the shared storage fences itself before its spool is taken over, and gets it back afterwards', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-storage-'));
  const shared = path.join(dir, 'spool');
  mkdirSync(shared);
  const viewB = path.join(dir, 'view-b'); // b reaches the shared storage through this path only
  symlinkSync(shared, viewB);
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${sinkPort}` });
  try {
    await cluster.start('a');
    await cluster.start('b', { spool: viewB });
    await allSeeEachOther(cluster, ['a', 'b']);
    const onB = await queueOn(cluster, 'b', 30, 'on-b-');
    await cluster.waitFor('b\'s queue deferred (next hop down)', async () => readdirSync(path.join(shared, 'b', 'deferred')).length === 30);

    const cutAt = Date.now();
    unlinkSync(viewB);
    const health = await cluster.waitFor('b to report itself fenced', async () => {
      const res = await fetch(`http://127.0.0.1:${cluster.addresses.get('b')!.admin.port}/health`);
      return res.status === 503 && (await res.json()).status === 'fenced' && Date.now();
    });
    const fenceMs = health - cutAt;
    assert.ok(fenceMs < 1500 + 1000, `fenced ${fenceMs} ms after the cut (fence_after 1.5 s)`);
    const refused = await sendMail(cluster.addresses.get('b')!.smtp.port, 'x@client.test', ['y@remote.test'], 'Subject: t\r\n\r\nx\r\n').catch((err) => ({ ok: false, response: String(err.response) }));
    assert.equal(refused.ok, false);
    assert.match(refused.response, /^421 4\.3\.2 .*fenced/, 'a fenced node refuses mail with a 4xx');

    await cluster.waitForTakeover('a', 'b', cutAt);
    const events = cluster.trackingEvents();
    const fenced = events.find((e) => e.event === 'fenced' && e.node === 'b' && Date.parse(e.t) >= cutAt);
    const takeover = events.find((e) => e.event === 'takeover' && e.spool === 'b' && Date.parse(e.t) >= cutAt);
    assert.ok(fenced && takeover, 'both the fence and the takeover are in the tracking log');
    assert.ok(Date.parse(takeover.t) > Date.parse(fenced.since), `b fenced itself (in force ${fenced.since}) before a took its spool (${takeover.t})`);

    const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
    await sink.waitForCount(30, 60_000);
    assertExactlyOnce(sink, onB);

    const restoredAt = Date.now();
    symlinkSync(shared, viewB);
    await cluster.waitFor('b back in service with its own spool (handback)', async () => {
      const s = await cluster.status('b');
      return !s.fenced && s.ownSpool === 'delivering';
    });
    // a writes its handback line just after releasing the claim that b has already seen
    await cluster.waitFor('a\'s handback of b\'s spool in the tracking log', async () => cluster.trackingEvents().some((e) => e.event === 'handback' && e.spool === 'b' && e.node === 'a' && Date.parse(e.t) >= restoredAt));
    const after = await queueOn(cluster, 'b', 10, 'after-');
    await sink.waitForCount(40, 30_000);
    assertExactlyOnce(sink, onB, after);
    await sink.stop();
  } finally {
    await cluster.stopAll();
  }
});

test('heartbeats and claims forged without the secret change nothing', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-forged-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address });
  const attacker = dgram.createSocket('udp4');
  try {
    await cluster.start('a');
    await cluster.start('b');
    await allSeeEachOther(cluster, ['a', 'b']);
    // a claim on a's spool written by someone without the secret
    const claims = path.join(dir, 'spool', '.cluster', 'claims', 'a');
    mkdirSync(claims, { recursive: true });
    const forger = new Sealer('not-the-cluster-secret-0123456789');
    writeFileSync(path.join(claims, '0000000001'), forger.seal({ spool: 'a', epoch: 1, kind: 'claim', by: 'b', at: new Date().toISOString() }));
    // b dies; someone keeps sending "b is alive" heartbeats to a, signed with the wrong secret
    const killedAt = Date.now();
    await cluster.kill('b');
    const hbA = cluster.addresses.get('a')!.heartbeat;
    let seq = 0;
    const forging = setInterval(() => {
      const hb = forger.seal({ node: 'b', boot: Date.now(), seq: ++seq, sent: Date.now(), state: 'ready', queue: 0, claims: [] });
      attacker.send(Buffer.from(hb), hbA.port, hbA.host);
    }, 50);
    try {
      const s = await cluster.waitForTakeover('a', 'b', killedAt);
      assert.equal(s.peers[0].status.type, 'dead');
      assert.ok(s.rejected.heartbeats['bad-signature'] > 10, 'the forged heartbeats were counted');
      assert.ok(s.rejected.claims >= 1, 'the forged claim was counted');
      assert.equal(s.ownSpool, 'delivering', 'a forged claim does not take a\'s spool');
    } finally {
      clearInterval(forging);
    }
    const r = await sendMail(cluster.addresses.get('a')!.smtp.port, 'x@client.test', ['y@remote.test'], 'Subject: t\r\nX-Test-Id: forged-1\r\n\r\nx\r\n');
    assert.ok(r.ok, r.response);
    await sink.waitForCount(1, 15_000);
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.addresses.get('a')!.admin.port}/metrics`)).text();
    assert.match(metrics, /tandem_cluster_rejected_total\{kind="heartbeat",reason="bad-signature"\} [1-9]/);
    assert.match(metrics, /tandem_cluster_takeovers_total 1/);
  } finally {
    attacker.close();
    await cluster.stopAll();
    await sink.stop();
  }
});

test('a node that hangs (SIGSTOP) loses its spool to its partner, and on waking up fences itself and delivers nothing twice', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-hang-'));
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${sinkPort}` });
  try {
    await cluster.start('a');
    await cluster.start('b');
    await allSeeEachOther(cluster, ['a', 'b']);
    const onA = await queueOn(cluster, 'a', 30, 'on-a-');
    await cluster.waitFor('a\'s queue deferred (next hop down)', async () => readdirSync(path.join(dir, 'spool', 'a', 'deferred')).length === 30);

    const pgid = cluster.node('a')!.proc.pid;
    const stoppedAt = Date.now();
    process.kill(-pgid, 'SIGSTOP');
    try {
      await cluster.waitForTakeover('b', 'a', stoppedAt);
      const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
      await sink.waitForCount(30, 60_000);
      process.kill(-pgid, 'SIGCONT');
      // a wakes up with 30 messages it believes are still deferred, their retry times long past
      // b writes its "handback" line just after releasing the claim, which a may see first
      const handedBack = () => cluster.trackingEvents().some((e) => e.event === 'handback' && e.spool === 'a' && Date.parse(e.t) >= stoppedAt);
      await cluster.waitFor('a back, its spool handed back', async () => (await cluster.status('a')).ownSpool === 'delivering' && handedBack(), 60_000);
      const events = cluster.trackingEvents();
      assert.ok(events.some((e) => e.event === 'fenced' && e.node === 'a'), 'a fenced itself on waking up');
      assert.equal(events.filter((e) => e.event === 'delivered' && e.node === 'a' && !e.secondary).length, 0, 'a delivered nothing of what b\'s secondary delivered');
      assertExactlyOnce(sink, onA);
      assert.equal(sink.count(), 30);
      await sink.stop();
    } finally {
      try { process.kill(-pgid, 'SIGCONT'); } catch { /* already gone */ }
    }
  } finally {
    await cluster.stopAll();
  }
});
