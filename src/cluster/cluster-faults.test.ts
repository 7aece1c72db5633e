/**
 * Unit tests of the configuration-fault report (cluster-faults.ts) with a fake clock, disk and
 * network counters:
 *   - a fault is logged once when it appears, shown while the evidence keeps coming, and
 *     cleared (and logged so) 10 s after it was last seen;
 *   - dropped heartbeats say what is wrong (secret, clock, node lists), and each reason is
 *     logged at most every 10 s with the total so far;
 *   - a node not in cluster.nodes whose disk slot keeps changing is reported; a leftover slot
 *     that does not change is not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ClusterFaults } from './cluster-faults.ts';
import type { HeartbeatRejectReason } from './net-heartbeat.ts';
import { configSchema } from '../config/schema.ts';

function setup() {
  const clock = { now: 50_000 };
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const slots = new Map<string, string>([['a', 'a1'], ['b', 'b1']]);
  const rejected: Record<HeartbeatRejectReason, number> = { malformed: 0, 'bad-signature': 0, 'unknown-node': 0, replay: 0, stale: 0 };
  const c = configSchema.parse({
    node: { id: 'a' },
    cluster: { secret: 'fault-report-cluster-secret-0123', dead_after: '2500ms', nodes: [{ id: 'a', heartbeat: '127.0.0.1:1' }, { id: 'b', heartbeat: '127.0.0.1:2' }] },
  }).cluster!;
  const faults = new ClusterFaults({
    me: 'a',
    nodes: c.nodes,
    deadAfter: c.dead_after,
    mono: () => clock.now,
    wall: () => 1_700_000_000_000 + clock.now,
    logger,
    disk: { slots: async () => [...slots.keys()], read: async (id: string) => ({ raw: slots.get(id) }) },
    net: { rejected },
  });
  return { faults, clock, logs, slots, rejected, events: (name: string) => logs.filter((l) => l.event === name) };
}

test('a fault is logged once when it appears, shown while the evidence keeps coming, and cleared (and logged so) 10 s after it was last seen', () => {
  const t = setup();
  t.faults.note('clock-skew', 'b', 'first words');
  const since = new Date(1_700_000_000_000 + t.clock.now).toISOString();
  t.clock.now += 5000;
  t.faults.note('clock-skew', 'b', 'newer words');
  assert.equal(t.events('cluster-fault').length, 1, 'logged once');
  t.clock.now += 10_000;
  assert.deepEqual(t.faults.current().map((f) => [f.kind, f.subject, f.message, f.since]), [['clock-skew', 'b', 'newer words', since]], 'shown, with the newest evidence, 10 s after it was last seen; since when: the io\'s wall clock');
  assert.equal(t.events('cluster-fault-cleared').length, 0);
  t.clock.now += 1;
  assert.deepEqual(t.faults.current(), [], 'cleared once not seen for longer');
  assert.deepEqual(t.events('cluster-fault-cleared').map((l) => [l.kind, l.subject]), [['clock-skew', 'b']]);
});

test('prune() clears and logs a fault gone quiet without anybody reading the status (the manager calls it every pass)', () => {
  const t = setup();
  t.faults.note('clock-skew', 'b', 'words');
  t.clock.now += 10_001;
  t.faults.prune();
  assert.deepEqual(t.events('cluster-fault-cleared').map((l) => [l.kind, l.subject]), [['clock-skew', 'b']]);
  assert.deepEqual(t.faults.current(), []);
  assert.equal(t.events('cluster-fault-cleared').length, 1, 'logged once');
});

test('dropped heartbeats say what is wrong between the nodes; each reason is logged at most every 10 s with the total so far', () => {
  const t = setup();
  for (let i = 0; i < 3; i++) {
    t.rejected['bad-signature']++;
    t.faults.heartbeatRejected('bad-signature', '127.0.0.1:2', { peer: 'b' });
    t.clock.now += 6000;
  }
  t.rejected.stale++;
  t.faults.heartbeatRejected('stale', '127.0.0.1:2', { peer: 'b', skewMs: 12_300 });
  t.rejected['unknown-node']++;
  t.faults.heartbeatRejected('unknown-node', '127.0.0.1:9', { claimed: 'z' });
  const byKind = Object.fromEntries(t.faults.current().map((f) => [f.kind, f]));
  assert.match(byKind['secret-mismatch'].message, /cluster\.secret most likely differs between b and a/);
  assert.match(byKind['clock-skew'].message, /its clock is 12\.3 s behind ours/);
  assert.equal(byKind['unknown-node'].subject, 'z');
  const lines = t.events('heartbeat-rejected');
  assert.deepEqual(lines.map((l) => [l.reason, l.total]), [['bad-signature', 1], ['bad-signature', 3], ['stale', 1], ['unknown-node', 1]], 'the second bad signature, 6 s after the first, is not logged; the third, 12 s after, is');
});

test('a node not in cluster.nodes whose disk slot keeps changing is reported as unknown-node; a leftover slot that does not change is not', async () => {
  const t = setup();
  t.slots.set('x', 'x1');
  t.slots.set('old', 'left behind');
  await t.faults.observeStrangers();
  assert.deepEqual(t.faults.current(), [], 'one look proves nothing');
  for (let i = 2; i <= 4; i++) {
    t.clock.now += 1000;
    t.slots.set('x', `x${i}`);
    await t.faults.observeStrangers();
  }
  assert.deepEqual(t.faults.current().map((f) => [f.kind, f.subject]), [['unknown-node', 'x']]);
  // x stops: no new evidence after dead_after, and the fault clears 10 s after it was last seen
  for (let i = 0; i < 14; i++) {
    t.clock.now += 1000;
    await t.faults.observeStrangers();
  }
  assert.deepEqual(t.faults.current(), []);
});
