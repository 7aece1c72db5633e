/**
 * reconcile.test.ts — what a returning origin learns from its shadow holder's store
 * (ShadowStore.reconcile), on a real folder: the copies a takeover's secondary finished are
 * "finished", the recipients it delivered come back as statuses, ids never copied are not
 * mentioned, stale copies the origin no longer has are dropped (only old ones), and a new spool
 * identity retires the old copies for the holder to deliver.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, utimesSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeQueueFile, encodeQueueFile } from '../../spool/queuefile.ts';
import { makeQueueIdGenerator } from '../../spool/queueid.ts';
import { Spool } from '../../spool/spool.ts';
import type { Envelope, RecipientStatus } from '../../spool/types.ts';
import { ShadowStore } from './shadow-store.ts';

const nextId = makeQueueIdGenerator('a');

function queueFile(n: number): { queueId: string; bytes: Buffer } {
  const id = nextId();
  const env: Envelope = {
    queueId: id, nodeId: 'a', sender: 'alice@example.test', arrivedAt: Date.now(), messageId: `<${id}@example.test>`,
    recipients: Array.from({ length: n }, (_, i) => ({ address: `r${i}@example.test`, original: `r${i}@example.test` })),
    client: { address: '127.0.0.1', helo: 'client.test' },
  };
  return { queueId: id, bytes: encodeQueueFile(env, Buffer.from(`Subject: ${id}\r\n\r\nhello\r\n`)) };
}
function decodeEnvelope(bytes: Buffer): Envelope {
  const d = decodeQueueFile(bytes);
  if (!d.ok) throw new Error(d.reason);
  return { ...d.envelope, queueId: nextId() };
}
const delivered = (index: number): RecipientStatus => ({ index, type: 'delivered', at: Date.now(), reply: '250 ok', via: 'sink' });

test('reconcile: finished by the secondary, partly delivered, never copied, stale, and a new disk', async () => {
  const store = await ShadowStore.open(mkdtempSync(path.join(os.tmpdir(), 'tandem-reconcile-')));
  const retired: string[] = [];
  store.onRetired = (origin, spoolId) => retired.push(`${origin}/${spoolId}`);
  const spoolId = randomUUID();
  const [done, partly, waiting, stale] = [queueFile(1), queueFile(2), queueFile(1), queueFile(1)];
  for (const m of [done, partly, waiting, stale]) assert.equal(await store.store('a', spoolId, m.queueId, m.bytes), 'stored');
  const dir = await store.markTakeover('a', spoolId);
  // the takeover's secondary (a queue manager over that folder) finishes one and half of another
  const shadow = await Spool.open(dir, { nodeId: 'a' });
  await shadow.remove(done.queueId, 'incoming');
  await shadow.appendStatus(partly.queueId, 'incoming', [delivered(1)]);
  // a copy whose origin lost the message long ago (its discard notice never came)
  const old = (Date.now() - 5 * 60_000) / 1000;
  utimesSync(path.join(dir, 'incoming', stale.queueId), old, old);
  const neverCopied = nextId();

  const answer = await store.reconcile('a', spoolId, [done.queueId, partly.queueId, waiting.queueId, neverCopied]);
  assert.equal(answer.identity, 'current');
  assert.deepEqual(answer.finished, [done.queueId], 'the message the secondary finished');
  assert.deepEqual(answer.held[partly.queueId].map((s) => s.index), [1], 'the recipient the secondary delivered');
  assert.deepEqual(answer.held[waiting.queueId], [], 'still pending, nothing done');
  assert.equal(answer.held[neverCopied], undefined);
  assert.ok(!answer.finished.includes(neverCopied), 'a message never copied is the origin\'s to deliver');
  assert.equal(answer.pruned, 1, 'the stale copy is dropped');
  assert.deepEqual(readdirSync(path.join(dir, 'incoming')).sort(), [partly.queueId, waiting.queueId].sort(), 'copies of messages the origin has, however old, are kept');

  // the origin comes back with a new disk: the old copies are retired, the holder's to deliver
  const fresh = await store.reconcile('a', randomUUID(), []);
  assert.equal(fresh.identity, 'new');
  assert.deepEqual(retired, [`a/${spoolId}`]);
  assert.deepEqual(await store.retiredWithCopies('a'), [spoolId]);
});

test('a message put on hold at the origin is on hold in its copy (a takeover does not deliver it), and released with it', async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'tandem-hold-'));
  const store = await ShadowStore.open(path.join(root, 'shadow'));
  const spoolId = randomUUID();
  // the origin's spool tells its replica of the move; the replica sends it as a notice
  const notices: Array<{ queueId: string; hold?: boolean }> = [];
  const origin = await Spool.open(path.join(root, 'a'), {
    nodeId: 'a',
    replica: { committed: async () => undefined, statuses() {}, removed() {}, held: (queueId, hold) => void notices.push({ queueId, hold }) },
  });
  const m = queueFile(1);
  await store.store('a', spoolId, m.queueId, m.bytes);
  await origin.commit(decodeEnvelope(m.bytes), Buffer.from('Subject: x\r\n\r\nx\r\n'));
  const id = (await origin.list())[0].queueId;
  await origin.move(id, 'incoming', 'hold');
  assert.deepEqual(notices, [{ queueId: id, hold: true }], 'the spool tells its replica of the hold');
  await origin.move(id, 'hold', 'deferred');
  assert.deepEqual(notices.at(-1), { queueId: id, hold: false }, 'and of the release');
  await origin.move(id, 'deferred', 'active');
  assert.equal(notices.length, 2, 'other moves are none of the copy\'s business');

  const folder = store.folder('a', spoolId);
  assert.deepEqual(await store.applyDiscards('a', spoolId, [{ queueId: m.queueId, hold: true }]), { updated: 1, removed: 0, unknown: 0 });
  assert.deepEqual(readdirSync(path.join(folder, 'hold')), [m.queueId], 'the copy is on hold: a secondary over this folder leaves it alone');
  await store.applyDiscards('a', spoolId, [{ queueId: m.queueId, hold: false }]);
  assert.deepEqual(readdirSync(path.join(folder, 'hold')), []);
  assert.deepEqual(readdirSync(path.join(folder, 'incoming')), [m.queueId], 'released: deliverable again');
});
