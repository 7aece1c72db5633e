/**
 * The cluster's pure decisions (core.ts), and the cluster manager's shell driven through fake
 * I/O (ClusterIo): a fake clock, in-memory disk slots and claims, secondaries that start at
 * once. Takeover, handback, and the rules that keep two deliverers off one spool, in
 * milliseconds — the process-level tests (test/cluster-*.test.ts) check the same with real nodes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { decideOwnSpool, decideSpool, mayDeliverOwnSpool, announcedState, type PeerSpoolView, type PeerState } from './core.ts';
import { ClusterManager, type ClusterReplica } from './cluster-manager.ts';
import type { ClusterIo, ClusterIoHandlers, ClusterWitness, SecondaryHandle } from './cluster-io.ts';
import type { AcquireResult } from './witness/etcd-witness.ts';
import type { ClaimRecord } from './claims.ts';
import type { DiskBeat } from './disk-heartbeat.ts';
import type { AnnouncedState } from './membership.ts';
import { configSchema } from '../config/schema.ts';
import type { TrackingLog } from '../track/tracking-log.ts';

const rec = (spool: string, epoch: number, kind: 'claim' | 'release', by: string, extra: Partial<ClaimRecord> = {}): ClaimRecord => ({ spool, epoch, kind, by, at: '', ...extra });

function view(over: Partial<PeerSpoolView> & { states?: Record<string, PeerState> }): PeerSpoolView {
  const states = over.states ?? {};
  return {
    me: 'a', record: rec('b', 1, 'release', 'b'), status: (id) => states[id] ?? 'alive', isBack: (id) => (states[id] ?? 'alive') === 'alive',
    survivor: () => 'a', seenBack: false, fenced: false, autoHandback: true, retryDue: true, ...over,
  };
}

test('decideSpool: a dead peer\'s spool is taken over by its survivor only, never while fenced, never when contested, never from a live or unauthenticated node', () => {
  assert.deepEqual(decideSpool(view({ states: { b: 'dead' } })), { type: 'takeover', dead: 'b' });
  assert.deepEqual(decideSpool(view({ states: { b: 'dead' }, survivor: () => 'c' })), { type: 'none' }, 'not the designated survivor');
  assert.deepEqual(decideSpool(view({ states: { b: 'dead' }, fenced: true })), { type: 'none' }, 'a fenced node takes nothing over');
  assert.deepEqual(decideSpool(view({ states: { b: 'dead' }, record: rec('b', 1, 'release', 'b', { unverifiedAbove: 2 }) })), { type: 'contested' });
  for (const s of ['alive', 'suspect', 'draining', 'fenced', 'unauthenticated'] as const) assert.deepEqual(decideSpool(view({ states: { b: s } })), { type: 'none' }, `not from a ${s} node`);
  // b's spool held by c, which died: taken over only if b itself is not live (b breaks the claim otherwise)
  assert.deepEqual(decideSpool(view({ record: rec('b', 2, 'claim', 'c'), states: { b: 'dead', c: 'dead' } })), { type: 'takeover', dead: 'c' });
  assert.deepEqual(decideSpool(view({ record: rec('b', 2, 'claim', 'c'), states: { b: 'alive', c: 'dead' } })), { type: 'none' });
  assert.deepEqual(decideSpool(view({ record: rec('b', 2, 'claim', 'x'), states: { b: 'dead', x: 'unknown' } })), { type: 'none' }, 'a holder not in cluster.nodes: left to the operator');
});

test('decideSpool: a spool we hold is handed back when its node is back, its secondary started, restarted or stopped as the claim says', () => {
  const held = rec('b', 2, 'claim', 'a');
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'alive' }, secondaryEpoch: 2 })), { type: 'handback' });
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'alive' }, secondaryEpoch: 2, autoHandback: false })), { type: 'none' }, 'auto_handback off: the operator hands back');
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'dead' } })), { type: 'start-secondary' });
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'dead' }, retryDue: false })), { type: 'none' }, 'not before the retry time');
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'dead' }, fenced: true })), { type: 'none' });
  assert.deepEqual(decideSpool(view({ record: held, states: { b: 'dead' }, secondaryEpoch: 2, seenBack: true })), { type: 'restart-secondary' });
  assert.deepEqual(decideSpool(view({ record: rec('b', 3, 'release', 'x'), states: { b: 'dead' }, secondaryEpoch: 2 })), { type: 'stop-secondary' }, 'released by someone else');
  assert.deepEqual(decideSpool(view({ record: rec('b', 3, 'claim', 'c'), states: { b: 'dead', c: 'alive' }, secondaryEpoch: 2 })), { type: 'stop-secondary' }, 'claimed by another node');
});

test('decideOwnSpool, the delivery gate and the announced state', () => {
  const status = (m: Record<string, PeerState>) => (id: string) => m[id] ?? 'alive';
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 2, 'claim', 'b'), taken: false, fenced: false, status: status({}) }), { type: 'held', holder: 'b', then: 'wait' });
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 2, 'claim', 'b'), taken: true, fenced: false, status: status({ b: 'dead' }) }), { type: 'held', holder: 'b', then: 'break-claim' });
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 2, 'claim', 'b'), taken: true, fenced: true, status: status({ b: 'dead' }) }), { type: 'held', holder: 'b', then: 'wait' }, 'a fenced node breaks nothing');
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 2, 'claim', 'x'), taken: true, fenced: false, status: status({ x: 'unknown' }) }), { type: 'held', holder: 'x', then: 'holder-unknown' });
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 3, 'release', 'b'), taken: true, fenced: false, status: status({}) }), { type: 'regain' });
  assert.deepEqual(decideOwnSpool({ me: 'a', record: rec('a', 3, 'release', 'b'), taken: true, fenced: true, status: status({}) }), { type: 'none' });
  assert.equal(mayDeliverOwnSpool({ fenced: false, renewAgeMs: 100, fenceAfterMs: 1500, taken: false }), true);
  assert.equal(mayDeliverOwnSpool({ fenced: true, renewAgeMs: 100, fenceAfterMs: 1500, taken: false }), false, 'fenced');
  assert.equal(mayDeliverOwnSpool({ fenced: false, renewAgeMs: 1500, fenceAfterMs: 1500, taken: false }), false, 'a renewal overdue counts at once');
  assert.equal(mayDeliverOwnSpool({ fenced: false, renewAgeMs: 100, fenceAfterMs: 1500, taken: true }), false, 'held by another node');
  assert.equal(announcedState({ fenced: false, nodeState: 'draining', taken: true }), 'returning');
  assert.equal(announcedState({ fenced: true, nodeState: 'ready', taken: false }), 'fenced');
});

/** The fake replica's folder of an origin's retired spool identity (nothing is made there: the fake io starts no process). */
const retiredFolder = (origin: string, spoolId: string) => path.join(os.tmpdir(), 'tandem-fake-copies', origin, spoolId);

/** A cluster of fake I/O: one shared "storage" (slots, claims) for the managers built on it. */
function fakeWorld() {
  let now = 1000;
  const slots = new Map<string, string>();
  const claims = new Map<string, ClaimRecord[]>();
  const timers: Array<{ every: number; next: number; fn: () => void; live: boolean }> = [];
  const started: string[] = [];
  const stopped: string[] = [];
  const current = (spool: string): ClaimRecord => {
    const list = claims.get(spool) ?? [];
    const valid = [...list].reverse().find((r) => !r.at.startsWith('forged'));
    const top = list.length ? list[list.length - 1] : undefined;
    const base = valid ?? rec(spool, 0, 'release', spool);
    return top && top !== valid && top.epoch > base.epoch ? { ...base, unverifiedAbove: top.epoch } : base;
  };
  const write = (r: ClaimRecord, over = false): ClaimRecord | undefined => {
    const c = current(r.spool);
    const top = over ? Math.max(c.epoch, c.unverifiedAbove ?? 0) : c.epoch;
    if (top !== r.epoch - 1) return undefined;
    if (!over && c.unverifiedAbove === r.epoch) throw new Error('contested');
    claims.set(r.spool, [...(claims.get(r.spool) ?? []), r]);
    return r;
  };
  const handlers = new Map<string, ClusterIoHandlers>();
  const io = (me: string) => (boot: number, h: ClusterIoHandlers): ClusterIo => {
    handlers.set(me, h);
    let counter = 0;
    return {
      disk: {
        async prepare() {},
        async renew(state: AnnouncedState) { slots.set(me, JSON.stringify({ node: me, boot, counter: ++counter, state })); },
        async read(node: string) {
          const raw = slots.get(node);
          if (raw === undefined) return {};
          if (raw.startsWith('garbage')) return { raw };
          return { beat: JSON.parse(raw) as DiskBeat, raw };
        },
        async slots() { return [...slots.keys()]; },
        slotPath: (node: string) => `/fake/${node}`,
        rejected: 0,
      },
      net: { async start() {}, send() {}, close() {}, rejected: { malformed: 0, 'bad-signature': 0, 'unknown-node': 0, replay: 0, stale: 0 } },
      claims: {
        rejected: 0,
        current: async (spool: string) => current(spool),
        claim: async (spool: string, by: string, after: number) => write(rec(spool, after + 1, 'claim', by)),
        release: async (spool: string, by: string, after: number, reason: string) => write(rec(spool, after + 1, 'release', by, { reason })),
        join: async (cur: ClaimRecord, by: string) => write(rec(cur.spool, Math.max(cur.epoch, cur.unverifiedAbove ?? 0) + 1, 'release', by), true),
      } as unknown as ClusterIo['claims'],
      openedWithAccepted: () => 0,
      launchSecondary(spool, epoch): SecondaryHandle {
        return { spool, epoch, ready: true, startedAt: now, counts: {}, async start() { started.push(`${me}:${spool}@${epoch}`); }, async stop() { stopped.push(`${me}:${spool}@${epoch}`); } };
      },
      launchRetiredSecondary(origin, dir): SecondaryHandle {
        return { spool: origin, epoch: 0, ready: true, startedAt: now, counts: {}, async start() { started.push(`${me}:${dir}`); }, async stop() { stopped.push(`${me}:${dir}`); } };
      },
      mono: () => now,
      wall: () => now,
      every(ms, fn) {
        const t = { every: ms, next: now + ms, fn, live: true };
        timers.push(t);
        return { cancel: () => { t.live = false; } };
      },
      sleep: async (ms) => { now += ms; },
    };
  };
  const hooks = (state: () => AnnouncedState = () => 'ready') => ({
    state, queueDepth: () => 0, loseOwnSpool() {}, async regainOwnSpool() {}, deliveriesResumed() {},
    async ownLock() { return { held: true }; }, async retakeOwnSpool() {},
  });
  const tracking = { record() {} } as unknown as TrackingLog;
  const config = (me: string) => configSchema.parse({
    node: { id: me },
    cluster: { secret: 'fake-world-cluster-secret-0123', nodes: [{ id: 'a', heartbeat: '127.0.0.1:1', partner: 'b' }, { id: 'b', heartbeat: '127.0.0.1:2', partner: 'a' }] },
  });
  const make = (me: string) => new ClusterManager(config(me), hooks(), pino({ level: 'silent' }), tracking, io(me));
  /**
   * Replicated storage (network heartbeats only), optionally with a witness and a replica (its
   * store's retired spool identities with copies: `retired`, by origin); `events` records the
   * node hooks called.
   */
  const makeReplicated = (me: string, opts: { witness?: ClusterWitness; events?: string[]; retired?: Map<string, string[]> } = {}) => {
    const cfg = configSchema.parse({
      node: { id: me },
      cluster: {
        secret: 'fake-world-cluster-secret-0123', storage: 'replicated',
        replication: { tls: { ca: '/fake/ca.pem', cert: '/fake/{node}.pem', key: '/fake/{node}.key' } },
        nodes: [{ id: 'a', heartbeat: '127.0.0.1:1', replication: '127.0.0.1:3', partner: 'b' }, { id: 'b', heartbeat: '127.0.0.1:2', replication: '127.0.0.1:4', partner: 'a' }],
      },
    });
    const events = opts.events ?? [];
    const h = { ...hooks(), loseOwnSpool: () => void events.push('lose'), regainOwnSpool: async () => void events.push('regain') };
    const base = io(me);
    const withWitness = (boot: number, handlers: ClusterIoHandlers): ClusterIo => ({ ...base(boot, handlers), ...(opts.witness ? { witness: async () => opts.witness! } : {}) });
    const retired = opts.retired;
    const replica = retired && {
      store: { retiredWithCopies: async (origin: string) => retired.get(origin) ?? [], folder: retiredFolder },
      holding: async () => ({}),
      status: () => ({}),
    } as unknown as ClusterReplica;
    return new ClusterManager(cfg, h, pino({ level: 'silent' }), tracking, withWitness, replica);
  };
  /** Advance the fake clock by `ms` in heartbeat-sized steps, running the timers and letting each pass finish. */
  async function advance(ms: number, managers: ClusterManager[]) {
    const end = now + ms;
    while (now < end) {
      now = Math.min(end, Math.min(...timers.filter((t) => t.live).map((t) => t.next)));
      for (const t of timers) if (t.live && t.next <= now) { t.next += t.every; t.fn(); }
      for (const m of managers) await m.settle();
    }
  }
  return { make, makeReplicated, advance, wall: () => now, slots, claims, started, stopped, rec, handlers, forge: (r: ClaimRecord) => claims.set(r.spool, [...(claims.get(r.spool) ?? []), { ...r, at: 'forged' }]) };
}

test('shell with fake I/O: a dead peer\'s spool is claimed and a secondary started after dead_after; handed back when it returns', async () => {
  const w = fakeWorld();
  const a = w.make('a');
  await a.start();
  // b beats for a while (its slot changes), then dies (no more changes)
  const beatB = (n: number) => w.slots.set('b', JSON.stringify({ node: 'b', boot: 7, counter: n, state: 'ready' }));
  for (let i = 1; i <= 8; i++) { beatB(i); await w.advance(250, [a]); }
  assert.equal(a.status().peers[0].status.type, 'suspect', 'no network heartbeat in this fake: the disk alone keeps b from being dead');
  await w.advance(2000, [a]);
  assert.deepEqual(w.started, [], 'not dead before dead_after (2.5 s) of disk silence');
  await w.advance(1000, [a]);
  assert.deepEqual(w.started, ['a:b@1'], 'claimed at epoch 1 and a secondary started');
  assert.equal(a.status().claims.find((c) => c.spool === 'b')?.deliverer, 'a');
  // b comes back: both heartbeats move, it says "returning" (its spool is held)
  for (let i = 1; i <= 8; i++) {
    w.slots.set('b', JSON.stringify({ node: 'b', boot: 8, counter: i, state: 'returning' }));
    w.handlers.get('a')!.onHeartbeat({ node: 'b', boot: 8, seq: i, sent: 0, state: 'returning', queue: 0, claims: [] });
    await w.advance(250, [a]);
  }
  assert.deepEqual(w.stopped, ['a:b@1'], 'the secondary was stopped (its deliveries in flight recorded)');
  const released = a.status().claims.find((c) => c.spool === 'b')!;
  assert.deepEqual([released.kind, released.epoch, released.deliverer], ['release', 2, 'b'], 'handed back at the next epoch');
  await a.stop();
});

test('shell with fake I/O: a peer whose slot changes but does not verify is never taken over, and the fault is reported', async () => {
  const w = fakeWorld();
  const a = w.make('a');
  await a.start();
  for (let i = 1; i <= 80; i++) { w.slots.set('b', `garbage signed with another secret ${i}`); await w.advance(250, [a]); }
  await w.advance(20_000, [a]); // and then silent for long
  assert.deepEqual(w.started, [], 'never taken over');
  assert.equal(a.status().peers[0].status.type, 'unauthenticated');
  assert.ok(a.status().faults.some((f) => f.kind === 'secret-mismatch' && f.subject === 'b'));
  await a.stop();
});

test('shell with fake I/O: a claim record we cannot verify above the one in force blocks the takeover of a dead peer', async () => {
  const w = fakeWorld();
  const a = w.make('a');
  await a.start();
  w.forge(w.rec('b', 1, 'claim', 'mallory'));
  for (let i = 1; i <= 4; i++) { w.slots.set('b', JSON.stringify({ node: 'b', boot: 7, counter: i, state: 'ready' })); await w.advance(250, [a]); }
  await w.advance(5000, [a]);
  assert.equal(a.status().peers[0].status.type, 'dead');
  assert.deepEqual(w.started, [], 'no takeover over a contested claim');
  assert.ok(a.status().faults.some((f) => f.kind === 'contested-claim' && f.subject === 'b'));
  await a.stop();
});

/** A witness whose answers the test sets. */
function fakeWitness() {
  const held = new Map<string, number>();
  const w = {
    answer: { type: 'owner-alive' } as AcquireResult,
    lease: true,
    lockOnUs: undefined as { holder: string; epoch: number } | undefined,
    released: [] as string[],
    async start() {},
    async stop() {},
    async acquire(spool: string) {
      if (w.answer.type === 'acquired') held.set(spool, w.answer.epoch);
      return w.answer;
    },
    async release(spool: string, epoch: number) { w.released.push(`${spool}@${epoch}`); held.delete(spool); return true; },
    async holder() { return w.lockOnUs; },
    leaseHeld: () => w.lease,
    heldSpools: () => held,
    view: () => ({ state: 'ok', lease: w.lease ? 'held' : 'uncertain', held: Object.fromEntries(held) }),
  };
  return w satisfies ClusterWitness;
}

const netBeat = (w: ReturnType<typeof fakeWorld>, to: string, from: string, seq: number, claims: Array<{ spool: string; epoch: number }> = [], state: AnnouncedState = 'ready') =>
  w.handlers.get(to)!.onHeartbeat({ node: from, boot: 9, seq, sent: 0, state, queue: 0, claims });

test('replicated storage with fake I/O: network silence alone makes the partner dead and its copies taken over; its return hands them back', async () => {
  const w = fakeWorld();
  const a = w.makeReplicated('a');
  const starting = a.start();
  for (let i = 1; i <= 4; i++) { netBeat(w, 'a', 'b', i); await w.advance(250, [a]); }
  await starting;
  await w.advance(2000, [a]);
  assert.deepEqual(w.started, [], 'no disk heartbeat to wait for, but not dead before dead_after of network silence');
  await w.advance(1000, [a]);
  assert.deepEqual(w.started, ['a:b@1'], 'b\'s copies claimed (on a\'s own disk) and a secondary started');
  for (let i = 10; i <= 14; i++) { netBeat(w, 'a', 'b', i, [], 'returning'); await w.advance(250, [a]); }
  assert.deepEqual(w.stopped, ['a:b@1'], 'handed back when b is back');
  await a.stop();
});

test('replicated storage with fake I/O: our own queue is held while a live peer announces it delivers our copies, and taken back (regain) when it stops', async () => {
  const w = fakeWorld();
  const events: string[] = [];
  const a = w.makeReplicated('a', { events });
  const starting = a.start();
  netBeat(w, 'a', 'b', 1, [{ spool: 'a', epoch: 3 }]);
  assert.deepEqual(await starting, { ownSpoolClaimedBy: 'b' }, 'at start, b\'s heartbeat says its secondary delivers our copies');
  assert.equal(a.mayDeliverOwnSpool(), false);
  for (let i = 2; i <= 5; i++) { netBeat(w, 'a', 'b', i, [{ spool: 'a', epoch: 3 }]); await w.advance(250, [a]); }
  assert.equal(a.announced(), 'returning');
  const held = a.status().claims.find((c) => c.spool === 'a');
  assert.equal(held?.by, 'b');
  assert.ok(Date.parse(held.at) <= w.wall(), `the record's time comes from the io's wall clock (the fake one: ${held.at})`);
  for (let i = 6; i <= 9; i++) { netBeat(w, 'a', 'b', i, []); await w.advance(250, [a]); }
  assert.deepEqual(events, ['regain'], 'b handed back: we reconcile and deliver (regainOwnSpool)');
  assert.equal(a.mayDeliverOwnSpool(), true);
  await a.stop();
});

test('replicated storage with a fake witness: no takeover while the witness says the peer is alive; on its yes, takeover; a lease in doubt stops the secondary', async () => {
  const w = fakeWorld();
  const witness = fakeWitness();
  const a = w.makeReplicated('a', { witness });
  const starting = a.start();
  for (let i = 1; i <= 4; i++) { netBeat(w, 'a', 'b', i); await w.advance(250, [a]); }
  await starting;
  await w.advance(5000, [a]);
  assert.equal(a.status().peers[0].status.type, 'dead', 'the heartbeats say dead (a network cut looks the same)');
  assert.deepEqual(w.started, [], 'no takeover: b\'s lease is alive at the witness');
  witness.answer = { type: 'acquired', epoch: 4711 };
  await w.advance(500, [a]);
  assert.deepEqual(w.started, ['a:b@1'], 'the witness said yes');
  assert.deepEqual(a.status().witness?.held, { b: 4711 });
  witness.lease = false;
  await w.advance(500, [a]);
  assert.deepEqual(w.stopped, ['a:b@1'], 'our lease in doubt: the secondary stops at once');
  assert.deepEqual(witness.released, ['b@4711'], 'and the witness lock is given up');
  await a.stop();
});

test('replicated storage with fake I/O: the copies of a retired spool identity get one secondary per folder, through the io, stopped once the folder is no longer wanted', async () => {
  const w = fakeWorld();
  // b came back with a new disk: a still keeps copies of two of b's old spool identities
  const retired = new Map([['b', ['old1', 'old2']]]);
  const a = w.makeReplicated('a', { retired });
  const starting = a.start();
  for (let i = 1; i <= 4; i++) { netBeat(w, 'a', 'b', i); await w.advance(250, [a]); }
  await starting;
  for (let i = 5; i <= 16; i++) { netBeat(w, 'a', 'b', i); await w.advance(250, [a]); }
  const [old1, old2] = [`a:${retiredFolder('b', 'old1')}`, `a:${retiredFolder('b', 'old2')}`];
  assert.deepEqual([...w.started].sort(), [old1, old2], 'one secondary per retired folder, not one per pass');
  assert.deepEqual(w.stopped, []);
  retired.set('b', ['old2']); // old1's copies all delivered: no longer listed
  for (let i = 17; i <= 24; i++) { netBeat(w, 'a', 'b', i); await w.advance(250, [a]); }
  assert.deepEqual(w.stopped, [old1], 'the secondary of the folder no longer wanted is stopped');
  assert.equal(w.started.length, 2, 'and the other one is not started again');
  await a.stop();
  assert.deepEqual(w.stopped, [old1, old2], 'a node stop stops it too');
});
