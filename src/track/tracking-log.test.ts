/**
 * tracking-log.test.ts — the tracking log on real files: line format, a line in the kernel
 * before record() returns, recordDurable after an fdatasync, torn lines, a disabled log, write
 * failures that never reach mail flow, and reopen() after logrotate.
 */
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import fs, { existsSync, readFileSync, renameSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrackingLog, readTrackingLog, type TrackingEvent } from './tracking-log.ts';

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-track-'));
  file = join(dir, 'log', 'tracking.log');
});
afterEach(async () => {
  mock.restoreAll();
  syncBuiltinESMExports();
  await rm(dir, { recursive: true, force: true });
});

const received = (queueId: string, extra: Partial<TrackingEvent> = {}): TrackingEvent =>
  ({ event: 'received', queueId, sender: 'alice@example.org', size: 123, ...extra });

/** Count fdatasync calls (and their completions, in `events`, and to `onDone`) made by the log. */
function spyOnFdatasync(events: string[], onDone?: () => void): { calls: () => number } {
  const real = fs.fdatasync;
  const spy = mock.method(fs, 'fdatasync', (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    events.push('sync-start');
    real(fd, (err) => {
      events.push('sync-done');
      onDone?.();
      cb(err);
    });
  });
  syncBuiltinESMExports();
  return { calls: () => spy.mock.callCount() };
}

test('each event is one JSON line with time, node id and the event fields', () => {
  const log = new TrackingLog(file, 'mx1');
  const before = Date.now();
  log.record(received('Q1', { messageId: '<m@example.org>' }));
  log.record({ event: 'delivered', queueId: 'Q1', recipient: 'bob@example.net', nexthop: 'mx.example.net', reply: '250 ok' });
  log.close();
  const lines = readFileSync(file, 'utf8').split('\n');
  assert.equal(lines.pop(), '', 'the file ends in a newline');
  assert.equal(lines.length, 2);
  const [first, second] = lines.map((l) => JSON.parse(l));
  assert.equal(first.node, 'mx1');
  assert.equal(first.event, 'received');
  assert.equal(first.queueId, 'Q1');
  assert.equal(first.messageId, '<m@example.org>');
  assert.match(first.t, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(Date.parse(first.t) >= before - 1 && Date.parse(first.t) <= Date.now() + 1);
  assert.deepEqual({ ...second, t: undefined }, {
    t: undefined, node: 'mx1', event: 'delivered', queueId: 'Q1', recipient: 'bob@example.net', nexthop: 'mx.example.net', reply: '250 ok',
  });
  assert.deepEqual(readTrackingLog(file).map((e) => e.event), ['received', 'delivered']);
});

test('record() has the line in the file when it returns, without waiting for a sync', () => {
  const log = new TrackingLog(file, 'mx1');
  log.record(received('Q1'));
  // no await: what another process (or a restart after kill -9) would read now
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['Q1']);
  log.close();
});

test('recordDurable resolves only after an fdatasync that followed the write', async () => {
  const events: string[] = [];
  const spy = spyOnFdatasync(events);
  const log = new TrackingLog(file, 'mx1');
  events.push('write-A');
  const a = log.recordDurable(received('QA')).then(() => events.push('resolved-A'));
  // a second caller while the first sync runs: that sync may predate its write
  events.push('write-B');
  const b = log.recordDurable(received('QB')).then(() => events.push('resolved-B'));
  await Promise.all([a, b]);
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['QA', 'QB']);
  for (const name of ['A', 'B']) {
    const written = events.indexOf(`write-${name}`);
    const resolved = events.indexOf(`resolved-${name}`);
    const start = events.indexOf('sync-start', written);
    const done = events.indexOf('sync-done', start);
    assert.ok(start > written && done > start && done < resolved, `${name}: a sync started after the write and finished before resolving: ${events.join(' ')}`);
  }
  assert.ok(spy.calls() <= 2, `syncs are grouped: ${spy.calls()} for 2 lines`);
  log.close();
});

test('concurrent recordDurable calls share fdatasyncs', async () => {
  const spy = spyOnFdatasync([]);
  const log = new TrackingLog(file, 'mx1');
  await Promise.all(Array.from({ length: 50 }, (_, i) => log.recordDurable(received(`Q${i}`))));
  assert.equal(readTrackingLog(file).length, 50);
  assert.ok(spy.calls() >= 1 && spy.calls() <= 3, `50 lines took ${spy.calls()} fdatasyncs`);
  log.close();
});

test('with a sync delay, lines from record() share one background fdatasync, started no sooner than the delay', async () => {
  let synced!: (at: number) => void;
  const firstSync = new Promise<number>((resolve) => { synced = resolve; });
  const spy = spyOnFdatasync([], () => synced(performance.now()));
  const log = new TrackingLog(file, 'mx1', undefined, {}, 200);
  const start = performance.now();
  for (let i = 0; i < 100; i++) log.record({ event: 'delivered', queueId: `Q${i}`, recipient: 'bob@example.net' });
  assert.equal(spy.calls(), 0, 'no fdatasync per line');
  // the log's timer is unref'd (it keeps no process alive): hold the loop open meanwhile
  const alive = setTimeout(() => undefined, 10_000);
  const at = await firstSync.finally(() => clearTimeout(alive));
  assert.ok(at - start >= 190, `the background sync waited for the delay (${Math.round(at - start)} ms)`);
  assert.equal(spy.calls(), 1, '100 lines, one fdatasync');
  assert.equal(readTrackingLog(file).length, 100);
  log.close();
});

test('with a sync delay, recordDurable does not wait for it: its fdatasync starts at once and covers the lines before it', async () => {
  const events: string[] = [];
  const spy = spyOnFdatasync(events);
  const log = new TrackingLog(file, 'mx1', undefined, {}, 10_000);
  log.record({ event: 'delivered', queueId: 'Q1', recipient: 'bob@example.net' });
  const start = performance.now();
  await log.recordDurable(received('Q2'));
  assert.ok(performance.now() - start < 5_000, 'resolved by its own sync, not after the 10 s delay');
  assert.equal(spy.calls(), 1, 'one fdatasync for both lines; the delayed one is not run again');
  log.close();
  assert.equal(spy.calls(), 1);
});

test('close() fdatasyncs lines still waiting for their delayed sync (a clean stop loses none)', () => {
  const syncs = mock.method(fs, 'fdatasyncSync');
  syncBuiltinESMExports();
  const log = new TrackingLog(file, 'mx1', undefined, {}, 10_000);
  log.record({ event: 'delivered', queueId: 'Q1', recipient: 'bob@example.net' });
  assert.equal(syncs.mock.callCount(), 0);
  log.close();
  assert.equal(syncs.mock.callCount(), 1);
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['Q1']);
});

test('readTrackingLog skips a torn final line (crash in the middle of a write)', () => {
  const log = new TrackingLog(file, 'mx1');
  log.record(received('Q1'));
  log.record(received('Q2'));
  log.close();
  fs.appendFileSync(file, '{"t":"2026-01-01T00:00:00.000Z","node":"mx1","event":"deliv');
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['Q1', 'Q2']);
});

test('after a crash left a torn final line, the next event logged is still readable', () => {
  const first = new TrackingLog(file, 'mx1');
  first.record(received('Q1'));
  first.close();
  fs.appendFileSync(file, '{"t":"2026-01-01T00:00:00.000Z","node":"mx1","event":"deliv'); // torn by the crash
  const restarted = new TrackingLog(file, 'mx1');
  restarted.record(received('Q2'));
  restarted.close();
  // the new line must not be glued to the torn one, or the first event after a restart is lost
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['Q1', 'Q2']);
});

test('a path of "" records nothing and never fails', async () => {
  const errors: Error[] = [];
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    const log = new TrackingLog('', 'mx1', (e) => errors.push(e));
    log.record(received('Q1'));
    await log.recordDurable(received('Q2'));
    log.reopen();
    log.close();
    assert.equal(log.errors, 0);
  } finally {
    process.chdir(cwd);
  }
  assert.deepEqual(errors, []);
  assert.deepEqual(await readdir(dir), [], 'no file was created');
});

test('a failing write (disk full) never throws: it calls onError and counts errors', async () => {
  const errors: Error[] = [];
  const log = new TrackingLog('/dev/full', 'mx1', (e) => errors.push(e));
  assert.doesNotThrow(() => log.record(received('Q1')));
  await log.recordDurable(received('Q2')); // resolves: mail flow does not wait on a broken log
  assert.equal(log.errors, 2);
  assert.equal(errors.length, 2);
  assert.equal((errors[0] as NodeJS.ErrnoException).code, 'ENOSPC');
  log.close();
});

test('reopen() after logrotate renamed the file writes new lines to a new file at the original path', () => {
  const log = new TrackingLog(file, 'mx1');
  log.record(received('Q1'));
  renameSync(file, `${file}.1`);
  log.record(received('Q2')); // still goes to the renamed file until reopen
  log.reopen();
  log.record(received('Q3'));
  log.close();
  assert.deepEqual(readTrackingLog(`${file}.1`).map((e) => e.queueId), ['Q1', 'Q2']);
  assert.deepEqual(readTrackingLog(file).map((e) => e.queueId), ['Q3']);
  assert.ok(existsSync(file));
});
