/**
 * router/directory/cache.test.ts — unit tests of LookupCache with a fake clock: TTL, negative
 * TTL, shared loads, stale answers while the directory is down (bounded by max stale), other
 * errors passed through, expireAll, the entry bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LookupCache } from './cache.ts';
import { DirectoryUnavailableError } from './pool.ts';
import { TempLookupError } from '../../util/errors.ts';

function setup(overrides: Partial<{ ttlMs: number; negativeTtlMs: number; maxStaleMs: number; maxEntries: number }> = {}) {
  const clock = { t: 1_000_000 };
  const cache = new LookupCache<string>({ ttlMs: 1000, negativeTtlMs: 200, maxStaleMs: 5000, maxEntries: 100, now: () => clock.t, ...overrides });
  let loads = 0;
  let answer: string | undefined | Error = 'v1';
  const load = async () => {
    loads++;
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { clock, cache, load, loads: () => loads, set: (a: string | undefined | Error) => { answer = a; } };
}

test('fresh answers come from the cache until the TTL passes', async () => {
  const s = setup();
  assert.equal(await s.cache.get('k', s.load), 'v1');
  s.set('v2');
  s.clock.t += 999;
  assert.equal(await s.cache.get('k', s.load), 'v1');
  s.clock.t += 1;
  assert.equal(await s.cache.get('k', s.load), 'v2');
  assert.equal(s.loads(), 2);
  assert.deepEqual(s.cache.stats, { hits: 1, misses: 2, stale: 0, failures: 0 });
});

test('"not found" is cached for the negative TTL only', async () => {
  const s = setup();
  s.set(undefined);
  assert.equal(await s.cache.get('k', s.load), undefined);
  s.set('now-there');
  s.clock.t += 199;
  assert.equal(await s.cache.get('k', s.load), undefined);
  s.clock.t += 1;
  assert.equal(await s.cache.get('k', s.load), 'now-there');
});

test('concurrent gets of one key share one load', async () => {
  const s = setup();
  const results = await Promise.all([1, 2, 3].map(() => s.cache.get('k', s.load)));
  assert.deepEqual(results, ['v1', 'v1', 'v1']);
  assert.equal(s.loads(), 1);
});

test('directory down: a stale answer is used up to TTL + max stale, then TempLookupError', async () => {
  const s = setup();
  await s.cache.get('k', s.load);
  s.set(new DirectoryUnavailableError('all down'));
  s.clock.t += 1000 + 4999;
  assert.equal(await s.cache.get('k', s.load), 'v1');
  assert.equal(s.cache.stats.stale, 1);
  s.clock.t += 1;
  await assert.rejects(s.cache.get('k', s.load), (err: Error) => err instanceof TempLookupError && /no cached answer is recent enough: all down/.test(err.message));
  await assert.rejects(s.cache.get('never-seen', s.load), TempLookupError);
});

test('a stale negative answer is used too; other errors pass through and are not cached', async () => {
  const s = setup();
  s.set(undefined);
  await s.cache.get('k', s.load);
  s.clock.t += 300;
  s.set(new DirectoryUnavailableError('down'));
  assert.equal(await s.cache.get('k', s.load), undefined);
  const bad = new TempLookupError('malformed entry');
  s.set(bad);
  await assert.rejects(s.cache.get('other', s.load), (err) => err === bad);
  s.set('ok');
  assert.equal(await s.cache.get('other', s.load), 'ok');
});

test('expireAll forces a reload but keeps the answer for an outage', async () => {
  const s = setup();
  await s.cache.get('k', s.load);
  s.cache.expireAll();
  s.set(new DirectoryUnavailableError('down'));
  assert.equal(await s.cache.get('k', s.load), 'v1');
  s.set('v2');
  assert.equal(await s.cache.get('k', s.load), 'v2');
});

test('at most maxEntries keys are kept, the oldest stored go first', async () => {
  const s = setup({ maxEntries: 2 });
  for (const k of ['a', 'b', 'c']) await s.cache.get(k, s.load);
  assert.equal(s.cache.size, 2);
  const before = s.loads();
  await s.cache.get('c', s.load);
  await s.cache.get('a', s.load);
  assert.equal(s.loads(), before + 1, 'a was evicted, c was not');
});
