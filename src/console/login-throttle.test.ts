/**
 * Unit tests of the console's login throttle (a fake clock): free failures, a delay that
 * doubles, the lockout, per address and per user on their own, forgetting, the memory bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LoginThrottle } from './login-throttle.ts';

const MIN = 60_000;
const make = () => {
  let t = 1_000_000;
  const th = new LoginThrottle({ freeFailures: 3, lockoutAfter: 6, baseDelay: 1000, lockout: 15 * MIN, now: () => t });
  return { th, advance: (ms: number) => { t += ms; } };
};

test('free failures, then a delay that doubles, then a lockout; a blocked attempt does not count', () => {
  const { th, advance } = make();
  for (let i = 0; i < 3; i++) {
    assert.equal(th.blocked('10.0.0.1', 'alice'), undefined, `failure ${i + 1} is free`);
    assert.equal(th.failed('10.0.0.1', 'alice'), undefined);
  }
  assert.deepEqual(th.failed('10.0.0.1', 'alice'), { by: 'address', retryAfterMs: 1000, lockout: false }, '4th: 1 s');
  assert.equal(th.blocked('10.0.0.1', 'alice')?.retryAfterMs, 1000);
  advance(999);
  assert.ok(th.blocked('10.0.0.1', 'alice'), 'still blocked just before the delay ends');
  advance(1);
  assert.equal(th.blocked('10.0.0.1', 'alice'), undefined);
  assert.equal(th.failed('10.0.0.1', 'alice')?.retryAfterMs, 2000, '5th: 2 s');
  advance(500);
  assert.equal(th.blocked('10.0.0.1', 'alice')?.retryAfterMs, 1500, 'attempts while blocked are refused and do not count');
  advance(1500);
  assert.deepEqual(th.failed('10.0.0.1', 'alice'), { by: 'address', retryAfterMs: 15 * MIN, lockout: true }, '6th: locked out');
  advance(14 * MIN);
  assert.equal(th.blocked('10.0.0.1', 'alice')?.lockout, true);
  assert.equal(th.blocked('10.0.0.2', 'alice')?.by, 'user', 'the user is locked out from another address too');
  assert.equal(th.blocked('10.0.0.1', 'bob')?.by, 'address', 'and the address for another user');
  assert.equal(th.blocked('10.0.0.2', 'bob'), undefined, 'others are not affected');
  advance(MIN);
  assert.equal(th.blocked('10.0.0.1', 'alice'), undefined, 'the lockout ends');
  assert.equal(th.failed('10.0.0.1', 'alice'), undefined, 'and the count starts again once the failures are that old');
});

test('per address and per user on their own: guessing spread over addresses, or over users', () => {
  const { th } = make();
  for (let i = 1; i <= 4; i++) th.failed(`192.0.2.${i}`, 'admin');
  assert.deepEqual(th.blocked('192.0.2.99', 'ADMIN '), { by: 'user', retryAfterMs: 1000, lockout: false }, 'the user, whatever the address (case and spaces ignored)');
  for (const u of ['a', 'b', 'c', 'd']) th.failed('198.51.100.7', u);
  assert.equal(th.blocked('198.51.100.7', 'e')?.by, 'address', 'the address, whatever the user');
});

test('a successful login forgets the failures of its address and user', () => {
  const { th, advance } = make();
  for (let i = 0; i < 4; i++) th.failed('10.0.0.1', 'alice');
  advance(1000);
  th.succeeded('10.0.0.1', 'alice');
  for (let i = 0; i < 3; i++) assert.equal(th.failed('10.0.0.1', 'alice'), undefined, 'free failures again');
});

test('memory stays bounded under failures from many addresses', () => {
  const { th } = make();
  for (let i = 0; i < 30_000; i++) th.failed(`2001:db8::${i.toString(16)}`, `user${i}`);
  assert.ok(th.size <= 10_000, `${th.size} keys remembered`);
  assert.ok(th.failed('2001:db8::7530', 'user30000') === undefined, 'a new key starts with free failures');
});
