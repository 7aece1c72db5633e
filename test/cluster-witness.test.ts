/**
 * The etcd witness wired into a cluster on replicated storage (no shared folder): real node
 * processes, a real 3-member etcd on loopback (test/harness/etcd.ts), a real SMTP sink.
 *
 *   - the network between the nodes cut (heartbeats and replication, iptables) for 3 × dead_after:
 *     with the witness nobody takes anything over (both leases stay alive at etcd), and nothing
 *     is delivered twice; then one etcd member killed and node a killed with kill -9 (next hop
 *     stalled, its queue copied to b): b takes it over once a's lease expires, nothing lost;
 *   - etcd quorum lost (two members of three killed), then a killed: b takes nothing over (the
 *     witness cannot say yes) but goes on accepting and delivering its own mail; once the quorum
 *     is back, b takes a's copies over and delivers them.
 * Skipped (saying why) without etcd, openssl, or root and iptables for the cut.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { runLoad, loadInRounds } from './harness/load.ts';
import { createCluster, type TestCluster } from './harness/cluster.ts';
import { opensslMissing } from './harness/cluster-certs.ts';
import { ETCD_AVAILABLE, startEtcdCluster } from './harness/etcd.ts';
import { FIREWALL_MISSING, cutPorts } from './harness/firewall.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const noEtcd = !ETCD_AVAILABLE && 'etcd is not installed (Debian etcd-server; .ci/run installs it)';
const DEAD_AFTER = 2500; // the witness lease TTL: 3 s (whole seconds)

async function pairWithWitness(dir: string, relayHost: string, endpoints: string[]): Promise<TestCluster> {
  const cluster = await createCluster({
    dir, relayHost, replicated: {},
    cluster: { witness: { etcd: { endpoints } } },
    extra: { queue: { min_backoff: '1s', max_backoff: '2s' } },
  });
  await Promise.all([cluster.start('a'), cluster.start('b')]);
  // a node slow to start on a loaded machine is first taken for dead (its empty queue taken over,
  // then handed back): wait until that has settled too
  await cluster.waitFor('both nodes with a witness lease, connected to their holders, each delivering its own queue only', async () => {
    for (const id of ['a', 'b']) {
      const s = await cluster.status(id);
      if (s.witness?.lease !== 'held' || s.replication.connection !== 'up' || s.peers[0].status.type !== 'alive' || s.secondaries.length > 0 || s.ownSpool !== 'delivering') return false;
    }
    return true;
  }, 60_000);
  return cluster;
}

/** Everything sent to a stays queued there (next hop stalled), copied to b; then a is killed. */
async function queueOnAThenKill(cluster: TestCluster, sinkPid: number, n: number, runId: string) {
  process.kill(-sinkPid, 'SIGSTOP');
  try {
    const a = cluster.addresses.get('a')!.smtp;
    const load = await runLoad({ host: a.host, port: a.port, total: n, concurrency: 4, sizeBytes: 1024, from: 'load@client.test', to: (i) => `${runId}${i}@remote.test`, runId });
    assert.equal(load.accepted.size, n);
    // (copies of earlier mail may still be held for a moment: their discard notices are on the way)
    let last: unknown;
    await cluster.waitFor(`b to hold the ${n} copies`, async () => {
      const held = (last = (await cluster.status('b')).replication.holding.a);
      return held >= n && (await cluster.status('a')).replication.unprotected === 0;
    }, 20_000).catch((err) => { throw new Error(`${err.message} (holding ${JSON.stringify(last)})`); });
    await cluster.kill('a');
    return { load, killedAt: Date.now() };
  } finally {
    process.kill(-sinkPid, 'SIGCONT');
  }
}

test('witness: a network cut between the nodes causes no takeover and no duplicate; with one etcd member down a killed node is still taken over, nothing lost', { timeout: 300_000, skip: noEtcd || opensslMissing || FIREWALL_MISSING }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-witness-cut-'));
  const etcd = await startEtcdCluster();
  const sink = await startSink();
  let heal = () => {};
  let cluster: TestCluster | undefined;
  const stopLoad = new AbortController();
  let loads: Promise<string[][]> | undefined;
  try {
    cluster = await pairWithWitness(dir, sink.address, etcd.endpoints);
    const c = cluster;
    let cutOver = false;
    const load = (id: string) => loadInRounds({ ...c.addresses.get(id)!.smtp, perRound: 30, runId: `cut-${id}-`, to: (i) => `${id}${i}@remote.test`, done: () => cutOver, stopSignal: stopLoad.signal });
    loads = Promise.all([load('a'), load('b')]);
    heal = cutPorts(c.ids.flatMap((id) => [{ proto: 'udp' as const, port: c.addresses.get(id)!.heartbeat.port }, { proto: 'tcp' as const, port: c.addresses.get(id)!.replication!.port }]));
    const cutAt = Date.now();
    await c.waitFor('the cut to last 3 × dead_after', async () => {
      for (const id of c.ids) {
        const s = await c.status(id);
        assert.equal(s.secondaries.length, 0, `${id} took a queue over during the cut although the witness saw both alive`);
        assert.equal(s.fenced, undefined, `${id} fenced itself although its witness lease is alive`);
      }
      return Date.now() - cutAt > 3 * DEAD_AFTER;
    }, 60_000);
    // (a node slow to start can be taken over, empty, and handed back before the cut: not counted)
    const during = c.trackingEvents().filter((e) => e.event === 'takeover' && Date.parse(e.t) >= cutAt);
    assert.equal(during.length, 0, 'no takeover during the cut');
    heal();
    await c.waitFor('both alive, connected and protected again', async () => {
      const [a, b] = [await c.status('a'), await c.status('b')];
      return [a, b].every((s) => s.peers[0].status.type === 'alive' && s.replication.connection === 'up' && s.replication.unprotected === 0);
    }, 60_000);
    cutOver = true;
    const accepted = (await loads).flat();
    await c.waitFor('every accepted message at the sink', async () => accepted.every((id) => sink.countsByTestId().has(id)), 60_000);
    for (const id of accepted) assert.equal(sink.countsByTestId().get(id), 1, `${id} delivered exactly once`);
    console.log(`# witness, network cut for ${3 * DEAD_AFTER} ms: ${accepted.length} messages through both nodes, no takeover, no duplicate`);

    // one etcd member down: the witness still has its quorum; a killed → b takes over its copies
    await etcd.members[0].kill();
    const { load: queued, killedAt } = await queueOnAThenKill(c, sink.proc.pid!, 100, 'm1-');
    const st = await c.waitForTakeover('b', 'a', killedAt, 60_000);
    assert.ok(st.witness.held.a > 0, 'b holds the witness lock on a\'s spool, the etcd revision as its epoch');
    await c.waitFor('a\'s 100 messages delivered from b\'s copies', async () => [...queued.accepted].every((id) => sink.countsByTestId().has(id)), 60_000);
    console.log(`# witness, one etcd member down: a's queue taken over by b ${(Date.parse(c.trackingEvents().find((e) => e.event === 'takeover' && e.spool === 'a')!.t) - killedAt)} ms after the kill`);
  } finally {
    stopLoad.abort();
    await loads?.catch(() => undefined);
    heal();
    await cluster?.stopAll();
    await sink.stop();
    await etcd.stopAll();
  }
});

test('witness: etcd quorum lost: a killed node is not taken over, the other goes on with its own mail; quorum back → taken over, nothing lost', { timeout: 300_000, skip: noEtcd || opensslMissing }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-witness-quorum-'));
  const etcd = await startEtcdCluster();
  const sink = await startSink();
  let cluster: TestCluster | undefined;
  try {
    cluster = await pairWithWitness(dir, sink.address, etcd.endpoints);
    const c = cluster;
    await etcd.members[0].kill();
    await etcd.members[1].kill();
    await c.waitFor('b sees the witness without quorum', async () => ['no-quorum', 'unreachable'].includes((await c.status('b')).witness.state), 30_000);
    const { load: queued, killedAt } = await queueOnAThenKill(c, sink.proc.pid!, 50, 'q-');
    await c.waitFor('a dead to b, and 3 × dead_after more', async () => (await c.status('b')).peers[0].status.type === 'dead' && Date.now() - killedAt > 3 * DEAD_AFTER, 60_000);
    const s = await c.status('b');
    assert.equal(s.secondaries.length, 0, 'no takeover without the witness\'s yes');
    assert.equal(s.fenced, undefined, 'b is not fenced: it goes on with its own mail');
    const b = c.addresses.get('b')!.smtp;
    const own = await runLoad({ host: b.host, port: b.port, total: 20, concurrency: 2, sizeBytes: 1000, from: 'load@client.test', to: (i) => `own${i}@remote.test`, runId: 'own-' });
    assert.equal(own.accepted.size, 20, 'b accepts mail while etcd has no quorum');
    await c.waitFor('b delivers its own mail meanwhile', async () => [...own.accepted].every((id) => sink.countsByTestId().has(id)), 30_000);
    assert.ok([...queued.accepted].every((id) => !sink.countsByTestId().has(id)), 'a\'s queue was not delivered by anyone');

    await etcd.members[1].start(); // quorum back (2 of 3)
    await c.waitForTakeover('b', 'a', killedAt, 60_000);
    await c.waitFor('a\'s messages delivered from b\'s copies', async () => [...queued.accepted].every((id) => sink.countsByTestId().has(id)), 60_000);
    for (const id of queued.accepted) assert.equal(sink.countsByTestId().get(id), 1);
  } finally {
    await cluster?.stopAll();
    await sink.stop();
    await etcd.stopAll();
  }
});
