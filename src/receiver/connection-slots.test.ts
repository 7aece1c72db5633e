/**
 * ConnectionSlots alone: slots, the first-come-first-served wait, its bound in time and in
 * number, and release on close whatever state the connection is in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionSlots } from './connection-slots.ts';

function conn(slots: ConnectionSlots, log: string[], name: string): () => void {
  return slots.request(() => log.push(`${name} admitted`), () => log.push(`${name} refused`));
}

test('within max every connection is admitted at once; the next waits and gets the first slot freed', () => {
  const log: string[] = [];
  const slots = new ConnectionSlots({ max: 2, waitMs: 60_000, maxWaiting: 5 });
  const a = conn(slots, log, 'a');
  conn(slots, log, 'b');
  const c = conn(slots, log, 'c');
  conn(slots, log, 'd');
  assert.deepEqual(log, ['a admitted', 'b admitted']);
  assert.equal(slots.waiting, 2);
  a();
  a(); // a second close of the same connection frees nothing more
  assert.deepEqual(log, ['a admitted', 'b admitted', 'c admitted'], 'first come, first served');
  assert.equal(slots.busy, 2);
  c();
  assert.deepEqual(log.at(-1), 'd admitted');
  assert.equal(slots.waiting, 0);
});

test('a waiter that goes away leaves the queue and takes no slot later', () => {
  const log: string[] = [];
  const slots = new ConnectionSlots({ max: 1, waitMs: 60_000, maxWaiting: 5 });
  const a = conn(slots, log, 'a');
  const b = conn(slots, log, 'b');
  conn(slots, log, 'c');
  b(); // b's client hung up while waiting
  a();
  assert.deepEqual(log, ['a admitted', 'c admitted']);
  assert.equal(slots.busy, 1);
});

test('beyond maxWaiting, or with waitMs 0, a connection is refused at once and counted', () => {
  const refusals: string[] = [];
  const log: string[] = [];
  const slots = new ConnectionSlots({ max: 1, waitMs: 60_000, maxWaiting: 1, onRefused: (how) => refusals.push(how) });
  conn(slots, log, 'a');
  const b = conn(slots, log, 'b');
  conn(slots, log, 'c');
  assert.deepEqual(log, ['a admitted', 'c refused']);
  assert.deepEqual(refusals, ['queue_full']);
  b(); // its wait timer goes with it

  const none = new ConnectionSlots({ max: 1, waitMs: 0, maxWaiting: 10 });
  conn(none, log, 'x');
  conn(none, log, 'y');
  assert.deepEqual(log.slice(-2), ['x admitted', 'y refused'], 'waitMs 0: smtp-server\'s behaviour');
});

test('a connection that waits waitMs in vain is refused; its close afterwards frees nothing', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const refusals: string[] = [];
  const log: string[] = [];
  const slots = new ConnectionSlots({ max: 1, waitMs: 500, maxWaiting: 5, onRefused: (how) => refusals.push(how) });
  const a = conn(slots, log, 'a');
  const b = conn(slots, log, 'b');
  t.mock.timers.tick(499);
  assert.deepEqual(log, ['a admitted']);
  t.mock.timers.tick(1);
  assert.deepEqual(log, ['a admitted', 'b refused']);
  assert.deepEqual(refusals, ['wait_timeout']);
  b();
  assert.equal(slots.busy, 1, 'a still holds its slot');
  a();
  assert.equal(slots.busy, 0);
});
