/**
 * Unit tests of RetrySchedule (one timer for every deferred message's retry time), with the
 * timers mocked and the clock given by the test.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { RetrySchedule } from './retry-schedule.ts';

function setup(t: TestContext) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const clock = { now: 1_000 };
  const fired: string[] = [];
  const s = new RetrySchedule<string>(() => clock.now, (k) => fired.push(k));
  const advance = (ms: number) => {
    clock.now += ms;
    t.mock.timers.tick(ms);
  };
  return { s, fired, advance, clock };
}

test('keys come due in time order, once each; a new time replaces the old one; delete cancels', (t) => {
  const { s, fired, advance } = setup(t);
  s.set('a', 1_300);
  s.set('b', 1_100);
  s.set('c', 1_200);
  s.set('d', 1_500);
  s.set('a', 1_050); // moved earlier
  s.set('d', 1_400); // moved earlier again
  s.delete('c');
  assert.equal(s.size, 3);
  advance(49);
  assert.deepEqual(fired, []);
  advance(1);
  assert.deepEqual(fired, ['a']);
  advance(50);
  assert.deepEqual(fired, ['a', 'b']);
  advance(299);
  assert.deepEqual(fired, ['a', 'b'], 'the replaced and deleted times never fire');
  advance(1);
  assert.deepEqual(fired, ['a', 'b', 'd']);
  assert.equal(s.size, 0);
  advance(10_000);
  assert.deepEqual(fired, ['a', 'b', 'd']);
});

test('a key set again from its own callback comes due again; a past time is due at once', (t) => {
  const { s, fired, advance, clock } = setup(t);
  let again = true;
  const s2 = new RetrySchedule<string>(() => clock.now, (k) => {
    fired.push(k);
    if (again) { again = false; s2.set(k, clock.now + 100); }
  });
  s2.set('x', 1_010);
  advance(10);
  assert.deepEqual(fired, ['x']);
  assert.equal(s2.get('x'), 1_110);
  advance(100);
  assert.deepEqual(fired, ['x', 'x']);
  s.set('late', clock.now - 5_000);
  advance(0);
  assert.deepEqual(fired, ['x', 'x', 'late']);
});

test('a time beyond setTimeout\'s limit (24.8 days) is not fired early', (t) => {
  const { s, fired, advance } = setup(t);
  const limit = 2 ** 31 - 1;
  s.set('far', 1_000 + limit + 60_000);
  advance(limit);
  assert.deepEqual(fired, [], 'the timer woke early and was armed again');
  advance(60_000);
  assert.deepEqual(fired, ['far']);
});

test('many keys set and replaced over and over keep the schedule right (stale heap nodes are dropped)', (t) => {
  const { s, fired, advance } = setup(t);
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 100; i++) s.set(`k${i}`, 2_000 + ((i * 37 + round * 11) % 1000));
  }
  for (let i = 0; i < 100; i += 2) s.delete(`k${i}`);
  const expected = [...Array(50)].map((_, j) => 2 * j + 1).map((i) => ({ k: `k${i}`, at: 2_000 + ((i * 37 + 19 * 11) % 1000) }))
    .sort((a, b) => a.at - b.at || 0);
  for (let ms = 0; ms < 2_000; ms++) advance(1);
  assert.equal(fired.length, 50);
  assert.deepEqual(new Set(fired), new Set(expected.map((e) => e.k)));
  // in time order (keys with the same time in any order)
  const at = new Map(expected.map((e) => [e.k, e.at]));
  for (let i = 1; i < fired.length; i++) assert.ok(at.get(fired[i - 1])! <= at.get(fired[i])!, `${fired[i - 1]} before ${fired[i]}`);
});
