/**
 * The etcd witness (src/cluster/witness/etcd-witness.ts) against a real 3-member etcd on
 * loopback: exclusive takeover locks with the revision as epoch, a dead node's lease expiring
 * (its process killed -9) and its spool then taken, one member lost (the witness goes on), the
 * quorum lost (every call fails fast with WITNESS_NO_QUORUM, nothing taken, nobody's lease
 * expires) and back, every member gone (WITNESS_UNREACHABLE), two members out of a client's reach
 * while the quorum holds (a cut between sites: leases renewed through the third).
 * Each test starts its own etcd cluster and stops every process and witness it started, even
 * when it fails.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { EtcdWitness, WitnessError, type EtcdWitnessOptions, type WitnessEvent } from '../src/cluster/index.ts';
import { ETCD_AVAILABLE, startEtcdCluster, type EtcdCluster } from './harness/etcd.ts';
import { spawnProcess, trackProcesses } from './harness/procs.ts';
import { eventually } from './harness/wait.ts';
import { FIREWALL_MISSING, cutPorts } from './harness/firewall.ts';

const skip = ETCD_AVAILABLE ? false : 'etcd is not installed (Debian etcd-server; .ci/run installs it)';
const WITNESS_MAIN = fileURLToPath(new URL('./harness/witness-main.ts', import.meta.url));

/** A cluster for this test, killed when the test ends (whatever the outcome). */
async function etcdFor(t: TestContext): Promise<EtcdCluster> {
  const cluster = await startEtcdCluster();
  t.after(() => cluster.stopAll());
  return cluster;
}

interface TestWitness {
  witness: EtcdWitness;
  events: WitnessEvent[];
}

/** A started witness that records its events and is stopped when the test ends. */
async function witnessFor(t: TestContext, cluster: EtcdCluster, nodeId: string, extra: Partial<EtcdWitnessOptions> = {}): Promise<TestWitness> {
  const events: WitnessEvent[] = [];
  const witness = new EtcdWitness({ endpoints: cluster.endpoints, nodeId, leaseTtlMs: 3000, operationTimeoutMs: 500, prefix: `/t-${process.pid}`, onEvent: (e) => events.push(e), ...extra });
  t.after(() => witness.stop());
  const state = await witness.start();
  assert.equal(state.type, 'ok', `witness ${nodeId} started`);
  return { witness, events };
}

/** Runs fn, which must reject with a WitnessError; returns it and how long the rejection took. */
async function failure(fn: () => Promise<unknown>): Promise<{ err: WitnessError; ms: number }> {
  const t0 = Date.now();
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof WitnessError, `a WitnessError, not ${String(err)}`);
    return { err, ms: Date.now() - t0 };
  }
  assert.fail('the call succeeded');
}

/** The index of the member that is the raft leader now (asked of every running member). */
async function leaderIndex(cluster: EtcdCluster): Promise<number> {
  const found = await eventually('a leader', async () => {
    for (const [index, m] of cluster.members.entries()) {
      if (!m.running) continue;
      const c = new Etcd3({ hosts: m.clientUrl });
      try {
        const s = await c.maintenance.status();
        if (s.leader !== '0' && s.leader === s.header.member_id) return { index };
      } catch {
        // not answering: ask the next
      } finally {
        c.close();
      }
    }
    return undefined;
  }, 10_000);
  return found.index;
}

test('two witnesses race for one dead node\'s spool: exactly one wins, the epoch is the etcd revision and grows', { skip, timeout: 120_000 }, async (t) => {
  const cluster = await etcdFor(t);
  const a = (await witnessFor(t, cluster, 'a')).witness;
  const b = (await witnessFor(t, cluster, 'b')).witness;
  assert.deepEqual(await a.liveNodes(), ['a', 'b']);

  let lastEpoch = 0;
  for (const spool of ['c', 'd', 'e', 'f', 'g']) {
    const [ra, rb] = await Promise.all([a.acquire(spool), b.acquire(spool)]);
    const won = [ra, rb].filter((r) => r.type === 'acquired');
    assert.equal(won.length, 1, `exactly one of a and b wins spool ${spool}: ${JSON.stringify([ra, rb])}`);
    const winner = ra.type === 'acquired' ? 'a' : 'b';
    const [w, lost] = winner === 'a' ? [ra, rb] : [rb, ra];
    assert.ok(w.type === 'acquired');
    assert.deepEqual(lost, { type: 'held', holder: winner, epoch: w.epoch }, 'the loser is told who holds it, at which epoch');
    assert.ok(w.epoch > lastEpoch, `epochs grow (${w.epoch} after ${lastEpoch})`);
    lastEpoch = w.epoch;
    assert.deepEqual(await a.holder(spool), { holder: winner, epoch: w.epoch });
  }

  // The winner's retry (its answer lost) is the same lock; the loser still cannot have it.
  const holderOfC = (await a.holder('c'))!;
  const winnerOfC = holderOfC.holder === 'a' ? a : b;
  const loserOfC = holderOfC.holder === 'a' ? b : a;
  assert.deepEqual(await winnerOfC.acquire('c'), { type: 'acquired', epoch: holderOfC.epoch });
  assert.equal(await loserOfC.release('c', holderOfC.epoch + 1), false, 'a release at another epoch deletes nothing');
  assert.equal(await winnerOfC.release('c', holderOfC.epoch), true);
  assert.equal(await a.holder('c'), undefined);
  assert.equal(await winnerOfC.release('c', holderOfC.epoch), false, 'a second release finds nothing');
  const again = await loserOfC.acquire('c');
  assert.equal(again.type, 'acquired', 'released: the other node can take it');
  assert.ok(again.type === 'acquired' && again.epoch > lastEpoch, 'with a higher epoch than any before');

  // A live node's spool cannot be taken: its lease key is there.
  assert.deepEqual(await a.acquire('b'), { type: 'owner-alive' });
  assert.equal(await a.holder('b'), undefined);
});

test('a node killed -9: its lease expires after its keepalives stop, its locks go with it, then its spool can be taken', { skip, timeout: 120_000 }, async (t) => {
  const cluster = await etcdFor(t);
  const procs = trackProcesses();
  t.after(() => procs.stopAll());
  const ttlMs = 2000;
  const prefix = `/t-${process.pid}`;
  const x = await spawnProcess('node', ['--import', 'tsx', WITNESS_MAIN, '--endpoints', cluster.endpoints.join(','), '--node', 'x', '--ttl-ms', String(ttlMs), '--prefix', prefix, '--acquire', 'z'], {
    name: 'witness-x', readyMatch: (j) => j.msg === 'witness ready',
  });
  const xEpoch = (x.readyLine?.json?.acquired as Record<string, number>).z;
  const b = (await witnessFor(t, cluster, 'b', { leaseTtlMs: ttlMs, prefix })).witness;

  // Alive for several TTLs: its keepalives hold the lease.
  const aliveUntil = Date.now() + 3 * ttlMs;
  while (Date.now() < aliveUntil) {
    assert.equal(await b.isAlive('x'), true, 'x is alive while its process runs');
    assert.deepEqual(await b.acquire('x'), { type: 'owner-alive' });
    assert.deepEqual(await b.acquire('z'), { type: 'held', holder: 'x', epoch: xEpoch });
    await new Promise((r) => setTimeout(r, 200));
  }

  const killedAt = Date.now();
  await x.killHard();
  await eventually('x to be dead to the witness', async () => !(await b.isAlive('x')), 10_000, 20);
  const goneMs = Date.now() - killedAt;
  t.diagnostic(`x's lease (TTL ${ttlMs} ms) gone ${goneMs} ms after kill -9`);
  assert.ok(goneMs >= ttlMs / 3, `not before its last renewal's TTL could have run out (${goneMs} ms)`);
  assert.equal(await b.holder('z'), undefined, 'the lock x held went with its lease');
  const tookX = await b.acquire('x');
  assert.equal(tookX.type, 'acquired', 'x\'s spool can be taken now');
  const tookZ = await b.acquire('z');
  assert.ok(tookZ.type === 'acquired' && tookZ.epoch > xEpoch, 'and z, at a higher epoch than x\'s');
  assert.deepEqual(await b.liveNodes(), ['b']);
});

test('one etcd member killed (the leader): leases are renewed and locks taken as before', { skip, timeout: 120_000 }, async (t) => {
  const cluster = await etcdFor(t);
  // A TTL with room for one election (500 ms here) between renewals.
  const a = await witnessFor(t, cluster, 'a', { leaseTtlMs: 3000 });
  const b = (await witnessFor(t, cluster, 'b', { leaseTtlMs: 3000 })).witness;
  const leaseBefore = a.witness.leaseStatus();
  assert.equal(leaseBefore.type, 'held');

  const leader = await leaderIndex(cluster);
  await cluster.members[leader].kill();
  const killedAt = performance.now();
  // Raft needs an election (~0.5 s here) before it serves again; then everything works as before.
  const newLeader = await leaderIndex(cluster);
  assert.notEqual(newLeader, leader);
  t.diagnostic(`new leader after ${Math.round(performance.now() - killedAt)} ms`);

  const r = await b.acquire('dead');
  assert.equal(r.type, 'acquired', 'a lock is taken with two members of three');
  assert.deepEqual(await a.witness.acquire('dead'), { type: 'held', holder: 'b', epoch: r.type === 'acquired' ? r.epoch : -1 });
  await eventually('a renewal of a\'s lease after the kill', () => {
    const l = a.witness.leaseStatus();
    return l.type === 'held' && l.validUntil > killedAt + 3000;
  }, 10_000);
  assert.equal((a.witness.leaseStatus() as { id: string }).id, (leaseBefore as { id: string }).id, 'the same lease');
  assert.equal(await b.isAlive('a'), true);
  assert.equal(a.witness.state().type, 'ok');
  // a renewal late by load on a shared machine may make it uncertain for a moment; lost it must never be
  assert.deepEqual(a.events.filter((e) => e.type === 'lease-lost'), [], 'a never lost its lease');
  t.diagnostic(`lease renewals found late meanwhile: ${a.events.filter((e) => e.type === 'lease-uncertain').length}`);
});

test('two members out of the client\'s reach (their client ports drop packets) while the quorum holds: leases are renewed through the third, never uncertain', { skip: skip || FIREWALL_MISSING, timeout: 120_000 }, async (t) => {
  const cluster = await etcdFor(t);
  // production timings: a 3 s lease, a 1 s deadline per member
  const a = await witnessFor(t, cluster, 'a', { leaseTtlMs: 3000, operationTimeoutMs: 1000 });
  // as a node of one site sees the members during a cut between the sites: the other site's
  // member hangs, its own may have no leader; here two members hang for clients, raft is untouched
  const heal = cutPorts(cluster.members.slice(0, 2).map((m) => ({ proto: 'tcp' as const, port: Number(new URL(m.clientUrl).port) })));
  t.after(heal);
  const cutAt = performance.now();
  await eventually('12 s of the cut (four lease lifetimes)', () => performance.now() - cutAt > 12_000, 20_000);
  heal();
  const late = a.events.filter((e) => e.type === 'lease-uncertain' || e.type === 'lease-lost');
  assert.deepEqual(late, [], 'a\'s lease stayed held through the cut');
  const l = a.witness.leaseStatus();
  assert.ok(l.type === 'held' && l.validUntil > cutAt + 12_000, `renewed during the cut: ${JSON.stringify(l)}`);
});

test('quorum lost: calls fail fast with WITNESS_NO_QUORUM, no lock is taken, no lease expires; quorum back: all works; every member gone: WITNESS_UNREACHABLE', { skip, timeout: 120_000 }, async (t) => {
  const cluster = await etcdFor(t);
  const a = await witnessFor(t, cluster, 'a', { leaseTtlMs: 2000 });
  // b's lease outlives the test, so its calls reach etcd (a node with an uncertain lease takes
  // nothing and is refused before asking: a's case below).
  const b = await witnessFor(t, cluster, 'b', { leaseTtlMs: 30_000 });
  const leaseA = a.witness.leaseStatus();
  assert.notEqual(leaseA.type, 'none');

  await cluster.members[0].kill();
  await cluster.members[1].kill();
  const bound = (3 + 1) * 500 + 500; // an attempt per member and the probe, each ≤ operationTimeoutMs, plus slack
  // The member left sees its leader gone within an election timeout; until then a call may
  // still reach it and time out. Every call, from the first, fails in bounded time.
  await eventually('WITNESS_NO_QUORUM from acquire', async () => {
    const { err, ms } = await failure(() => b.witness.acquire('a'));
    assert.ok(ms < bound, `acquire failed in ${ms} ms (bound ${bound})`);
    return err.code === 'WITNESS_NO_QUORUM';
  }, 10_000);
  const took: number[] = [];
  for (const call of [() => b.witness.acquire('gone'), () => b.witness.isAlive('a'), () => b.witness.holder('gone'), () => b.witness.release('gone', 1)]) {
    const { err, ms } = await failure(call);
    assert.equal(err.code, 'WITNESS_NO_QUORUM', err.message);
    assert.ok(ms < bound, `failed in ${ms} ms`);
    took.push(ms);
    assert.match(err.message, /no quorum/);
  }
  t.diagnostic(`without quorum, calls failed in ${took.join(', ')} ms`);
  assert.equal(b.witness.state().type, 'no-quorum');
  await eventually('a\'s renewals to see no quorum', () => a.witness.state().type === 'no-quorum', 5_000);
  assert.ok(b.events.some((e) => e.type === 'state' && e.state.type === 'no-quorum'), 'the quorum loss was an event');
  await eventually('a\'s lease to be uncertain (not renewed)', () => a.events.some((e) => e.type === 'lease-uncertain'), 5_000);
  const { err: noLease } = await failure(() => a.witness.acquire('gone'));
  assert.equal(noLease.code, 'WITNESS_NO_LEASE', 'a node whose lease is uncertain takes nothing');

  await cluster.members[0].start();
  await eventually('a\'s lease renewed again', () => a.witness.leaseStatus().type === 'held', 15_000);
  assert.equal((a.witness.leaseStatus() as { id: string }).id, (leaseA as { id: string }).id, 'the same lease: a quorum loss expires nobody');
  assert.ok(a.events.some((e) => e.type === 'lease-confirmed'));
  assert.ok(!a.events.some((e) => e.type === 'lease-lost'));
  assert.equal(await b.witness.isAlive('a'), true);
  assert.deepEqual(await b.witness.acquire('a'), { type: 'owner-alive' }, 'nothing was taken over meanwhile');
  const r = await b.witness.acquire('gone');
  assert.equal(r.type, 'acquired', 'quorum back: locks are taken again');
  assert.equal(b.witness.state().type, 'ok');
  assert.ok(b.events.some((e) => e.type === 'state' && e.state.type === 'ok' && e.previous === 'no-quorum'), 'the regained quorum was an event');

  await cluster.stopAll();
  const { err, ms } = await failure(() => b.witness.holder('gone'));
  t.diagnostic(`every member gone: the call failed in ${ms} ms`);
  assert.equal(err.code, 'WITNESS_UNREACHABLE', err.message);
  assert.ok(ms < bound, `failed in ${ms} ms`);
  assert.equal(b.witness.state().type, 'unreachable');
});
