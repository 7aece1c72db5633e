import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextBackoff } from './backoff.ts';

test('backoff doubles from the minimum and stops at the maximum', () => {
  const mid = () => 0.5; // no jitter
  assert.equal(nextBackoff(1, 1000, 60_000, mid), 1000);
  assert.equal(nextBackoff(2, 1000, 60_000, mid), 2000);
  assert.equal(nextBackoff(5, 1000, 60_000, mid), 16_000);
  assert.equal(nextBackoff(40, 1000, 60_000, mid), 60_000);
});

test('jitter spreads retries by at most 25 % either way', () => {
  assert.equal(nextBackoff(3, 1000, 60_000, () => 0), 3000);
  assert.equal(nextBackoff(3, 1000, 60_000, () => 1), 5000);
});
