/**
 * claims-prune.test.ts — the fencing epoch still holds after old claim records are pruned: a
 * claim or release written against an epoch that is no longer current is refused, even when
 * the record that superseded it has been removed from the folder (more than KEEP_RECORDS).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { ClaimStore, effectiveOwner, type ClaimRecord } from './claims.ts';
import { Sealer } from './sealed.ts';
import { clusterPaths } from './paths.ts';

const sealer = new Sealer('the-cluster-secret-for-tests');

test('a claim or release against an old epoch is refused after the records above it were pruned', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-prune-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = new ClaimStore(root, sealer);
  // a takeover and a handback, over and over: epochs 1..50
  let epoch = 0;
  for (let round = 0; round < 25; round++) {
    const claimed = await store.claim('a', 'b', epoch);
    assert.equal(claimed?.epoch, epoch + 1);
    const released = await store.release('a', 'b', epoch + 1, 'handback');
    assert.equal(released?.epoch, epoch + 2);
    epoch += 2;
  }
  const kept = (await readdir(clusterPaths(root).claims('a'))).filter((n) => /^\d+$/.test(n)).sort();
  assert.ok(!kept.includes('0000000002'), `epoch 2 should have been pruned; kept ${kept.join(' ')}`);
  assert.ok(kept.length < epoch, 'old records are pruned');

  // a survivor that last looked at epoch 1 (its claim's epoch) wakes up late
  const other = new ClaimStore(root, sealer);
  assert.equal(await other.claim('a', 'c', 1), undefined, 'a stale claim must be refused');
  assert.equal(await other.release('a', 'c', 1, 'stale'), undefined, 'a stale release must be refused');
  const current = await store.current('a');
  assert.equal(current.epoch, epoch);
  assert.equal(effectiveOwner(current), 'a', 'the spool still belongs to its own node');
  assert.ok(!(await readdir(clusterPaths(root).claims('a'))).includes('0000000002'), 'no record was written at the stale epoch');
});

test('a write whose epoch file was free only because the record it raced was pruned meanwhile is taken back and reported as lost', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-prune-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = new ClaimStore(root, sealer);
  let epoch = 0;
  for (let round = 0; round < 25; round++) {
    await store.claim('a', 'b', epoch);
    await store.release('a', 'b', epoch + 1, 'handback');
    epoch += 2;
  }
  // a survivor read the spool at epoch 1 and was stalled until now: its read is that old view
  class Stalled extends ClaimStore {
    stale?: ClaimRecord;
    override async current(spool: string): Promise<ClaimRecord> {
      const view = this.stale;
      this.stale = undefined;
      return view ?? super.current(spool);
    }
  }
  const late = new Stalled(root, sealer);
  late.stale = { spool: 'a', epoch: 1, kind: 'claim', by: 'b', at: new Date().toISOString() };
  assert.equal(await late.claim('a', 'c', 1), undefined, 'the stale claim is reported as lost');
  assert.ok(!(await readdir(clusterPaths(root).claims('a'))).includes('0000000002'), 'and its record is taken back');
  const current = await store.current('a');
  assert.equal(current.epoch, epoch);
  assert.equal(effectiveOwner(current), 'a');
});
