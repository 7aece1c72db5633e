/**
 * Cluster safety: the configuration mistakes an operator can make, each with mail flowing
 * through real node processes over one shared spool root and a real sink. For each: every
 * accepted message is delivered exactly once (no node crashes here, so nothing is in flight at
 * a crash: any duplicate is a bug), no spool is taken over, and the operator is told what is
 * wrong (status, /health, metrics, the log — or the node refuses to start with a clear error).
 *   - different cluster secrets on the two nodes (a typo, a rotation done on one node only);
 *   - a node id missing from one node's cluster.nodes (three nodes);
 *   - two nodes started with the same node id;
 *   - a partner that names its own node;
 *   - clocks 30 s apart (libfaketime on one node);
 * and the test that a fenced node with mail due in its own spool (next hop up, spool readable)
 * delivers none of it — only the survivor's secondary does.
 * Timings are the defaults (250 ms / 1.5 s / 2.5 s): a peer never seen beating would be taken
 * over after 4 x dead_after = 10 s, so the mistakes that look like silence run for longer.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { runLoad } from './harness/load.ts';
import { createCluster, type TestCluster } from './harness/cluster.ts';
import { runCli } from './harness/tandem.ts';
import { startNode } from './harness/node.ts';
import { freePort } from './harness/ports.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

/** Send to each of `ids` in small batches until `ms` have passed; returns the accepted X-Test-Ids. */
async function flow(cluster: TestCluster, ids: string[], ms: number, tag: string): Promise<Set<string>> {
  const accepted = new Set<string>();
  const end = Date.now() + ms;
  for (let batch = 0; Date.now() < end; batch++) {
    await Promise.all(ids.map(async (id) => {
      const smtp = cluster.addresses.get(id)!.smtp;
      const runId = `${tag}-${id}-${batch}-`;
      const r = await runLoad({ host: smtp.host, port: smtp.port, total: 10, concurrency: 2, sizeBytes: 600, from: 'load@client.test', to: (i) => `${runId}${i}@remote.test`, runId });
      for (const t of r.accepted) accepted.add(t);
    }));
  }
  return accepted;
}

/** Each of `ids` delivers its own spool (a node slow to start on a loaded machine may have had its empty spool taken over and handed back). */
const ownSpools = (cluster: TestCluster, ids: string[]) => cluster.waitFor('every spool delivered by its own node', async () => {
  for (const id of ids) {
    const s = await cluster.status(id);
    if (s.ownSpool !== 'delivering' || s.secondaries.length > 0) return false;
  }
  return true;
}, 60_000);

/** Every accepted message arrived exactly once, and nothing else arrived. */
async function assertExactlyOnce(sink: Sink, accepted: Set<string>): Promise<void> {
  await sink.waitForCount(accepted.size, 60_000);
  const got = sink.countsByTestId();
  for (const id of accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
  assert.equal(sink.count(), accepted.size, 'no delivery beyond the accepted messages');
}

/** Takeovers since `since` (a node slow to start may have had its empty spool taken over and handed back before). */
const takeovers = (cluster: TestCluster, since = 0) => cluster.trackingEvents().filter((e) => e.event === 'takeover' && Date.parse(e.t) >= since);
const log = (cluster: TestCluster, id: string) => readFileSync(path.join(cluster.dir, `${id}.out`), 'utf8');

test('different cluster secrets: no takeover either way, each node delivers its own spool once, the fault is reported everywhere', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-secrets-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address });
  try {
    // started together: a peer never seen beating is taken over after 4 x dead_after (10 s), and on
    // a loaded machine one node's start after the other's can take that long
    await Promise.all([cluster.start('a'), cluster.start('b', { config: { cluster: { secret: 'a-different-secret-typed-on-b-only' } } })]);
    const accepted = await flow(cluster, ['a', 'b'], 12_000, 'secrets'); // > 4 x dead_after
    await assertExactlyOnce(sink, accepted);
    assert.deepEqual(takeovers(cluster), [], 'no spool taken over');
    for (const [me, peer] of [['a', 'b'], ['b', 'a']]) {
      const s = await cluster.status(me);
      assert.equal(s.peers[0].status.type, 'unauthenticated', `${me} sees ${peer} as alive but unauthenticated`);
      assert.equal(s.ownSpool, 'delivering');
      assert.equal(s.secondaries.length, 0);
      const fault = s.faults.find((f: any) => f.kind === 'secret-mismatch' && f.subject === peer);
      assert.ok(fault, `${me} reports the secret mismatch`);
      assert.match(fault.message, /cluster\.secret most likely differs/);
      const health = await fetch(`http://127.0.0.1:${cluster.addresses.get(me)!.admin.port}/health`);
      assert.equal(health.status, 200, 'the node still carries traffic');
      assert.ok((await health.json()).faults.some((f: any) => f.kind === 'secret-mismatch'), '/health carries the fault');
      assert.match(log(cluster, me), /CLUSTER CONFIGURATION FAULT \(secret-mismatch/);
    }
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.addresses.get('a')!.admin.port}/metrics`)).text();
    assert.match(metrics, /tandem_cluster_config_faults\{kind="secret-mismatch"\} 1/);
    const cli = await runCli(['cluster', 'status', '--config', cluster.config]);
    assert.equal(cli.code, 1, 'tandem cluster status exits 1 while there is a fault');
    assert.match(cli.stdout, /CONFIGURATION FAULTS[\s\S]*secret-mismatch/);
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

test('a node id missing from one node\'s cluster.nodes: nothing taken over, nothing twice, the node that lacks it says so', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-missing-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, ids: ['a', 'b', 'c'], relayHost: sink.address });
  try {
    const shared = cluster.addresses;
    const entry = (id: string, partner: string) => ({
      id, heartbeat: `127.0.0.1:${shared.get(id)!.heartbeat.port}`, smtp: `127.0.0.1:${shared.get(id)!.smtp.port}`,
      admin: `127.0.0.1:${shared.get(id)!.admin.port}`, site: 'test', partner,
    });
    await cluster.start('a');
    await cluster.start('b');
    await cluster.start('c', { config: { cluster: { nodes: [entry('a', 'c'), entry('c', 'a')] } } }); // c's list lacks b
    await ownSpools(cluster, cluster.ids);
    const since = Date.now();
    const accepted = await flow(cluster, ['a', 'b', 'c'], 12_000, 'missing');
    await assertExactlyOnce(sink, accepted);
    assert.deepEqual(takeovers(cluster, since), [], 'no spool taken over');
    const c = await cluster.status('c');
    const fault = c.faults.find((f: any) => f.kind === 'unknown-node' && f.subject === 'b');
    assert.ok(fault, 'c reports that b beats although it is not in its cluster.nodes');
    assert.match(fault.message, /cluster\.nodes lists differ/);
    assert.match(log(cluster, 'c'), /CLUSTER CONFIGURATION FAULT \(unknown-node, b\)/);
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

test('two nodes with the same id: the second refuses to start, the first goes on delivering its spool once', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dupid-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address });
  try {
    await cluster.start('a');
    await cluster.start('b');
    await ownSpools(cluster, ['a', 'b']);
    const since = Date.now();
    const flowing = flow(cluster, ['a'], 4_000, 'dupid');
    // a third machine, set up by mistake with a's id (its own SMTP and admin addresses)
    const err: Error = await startNode({ config: cluster.config, nodeId: 'a', listen: '127.0.0.1:0', admin: '127.0.0.1:0', logFile: path.join(dir, 'second-a.out') })
      .then(() => assert.fail('a second node with id a started'), (e) => e);
    assert.match(String(err.message), /node id \\?"a\\?" is in use: another process renews its disk heartbeat/);
    assert.match(String(err.message), /exited \(code 78/, 'a configuration error (EX_CONFIG): systemd does not restart it in a loop');
    const accepted = await flowing;
    await assertExactlyOnce(sink, accepted);
    assert.deepEqual(takeovers(cluster, since), []);
    assert.equal((await cluster.status('a')).ownSpool, 'delivering');
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

test('a partner that names its own node: that node refuses to start with a clear error; the other carries the mail', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-selfpartner-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address });
  try {
    await cluster.start('a');
    const shared = cluster.addresses;
    const entry = (id: string, partner: string) => ({ id, heartbeat: `127.0.0.1:${shared.get(id)!.heartbeat.port}`, site: 'test', partner });
    const err: Error = await cluster.start('b', { config: { cluster: { nodes: [entry('a', 'b'), entry('b', 'b')] } } }).then(() => assert.fail('b started'), (e) => e);
    assert.match(String(err.message), /cluster\.nodes\.1\.partner: "b" is not another node of cluster\.nodes/);
    const accepted = await flow(cluster, ['a'], 2_000, 'selfpartner');
    await assertExactlyOnce(sink, accepted);
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

/** libfaketime's preload library (Debian package faketime), if installed. */
function faketimeLib(): string | undefined {
  for (const arch of ['x86_64-linux-gnu', 'aarch64-linux-gnu']) {
    const lib = `/usr/lib/${arch}/faketime/libfaketime.so.1`;
    if (existsSync(lib)) return lib;
  }
  return undefined;
}

test('clocks 30 s apart: heartbeats dropped as stale, but the moving disk heartbeats keep both alive: no takeover, nothing twice, the skew is reported', { timeout: 180_000, skip: !faketimeLib() && !process.env.CI ? 'libfaketime not installed (Debian package faketime; .ci/run installs it)' : false }, async () => {
  const lib = faketimeLib();
  assert.ok(lib, 'libfaketime is installed (Debian package faketime)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-skew-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address });
  try {
    await cluster.start('a');
    await cluster.start('b', { env: { LD_PRELOAD: lib, FAKETIME: '+30s', FAKETIME_DONT_FAKE_MONOTONIC: '1' } });
    await ownSpools(cluster, ['a', 'b']);
    const since = Date.now() + 30_000; // b's tracking lines are dated by its clock, 30 s ahead; a's never take over here
    const accepted = await flow(cluster, ['a', 'b'], 8_000, 'skew');
    await assertExactlyOnce(sink, accepted);
    assert.deepEqual(takeovers(cluster, since - 30_000).filter((e) => e.node === 'a'), [], 'a takes nothing over');
    assert.deepEqual(takeovers(cluster, since).filter((e) => e.node === 'b'), [], 'b takes nothing over');
    const a = await cluster.status('a');
    assert.notEqual(a.peers[0].status.type, 'dead');
    assert.ok(a.rejected.heartbeats.stale > 0, 'b\'s heartbeats are dropped as stale');
    const fault = a.faults.find((f: any) => f.kind === 'clock-skew' && f.subject === 'b');
    assert.ok(fault, 'a reports the clock skew');
    assert.match(fault.message, /clock is 3\d\.\d s ahead of ours/);
    assert.ok((await cluster.status('b')).faults.some((f: any) => f.kind === 'clock-skew' && f.subject === 'a'), 'and so does b');
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});

test('a fenced node whose own spool holds mail that is due, with the next hop up, delivers none of it: only the survivor\'s secondary does, once each', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-fenced-due-'));
  const shared = path.join(dir, 'spool');
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${sinkPort}` });
  // b's own view of the shared storage: the spools as they are, but its own path to .cluster/tmp,
  // so that b alone can lose its disk heartbeat while its spool stays readable and writable
  const view = path.join(dir, 'view-b');
  for (const d of [shared, path.join(shared, '.cluster', 'heartbeat'), path.join(shared, '.cluster', 'claims'), path.join(shared, '.cluster', 'tmp'), path.join(shared, 'a'), path.join(shared, 'b')]) mkdirSync(d, { recursive: true });
  mkdirSync(path.join(view, '.cluster'), { recursive: true });
  for (const name of ['a', 'b']) symlinkSync(path.join(shared, name), path.join(view, name));
  for (const name of ['heartbeat', 'claims', 'tmp']) symlinkSync(path.join(shared, '.cluster', name), path.join(view, '.cluster', name));
  const tmpOfB = path.join(view, '.cluster', 'tmp');
  try {
    await cluster.start('a');
    await cluster.start('b', { spool: view });
    await cluster.waitFor('a and b see each other', async () => (await cluster.status('a')).peers[0].status.type === 'alive' && (await cluster.status('b')).peers[0].status.type === 'alive');
    const smtp = cluster.addresses.get('b')!.smtp;
    const onB = await runLoad({ host: smtp.host, port: smtp.port, total: 30, concurrency: 4, sizeBytes: 800, from: 'load@client.test', to: (i) => `due-${i}@remote.test`, runId: 'due-' });
    assert.equal(onB.accepted.size, 30);
    await cluster.waitFor('b\'s queue deferred (next hop down)', async () => readdirSync(path.join(shared, 'b', 'deferred')).length === 30);

    const cutAt = Date.now();
    unlinkSync(tmpOfB); // b can no longer renew its disk heartbeat; its spool is untouched
    await cluster.waitFor('b fenced', async () => {
      const res = await fetch(`http://127.0.0.1:${cluster.addresses.get('b')!.admin.port}/health`);
      return (await res.json()).status === 'fenced';
    });
    const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` }); // the next hop is up: b's mail is due within its backoff (1-5 s)
    try {
      await cluster.waitForTakeover('a', 'b', cutAt);
      await sink.waitForCount(30, 60_000);
      const deliveredSinceCut = () => cluster.trackingEvents().filter((e) => e.event === 'delivered' && Date.parse(e.t) >= cutAt);
      // the tracking line is written after the sink's 250: wait for all 30
      await cluster.waitFor('30 deliveries in the tracking log', async () => deliveredSinceCut().length >= 30);
      const delivered = deliveredSinceCut();
      assert.equal(delivered.filter((e) => e.node === 'b' && !e.secondary).length, 0, 'the fenced node delivered nothing from its own spool');
      assert.equal(delivered.filter((e) => e.node === 'a' && e.secondary === 'b').length, 30, 'a\'s secondary delivered b\'s queue');
      const got = sink.countsByTestId();
      for (const id of onB.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
      assert.equal(sink.count(), 30);

      symlinkSync(path.join(shared, '.cluster', 'tmp'), tmpOfB);
      await cluster.waitFor('b back with its own spool (handback)', async () => (await cluster.status('b')).ownSpool === 'delivering', 60_000);
    } finally {
      await sink.stop();
    }
  } finally {
    await cluster.stopAll();
  }
});
