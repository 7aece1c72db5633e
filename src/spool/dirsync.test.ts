/**
 * dirsync.test.ts — grouped folder fsync: fewer fsyncs than requests, and never an early resolve.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirSyncer, keptOpenFsync } from './dirsync.ts';
import { fsyncDirectory } from '../util/fsync-dir.ts';

/** A fake fsync whose calls stay pending until the test finishes them. */
function controllableFsync() {
  const calls: Array<{ dir: string; finish: (err?: Error) => void }> = [];
  const fsync = (dir: string) => new Promise<void>((resolve, reject) => {
    calls.push({ dir, finish: (err) => (err ? reject(err) : resolve()) });
  });
  return { calls, fsync };
}

const tick = () => new Promise((r) => setImmediate(r));

test('N concurrent sync calls cause far fewer than N fsyncs, and all resolve', async () => {
  let count = 0;
  const syncer = new DirSyncer(async () => {
    count++;
    await new Promise((r) => setTimeout(r, 5));
  });
  const N = 200;
  await Promise.all(Array.from({ length: N }, () => syncer.sync('/spool/incoming')));
  assert.ok(count <= 2, `expected at most 2 fsyncs for ${N} concurrent requests, got ${count}`);

  // Requests arriving in waves while fsyncs run are still grouped.
  count = 0;
  const waves: Promise<void>[] = [];
  for (let w = 0; w < 10; w++) {
    for (let i = 0; i < 20; i++) waves.push(syncer.sync('/spool/incoming'));
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(waves);
  assert.ok(count < 20, `expected grouping across 200 requests in waves, got ${count} fsyncs`);
});

test('a request made while a fsync runs waits for the next fsync, not the running one', async () => {
  const { calls, fsync } = controllableFsync();
  const syncer = new DirSyncer(fsync);
  const events: string[] = [];
  const a = syncer.sync('/d').then(() => events.push('a'));
  await tick();
  assert.equal(calls.length, 1);
  const b = syncer.sync('/d').then(() => events.push('b'));
  const c = syncer.sync('/d').then(() => events.push('c'));
  calls[0].finish();
  await a;
  await tick();
  assert.deepEqual(events, ['a'], 'b and c resolved on a fsync that started before they asked');
  assert.equal(calls.length, 2, 'the next batch did not start');
  calls[1].finish();
  await Promise.all([b, c]);
  assert.deepEqual(events, ['a', 'b', 'c']);
  assert.equal(calls.length, 2, 'b and c should share one fsync');
});

test('a failed fsync rejects every caller of that batch; the next batch tries again', async () => {
  const { calls, fsync } = controllableFsync();
  const syncer = new DirSyncer(fsync);
  const first = syncer.sync('/d');
  await tick();
  const second = [syncer.sync('/d'), syncer.sync('/d')];
  calls[0].finish();
  await first;
  await tick();
  calls[1].finish(new Error('EIO'));
  for (const p of second) await assert.rejects(p, /EIO/);
  const later = syncer.sync('/d');
  await tick();
  calls[2].finish();
  await later;
});

test('different folders are synced independently', async () => {
  const { calls, fsync } = controllableFsync();
  const syncer = new DirSyncer(fsync);
  const a = syncer.sync('/a');
  const b = syncer.sync('/b');
  await tick();
  assert.deepEqual(calls.map((c) => c.dir).sort(), ['/a', '/b']);
  for (const c of calls) c.finish();
  await Promise.all([a, b]);
});

test('the real fsyncDirectory works on a folder and fails on a missing one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-dirsync-'));
  try {
    await fsyncDirectory(dir);
    await assert.rejects(fsyncDirectory(join(dir, 'missing')), { code: 'ENOENT' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** This process's open descriptors that name `dir`. */
async function descriptorsOf(dir: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    if (await readlink(`/proc/self/fd/${fd}`).catch(() => '') === dir) n++;
  }
  return n;
}

test('keptOpenFsync: one descriptor per busy folder, closed when idle, opened again after a failure', async () => {
  const root = await mkdtemp(join(tmpdir(), 'tandem-dirsync-'));
  const dir = join(root, 'incoming');
  const fsync = keptOpenFsync(50);
  try {
    // the folder does not exist yet: ENOENT, and nothing is kept
    await assert.rejects(fsync(dir), { code: 'ENOENT' });
    await mkdir(dir);
    await Promise.all([fsync(dir), fsync(dir), fsync(dir)]);
    await fsync(dir);
    assert.equal(await descriptorsOf(dir), 1, 'four fsyncs of one folder share one descriptor');
    // idle: the descriptor is closed after about 50 ms (polled; the close is not observable otherwise)
    const deadline = Date.now() + 5000;
    while (await descriptorsOf(dir) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await descriptorsOf(dir), 0, 'an idle folder keeps no descriptor');
    await fsync(dir);
    assert.equal(await descriptorsOf(dir), 1, 'the next fsync opens it again');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
