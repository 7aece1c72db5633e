/**
 * received-header.test.ts — the Received: trace header we add.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { receivedHeader, type ReceivedInfo } from './received-header.ts';

/** Run fn with the process time zone set to tz. */
function inZone<T>(tz: string, fn: () => T): T {
  const saved = process.env.TZ;
  process.env.TZ = tz;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  }
}

const INFO: ReceivedInfo = {
  helo: 'client.example.org',
  clientAddress: '192.0.2.1',
  clientHostname: 'mail.example.org',
  byHostname: 'mx1.example.net',
  queueId: '0ABCDEFGH.1234WXYZ.mx1',
  protocol: 'ESMTPS',
  date: new Date(Date.UTC(2026, 10, 26, 4, 14, 35)),
};

test('Received: names client, HELO, our host, protocol and queue id, folded, with a for clause for one recipient', () => {
  const header = inZone('UTC', () => receivedHeader({ ...INFO, forRecipient: 'bob@example.net' }));
  assert.equal(header,
    'Received: from client.example.org (mail.example.org [192.0.2.1])\r\n'
    + '\tby mx1.example.net (Tandem) with ESMTPS id 0ABCDEFGH.1234WXYZ.mx1\r\n'
    + '\tfor <bob@example.net>;\r\n'
    + '\tThu, 26 Nov 2026 04:14:35 +0000\r\n');
});

test('Received: without a single recipient has no for clause; unknown HELO and reverse name say "unknown"', () => {
  const header = inZone('UTC', () => receivedHeader({ ...INFO, helo: '', clientHostname: undefined, protocol: 'SMTP' }));
  assert.equal(header,
    'Received: from unknown (unknown [192.0.2.1])\r\n'
    + '\tby mx1.example.net (Tandem) with SMTP id 0ABCDEFGH.1234WXYZ.mx1;\r\n'
    + '\tThu, 26 Nov 2026 04:14:35 +0000\r\n');
  assert.doesNotMatch(header, /\bfor\b/);
  for (const line of header.split('\r\n').slice(1, -1)) assert.match(line, /^\t/, 'continuation lines are folded with a tab');
  assert.doesNotMatch(header.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF');
});
