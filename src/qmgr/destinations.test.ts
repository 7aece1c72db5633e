/**
 * Unit tests of the per-next-hop state (destinations.ts), with an injected clock: the backlog
 * gives back one message per delivery that ends and all of them once the next hop is idle, a
 * message that left meanwhile is skipped, and the dead-destination memory lasts
 * min(queue.min_backoff, 60 s) and ends on any answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Destinations } from './destinations.ts';

test('a next hop\'s backlog goes back one message per delivery that ends, all of it once nothing is under way', async () => {
  const d = new Destinations({ destination_concurrency: 1, min_backoff: 300_000 }, () => 0);
  const sem = d.semaphore('smtp:r.test');
  assert.equal(d.saturated(sem), false);
  await sem.acquire();
  const waiter = sem.acquire(); // one attempt waits for the slot
  assert.equal(d.saturated(sem), true, 'as many waiting as it delivers at once: the next message goes to the backlog');
  for (const id of ['m1', 'm2', 'm3', 'm4']) d.enterBacklog('smtp:r.test', id);
  d.leaveBacklog('smtp:r.test', 'm4'); // held by the operator
  assert.equal(d.backlogged, 3);
  const gone = new Set(['m2']); // deleted meanwhile: release() is told it no longer waits there
  const waits = (id: string) => !gone.has(id);

  assert.deepEqual(d.release('smtp:r.test', sem, waits), ['m1'], 'the slot went to the waiter: one message back');
  await waiter;
  assert.equal(d.backlogged, 2);
  assert.deepEqual(d.release('smtp:r.test', sem, waits), ['m3'], 'idle: all that still wait go back, m2 skipped');
  const next = d.semaphore('smtp:r.test');
  assert.notEqual(next, sem, 'an idle next hop\'s semaphore was dropped');
  await next.acquire();
  assert.equal(d.release('smtp:r.test', next, waits), undefined, 'its backlog is gone too');
});

test('a next hop no server answered is dead for min(queue.min_backoff, 60 s); any answer, or a flush, ends it', () => {
  let now = 1_000_000;
  const d = new Destinations({ destination_concurrency: 20, min_backoff: 30_000 }, () => now);
  const refused = { index: 0, outcome: 'deferred' as const, reply: 'connect ECONNREFUSED 127.0.0.1:25', via: 'next' };
  d.noteResults('smtp:down.test', [refused]);
  assert.deepEqual(d.deadness('smtp:down.test'), { until: now + 30_000, reason: refused.reply });
  d.noteResults('smtp:busy.test', [{ ...refused, reply: '451 4.3.0 try later' }]);
  assert.equal(d.deadness('smtp:busy.test'), undefined, 'a 4xx is an answer: the next hop is alive');
  now += 30_000;
  assert.equal(d.deadness('smtp:down.test'), undefined, 'tried again once the dead time is over');

  const long = new Destinations({ destination_concurrency: 20, min_backoff: 600_000 }, () => now);
  long.noteResults('smtp:down.test', [refused]);
  assert.equal(long.deadness('smtp:down.test')?.until, now + 60_000, 'at most 60 s');
  long.noteResults('smtp:down.test', [{ ...refused, outcome: 'delivered', reply: '250 2.0.0 ok' }]);
  assert.equal(long.deadness('smtp:down.test'), undefined);
  long.noteResults('smtp:down.test', [refused]);
  long.forgetDead();
  assert.equal(long.deadness('smtp:down.test'), undefined);
});
