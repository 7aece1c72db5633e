/**
 * Unit test of the queue list's paging: the first pages picked without a full sort are the
 * pages of the sorted list (newest id first), and so are the later ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newestPage } from './queue-view.ts';

test('newestPage: the same pages as sorting everything, newest first', () => {
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed; };
  const all = Array.from({ length: 20_000 }, (_, i) => ({ queueId: `0MX${rnd().toString(36).toUpperCase()}.${i}.c` }));
  all.push({ queueId: all[5].queueId }); // a duplicate id does not upset it
  const sorted = [...all].sort((a, b) => (a.queueId < b.queueId ? 1 : a.queueId > b.queueId ? -1 : 0)).map((m) => m.queueId);
  for (const page of [1, 2, 37, 100, 101, 300, 401]) {
    assert.deepEqual(newestPage([...all], page, 50).map((m) => m.queueId), sorted.slice((page - 1) * 50, page * 50), `page ${page}`);
  }
  assert.deepEqual(newestPage([{ queueId: 'b' }, { queueId: 'a' }, { queueId: 'c' }], 1, 50).map((m) => m.queueId), ['c', 'b', 'a'], 'fewer than a page');
});
