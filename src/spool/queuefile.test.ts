/**
 * queuefile.test.ts — the queue file format: round trip, every kind of damage, torn status tails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeQueueFile, encodeQueueFile, encodeStatusRecords, findAppendOffset, pendingRecipients, QUEUE_FILE_MAGIC,
} from './queuefile.ts';
import type { Envelope } from './types.ts';

function envelope(recipients = 3): Envelope {
  return {
    queueId: '0MI5Z3K2Q.07FQ9X2A.mx1',
    nodeId: 'mx1',
    sender: 'alice@example.org',
    recipients: Array.from({ length: recipients }, (_, i) => ({ address: `r${i}@example.net`, original: `R${i}@example.net` })),
    arrivedAt: 1_700_000_000_000,
    messageId: '<m1@example.org>',
    client: { address: '192.0.2.7', helo: 'client.example.org', user: 'alice' },
    dsn: { ret: 'HDRS', envid: 'abc' },
    smtputf8: true,
  };
}

// Binary content, including bytes that look like the magic and a record header.
const MESSAGE = Buffer.concat([
  Buffer.from('Subject: hi\r\n\r\nbody ünïcode\r\n'),
  QUEUE_FILE_MAGIC,
  Buffer.from([0x5a, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0x80]),
]);

function decodeOk(bytes: Buffer) {
  const r = decodeQueueFile(bytes);
  if (!r.ok) assert.fail(`expected a valid file, got: ${r.reason}`);
  return r;
}

test('encode then decode gives back the envelope and the exact message bytes', () => {
  const r = decodeOk(encodeQueueFile(envelope(), MESSAGE));
  assert.deepEqual(r.envelope, envelope());
  assert.ok(r.message.equals(MESSAGE));
  assert.deepEqual(r.statuses, []);
  assert.equal(r.deferral, undefined);
  assert.deepEqual(r.pending, [0, 1, 2]);
  assert.equal(r.tornTailBytes, 0);
});

test('an empty message round trips', () => {
  const r = decodeOk(encodeQueueFile(envelope(1), Buffer.alloc(0)));
  assert.equal(r.message.length, 0);
});

test('status records: pending excludes delivered/failed/expired, latest deferral wins', () => {
  const file = Buffer.concat([
    encodeQueueFile(envelope(4), MESSAGE),
    encodeStatusRecords([
      { index: 1, type: 'delivered', at: 1, reply: '250 ok', via: 'mx.example.net' },
      { type: 'deferral', at: 2, attempts: 1, nextAttemptAt: 100, lastReply: '451 later' },
    ]),
    encodeStatusRecords([
      { index: 3, type: 'failed', at: 3, reply: '550 no', via: 'mx.example.net', dsnSent: true },
      { type: 'deferral', at: 4, attempts: 2, nextAttemptAt: 200, lastReply: '421 busy', warned: true },
    ]),
  ]);
  const r = decodeOk(file);
  assert.deepEqual(r.pending, [0, 2]);
  assert.deepEqual(r.statuses.map((s) => s.index), [1, 3]);
  assert.equal(r.deferral?.attempts, 2);
  assert.equal(r.deferral?.warned, true);
  assert.deepEqual(pendingRecipients(3, [{ index: 0, type: 'expired', at: 1, reply: 'x', dsnSent: false }]), [1, 2]);
});

test('truncation anywhere before the end of Z is damage', () => {
  const full = encodeQueueFile(envelope(), MESSAGE);
  for (let len = 0; len < full.length; len++) {
    const r = decodeQueueFile(full.subarray(0, len));
    assert.equal(r.ok, false, `truncated to ${len} of ${full.length} bytes was accepted`);
  }
});

test('a flipped byte anywhere in magic/E/M/Z is damage', () => {
  const full = encodeQueueFile(envelope(), MESSAGE);
  for (let i = 0; i < full.length; i++) {
    const damaged = Buffer.from(full);
    damaged[i] ^= 0x01;
    const r = decodeQueueFile(damaged);
    assert.equal(r.ok, false, `flipped byte at ${i} of ${full.length} was accepted`);
  }
});

test('empty file, garbage, wrong record order, missing Z and trailing junk before Z are damage', () => {
  const full = encodeQueueFile(envelope(), MESSAGE);
  const cases: Record<string, Buffer> = {
    empty: Buffer.alloc(0),
    garbage: Buffer.from('From alice Mon Jan 1\nSubject: not a queue file\n'),
    magicOnly: Buffer.from(QUEUE_FILE_MAGIC),
    zeros: Buffer.alloc(4096),
  };
  // Records E and M swapped.
  const eLen = full.readUInt32BE(QUEUE_FILE_MAGIC.length + 1) + 9;
  const eRec = full.subarray(QUEUE_FILE_MAGIC.length, QUEUE_FILE_MAGIC.length + eLen);
  const mStart = QUEUE_FILE_MAGIC.length + eLen;
  const mLen = full.readUInt32BE(mStart + 1) + 9;
  const mRec = full.subarray(mStart, mStart + mLen);
  const zRec = full.subarray(mStart + mLen);
  cases.swapped = Buffer.concat([QUEUE_FILE_MAGIC, mRec, eRec, zRec]);
  cases.noZ = Buffer.concat([QUEUE_FILE_MAGIC, eRec, mRec]);
  cases.noZButStatus = Buffer.concat([QUEUE_FILE_MAGIC, eRec, mRec, encodeStatusRecords([{ type: 'deferral', at: 1, attempts: 1, nextAttemptAt: 2, lastReply: '' }])]);
  for (const [name, bytes] of Object.entries(cases)) {
    const r = decodeQueueFile(bytes);
    assert.equal(r.ok, false, `${name} was accepted`);
    assert.ok(!r.ok && r.reason.length > 0);
  }
});

test('a torn status record after Z is ignored, at every truncation point, and validLength says where it starts', () => {
  const base = Buffer.concat([
    encodeQueueFile(envelope(), MESSAGE),
    encodeStatusRecords([{ index: 0, type: 'delivered', at: 1, reply: '250', via: 'a' }]),
  ]);
  const torn = encodeStatusRecords([{ index: 1, type: 'delivered', at: 2, reply: '250', via: 'b' }]);
  for (let len = 1; len < torn.length; len++) {
    const r = decodeOk(Buffer.concat([base, torn.subarray(0, len)]));
    assert.deepEqual(r.pending, [1, 2], `tail of ${len} bytes counted`);
    assert.equal(r.validLength, base.length);
    assert.equal(r.tornTailBytes, len);
  }
  // Complete but with a bad checksum: also ignored.
  const bad = Buffer.from(torn);
  bad[bad.length - 2] ^= 0xff;
  const r = decodeOk(Buffer.concat([base, bad]));
  assert.deepEqual(r.pending, [1, 2]);
  assert.equal(r.validLength, base.length);
});

test('findAppendOffset finds the end of the last good record without reading message payloads', async () => {
  const big = Buffer.alloc(100_000, 0x61);
  const good = Buffer.concat([
    encodeQueueFile(envelope(), big),
    encodeStatusRecords([{ index: 0, type: 'delivered', at: 1, reply: '250', via: 'a' }]),
  ]);
  const withTail = Buffer.concat([good, Buffer.from('S\0\0')]);
  const reads: Array<[number, number]> = [];
  const readAt = (bytes: Buffer) => async (pos: number, len: number) => {
    reads.push([pos, len]);
    return bytes.subarray(pos, pos + len);
  };
  assert.deepEqual(await findAppendOffset(readAt(withTail), withTail.length), { offset: good.length });
  assert.ok(reads.every(([, len]) => len < 1000), 'the message payload was read');
  const broken = encodeQueueFile(envelope(), MESSAGE).subarray(0, 40);
  assert.ok('reason' in (await findAppendOffset(readAt(broken), broken.length)));
});
