/**
 * queue-listing.test.ts — what `tandem queue list` and `show` report, read from a real spool
 * in a temp folder: senders, pending/recipient counts, deferral info, damaged files.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Spool, type Envelope } from '../spool/index.ts';
import { listQueue, showQueued } from './queue-listing.ts';

let dir: string;
let spool: Spool;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-listing-'));
  spool = await Spool.open(dir, { nodeId: 'mx1' });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ARRIVED = Date.UTC(2026, 0, 2, 3, 4, 5);
const MESSAGE = Buffer.from('Subject: quarterly report\r\nMessage-ID: <r@example.org>\r\n\r\nbody text\r\n\r\nsecond paragraph\r\n');

async function commit(sender: string, recipients: number, message = MESSAGE): Promise<string> {
  const queueId = spool.newQueueId();
  const env: Envelope = {
    queueId, nodeId: 'mx1', sender, arrivedAt: ARRIVED, messageId: '<r@example.org>',
    recipients: Array.from({ length: recipients }, (_, i) => ({ address: `r${i}@example.net`, original: `r${i}@example.net` })),
    client: { address: '192.0.2.1', helo: 'client.example.org' },
  };
  await spool.commit(env, message);
  return queueId;
}

test('an empty queue lists no rows', async () => {
  assert.deepEqual(await listQueue(spool), { rows: [], total: 0 });
});

test('listQueue shows state, size, sender, pending/recipients and the deferral of each message', async () => {
  const fresh = await commit('alice@example.org', 2);
  const deferred = await commit('', 3);
  await spool.appendStatus(deferred, 'incoming', [
    { index: 1, type: 'delivered', at: ARRIVED + 1000, reply: '250 2.0.0 ok', via: 'mx.example.net' },
    { type: 'deferral', at: ARRIVED + 2000, attempts: 1, nextAttemptAt: ARRIVED + 302_000, lastReply: '451 4.7.1 greylisted' },
  ]);
  await spool.move(deferred, 'incoming', 'deferred');

  const { rows, total } = await listQueue(spool);
  assert.equal(total, 2);
  assert.deepEqual(rows, [
    { queueId: fresh, state: 'incoming', size: (await stat(join(dir, 'incoming', fresh))).size, arrivedAt: ARRIVED, sender: 'alice@example.org', recipients: 2, pending: 2 },
    {
      queueId: deferred, state: 'deferred', size: (await stat(join(dir, 'deferred', deferred))).size, arrivedAt: ARRIVED, sender: '',
      recipients: 3, pending: 2, nextAttemptAt: ARRIVED + 302_000, lastReply: '451 4.7.1 greylisted',
    },
  ]);
});

test('damaged files are listed with an error instead of failing the listing', async () => {
  const good = await commit('alice@example.org', 1);
  const damaged = await commit('bob@example.org', 1);
  await truncate(join(dir, 'incoming', damaged), 20); // not yet found by recovery
  const quarantined = spool.newQueueId();
  await writeFile(join(dir, 'corrupt', quarantined), 'not a queue file');

  const { rows, total } = await listQueue(spool);
  assert.equal(total, 3);
  const byId = new Map(rows.map((r) => [r.queueId, r]));
  assert.equal(byId.get(good)?.error, undefined);
  assert.equal(byId.get(good)?.sender, 'alice@example.org');
  const d = byId.get(damaged)!;
  assert.equal(d.state, 'incoming');
  assert.equal(d.size, 20);
  assert.match(d.error ?? '', /damaged/);
  assert.equal(d.sender, undefined);
  assert.deepEqual(byId.get(quarantined), {
    queueId: quarantined, state: 'corrupt', size: 16, error: 'damaged queue file (kept in corrupt/)',
  });
});

test('listQueue reads at most `limit` files but reports the total', async () => {
  for (let i = 0; i < 4; i++) await commit(`s${i}@example.org`, 1);
  const { rows, total } = await listQueue(spool, 2);
  assert.equal(total, 4);
  assert.equal(rows.length, 2);
  assert.ok(rows.every((r) => r.sender?.endsWith('@example.org') && r.error === undefined));
});

test('showQueued returns the envelope, per-recipient statuses, deferral and the header section only', async () => {
  const id = await commit('alice@example.org', 2);
  await spool.appendStatus(id, 'incoming', [
    { index: 0, type: 'failed', at: ARRIVED + 1000, reply: '550 5.1.1 no such user', via: 'mx.example.net', dsnSent: true },
    { type: 'deferral', at: ARRIVED + 2000, attempts: 2, nextAttemptAt: ARRIVED + 600_000, lastReply: '421 try later' },
  ]);
  await spool.move(id, 'incoming', 'hold');

  const shown = await showQueued(spool, id);
  assert.ok(shown);
  assert.equal(shown.queueId, id);
  assert.equal(shown.state, 'hold');
  assert.equal(shown.envelope.sender, 'alice@example.org');
  assert.deepEqual(shown.envelope.recipients.map((r) => r.address), ['r0@example.net', 'r1@example.net']);
  assert.deepEqual(shown.envelope.client, { address: '192.0.2.1', helo: 'client.example.org' });
  assert.deepEqual(shown.statuses, [
    { index: 0, type: 'failed', at: ARRIVED + 1000, reply: '550 5.1.1 no such user', via: 'mx.example.net', dsnSent: true },
  ]);
  assert.deepEqual(shown.pending, [1]);
  assert.equal(shown.deferral?.lastReply, '421 try later');
  assert.equal(shown.headers, 'Subject: quarterly report\r\nMessage-ID: <r@example.org>');
  assert.equal('message' in shown, false, 'the body is not returned');
  assert.equal(shown.size, (await stat(join(dir, 'hold', id))).size);
});

test('showQueued of a message with LF line endings still shows only the headers', async () => {
  const id = await commit('alice@example.org', 1, Buffer.from('Subject: lf\nFrom: a\n\nbody\n'));
  assert.equal((await showQueued(spool, id))?.headers, 'Subject: lf\nFrom: a');
});

test('showQueued of an unknown queue id is undefined', async () => {
  await commit('alice@example.org', 1);
  assert.equal(await showQueued(spool, spool.newQueueId()), undefined);
});

test('showQueued of a damaged file says it is damaged rather than "no such message"', async () => {
  const id = spool.newQueueId();
  await writeFile(join(dir, 'corrupt', id), 'not a queue file');
  await assert.rejects(showQueued(spool, id), new RegExp(`queue file .*${id.replace(/\./g, '\\.')} is damaged`));
});
