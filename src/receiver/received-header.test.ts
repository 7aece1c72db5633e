/**
 * received-header.test.ts — the Received: trace header we add, and the header inspections the
 * receiver makes (end of the header section, Message-ID, hop count) on raw message bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countHeader, findHeader, headerBlock, headerEnd, receivedHeader, rfc2822Date, type ReceivedInfo } from './received-header.ts';

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

test('the date is RFC 5322 with the local numeric zone, and parses back to the same instant', () => {
  const d = INFO.date;
  const cases: Array<[string, string]> = [
    ['UTC', 'Thu, 26 Nov 2026 04:14:35 +0000'],
    ['Asia/Kolkata', 'Thu, 26 Nov 2026 09:44:35 +0530'],
    ['America/New_York', 'Wed, 25 Nov 2026 23:14:35 -0500'],
  ];
  for (const [tz, expected] of cases) {
    const text = inZone(tz, () => rfc2822Date(d));
    assert.equal(text, expected, tz);
    assert.equal(Date.parse(text), d.getTime(), `${tz}: ${text}`);
  }
  const stJohns = inZone('America/St_Johns', () => rfc2822Date(new Date(Date.UTC(2026, 0, 5, 2, 0, 0))));
  assert.equal(stJohns, 'Sun, 4 Jan 2026 22:30:00 -0330', 'negative zone with minutes; day not zero-padded');
  assert.match(stJohns, /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/);
});

test('headerEnd finds the empty line after CRLF or LF headers', () => {
  // the offset where the last header line's ending starts: the header section is bytes [0, end)
  assert.equal(headerEnd(Buffer.from('Subject: a\r\nFrom: b\r\n\r\nbody\r\n')), 'Subject: a\r\nFrom: b'.length);
  assert.equal(headerEnd(Buffer.from('Subject: a\nFrom: b\n\nbody\n')), 'Subject: a\nFrom: b'.length);
  // the earlier of the two when a body line has the other ending
  assert.equal(headerEnd(Buffer.from('Subject: a\n\nbody\r\n\r\nmore')), 10);
  assert.equal(headerEnd(Buffer.from('Subject: a\r\n\r\nbody\n\nmore')), 10);
});

test('headerEnd is 0 for a message with no headers and -1 when no empty line is found', () => {
  assert.equal(headerEnd(Buffer.from('\r\nbody only\r\n')), 0);
  assert.equal(headerEnd(Buffer.from('\nbody only\n')), 0);
  assert.equal(headerEnd(Buffer.from('Subject: a\r\nFrom: b\r\n')), -1);
  assert.equal(headerEnd(Buffer.alloc(0)), -1);
});

test('headerBlock is the header section only, or the whole message when it has no empty line', () => {
  assert.equal(headerBlock(Buffer.from('Subject: a\r\nFrom: b\r\n\r\nReceived: in body\r\n')), 'Subject: a\r\nFrom: b');
  assert.equal(headerBlock(Buffer.from('Subject: a\r\n')), 'Subject: a\r\n');
  assert.equal(headerBlock(Buffer.from('\r\nReceived: in body\r\n')), '');
});

test('findHeader is case-insensitive, returns the first value and unfolds folded values', () => {
  const headers = 'Received: from a\r\nmessage-id: <1@example.org>\r\nSubject: a long\r\n subject\r\n\tline\r\nMessage-ID: <2@example.org>\r\nX-Empty:';
  assert.equal(findHeader(headers, 'Message-ID'), '<1@example.org>');
  assert.equal(findHeader(headers, 'SUBJECT'), 'a long subject line');
  assert.equal(findHeader('Subject: lf only\n folded\nFrom: x', 'subject'), 'lf only folded');
  assert.equal(findHeader(headers, 'X-Empty'), '');
  assert.equal(findHeader(headers, 'From'), undefined);
});

test('findHeader matches whole field names only, at the start of a line', () => {
  const headers = 'Resent-Message-ID: <resent@x>\r\nX-Message-ID: <x@x>\r\nComments: see\r\n Message-ID: <folded@x>';
  assert.equal(findHeader(headers, 'Message-ID'), undefined);
  assert.equal(findHeader(headers + '\r\nMessage-ID: <real@x>', 'Message-ID'), '<real@x>');
});

test('countHeader counts every field of that name, in any case, and nothing else', () => {
  const headers = [
    'Received: from a by b', '\tfor <x@y>; date', 'received: from c by d', 'X-Received: elsewhere',
    'Subject: Received: not a field', 'RECEIVED: from e by f',
  ].join('\r\n');
  assert.equal(countHeader(headers, 'Received'), 3);
  assert.equal(countHeader(headers, 'X-Received'), 1);
  assert.equal(countHeader(headers, 'Delivered-To'), 0);
});

test('HeaderCollector finds the end of the headers across chunk boundaries, however small the chunks', async () => {
  const { HeaderCollector } = await import('./received-header.ts');
  const msg = Buffer.from('Subject: a\r\nX-A: b\r\n\r\nbody\r\n');
  for (let size = 1; size <= 5; size++) {
    const c = new HeaderCollector();
    let doneAt = -1;
    for (let i = 0; i < msg.length && doneAt < 0; i += size) if (c.push(msg.subarray(i, i + size))) doneAt = i + size;
    assert.ok(doneAt >= 22 && doneAt < 22 + size, `chunks of ${size}: complete right after the blank line (at ${doneAt})`);
    assert.ok(c.bytes().equals(msg.subarray(0, doneAt)));
  }
  const noHeaders = new HeaderCollector();
  assert.equal(noHeaders.push(Buffer.from('\r\nbody')), true);
  const lf = new HeaderCollector();
  assert.equal(lf.push(Buffer.from('A: b\n')), false);
  assert.equal(lf.push(Buffer.from('\nbody')), true);
});

