/**
 * Unit tests of util/message-headers.ts: dates, where the headers end, field lookups, and the
 * chunk-by-chunk header collector.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bodyStart, countHeader, findHeader, headerBlock, headerEnd, HeaderCollector, rfc5322Date } from './message-headers.ts';

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

test('the date is RFC 5322 with the local numeric zone, and parses back to the same instant', () => {
  const d = new Date(Date.UTC(2026, 10, 26, 4, 14, 35));
  const cases: Array<[string, string]> = [
    ['UTC', 'Thu, 26 Nov 2026 04:14:35 +0000'],
    ['Asia/Kolkata', 'Thu, 26 Nov 2026 09:44:35 +0530'],
    ['America/New_York', 'Wed, 25 Nov 2026 23:14:35 -0500'],
  ];
  for (const [tz, expected] of cases) {
    const text = inZone(tz, () => rfc5322Date(d));
    assert.equal(text, expected, tz);
    assert.equal(Date.parse(text), d.getTime(), `${tz}: ${text}`);
  }
  const stJohns = inZone('America/St_Johns', () => rfc5322Date(new Date(Date.UTC(2026, 0, 5, 2, 0, 0))));
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


test('bodyStart is just after the empty line, for CRLF, bare LF and no headers', () => {
  assert.equal(bodyStart(Buffer.from('A: b\r\n\r\nbody')), 'A: b\r\n\r\n'.length);
  assert.equal(bodyStart(Buffer.from('A: b\n\nbody')), 'A: b\n\n'.length);
  assert.equal(bodyStart(Buffer.from('\r\nbody')), 2);
  assert.equal(bodyStart(Buffer.from('A: b\r\nno empty line')), 'A: b\r\nno empty line'.length);
});
