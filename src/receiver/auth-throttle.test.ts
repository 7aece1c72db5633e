/**
 * auth-throttle.test.ts — AUTH throttling with a fake password check: hashing concurrency is
 * bounded, a full queue answers 454 at once, failures are delayed (by a timer) and close the
 * connection at the limit, a client over its failure rate is not even checked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SMTPServerSession } from 'smtp-server';
import { AuthThrottle } from './auth-throttle.ts';
import { ClientLimits } from './client-limits.ts';
import { SmtpReplyError } from '../util/errors.ts';

const session = (addr = '192.0.2.1') => ({ remoteAddress: addr } as SMTPServerSession);

function setup(o: { hashConcurrency?: number; hashQueue?: number; failureRate?: number; maxFailures?: number } = {}) {
  const limits = new ClientLimits({ clientConnections: 0, networkConnections: 0, connectionRate: 0, messageRate: 0, recipientRate: 0, authFailureRate: o.failureRate ?? 0, windowMs: 60_000, isExempt: () => false });
  let running = 0;
  let peak = 0;
  let checks = 0;
  const gates: Array<() => void> = [];
  const sleeps: number[] = [];
  const refusals: string[] = [];
  const throttle = new AuthThrottle({
    maxFailures: o.maxFailures ?? 3, failureDelay: 1000, hashConcurrency: o.hashConcurrency ?? 2, hashQueue: o.hashQueue ?? 100, limits,
    async verify(_u, p) {
      checks++;
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((r) => gates.push(r));
      running--;
      return p === 'right';
    },
    onRefusal: (r) => refusals.push(r),
    sleep: async (ms) => { sleeps.push(ms); },
  });
  return { throttle, limits, gates, sleeps, refusals, stats: () => ({ peak, checks }) };
}

const code = (p: Promise<unknown>) => p.then(() => 0, (e) => (e instanceof SmtpReplyError ? e.replyCode : -1));

test('at most hashConcurrency checks run at once; beyond hashQueue waiting, AUTH gets 454 without a check', async () => {
  const { throttle, gates, stats, refusals, limits } = setup({ hashConcurrency: 2, hashQueue: 3 });
  const pending = Array.from({ length: 5 }, () => code(throttle.authenticate(session(), 'u', 'wrong')));
  await new Promise((r) => setImmediate(r));
  assert.equal(stats().peak, 2);
  assert.equal(await code(throttle.authenticate(session(), 'u', 'right')), 454, 'queue full');
  assert.deepEqual(refusals, ['auth_busy']);
  while (stats().checks < 5 || gates.length) { gates.shift()?.(); await new Promise((r) => setImmediate(r)); }
  assert.deepEqual(await Promise.all(pending), [535, 535, 535, 535, 535]);
  assert.equal(stats().peak, 2);
  limits.close();
});

test('each failure waits longer (a timer), and the limit closes the connection with 421', async () => {
  const { throttle, gates, sleeps, limits } = setup({ hashConcurrency: 1, maxFailures: 3 });
  const s = session();
  const run = (p: string) => { const r = code(throttle.authenticate(s, 'u', p)); setImmediate(() => gates.shift()?.()); return r; };
  assert.equal(await run('wrong'), 535);
  assert.equal(await run('wrong'), 535);
  assert.equal(await run('wrong'), 421);
  assert.deepEqual(sleeps, [1000, 2000, 3000]);
  const ok = throttle.authenticate(session('192.0.2.9'), 'u', 'right');
  setImmediate(() => gates.shift()?.());
  assert.equal(await ok, 'u');
  limits.close();
});

test('a client over its failure rate gets 454 and its password is not checked, even a right one', async () => {
  const { throttle, gates, stats, refusals, limits } = setup({ failureRate: 2, maxFailures: 100 });
  for (let i = 0; i < 2; i++) {
    const r = code(throttle.authenticate(session(), 'u', 'wrong'));
    setImmediate(() => gates.shift()?.());
    assert.equal(await r, 535);
  }
  const checks = stats().checks;
  assert.equal(await code(throttle.authenticate(session(), 'u', 'right')), 454);
  assert.equal(stats().checks, checks, 'no hashing for a blocked client');
  assert.ok(refusals.includes('auth_rate'));
  limits.close();
});
