/**
 * Unit tests of the cluster manager's delivery gate for the node's own spool, over a real
 * spool root and a real queue manager with a scripted channel whose next hop is always up:
 *   - a storage-fenced node whose spool holds mail that is due delivers none of it, and
 *     delivers it (once) when the storage is back;
 *   - a node whose spool lock another process takes stops delivering within an interval,
 *     reports the fault, and delivers again once the lock is free.
 * The peer (b) never runs: it is only in the config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ClusterManager } from './cluster-manager.ts';
import { clusterPaths } from './paths.ts';
import { QueueManager } from '../qmgr/index.ts';
import { Spool, acquireSpoolLock, type SpoolLock } from '../spool/index.ts';
import { configSchema } from '../config/schema.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import type { Channel, DeliveryJob } from '../channels/types.ts';
import type { Router } from '../router/types.ts';
import type { Envelope } from '../spool/types.ts';

const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup() {
  const root = mkdtempSync(path.join(os.tmpdir(), 'tandem-cm-'));
  const config = configSchema.parse({
    node: { id: 'a', hostname: 'a.test' },
    spool: { root },
    tracking: { path: path.join(root, 'track.log') },
    queue: { min_backoff: '50ms', max_backoff: '100ms' },
    cluster: {
      secret: 'unit-test-cluster-secret-0123456789',
      heartbeat_interval: '50ms', fence_after: '300ms', dead_after: '600ms',
      nodes: [{ id: 'a', heartbeat: '127.0.0.1:0' }, { id: 'b', heartbeat: '127.0.0.1:9' }],
    },
  });
  const delivered: string[] = [];
  const hop = { up: false, attempts: 0 };
  const channel: Channel = {
    async deliver(job: DeliveryJob) {
      hop.attempts++;
      // the next hop is down until the test brings it up: the message is deferred, and due again 50-100 ms later
      if (!hop.up) return job.recipients.map((r) => ({ index: r.index, outcome: 'deferred' as const, reply: '451 4.3.0 try later', via: 'next' }));
      delivered.push(...job.recipients.map((r) => r.address));
      return job.recipients.map((r) => ({ index: r.index, outcome: 'delivered' as const, reply: '250 2.0.0 ok', via: 'next' }));
    },
  };
  const router: Router = {
    async resolveRecipient(a) { return { type: 'local', addresses: [a] }; },
    async routeAddress(a) { return { type: 'smtp', domain: a.split('@')[1], port: 25, mx: true }; },
    async reload() {},
    health: () => undefined,
    async close() {},
  };
  const logger = pino({ level: 'silent' });
  const tracking = new TrackingLog(config.tracking.path, 'a');
  const dir = path.join(root, 'a');
  const spool = await Spool.open(dir, { nodeId: 'a' });
  let lock: SpoolLock | undefined;
  let cluster!: ClusterManager;
  const qmgr = new QueueManager({ config, spool, router, channelFor: () => channel, tracking, logger, mayDeliver: () => cluster.mayDeliverOwnSpool() });
  cluster = new ClusterManager(config, {
    state: () => 'ready',
    queueDepth: () => 0,
    loseOwnSpool: () => { lock = undefined; },
    regainOwnSpool: async () => { lock = await acquireSpoolLock(dir, { force: true }); },
    deliveriesResumed: () => qmgr.resume(),
    ownLock: async () => (lock ? lock.held() : undefined),
    retakeOwnSpool: async () => { lock = await acquireSpoolLock(dir); },
  }, logger, tracking);
  await cluster.start();
  lock = await acquireSpoolLock(dir);
  await qmgr.start();
  const send = async (to: string) => {
    const env: Envelope = { queueId: spool.newQueueId(), nodeId: 'a', sender: 's@x.test', recipients: [{ address: to, original: to }], arrivedAt: Date.now(), messageId: '<m@x>', client: { address: '127.0.0.1', helo: 'x' } };
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length);
  };
  const stop = async () => {
    await cluster.stop();
    await qmgr.stop();
    tracking.close();
    rmSync(root, { recursive: true, force: true });
  };
  return { root, config, cluster, qmgr, delivered, hop, send, stop, dir };
}

test('a fenced node whose own spool holds mail that is due, with the next hop up, delivers none of it; it does once the storage is back', { timeout: 30_000 }, async () => {
  const t = await setup();
  try {
    await t.send('due@remote.test');
    await until('the first attempt deferred (next hop down)', () => t.qmgr.counts().deferred === 1);
    // the shared storage goes bad: the disk heartbeat cannot be renewed (.cluster/tmp is not a folder)
    const tmp = clusterPaths(t.root).tmp;
    renameSync(tmp, `${tmp}.away`);
    writeFileSync(tmp, 'not a folder');
    await until('fenced', () => t.cluster.status().fenced?.type === 'storage');
    assert.equal(t.cluster.mayDeliverOwnSpool(), false);
    t.hop.up = true;
    await t.send('new@remote.test');
    // the deferred message is due again after 50-100 ms; give the manager 20 backoffs' time
    const end = Date.now() + 2000;
    while (Date.now() < end) {
      assert.deepEqual(t.delivered, [], 'a fenced node delivers nothing from its own spool');
      await new Promise((r) => setTimeout(r, 50));
    }
    rmSync(tmp);
    renameSync(`${tmp}.away`, tmp);
    await until('unfenced', () => !t.cluster.status().fenced);
    await until('both delivered', () => t.delivered.length === 2);
    assert.deepEqual([...t.delivered].sort(), ['due@remote.test', 'new@remote.test'], 'each once, after the fence');
  } finally {
    await t.stop();
  }
});

test('a node whose spool lock another process takes stops delivering within an interval, says why, and delivers again once the lock is free', { timeout: 30_000 }, async () => {
  const t = await setup();
  try {
    t.hop.up = true;
    await t.send('first@remote.test');
    await t.send('second@remote.test');
    await until('both delivered', () => t.delivered.length === 2);
    await new Promise((r) => setTimeout(r, 2)); // another holder: another start time
    const intruder = await acquireSpoolLock(t.dir, { force: true });
    await until('fenced for the lock', () => t.cluster.status().fenced?.type === 'lock', 2000);
    const fault = t.cluster.status().faults.find((f) => f.kind === 'lock-taken');
    assert.ok(fault, 'the operator is told');
    assert.match(fault.message, /another process delivers our spool/);
    await t.send('third@remote.test');
    const end = Date.now() + 1000;
    while (Date.now() < end) {
      assert.ok(!t.delivered.includes('third@remote.test'), 'nothing delivered while another process holds the lock');
      await new Promise((r) => setTimeout(r, 50));
    }
    await intruder.release();
    await until('unfenced', () => !t.cluster.status().fenced);
    await until('all delivered', () => t.delivered.includes('third@remote.test') && t.delivered.includes('first@remote.test'));
    assert.deepEqual([...t.delivered].sort(), ['first@remote.test', 'second@remote.test', 'third@remote.test']);
  } finally {
    await t.stop();
  }
});
