import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Fifo } from './fifo.ts';

test('fifo keeps order across compaction, unshift and remove', () => {
  const q = new Fifo<number>();
  for (let i = 0; i < 5000; i++) q.push(i);
  for (let i = 0; i < 3000; i++) assert.equal(q.shift(), i);
  assert.equal(q.length, 2000);
  q.unshift(2999);
  assert.equal(q.shift(), 2999);
  q.remove((n) => n % 2 === 1);
  assert.equal(q.length, 1000);
  assert.equal(q.shift(), 3000);
  assert.equal(q.shift(), 3002);
  while (q.length) q.shift();
  assert.equal(q.shift(), undefined);
});

test('fifo unshiftAll puts a block back at the front in its order, into the consumed part or ahead of it', () => {
  const q = new Fifo<number>();
  for (let i = 0; i < 10; i++) q.push(i);
  for (let i = 0; i < 5; i++) q.shift();
  q.unshiftAll([1, 2, 3]); // fits where 0..4 were
  q.unshiftAll([-3, -2, -1, 0]); // does not: the array is rebuilt
  q.unshiftAll([]);
  const out: number[] = [];
  while (q.length) out.push(q.shift()!);
  assert.deepEqual(out, [-3, -2, -1, 0, 1, 2, 3, 5, 6, 7, 8, 9]);
});
