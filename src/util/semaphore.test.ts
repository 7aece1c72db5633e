/**
 * semaphore.test.ts — the delivery concurrency limit: never exceeded, waiters served in
 * arrival order, and a slot is given back when the work throws.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Semaphore } from './semaphore.ts';

const tick = () => new Promise<void>((r) => setImmediate(r));

test('acquire succeeds at once up to the limit, then waits', async () => {
  const sem = new Semaphore(2);
  await sem.acquire();
  await sem.acquire();
  assert.equal(sem.inUse, 2);
  let third = false;
  const waiting = sem.acquire().then(() => { third = true; });
  await tick();
  assert.equal(third, false, 'a third acquire must wait while two slots are in use');
  assert.equal(sem.waiting, 1);
  sem.release();
  await waiting;
  assert.equal(third, true);
  assert.equal(sem.inUse, 2, 'the slot was handed over, not freed');
  assert.equal(sem.waiting, 0);
  sem.release();
  sem.release();
  assert.equal(sem.inUse, 0);
});

test('waiters get a slot in the order they asked (FIFO)', async () => {
  const sem = new Semaphore(1);
  await sem.acquire();
  const order: number[] = [];
  const all = [1, 2, 3, 4, 5].map((n) => sem.acquire().then(() => { order.push(n); }));
  for (let i = 0; i < 5; i++) {
    sem.release();
    await tick();
  }
  await Promise.all(all);
  assert.deepEqual(order, [1, 2, 3, 4, 5]);
});

test('run() never has more than `limit` tasks in flight and runs them all', async () => {
  const sem = new Semaphore(3);
  let running = 0;
  let peak = 0;
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sem.run(async () => {
    running++;
    peak = Math.max(peak, running);
    await tick();
    await tick();
    running--;
    return i * 2;
  })));
  assert.equal(peak, 3);
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => i * 2));
  assert.equal(sem.inUse, 0);
  assert.equal(sem.waiting, 0);
});

test('run() gives the slot back when the task throws, and passes the error on', async () => {
  const sem = new Semaphore(1);
  await assert.rejects(sem.run(async () => { throw new Error('connection refused'); }), /connection refused/);
  assert.equal(sem.inUse, 0);
  const queued = sem.run(async () => 'next');
  assert.equal(await queued, 'next', 'a later task is not blocked by the failed one');
  assert.equal(sem.inUse, 0);
});
