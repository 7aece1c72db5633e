import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { ClaimStore, effectiveOwner } from './claims.ts';
import { Sealer } from './sealed.ts';
import { clusterPaths } from './paths.ts';

const sealer = new Sealer('the-cluster-secret-for-tests');

test('a spool never claimed belongs to its own node at epoch 0; claim and release move the epoch on', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-'));
  const store = new ClaimStore(root, sealer);
  const first = await store.current('a');
  assert.equal(first.epoch, 0);
  assert.equal(effectiveOwner(first), 'a');
  const claimed = await store.claim('a', 'b', 0);
  assert.equal(claimed?.epoch, 1);
  assert.equal(effectiveOwner(await store.current('a')), 'b');
  assert.equal(await store.release('a', 'b', 0, 'stale'), undefined, 'a release against an old epoch is refused');
  const released = await store.release('a', 'b', 1, 'handback');
  assert.equal(released?.epoch, 2);
  assert.equal(effectiveOwner(await store.current('a')), 'a');
});

test('of many nodes claiming one spool at once, exactly one wins', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-'));
  const stores = ['b', 'c', 'd', 'e', 'f'].map(() => new ClaimStore(root, sealer));
  const results = await Promise.all(stores.map((s, i) => s.claim('a', `n${i}`, 0)));
  assert.equal(results.filter(Boolean).length, 1);
  const winner = results.find(Boolean)!;
  assert.equal((await stores[0].current('a')).by, winner.by);
});

test('a claim file written without the secret is ignored and cannot block the next epoch', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-'));
  const store = new ClaimStore(root, sealer);
  const dir = clusterPaths(root).claims('a');
  await mkdir(dir, { recursive: true });
  const forged = new Sealer('not-the-cluster-secret-at-all').seal({ spool: 'a', epoch: 1, kind: 'claim', by: 'mallory', at: new Date().toISOString() });
  await writeFile(path.join(dir, '0000000001'), forged);
  await writeFile(path.join(dir, '0000000009'), '{"spool":"a","epoch":9,"kind":"claim","by":"mallory"}');
  const current = await store.current('a');
  assert.equal(effectiveOwner(current), 'a');
  assert.equal(current.epoch, 0);
  assert.ok(store.rejected >= 2);
  const claimed = await store.claim('a', 'b', 0);
  assert.equal(claimed?.epoch, 1);
  assert.equal((await store.current('a')).by, 'b', 'the forged epoch 9 does not outrank the real claim');
});
