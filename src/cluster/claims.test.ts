import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { ClaimStore, ClaimContestedError, effectiveOwner } from './claims.ts';
import { Sealer } from './sealed.ts';
import { clusterPaths } from './paths.ts';

const SECRET = 'the-cluster-secret-for-tests';
const sealer = new Sealer(SECRET);

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

test('a claim signed with another secret is never in force, blocks takeovers (contested), and the spool\'s own node moves past it at join', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-'));
  const store = new ClaimStore(root, sealer);
  const dir = clusterPaths(root).claims('a');
  await mkdir(dir, { recursive: true });
  const otherSecret = new Sealer('not-the-cluster-secret-at-all').seal({ spool: 'a', epoch: 1, kind: 'claim', by: 'mallory', at: new Date().toISOString() });
  await writeFile(path.join(dir, '0000000001'), otherSecret);
  await writeFile(path.join(dir, '0000000009'), '{"spool":"a","epoch":9,"kind":"claim","by":"mallory"}');
  const current = await store.current('a');
  assert.equal(effectiveOwner(current), 'a');
  assert.equal(current.epoch, 0);
  assert.equal(current.unverifiedAbove, 1, 'the record signed with another secret is reported above the one in force');
  assert.ok(store.rejected >= 2);
  await assert.rejects(store.claim('a', 'b', 0), (err: any) => err instanceof ClaimContestedError && err.code === 'TANDEM_CLAIM_CONTESTED', 'a takeover claim cannot push it aside');
  assert.ok((await readdir(dir)).includes('0000000001'), 'the contested record is left in place');
  const joined = await store.join(current, 'a');
  assert.equal(joined?.epoch, 2, 'the spool\'s own node moves the epoch past it');
  const after = await store.current('a');
  assert.equal(after.unverifiedAbove, undefined);
  const claimed = await store.claim('a', 'b', after.epoch);
  assert.equal(claimed?.epoch, 3);
  assert.equal((await store.current('a')).by, 'b', 'the unsigned epoch 9 does not outrank the real claim');
});

test('a torn (unsigned) record blocking an epoch is moved aside; a record opened with an accepted old secret is in force', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'claims-'));
  const dir = clusterPaths(root).claims('a');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, '0000000001'), 'torn');
  const store = new ClaimStore(root, sealer);
  assert.equal((await store.claim('a', 'b', 0))?.epoch, 1);
  assert.ok((await readdir(dir)).some((n) => n.startsWith('0000000001.rejected.')));
  const rotated = new ClaimStore(root, new Sealer('the-new-cluster-secret-0123456789', [SECRET]));
  const r = await rotated.current('a');
  assert.equal(r.by, 'b', 'a record sealed with the old secret opens during the rotation window');
  assert.equal(r.unverifiedAbove, undefined);
});
