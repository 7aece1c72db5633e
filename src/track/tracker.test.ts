/**
 * Unit test of the tracking search service's retention: size rotation (<log> → <log>.1 → …,
 * the oldest dropped, the writer told to reopen, nothing lost to the index) and age pruning.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, appendFileSync, existsSync, readFileSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configSchema } from '../config/schema.ts';
import { Tracker } from './tracker.ts';

test('rotation by size keeps rotate_keep files and the index keeps every line; max_age prunes', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tracker-'));
  const log = path.join(dir, 'tracking.log');
  const c = configSchema.parse({ node: { id: 'n1' }, tracking: { path: log, rotate_size: 200, rotate_keep: 2, max_age: '1h' } });
  let reopened = 0;
  const tracker = new Tracker(c, () => { reopened++; }, (msg) => assert.fail(msg));
  const now = Date.now();
  const write = (i: number, t = now) => appendFileSync(log, `${JSON.stringify({ t: new Date(t).toISOString(), node: 'n1', event: 'received', queueId: `Q${i}.n1`, sender: `s${i}@x.test` })}\n`);
  try {
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) write(round * 3 + i, round === 0 ? now - 2 * 3_600_000 : now);
      await tracker.maintain(now);
    }
    assert.equal(reopened, 3, 'the writer reopens after each rotation');
    assert.ok(existsSync(`${log}.1`) && existsSync(`${log}.2`) && !existsSync(`${log}.3`), 'rotate_keep files kept');
    assert.match(readFileSync(`${log}.2`, 'utf8'), /Q3\.n1/);
    const all = await tracker.search({ limit: 100 });
    assert.deepEqual(all.messages.map((m) => m.queueId).sort(), ['Q3.n1', 'Q4.n1', 'Q5.n1', 'Q6.n1', 'Q7.n1', 'Q8.n1'],
      'lines older than max_age are pruned, every other line indexed across the rotations');
    utimesSync(`${log}.2`, new Date(now - 7_200_000), new Date(now - 7_200_000));
    await tracker.maintain(now + 3_600_001);
    assert.ok(!existsSync(`${log}.2`), 'a rotated file older than max_age is deleted');
  } finally {
    await tracker.close();
  }
});

test('the index is written on a thread of its own; a search sees what was just logged; if the thread dies, indexing goes on here', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tracker-'));
  const log = path.join(dir, 'tracking.log');
  const c = configSchema.parse({ node: { id: 'n1' }, tracking: { path: log } });
  const warnings: string[] = [];
  const tracker = new Tracker(c, () => {}, (msg) => warnings.push(msg));
  const write = (i: number) => appendFileSync(log, `${JSON.stringify({ t: new Date().toISOString(), node: 'n1', event: 'received', queueId: `Q${i}.n1`, sender: `s${i}@x.test` })}\n`);
  try {
    assert.equal(tracker.writer.onThread, true, 'indexing runs on the worker thread');
    for (let i = 0; i < 500; i++) write(i);
    const first = await tracker.search({ limit: 1000 });
    assert.equal(first.messages.length, 500, 'every line logged before the search is found');
    await (tracker.writer as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await new Promise((r) => setImmediate(r));
    assert.equal(tracker.writer.onThread, false);
    assert.match(warnings.join('\n'), /tracking index thread ended; indexing on the main thread/);
    write(500);
    const after = await tracker.search({ queueId: 'Q500.n1' });
    assert.equal(after.messages.length, 1, 'indexed on the main thread once the thread is gone');
  } finally {
    await tracker.close();
  }
});
