/**
 * spool.test.ts — the spool on a real folder: commit, read, status appends, moves, recovery,
 * another process reading the same folder, and commits that fail.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile, open as fsOpen, rename as fsRename, truncate } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CorruptQueueFileError, Spool, parseQueueId, type Envelope, type SpoolOptions } from './index.ts';

let dir: string;
let warnings: Array<{ msg: string; fields: Record<string, unknown> }>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-spool-'));
  warnings = [];
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function openSpool(extra: Partial<SpoolOptions> = {}): Promise<Spool> {
  return Spool.open(dir, { nodeId: 'mx1', warn: (msg, fields) => warnings.push({ msg, fields: fields as Record<string, unknown> }), ...extra });
}

function envelope(queueId: string, recipients = 2): Envelope {
  return {
    queueId,
    nodeId: 'mx1',
    sender: 'alice@example.org',
    recipients: Array.from({ length: recipients }, (_, i) => ({ address: `r${i}@example.net`, original: `r${i}@example.net` })),
    arrivedAt: Date.now(),
    messageId: '<x@example.org>',
    client: { address: '192.0.2.1', helo: 'c.example.org' },
  };
}

const MESSAGE = Buffer.from('Subject: test\r\n\r\nhello\r\n');

async function commitOne(spool: Spool, recipients = 2, message: Buffer = MESSAGE): Promise<string> {
  const id = spool.newQueueId();
  await spool.commit(envelope(id, recipients), message);
  return id;
}

test('open creates every state folder', async () => {
  await openSpool();
  assert.deepEqual((await readdir(dir)).sort(), ['active', 'corrupt', 'deferred', 'hold', 'incoming', 'tmp']);
});

test('an invalid node id is refused at open', async () => {
  await assert.rejects(Spool.open(dir, { nodeId: 'MX/1' }), /node id/);
});

test('queue ids are unique, filename-safe, sorted by time and carry the node id', async () => {
  const spool = await openSpool();
  const ids = Array.from({ length: 20_000 }, () => spool.newQueueId());
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids.slice(0, 100)) {
    assert.match(id, /^[0-9A-Z]{9}\.[0-9A-Z]{8}\.mx1$/);
    assert.equal(parseQueueId(id)?.nodeId, 'mx1');
  }
  const before = Date.now();
  const early = spool.newQueueId();
  await new Promise((r) => setTimeout(r, 5));
  const late = spool.newQueueId();
  assert.ok(early < late, `${early} should sort before ${late}`);
  assert.ok(Math.abs(parseQueueId(early)!.arrivedAt - before) < 1000);
  const other = await Spool.open(dir, { nodeId: 'mx2' });
  assert.ok(other.newQueueId().endsWith('.mx2'));
});

test('commit puts a complete file in incoming/, leaves nothing in tmp/, and read returns it', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool);
  assert.deepEqual(await readdir(join(dir, 'incoming')), [id]);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  const file = await spool.read(id, 'incoming');
  assert.equal(file.envelope.queueId, id);
  assert.ok(file.message.equals(MESSAGE));
  assert.deepEqual(file.pending, [0, 1]);
  assert.equal(file.size, (await stat(join(dir, 'incoming', id))).size);
  assert.equal(await spool.find(id), 'incoming');
});

test('a second Spool on the same folder (another process) reads everything the first committed', async () => {
  const first = await openSpool();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await commitOne(first, 3, Buffer.from(`message ${i}`)));
  await first.appendStatus(ids[0], 'incoming', [{ index: 2, type: 'delivered', at: 1, reply: '250 ok', via: 'mx' }]);
  await first.move(ids[1], 'incoming', 'deferred');

  const survivor = await Spool.open(dir, { nodeId: 'mx2' });
  const { entries, quarantined } = await survivor.recover();
  assert.deepEqual(quarantined, []);
  assert.deepEqual(entries.map((e) => e.queueId).sort(), [...ids].sort());
  for (const [i, id] of ids.entries()) {
    const state = await survivor.find(id);
    const file = await survivor.read(id, state!);
    assert.equal(file.message.toString(), `message ${i}`);
  }
  assert.deepEqual((await survivor.read(ids[0], 'incoming')).pending, [0, 1]);
  assert.equal(await survivor.find(ids[1]), 'deferred');
});

test('appendStatus records outcomes durably; pending and the latest deferral follow', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool, 3);
  await spool.appendStatus(id, 'incoming', [
    { index: 0, type: 'delivered', at: 1, reply: '250 ok', via: 'mx.example.net' },
    { type: 'deferral', at: 2, attempts: 1, nextAttemptAt: 10, lastReply: '451 later' },
  ]);
  await spool.appendStatus(id, 'incoming', [
    { index: 2, type: 'failed', at: 3, reply: '550 no such user', via: 'mx.example.net', dsnSent: false },
    { type: 'deferral', at: 4, attempts: 2, nextAttemptAt: 20, lastReply: '421 busy' },
  ]);
  const file = await spool.read(id, 'incoming');
  assert.deepEqual(file.pending, [1]);
  assert.equal(file.deferral?.attempts, 2);
  assert.equal(file.statuses.length, 2);
  await assert.rejects(spool.appendStatus(id, 'incoming', [{ type: 'bogus' } as never]), /not a status record/);
});

test('a torn status tail (crash mid-append) is ignored, then truncated by the next append', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool, 3);
  const path = join(dir, 'incoming', id);
  await spool.appendStatus(id, 'incoming', [{ index: 0, type: 'delivered', at: 1, reply: '250', via: 'a' }]);
  const goodSize = (await stat(path)).size;
  // A crash half way through writing the next S record.
  await appendFile(path, Buffer.from([0x53, 0, 0, 0, 60, 1, 2, 3, 4, 0x7b, 0x22]));

  const torn = await spool.read(id, 'incoming');
  assert.deepEqual(torn.pending, [1, 2], 'the torn record must count as not done');

  await spool.appendStatus(id, 'incoming', [{ index: 1, type: 'delivered', at: 2, reply: '250', via: 'b' }]);
  const after = await spool.read(id, 'incoming');
  assert.deepEqual(after.pending, [2]);
  assert.deepEqual(after.statuses.map((s) => s.index), [0, 1]);
  assert.ok(warnings.some((w) => /torn/.test(w.msg)), 'the truncation was not reported');
  // The garbage is gone: the file is exactly the good part plus one record.
  const recordSize = (await stat(path)).size - goodSize;
  assert.ok(recordSize > 9 && recordSize < 200, `unexpected growth ${recordSize}`);
  const bytes = await readFile(path);
  assert.equal(bytes.indexOf(Buffer.from([1, 2, 3, 4, 0x7b, 0x22])), -1);
});

test('appendStatus resolves only after the appended record is fdatasynced', async () => {
  // A delivered recipient whose S record is not on disk is delivered again after a crash.
  const steps: string[] = [];
  const spool = await openSpool({
    io: {
      open: async (path, flags, mode) => {
        const handle = await fsOpen(path, flags, mode);
        const { write, sync, datasync, close } = handle;
        handle.write = (async (...args: unknown[]) => {
          steps.push('write');
          return (write as (...a: unknown[]) => unknown).apply(handle, args);
        }) as typeof handle.write;
        handle.sync = async () => { steps.push('sync'); return sync.call(handle); };
        handle.datasync = async () => { steps.push('sync'); return datasync.call(handle); };
        handle.close = async () => { steps.push('close'); return close.call(handle); };
        return handle;
      },
    },
  });
  const id = await commitOne(spool, 2);
  steps.length = 0;
  await spool.appendStatus(id, 'incoming', [{ index: 0, type: 'delivered', at: 1, reply: '250 ok', via: 'mx.example.net' }]);
  steps.push('resolved');
  const lastWrite = steps.lastIndexOf('write');
  assert.ok(lastWrite >= 0, 'the record was not written');
  assert.deepEqual(steps.slice(lastWrite + 1), ['sync', 'close', 'resolved'], `steps: ${steps.join(', ')}`);
  assert.deepEqual((await spool.read(id, 'incoming')).pending, [1]);
});

test('concurrent appends to one file all survive', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool, 30);
  await Promise.all(Array.from({ length: 30 }, (_, i) =>
    spool.appendStatus(id, 'incoming', [{ index: i, type: 'delivered', at: i, reply: '250', via: 'x' }])));
  assert.deepEqual((await spool.read(id, 'incoming')).pending, []);
});

test('appendStatus on a file damaged before Z throws CorruptQueueFileError and leaves it unchanged', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool);
  const path = join(dir, 'incoming', id);
  await truncate(path, 30);
  await assert.rejects(
    spool.appendStatus(id, 'incoming', [{ index: 0, type: 'delivered', at: 1, reply: '250', via: 'a' }]),
    CorruptQueueFileError,
  );
  assert.equal((await stat(path)).size, 30);
});

test('move, list, counts, find and remove', async () => {
  const spool = await openSpool();
  const a = await commitOne(spool);
  const b = await commitOne(spool);
  const c = await commitOne(spool);
  await spool.move(a, 'incoming', 'active');
  await spool.move(a, 'active', 'deferred');
  await spool.move(b, 'incoming', 'hold');
  assert.deepEqual(await spool.counts(), { incoming: 1, active: 0, deferred: 1, hold: 1, corrupt: 0 });
  assert.deepEqual((await spool.list('deferred')).map((e) => e.queueId), [a]);
  const all = await spool.list();
  assert.deepEqual(all.map((e) => [e.queueId, e.state]), [[c, 'incoming'], [a, 'deferred'], [b, 'hold']]);
  assert.ok(all.every((e) => e.size > 0 && e.mtimeMs > 0));
  assert.equal((await spool.read(a, 'deferred')).envelope.queueId, a);
  await spool.remove(a, 'deferred');
  assert.equal(await spool.find(a), undefined);
  await assert.rejects(spool.read(a, 'deferred'), { code: 'ENOENT' });
  await assert.rejects(spool.read('../escape', 'incoming'), /not a valid queue id/);
});

test('move and remove fsync the folders they change', async () => {
  const synced: string[] = [];
  const spool = await openSpool({ fsyncDir: async (d) => { synced.push(d); } });
  const id = await commitOne(spool);
  assert.deepEqual(synced, [join(dir, 'incoming')]);
  synced.length = 0;
  await spool.move(id, 'incoming', 'hold');
  assert.deepEqual(synced.sort(), [join(dir, 'hold'), join(dir, 'incoming')]);
  synced.length = 0;
  await spool.remove(id, 'hold');
  assert.deepEqual(synced, [join(dir, 'hold')]);
});

test('read throws CorruptQueueFileError with queue id, path and reason', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool);
  const path = join(dir, 'incoming', id);
  const bytes = await readFile(path);
  bytes[bytes.length - 20] ^= 0xff;
  await writeFile(path, bytes);
  await assert.rejects(spool.read(id, 'incoming'), (err: unknown) => {
    assert.ok(err instanceof CorruptQueueFileError);
    assert.equal(err.queueId, id);
    assert.equal(err.path, path);
    assert.match(err.reason, /checksum/);
    return true;
  });
});

test('recover quarantines every kind of damage (kept in corrupt/, warned), removes tmp leftovers, returns good entries', async () => {
  const spool = await openSpool();
  const good = [await commitOne(spool), await commitOne(spool)];
  await spool.move(good[1], 'incoming', 'active');
  const full = await readFile(join(dir, 'incoming', good[0]));
  const damaged: Record<string, { state: string; bytes: Buffer }> = {};
  const add = (name: string, state: string, bytes: Buffer | ((id: string) => Buffer)) => {
    const id = spool.newQueueId();
    damaged[id] = { state, bytes: typeof bytes === 'function' ? bytes(id) : bytes };
  };
  add('empty', 'incoming', Buffer.alloc(0));
  add('garbage', 'active', Buffer.from('this is not a queue file at all'));
  add('truncated in E', 'deferred', full.subarray(0, 30));
  add('truncated in M', 'hold', full.subarray(0, full.length - 15));
  add('Z cut', 'incoming', full.subarray(0, full.length - 3));
  const flipped = Buffer.from(full);
  flipped[full.length - 20] ^= 0x40;
  add('flipped byte in M', 'deferred', flipped);
  add('wrong queue id inside', 'incoming', full);
  for (const [id, { state, bytes }] of Object.entries(damaged)) await writeFile(join(dir, state, id), bytes);
  // Torn status tail: NOT damage.
  const tornId = await commitOne(spool);
  await appendFile(join(dir, 'incoming', tornId), Buffer.from('S\0\0'));
  // Embryonic files from a crash during commit.
  await writeFile(join(dir, 'tmp', spool.newQueueId()), full.subarray(0, 50));
  await writeFile(join(dir, 'tmp', spool.newQueueId()), Buffer.alloc(0));

  const result = await (await Spool.open(dir, { nodeId: 'mx2', warn: (msg, fields) => warnings.push({ msg, fields: fields as Record<string, unknown> }) })).recover();

  assert.equal(result.removedTmp, 2);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  assert.deepEqual(result.quarantined.sort(), Object.keys(damaged).sort());
  assert.deepEqual(result.entries.map((e) => e.queueId).sort(), [...good, tornId].sort());
  assert.ok(result.entries.every((e) => e.state !== 'corrupt'));
  for (const [id, { state, bytes }] of Object.entries(damaged)) {
    const kept = await readFile(join(dir, 'corrupt', id));
    assert.ok(kept.equals(bytes), `${id} was altered in quarantine`);
    await assert.rejects(stat(join(dir, state, id)), { code: 'ENOENT' });
    const w = warnings.find((x) => x.fields.queueId === id);
    assert.ok(w, `no warning for ${id}`);
    assert.equal(w.fields.from, state);
    assert.ok(typeof w.fields.reason === 'string' && w.fields.reason.length > 0);
  }
  assert.equal((await spool.counts()).corrupt, Object.keys(damaged).length);
});

test('quarantine moves a file to corrupt/ and warns with the reason', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool);
  await spool.quarantine(id, 'incoming', 'operator says so');
  assert.equal(await spool.find(id), 'corrupt');
  assert.deepEqual(warnings.map((w) => w.fields), [{ queueId: id, from: 'incoming', reason: 'operator says so', path: join(dir, 'corrupt', id) }]);
});

test('recover leaves stray files alone and warns about them', async () => {
  const spool = await openSpool();
  await writeFile(join(dir, 'incoming', 'name with spaces'), 'x');
  const result = await spool.recover();
  assert.deepEqual(result.entries, []);
  assert.ok(await stat(join(dir, 'incoming', 'name with spaces')));
  assert.ok(warnings.some((w) => /unexpected file/.test(w.msg)));
});

test('a commit whose write fails throws and leaves nothing in incoming/ or tmp/', async () => {
  const spool = await openSpool({
    io: {
      open: async (path, flags, mode) => {
        const handle = await fsOpen(path, flags, mode);
        handle.write = (async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        }) as typeof handle.write;
        return handle;
      },
    },
  });
  await assert.rejects(commitOne(spool), { code: 'ENOSPC' });
  assert.deepEqual(await readdir(join(dir, 'incoming')), []);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
});

test('a commit whose rename or folder fsync fails throws and leaves nothing behind', async () => {
  const failingRename = await openSpool({ io: { rename: async () => { throw Object.assign(new Error('EIO'), { code: 'EIO' }); } } });
  await assert.rejects(commitOne(failingRename), { code: 'EIO' });
  const failingFsync = await openSpool({ fsyncDir: async () => { throw Object.assign(new Error('EIO'), { code: 'EIO' }); } });
  await assert.rejects(commitOne(failingFsync), { code: 'EIO' });
  assert.deepEqual(await readdir(join(dir, 'incoming')), []);
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
});

test('commit follows the protocol: write, fsync file, rename into incoming/, fsync incoming/, then resolve', async () => {
  const steps: string[] = [];
  const spool = await openSpool({
    fsyncDir: async (d) => { steps.push(`fsyncDir ${d.slice(dir.length + 1)}`); },
    io: {
      open: async (path, flags, mode) => {
        const handle = await fsOpen(path, flags, mode);
        const { write, sync } = handle;
        handle.write = (async (...args: unknown[]) => {
          steps.push('write');
          return (write as (...a: unknown[]) => unknown).apply(handle, args);
        }) as typeof handle.write;
        handle.sync = async () => {
          steps.push('fsync file');
          return sync.call(handle);
        };
        return handle;
      },
      rename: async (from, to) => {
        steps.push(`rename ${from.slice(dir.length + 1)} -> ${to.slice(dir.length + 1)}`);
        return fsRename(from, to);
      },
    },
  });
  const id = await commitOne(spool);
  steps.push('resolved');
  assert.deepEqual(steps.filter((s, i) => s !== 'write' || steps[i - 1] !== 'write'), [
    'write', 'fsync file', `rename tmp/${id} -> incoming/${id}`, 'fsyncDir incoming', 'resolved',
  ]);
});

test('the commit runs `beside` (the received line) once the file is named in incoming/, alongside the folder fsync, and resolves only when both are done', async () => {
  const steps: string[] = [];
  let finishFsync!: () => void;
  let finishBeside!: () => void;
  const spool = await openSpool({
    fsyncDir: (d) => new Promise<void>((resolve) => {
      steps.push(`fsyncDir ${d.slice(dir.length + 1)} started`);
      finishFsync = () => { steps.push('fsyncDir done'); resolve(); };
    }),
    io: { rename: async (from, to) => { steps.push('rename'); return fsRename(from, to); } },
  });
  const id = spool.newQueueId();
  const incoming = spool.beginMessage(id);
  await incoming.write(MESSAGE);
  let resolved = false;
  const committing = incoming.commit(envelope(id, 1), () => new Promise<void>((resolve) => {
    steps.push(`beside started (${existsSync(join(dir, 'incoming', id)) ? 'file named' : 'no file'})`);
    finishBeside = () => { steps.push('beside done'); resolve(); };
  })).then(() => { resolved = true; });
  const deadline = Date.now() + 5000;
  while ((!finishFsync || !finishBeside) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  assert.deepEqual(steps, ['rename', 'beside started (file named)', 'fsyncDir incoming started'], 'both under way at once');
  finishFsync();
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r)); // let the commit go on as far as it can
  assert.equal(resolved, false, 'not durable until the line is too');
  finishBeside();
  await committing;
  assert.equal(resolved, true);
});

test('commit refuses to overwrite a temp file it did not create, and does not delete it', async () => {
  const spool = await openSpool();
  const id = spool.newQueueId();
  await writeFile(join(dir, 'tmp', id), 'someone else');
  await assert.rejects(spool.commit(envelope(id), MESSAGE), { code: 'EEXIST' });
  assert.equal(await readFile(join(dir, 'tmp', id), 'utf8'), 'someone else');
});

test('concurrent commits share folder fsyncs and all become readable', async () => {
  let fsyncs = 0;
  const spool = await openSpool({
    fsyncDir: async () => {
      fsyncs++;
      await new Promise((r) => setTimeout(r, 2));
    },
  });
  const ids = await Promise.all(Array.from({ length: 50 }, () => commitOne(spool)));
  assert.ok(fsyncs < 50, `expected grouped folder fsyncs, got ${fsyncs} for 50 commits`);
  assert.equal((await spool.list('incoming')).length, 50);
  for (const id of ids) assert.equal((await spool.read(id, 'incoming')).envelope.queueId, id);
});

test('a large message is written as it arrives and reads back byte for byte', async () => {
  const spool = await openSpool();
  const id = spool.newQueueId();
  const incoming = spool.beginMessage(id);
  const chunks = Array.from({ length: 300 }, (_, i) => Buffer.alloc(4096, i % 251));
  for (let i = 0; i < 100; i++) await incoming.write(chunks[i]);
  // past the in-memory threshold the temporary file already exists, before the commit
  assert.deepEqual(await readdir(join(dir, 'tmp')), [id]);
  for (let i = 100; i < chunks.length; i++) await incoming.write(chunks[i]);
  const held = await incoming.commit(envelope(id));
  assert.equal(held, undefined, 'a large message is not handed back in memory');
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  const qf = await spool.read(id, 'incoming');
  assert.ok(qf.message.equals(Buffer.concat(chunks)));
  assert.equal(qf.envelope.queueId, id);
});

test('a small message is committed with one write and handed back; abort leaves nothing behind', async () => {
  const spool = await openSpool();
  const id = spool.newQueueId();
  const incoming = spool.beginMessage(id);
  await incoming.write(MESSAGE);
  const held = await incoming.commit(envelope(id));
  assert.ok(held?.equals(MESSAGE));
  const big = spool.beginMessage(spool.newQueueId());
  for (let i = 0; i < 100; i++) await big.write(Buffer.alloc(4096));
  assert.equal((await readdir(join(dir, 'tmp'))).length, 1);
  await big.abort();
  assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  assert.deepEqual(await readdir(join(dir, 'incoming')), [id]);
});

test('readInfo gives envelope and recipient status without the message, and spots a damaged envelope', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool, 3, Buffer.alloc(500_000, 0x61));
  await spool.appendStatus(id, 'incoming', [{ index: 1, type: 'delivered', at: 1, reply: '250 ok', via: 'x' }]);
  const info = await spool.readInfo(id, 'incoming');
  assert.equal(info.envelope.queueId, id);
  assert.deepEqual(info.pending, [0, 2]);
  assert.equal('message' in info, false);
  // flip a byte inside the envelope record (it follows the 500 kB message)
  const file = join(dir, 'incoming', id);
  const bytes = await readFile(file);
  bytes[9 + 9 + 500_000 + 9 + 5] ^= 0xff;
  await writeFile(file, bytes);
  await assert.rejects(spool.readInfo(id, 'incoming'), CorruptQueueFileError);
});

test('readRaw finds a message while it moves between folders (a retry: deferred → active → deferred), and says undefined once it is removed', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool);
  await spool.move(id, 'incoming', 'deferred');
  for (let i = 0; i < 100; i++) {
    const [there] = await Promise.all([spool.readRaw(id), spool.move(id, 'deferred', 'active').then(() => spool.move(id, 'active', 'deferred'))]);
    assert.ok(there && there.length > MESSAGE.length, `round ${i}: a moving message is not "gone"`);
  }
  await spool.remove(id, 'deferred');
  assert.equal(await spool.readRaw(id), undefined);
});

/** A message of about `size` bytes with CRLF line ends. */
function bigMessage(size: number): Buffer {
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789 line of a large message\r\n';
  return Buffer.from(`Subject: big\r\nX-Test: 1\r\n\r\n${line.repeat(Math.ceil(size / line.length))}`);
}

test('readForDelivery streams a large message from its file, checked, with its header section at hand', async () => {
  const spool = await openSpool();
  const message = bigMessage(3 * 1024 * 1024);
  const id = await commitOne(spool, 2, message);
  const qf = await spool.readForDelivery(id, 'incoming');
  assert.equal(qf.message.whole, undefined, 'a large message is not read whole');
  assert.equal(qf.message.size, message.length);
  assert.equal(qf.message.head.toString(), 'Subject: big\r\nX-Test: 1\r\n\r\n');
  assert.deepEqual(qf.pending, [0, 1]);
  const chunks: Buffer[] = [];
  for await (const c of qf.message.stream()) chunks.push(c as Buffer);
  assert.ok(chunks.length > 1, 'read in chunks');
  assert.ok(Buffer.concat(chunks).equals(message), 'the stream gives the message byte for byte');
  // a second stream (a retry on another connection) reads it again
  let again = 0;
  for await (const c of qf.message.stream()) again += (c as Buffer).length;
  assert.equal(again, message.length);
  // a small message is read whole, as before
  const small = await commitOne(spool);
  assert.ok((await spool.readForDelivery(small, 'incoming')).message.whole?.equals(MESSAGE));
});

test('readForDelivery finds a flipped byte in a large message before anything is sent', async () => {
  const spool = await openSpool();
  const id = await commitOne(spool, 1, bigMessage(1024 * 1024));
  const file = join(dir, 'incoming', id);
  const bytes = await readFile(file);
  bytes[700_000] ^= 0x01;
  await writeFile(file, bytes);
  await assert.rejects(spool.readForDelivery(id, 'incoming'), (err: unknown) => err instanceof CorruptQueueFileError && /record M has a bad checksum/.test(err.reason));
});

test('select picks the earliest due files without reading them, and leaves the rest on disk', async () => {
  const spool = await openSpool();
  const now = Date.now();
  const due = new Map<string, number>();
  for (let i = 0; i < 12; i++) {
    const id = await commitOne(spool, 1);
    await spool.move(id, 'incoming', 'deferred');
    const at = now + (i % 2 ? 1 : -1) * (i + 1) * 60_000; // half due, half later
    await spool.setDueTime(id, at);
    due.set(id, at);
  }
  const fresh = await commitOne(spool, 1);
  const known = [...due.keys()][0]; // in memory already: not chosen again
  const { chosen, leftOut, nextDue } = await spool.select({ states: ['incoming', 'deferred'], room: 6, known: (id) => id === known, dueBy: Date.now() });
  const dueNow = [...due].filter(([id, at]) => id !== known && at <= now).sort((a, b) => a[1] - b[1]).map(([id]) => id);
  assert.equal(dueNow.length, 5);
  assert.deepEqual(chosen.map((f) => f.queueId), [...dueNow, fresh], 'earliest due first: the deferred ones due, then the new message');
  assert.deepEqual(leftOut, { deferred: 6 }, 'those not due yet stay on disk');
  assert.equal(nextDue, now + 2 * 60_000, 'the earliest due time left out');
  const { chosen: fewer, leftOut: more } = await spool.select({ states: ['incoming', 'deferred'], room: 2, known: () => false });
  assert.deepEqual(fewer.map((f) => f.queueId), dueNow.slice(0, 2), 'room for two: the two earliest');
  assert.deepEqual(more, { deferred: 10, incoming: 1 });
});

test('select with found: files are handed over in batches as listed while they fit the room; past it, the rest by due time', async () => {
  const spool = await openSpool();
  const ids: string[] = [];
  for (let i = 0; i < 70; i++) ids.push(await commitOne(spool, 1));
  const handed: string[][] = [];
  const found = async (files: Array<{ queueId: string }>) => { handed.push(files.map((f) => f.queueId)); };
  const all = await spool.select({ states: ['incoming'], room: 100, known: () => false, found });
  assert.ok(handed.length >= 2, `handed over in batches as the folder is listed (${handed.length})`);
  assert.deepEqual(handed.flat().sort(), [...ids].sort(), 'every file handed over once');
  assert.deepEqual(all.chosen, [], 'nothing left to choose');
  assert.deepEqual(all.leftOut, {});
  handed.length = 0;
  const some = await spool.select({ states: ['incoming'], room: 66, known: () => false, found });
  const early = handed.flat();
  assert.equal(early.length, 64, 'the first batch fitted and went at once');
  assert.equal(some.chosen.length, 2, 'the rest of the room is filled by the choice by due time');
  assert.deepEqual(some.leftOut, { incoming: 4 });
  assert.equal(new Set([...early, ...some.chosen.map((f) => f.queueId)]).size, 66, 'no file both handed over and chosen');
});

test('a small queue file is read with one read(2) for its metadata and one open for a delivery', async () => {
  let opens = 0;
  let reads = 0;
  const spool = await openSpool({
    io: {
      open: async (path, flags, mode) => {
        opens++;
        const handle = await fsOpen(path, flags, mode);
        const read = handle.read.bind(handle);
        handle.read = ((...args: Parameters<typeof handle.read>) => { reads++; return read(...args); }) as typeof handle.read;
        return handle;
      },
    },
  });
  const id = await commitOne(spool, 3);
  await spool.appendStatus(id, 'incoming', [{ index: 0, type: 'delivered', at: Date.now(), reply: '250 ok', via: 'x' }]);
  await spool.appendStatus(id, 'incoming', [{ type: 'deferral', at: Date.now(), attempts: 1, nextAttemptAt: Date.now() + 1000, lastReply: '451 later' }]);
  opens = 0;
  reads = 0;
  const info = await spool.readInfo(id, 'incoming');
  assert.deepEqual(info.pending, [1, 2]);
  assert.equal(info.deferral?.lastReply, '451 later');
  assert.deepEqual({ opens, reads }, { opens: 1, reads: 1 }, 'envelope and status records from one read');
  opens = 0;
  reads = 0;
  const qf = await spool.readForDelivery(id, 'incoming');
  assert.deepEqual(qf.pending, [1, 2]);
  assert.equal(qf.message.whole?.toString(), MESSAGE.toString());
  assert.equal(opens, 1, 'the file is opened once for a delivery');
});
