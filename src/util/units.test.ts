/**
 * units.test.ts — durations and sizes as operators write them in the config file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, parseDuration, parseSize } from './units.ts';

test('durations take ms, s, m, h, d, w (any case, spaces allowed) and convert to milliseconds', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('300s'), 300_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1.5h'), 5_400_000);
  assert.equal(parseDuration('5d'), 432_000_000);
  assert.equal(parseDuration('2w'), 1_209_600_000);
  assert.equal(parseDuration('5D'), 432_000_000);
  assert.equal(parseDuration(' 10 s '), 10_000);
  assert.equal(parseDuration('0s'), 0);
});

test('a bare duration number, string or YAML number, is seconds as in Postfix', () => {
  assert.equal(parseDuration('300'), 300_000);
  assert.equal(parseDuration(300), 300_000);
});

test('a duration that is not a number and unit is refused, naming the value and the allowed units', () => {
  for (const bad of ['5 days', '', 'soon', '-5s', '5y', '1e3s']) {
    assert.throws(() => parseDuration(bad), (err: Error) => {
      assert.equal(err.message, `${JSON.stringify(bad)} is not a duration; use a number with a unit: ms, s, m, h, d, w (e.g. "300s", "5d")`);
      return true;
    }, bad);
  }
});

test('a negative or infinite duration or size given as a number is refused like "-5s"', () => {
  assert.throws(() => parseDuration(-1), /not a duration/);
  assert.throws(() => parseDuration(Infinity), /not a duration/);
  assert.throws(() => parseSize(-5), /not a size/);
});

test('sizes are bytes or KiB/MiB/GiB (1024-based) and kB/MB/GB, k/m/g (1000-based), any case', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize(4096), 4096);
  assert.equal(parseSize('512b'), 512);
  assert.equal(parseSize('10KiB'), 10_240);
  assert.equal(parseSize('10MiB'), 10_485_760);
  assert.equal(parseSize('1GiB'), 1_073_741_824);
  assert.equal(parseSize('10kB'), 10_000);
  assert.equal(parseSize('10MB'), 10_000_000);
  assert.equal(parseSize('2GB'), 2_000_000_000);
  assert.equal(parseSize('25mib'), 25 * 1024 * 1024);
  assert.equal(parseSize('10m'), 10_000_000);
  assert.equal(parseSize('1.5k'), 1500);
  assert.equal(parseSize(' 7 MiB '), 7 * 1024 * 1024);
});

test('a size with an unknown unit or no number is refused, naming the value and the allowed units', () => {
  for (const bad of ['10 megs', '10XB', '', 'MiB', '-1MiB']) {
    assert.throws(() => parseSize(bad), (err: Error) => {
      assert.equal(err.message, `${JSON.stringify(bad)} is not a size; use bytes or a unit: KiB, MiB, GiB, kB, MB, GB (e.g. "10MiB")`);
      return true;
    }, bad);
  }
});

test('formatDuration writes the largest units first and drops zero parts', () => {
  assert.equal(formatDuration(90_061_000), '1d1h1m1s');
  assert.equal(formatDuration(5 * 86_400_000), '5d');
  assert.equal(formatDuration(3_600_000 + 5000), '1h5s');
  assert.equal(formatDuration(300_000), '5m');
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(0), '0ms');
  assert.equal(parseDuration(formatDuration(432_000_000)), 432_000_000, 'what it writes, a config file accepts');
});
