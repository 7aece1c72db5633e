/**
 * lock.test.ts — the spool's single-writer lock: held, stale (dead pid), other host, release.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpoolLockedError, acquireSpoolLock, readSpoolLock } from './lock.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

test('a second acquire throws SpoolLockedError while the lock is held; after release it succeeds', async () => {
  const lock = await acquireSpoolLock(dir);
  const info = await readSpoolLock(dir);
  assert.equal(info?.pid, process.pid);
  assert.equal(info?.hostname, hostname());
  await assert.rejects(acquireSpoolLock(dir), (err: unknown) => {
    assert.ok(err instanceof SpoolLockedError);
    assert.equal(err.pid, process.pid);
    assert.equal(err.hostname, hostname());
    return true;
  });
  await lock.release();
  assert.equal(await readSpoolLock(dir), undefined);
  const again = await acquireSpoolLock(dir);
  await again.release();
  assert.deepEqual(await readdir(dir), [], 'temp files were left behind');
});

test('a stale lock (same host, dead pid) is taken over', async () => {
  const pid = await deadPid();
  await writeFile(join(dir, 'lock'), JSON.stringify({ pid, hostname: hostname(), startedAt: 1 }));
  const lock = await acquireSpoolLock(dir);
  assert.equal((await readSpoolLock(dir))?.pid, process.pid);
  await lock.release();
});

test('a lock from another host is respected unless forced', async () => {
  await writeFile(join(dir, 'lock'), JSON.stringify({ pid: 1, hostname: 'other-node.example', startedAt: 1 }));
  await assert.rejects(acquireSpoolLock(dir), (err: unknown) => err instanceof SpoolLockedError && err.hostname === 'other-node.example');
  const lock = await acquireSpoolLock(dir, { force: true });
  assert.equal((await readSpoolLock(dir))?.hostname, hostname());
  await lock.release();
});

test('release does not remove a lock that is no longer ours', async () => {
  const lock = await acquireSpoolLock(dir);
  const replacement = { pid: 1, hostname: 'other-node.example', startedAt: 2 };
  await writeFile(join(dir, 'lock'), JSON.stringify(replacement));
  await lock.release();
  assert.deepEqual(await readSpoolLock(dir), replacement);
});

test('an unreadable lock file is reported with what to do, not replaced', async () => {
  await writeFile(join(dir, 'lock'), 'garbage');
  await assert.rejects(acquireSpoolLock(dir), /unreadable.*delete the file/);
  await assert.rejects(readSpoolLock(dir), /unreadable/);
});
