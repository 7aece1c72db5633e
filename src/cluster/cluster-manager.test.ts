/**
 * Unit tests of the cluster manager's delivery gate for the node's own spool, over a real
 * spool root and a real queue manager with a scripted channel whose next hop is always up:
 *   - a storage-fenced node whose spool holds mail that is due delivers none of it, and
 *     delivers it (once) when the storage is back;
 *   - a node whose spool lock another process takes stops delivering within an interval,
 *     reports the fault, and delivers again once the lock is free;
 *   - the disk heartbeat's renewer thread: it renews while the main thread is busy for less
 *     than fence_after; a main thread blocked for longer is taken for wedged (renewals pause,
 *     so peers could take over) and, when it wakes, delivers nothing before fresh renewals;
 *     a renewal hung in a call (a FIFO as its temp file: open(2) never returns) still ends in a
 *     fence, and a new thread renews again.
 * The peer (b) never runs: it is only in the config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, renameSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ClusterManager } from './cluster-manager.ts';
import { clusterPaths } from './paths.ts';
import { clusterSealer } from './sealed.ts';
import type { DiskBeat } from './disk-heartbeat.ts';
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

/** Block this thread (the node's main thread) for `ms`, as a long GC pause or a wedged loop would. */
function blockMainThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function slotCounter(t: Awaited<ReturnType<typeof setup>>): number {
  return clusterSealer(t.config.cluster!).open<DiskBeat>(readFileSync(clusterPaths(t.root).heartbeat('a'), 'utf8')).counter;
}

test('the disk heartbeat is renewed by its own thread: a main thread busy for less than fence_after neither stops it nor fences the node', { timeout: 30_000 }, async () => {
  const t = await setup();
  try {
    await until('renewing', () => t.cluster.status().renewals.count > 3);
    const before = slotCounter(t);
    const fences = t.cluster.status().counters.fences; // (a unit test's thread loads tsx first: the start may be slow)
    blockMainThread(250); // fence_after 300 ms, interval 50 ms
    assert.ok(slotCounter(t) > before, 'renewed while the main thread was blocked');
    assert.equal(t.cluster.mayDeliverOwnSpool(), true, 'the gate reads the thread\'s last renewal at once');
    t.hop.up = true;
    await t.send('after@remote.test');
    await until('delivered', () => t.delivered.length === 1);
    assert.equal(t.cluster.status().counters.fences, fences, 'no fence for a busy main thread');
  } finally {
    await t.stop();
  }
});

test('a main thread blocked for longer than fence_after stops the renewals, and on waking delivers nothing until fresh renewals and the claim say it may', { timeout: 30_000 }, async () => {
  const t = await setup();
  try {
    t.hop.up = true;
    await until('renewing', () => t.cluster.status().renewals.count > 3);
    const slot = clusterPaths(t.root).heartbeat('a');
    const blockedAt = Date.now();
    blockMainThread(1200); // 4 x fence_after
    // still before any timer or I/O callback of this thread has run
    const lastWrite = statSync(slot).mtimeMs;
    assert.ok(lastWrite < blockedAt + 300 + 150, `renewals paused once the main thread had been silent for fence_after (last write ${Math.round(lastWrite - blockedAt)} ms into the block)`);
    assert.equal(t.cluster.mayDeliverOwnSpool(), false, 'no delivery on a stale renewal');
    await t.send('woken@remote.test');
    await until('fenced at the first beat after waking', () => t.cluster.status().fenced?.type === 'storage');
    assert.deepEqual(t.delivered, [], 'nothing delivered between waking and the fence');
    await until('unfenced after fresh renewals', () => !t.cluster.status().fenced);
    await until('delivered', () => t.delivered.length === 1);
    assert.ok(statSync(slot).mtimeMs > lastWrite, 'renewing again');
  } finally {
    await t.stop();
  }
});

test('a renewal hung in a call that never returns still fences the node; another renewer thread takes over and the node resumes', { timeout: 30_000 }, async () => {
  const t = await setup();
  const tmp = clusterPaths(t.root).tmp;
  const fifos: string[] = [];
  try {
    t.hop.up = true;
    await until('renewing', () => t.cluster.status().renewals.count > 3);
    // the next temp files are FIFOs with no reader: open(2) for writing blocks until one comes
    // (made farthest first, so that the renewals cannot run past them meanwhile)
    const next = slotCounter(t);
    for (let n = next + 40; n > next; n--) fifos.push(path.join(tmp, `heartbeat.a.${n}`));
    execFileSync('sh', ['-c', 'for f; do mkfifo "$f" 2>/dev/null; done', 'sh', ...fifos]);
    await until('fenced', () => t.cluster.status().fenced?.type === 'storage');
    assert.equal(t.cluster.mayDeliverOwnSpool(), false);
    await until('unfenced: a new thread renews', () => !t.cluster.status().fenced);
    assert.ok(slotCounter(t) > next + 40, 'the new thread went on past the hung one\'s counters');
    await t.send('resumed@remote.test');
    await until('delivered', () => t.delivered.length === 1);
  } finally {
    // give the hung call its reader, so that the old thread can end
    for (const f of fifos) try { closeSync(openSync(f, constants.O_RDONLY | constants.O_NONBLOCK)); } catch { /* already gone */ }
    await t.stop();
  }
});
