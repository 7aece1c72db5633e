/**
 * Unit tests of the tracking index (a real SQLite file, a real log file): search by each key,
 * incremental sync, a torn last line, rebuild when the index is lost or damaged, rotation,
 * retention; and the cluster merge of timelines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, appendFileSync, writeFileSync, renameSync, rmSync, existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { TrackingIndex, SCHEMA_VERSION } from './index-db.ts';
import { mergeTimelines, parseTrackQuery } from './search.ts';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const line = (o: Record<string, unknown>) => `${JSON.stringify({ node: 'a', ...o })}\n`;
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

function sample(): string {
  return [
    line({ t: at(0), event: 'received', queueId: 'Q1.a', messageId: '<m1@x>', sender: 'Alice@Example.org', recipients: 2 }),
    line({ t: at(1), event: 'routed', queueId: 'Q1.a', messageId: '<m1@x>', sender: 'alice@example.org', recipients: ['bob@remote.test', 'carol@other.test'], nexthop: 'smtp:[10.0.0.5]:25' }),
    line({ t: at(2), event: 'deferred', queueId: 'Q1.a', sender: 'alice@example.org', recipient: 'bob@remote.test', reply: '4.4.1 no answer' }),
    line({ t: at(3), event: 'delivered', queueId: 'Q1.a', sender: 'alice@example.org', recipient: 'carol@other.test', original: 'team@example.org' }),
    line({ t: at(10), event: 'received', queueId: 'Q2.a', messageId: '<m2@x>', sender: 'dave@example.net', recipients: 1 }),
    line({ t: at(11), event: 'bounced', queueId: 'Q2.a', sender: 'dave@example.net', recipient: 'eve@remote.test', reply: '5.1.1 unknown' }),
    line({ t: at(12), node: 'b', event: 'received', queueId: 'Q9.b', sender: 'x@y.test', recipients: 1 }),
    line({ t: at(13), event: 'takeover', spool: 'b', epoch: 2, reason: 'b is dead' }),
    `${JSON.stringify({ t: at(12), node: 'b', event: 'received', queueId: 'Q8.b', sender: 'x2@y.test' })}\n`, // as TrackingLog writes it: t, then node
    `${JSON.stringify({ t: at(14), node: 'a', event: 'held', queueId: 'Q2.a' })}\n`,
  ].join('');
}

test('search by queue id, Message-ID, sender, recipient (exact and domain), outcome, time; only our node\'s lines', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'track-idx-'));
  const log = path.join(dir, 'tracking.log');
  writeFileSync(log, sample());
  const idx = new TrackingIndex(path.join(dir, 'idx.db'), log, 'a');
  await idx.sync();
  const ids = (q: Parameters<TrackingIndex['search']>[0]) => idx.search(q).messages.map((m) => m.queueId);
  assert.deepEqual(ids({ queueId: 'Q1.a' }), ['Q1.a']);
  assert.equal(idx.search({ queueId: 'Q1.a' }).messages[0].events.length, 4, 'every event of the message');
  assert.deepEqual(ids({ messageId: 'm2@x' }), ['Q2.a'], 'Message-ID without brackets');
  assert.deepEqual(ids({ from: 'alice@example.org' }), ['Q1.a'], 'sender, case-insensitive');
  assert.deepEqual(ids({ from: 'example.net' }), ['Q2.a']);
  assert.deepEqual(ids({ to: 'BOB@remote.test' }), ['Q1.a']);
  assert.deepEqual(ids({ to: 'team@example.org' }), ['Q1.a'], 'original recipient (alias)');
  assert.deepEqual(ids({ to: '@remote.test' }), ['Q2.a', 'Q1.a'], 'domain, newest first');
  assert.deepEqual(ids({ to: 'remote.test', outcome: 'bounced' }), ['Q2.a']);
  assert.deepEqual(ids({ since: T0 + 5000 }), ['Q2.a']);
  assert.deepEqual(ids({ until: T0 + 5000 }), ['Q1.a']);
  assert.deepEqual(ids({ from: 'x@y.test' }), [], 'lines of another node are not ours to answer');
  assert.deepEqual(ids({ from: 'x2@y.test' }), []);
  assert.deepEqual(ids({ outcome: 'held' }), ['Q2.a'], 'a line in TrackingLog\'s own key order is indexed');
  assert.deepEqual(ids({ to: 'nobody@nowhere.test' }), []);
  assert.equal(idx.search({ queueId: 'Q1.a' }).clusterEvents.length, 0, 'the takeover came after Q1');
  await idx.close();
});

test('incremental sync, a torn last line, rebuild from the log when the index is lost or damaged', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'track-idx-'));
  const log = path.join(dir, 'tracking.log');
  const db = path.join(dir, 'idx.db');
  writeFileSync(log, sample());
  appendFileSync(log, '{"t":"2026-12-01T10:01:00Z","node":"a","event":"recei'); // torn by a crash
  let idx = new TrackingIndex(db, log, 'a');
  await idx.sync();
  assert.equal(idx.stats().events, 8);
  appendFileSync(log, 'ved","queueId":"Q3.a","sender":"z@z.test"}\n');
  appendFileSync(log, line({ t: at(70), event: 'held', queueId: 'Q3.a' }));
  await idx.sync();
  assert.deepEqual(idx.search({ queueId: 'Q3.a' }).messages[0].events.map((e) => e.event), ['received', 'held'], 'the torn line is indexed once complete');
  await idx.close();

  rmSync(db);
  for (const f of readdirSync(dir)) if (f.startsWith('idx.db-')) rmSync(path.join(dir, f));
  idx = new TrackingIndex(db, log, 'a');
  await idx.sync();
  assert.equal(idx.stats().events, 10, 'rebuilt from the log');
  await idx.close();

  writeFileSync(db, 'this is not a database at all, just bytes that are not SQLite');
  for (const f of readdirSync(dir)) if (f.startsWith('idx.db-')) rmSync(path.join(dir, f));
  idx = new TrackingIndex(db, log, 'a');
  await idx.sync();
  assert.equal(idx.stats().events, 10, 'a damaged index is moved aside and rebuilt');
  assert.ok(readdirSync(dir).some((f) => f.startsWith('idx.db.corrupt-')));
  await idx.close();
});

test('an index of another schema version (or of the first release, without one) is rebuilt from the log', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'track-idx-'));
  const log = path.join(dir, 'tracking.log');
  const db = path.join(dir, 'idx.db');
  writeFileSync(log, sample());
  let idx = new TrackingIndex(db, log, 'a');
  assert.equal(idx.rebuilt, undefined, 'a new index is not a rebuild');
  await idx.sync();
  await idx.close();
  idx = new TrackingIndex(db, log, 'a');
  assert.equal(idx.rebuilt, undefined, 'same version: kept');
  await idx.sync();
  assert.equal(idx.stats().events, 8, 'kept, and not indexed twice');
  await idx.close();

  for (const [version, what] of [[0, 'a first-release index (no version)'], [SCHEMA_VERSION + 1, 'a newer node\'s index']] as const) {
    const raw = new Database(db);
    raw.pragma(`user_version = ${version}`);
    // what the other version left: rows this version would misread, and an offset past them
    raw.exec("DELETE FROM events; INSERT INTO meta (key, value) VALUES ('offset', '999999') ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    raw.close();
    idx = new TrackingIndex(db, log, 'a');
    assert.match(idx.rebuilt ?? '', new RegExp(`schema version ${version}, this node uses ${SCHEMA_VERSION}`), what);
    await idx.sync();
    assert.equal(idx.stats().events, 8, `${what}: rebuilt from the whole log`);
    assert.deepEqual(idx.search({ to: 'carol@other.test' }).messages.map((m) => m.queueId), ['Q1.a']);
    await idx.close();
    const check = new Database(db, { readonly: true });
    assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'the rebuilt file carries this version');
    check.close();
  }
});

test('rotation: the rest of the old file is indexed from <log>.1, then the new file; prune by age', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'track-idx-'));
  const log = path.join(dir, 'tracking.log');
  writeFileSync(log, sample());
  const idx = new TrackingIndex(path.join(dir, 'idx.db'), log, 'a');
  await idx.sync();
  appendFileSync(log, line({ t: at(100), event: 'received', queueId: 'Q4.a', sender: 'late@old.test' }));
  renameSync(log, `${log}.1`);
  writeFileSync(log, line({ t: at(200), event: 'received', queueId: 'Q5.a', sender: 'new@new.test' }));
  await idx.sync();
  assert.equal(idx.search({ from: 'late@old.test' }).messages.length, 1, 'the line written just before the rotation');
  assert.equal(idx.search({ from: 'new@new.test' }).messages.length, 1);
  const removed = idx.prune(150_000, T0 + 260_000);
  assert.equal(removed, 9, `old messages and cluster events pruned (${removed})`);
  assert.deepEqual(idx.search({}).messages.map((m) => m.queueId), ['Q5.a']);
  assert.ok(existsSync(`${log}.1`), 'the index never deletes the log itself');
  await idx.close();
});

test('cluster merge: one timeline from two nodes, with the takeover of the message\'s spool', () => {
  const ev = (node: string, s: number, event: string, extra: Record<string, unknown> = {}) => ({ t: at(s), node, event, queueId: 'Q1.a', sender: 's@x.test', ...extra });
  const merged = mergeTimelines([
    { node: 'a', messages: [{ queueId: 'Q1.a', events: [ev('a', 0, 'received', { messageId: '<m@x>' }), ev('a', 1, 'deferred', { recipient: 'r@remote.test' })] }], clusterEvents: [] },
    { node: 'b', messages: [{ queueId: 'Q1.a', events: [ev('b', 20, 'delivered', { recipient: 'r@remote.test', secondary: 'a' })] }],
      clusterEvents: [{ t: at(10), node: 'b', event: 'takeover', spool: 'a', epoch: 2 }, { t: at(11), node: 'b', event: 'takeover', spool: 'c', epoch: 5 }] },
  ]);
  assert.equal(merged.length, 1);
  assert.deepEqual(merged[0].events.map((e) => `${e.event}@${e.node}`), ['received@a', 'deferred@a', 'takeover@b', 'delivered@b']);
  assert.equal(merged[0].status, 'delivered');
  assert.equal(merged[0].messageId, '<m@x>');
  assert.deepEqual(merged[0].nodes, ['a', 'b (secondary for a)']);
});

test('query parsing: durations back from now, ISO times, bad input named', () => {
  const now = T0;
  assert.equal(parseTrackQuery({ since: '1h' }, now).since, now - 3_600_000);
  assert.equal(parseTrackQuery({ until: '2026-12-01T09:00:00Z' }, now).until, Date.parse('2026-12-01T09:00:00Z'));
  assert.throws(() => parseTrackQuery({ since: 'yesterday-ish' }, now), /not a time/);
  assert.throws(() => parseTrackQuery({ outcome: 'vanished' }, now), /outcome must be one of/);
  assert.throws(() => parseTrackQuery({ limit: '-3' }, now), /limit/);
});
