/**
 * standby-warmup.test.ts — the standby's rehearsal delivers its one message through the real
 * spool, queue manager and SMTP channel to its own server, and leaves nothing behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { warmDeliveryPath } from './standby-warmup.ts';

test('the warm-up delivers one message end to end and removes its temporary spool', async () => {
  const tmp = await mkdtemp(path.join(tmpdir(), 'warmup-test-'));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmp; // os.tmpdir() follows it: the rehearsal's spool goes here
  try {
    const errors: Error[] = [];
    const delivered = await warmDeliveryPath((err) => errors.push(err));
    assert.deepEqual(errors, []);
    assert.equal(delivered, true, 'the message reached the server and its queue file was removed');
    assert.deepEqual(await readdir(tmp), [], 'no temporary folder left behind');
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    await rm(tmp, { recursive: true, force: true });
  }
});
