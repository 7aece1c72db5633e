/**
 * Unit tests of the disk-heartbeat lease (disk-lease.ts) with a fake clock, a fake disk and a
 * fake renewer thread, in milliseconds (cluster-manager.test.ts runs the real thread):
 *   - a storage that stops answering fences the node fence_after after the start of the last
 *     good renewal; three good renewals in a row let the fence end;
 *   - a failing storage is logged once per outage;
 *   - an operator fence pauses the renewals;
 *   - a slow renewal is logged (disk-heartbeat-slow, with its steps) and counted, and the
 *     lease counts from when it began;
 *   - a renewer thread hung in a call fences the node, and after 2 × fence_after is replaced by
 *     a new thread that goes on from its counter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { DiskLease } from './disk-lease.ts';
import type { DiskRenewer, RenewalSteps } from './disk-heartbeat.ts';
import type { ClusterIo } from './cluster-io.ts';
import type { AnnouncedState } from './membership.ts';

const INTERVAL = 100;
const FENCE_AFTER = 300;

/** A lease over a fake disk whose renewals the test settles; the node's fence as a plain variable. */
function setup(renewer?: (after: number | undefined) => DiskRenewer) {
  const clock = { now: 1000 };
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const pending: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  let auto = true;
  let lastSteps: RenewalSteps | undefined;
  const disk = {
    prepare: async () => undefined,
    renew: (_state: AnnouncedState) => (auto ? Promise.resolve() : new Promise<void>((resolve, reject) => void pending.push({ resolve, reject }))),
    read: async () => ({}),
    slots: async () => [],
    slotPath: () => '/fake',
    rejected: 0,
    get lastSteps() { return lastSteps; },
    ...(renewer ? { renewer: (o: { after?: number }) => renewer(o.after) } : {}),
  } as ClusterIo['disk'];
  const node = { fence: undefined as undefined | 'storage' | 'operator', fences: [] as Array<{ since: number; why: string }> };
  const lease = new DiskLease({
    c: { heartbeat_interval: INTERVAL, fence_after: FENCE_AFTER }, disk, mono: () => clock.now, wall: () => clock.now, logger,
    announced: () => (node.fence ? 'fenced' : 'ready'),
    fenced: () => node.fence !== undefined,
    fencedByOperator: () => node.fence === 'operator',
    fenceForStorage: (since, why) => { node.fence = 'storage'; node.fences.push({ since, why }); lease.fenceBegan(); },
  });
  /** `ms` later (one heartbeat interval by default): the beat, then its renewal's callbacks. */
  const tick = async (ms = INTERVAL) => {
    clock.now += ms;
    lease.beat();
    await settled();
  };
  return {
    lease, node, logs, pending, clock, tick,
    hang: () => { auto = false; },
    answer: () => { auto = true; },
    steps: (s: RenewalSteps) => { lastSteps = s; },
  };
}

/** Let the renewals' callbacks run. */
const settled = () => new Promise((r) => setImmediate(r));

test('a storage that stops answering fences the node fence_after after the last good renewal began; three good renewals in a row let the fence end', async () => {
  const t = setup();
  await t.lease.start('starting');
  const startedAt = t.clock.now;
  t.hang();
  await t.tick();
  await t.tick();
  assert.equal(t.node.fence, undefined, 'not fenced before fence_after');
  assert.equal(t.pending.length, 1, 'one renewal hangs; no second one is started meanwhile');
  await t.tick();
  assert.equal(t.node.fence, 'storage');
  assert.equal(t.node.fences.length, 1);
  assert.equal(t.node.fences[0].since, startedAt + FENCE_AFTER, 'in force since the renewal became overdue');
  assert.match(t.node.fences[0].why, /no disk heartbeat renewal for 300 ms/);
  assert.equal(t.lease.overdue(), true);
  t.clock.now += 4 * INTERVAL;
  t.pending[0].reject(new Error('ESTALE: stale file handle'));
  await settled();
  t.answer();
  const back: boolean[] = [];
  for (let i = 0; i < 3; i++) {
    back.push(t.lease.storageBack());
    await t.tick();
  }
  assert.deepEqual(back, [false, false, false], 'not back before three good renewals since the fence');
  assert.equal(t.lease.storageBack(), true, 'back after three');
  assert.equal(t.node.fences.length, 1, 'fenced once');
  t.lease.stop();
});

test('a renewal that hung past the fence and ends late does not count towards its end: three fresh ones do', async () => {
  const t = setup();
  await t.lease.start('starting');
  t.hang();
  for (let i = 0; i < 3; i++) await t.tick();
  assert.equal(t.node.fence, 'storage');
  t.answer();
  t.pending[0].resolve(); // the stale renewal, begun before the fence, completes now
  await settled();
  const back: boolean[] = [];
  for (let i = 0; i < 3; i++) {
    await t.tick();
    back.push(t.lease.storageBack());
  }
  assert.deepEqual(back, [false, false, true], 'back after the third fresh renewal, not the second');
  t.lease.stop();
});

test('a storage failure is logged once per outage, and its end once', async () => {
  const t = setup();
  await t.lease.start('starting');
  t.hang();
  for (let i = 0; i < 3; i++) {
    t.clock.now += INTERVAL;
    t.lease.beat();
    t.pending.shift()!.reject(new Error('EIO: i/o error'));
    await settled();
  }
  t.answer();
  await t.tick();
  const events = t.logs.map((l) => l.event).filter((e) => typeof e === 'string' && e.startsWith('disk-heartbeat'));
  assert.deepEqual(events, ['disk-heartbeat-failed', 'disk-heartbeat-renewed']);
  assert.equal(t.logs.find((l) => l.event === 'disk-heartbeat-failed')!.err, 'EIO: i/o error');
  t.lease.stop();
});

test('an operator fence pauses the renewals: the peers see the node stop renewing', async () => {
  const t = setup();
  await t.lease.start('starting');
  t.hang();
  t.node.fence = 'operator';
  for (let i = 0; i < 5; i++) await t.tick();
  assert.equal(t.pending.length, 0, 'no renewal while fenced by the operator');
  t.node.fence = undefined;
  await t.tick();
  assert.equal(t.pending.length, 1, 'renewing again once the operator fence is gone');
  t.lease.stop();
});

test('a renewal slower than two intervals is logged as disk-heartbeat-slow with its steps and counted; the lease counts from its start; the beat timer\'s lateness is kept', async () => {
  const t = setup();
  await t.lease.start('starting');
  t.hang();
  await t.tick();
  t.clock.now += 250;
  t.steps({ open: 1.2, write: 0.4, sync: 247.9, close: 0.2, rename: 0.3 });
  t.pending[0].resolve();
  await settled();
  assert.equal(t.lease.ageMs(), 250, 'the lease counts from when the renewal began, not from when it completed');
  await t.tick(40); // the next beat fires 190 ms late (290 ms after the last one, interval 100)
  const slow = t.logs.find((l) => l.event === 'disk-heartbeat-slow');
  assert.ok(slow, 'logged');
  assert.equal(slow.ms, 250);
  assert.deepEqual(slow.steps, { open: 1, write: 0, sync: 248, close: 0, rename: 0 });
  const stats = t.lease.stats();
  assert.equal(stats.count, 1);
  assert.equal(stats.slow, 1);
  assert.equal(stats.slowestMs, 250);
  assert.equal(stats.beatLateMaxMs, 190);
  t.lease.stop();
});

test('a renewer thread hung in a call fences the node at fence_after and is replaced after 2 × fence_after by a thread that goes on from its counter', async () => {
  const threads: Array<{ after: number | undefined; checkIns: number; stopped: boolean; renewedAt: number; busySince?: number }> = [];
  const t = setup((after) => {
    const th = { after, checkIns: 0, stopped: false, renewedAt: t.clock.now, busySince: undefined as number | undefined };
    threads.push(th);
    return {
      checkIn: () => void th.checkIns++,
      renewedAgoMs: () => t.clock.now - th.renewedAt,
      renewals: () => 5,
      busyMs: () => (th.busySince === undefined ? 0 : t.clock.now - th.busySince),
      counter: () => 42,
      exited: () => false,
      stop: () => { th.stopped = true; },
    };
  });
  await t.lease.start('starting');
  assert.equal(threads.length, 1, 'the renewer thread started after the first renewal');
  /** One interval: the thread renews (unless hung), then the main thread beats. */
  const step = async () => {
    const th = threads[threads.length - 1];
    if (th.busySince === undefined) th.renewedAt = t.clock.now + INTERVAL;
    await t.tick();
  };
  await step();
  assert.equal(threads[0].checkIns, 1, 'the main thread checks in every beat');
  threads[0].busySince = t.clock.now; // the thread's next renewal hangs in a call
  for (let i = 0; i < 2; i++) await step();
  assert.equal(t.node.fence, undefined);
  await step();
  assert.equal(t.node.fence, 'storage', 'fenced fence_after after the last renewal began');
  for (let i = 0; i < 3; i++) await step();
  assert.equal(threads.length, 1, 'not replaced before 2 × fence_after');
  await step();
  assert.equal(threads[0].stopped, true, 'the hung thread is told to stop');
  assert.equal(threads.length, 2, 'another thread started');
  assert.equal(threads[1].after, 42, 'going on from the hung thread\'s counter');
  assert.ok(t.logs.some((l) => l.event === 'disk-heartbeat-hung'));
  t.lease.stop();
});
