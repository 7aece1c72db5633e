/**
 * dsn.test.ts — buildDsn output parsed back with mailparser: structure, headers, status fields,
 * RET=HDRS, delay wording, line limits, and no DSN to the null sender.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser, type Attachment } from 'mailparser';
import { buildDsn, type DsnOptions } from './dsn.ts';
import type { Envelope } from '../spool/types.ts';

const original = Buffer.from('From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: Hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi Bob,\r\nthe body.\r\n');
const envelope: Envelope = {
  queueId: 'N1Q0001',
  nodeId: 'n1',
  sender: 'alice@example.org',
  recipients: [
    { address: 'bob@example.com', original: 'bob@example.com', orcpt: { type: 'rfc822', address: 'bob@example.com' } },
    { address: 'carol@example.net', original: 'team@example.org' },
  ],
  arrivedAt: Date.UTC(2024, 0, 2, 3, 4, 5),
  messageId: '<m1@example.org>',
  client: { address: '192.0.2.10', helo: 'client.example.org' },
  dsn: { envid: 'ENV-42' },
};

function options(extra: Partial<DsnOptions> = {}): DsnOptions {
  return {
    reportingMta: 'mx1.tandem.test',
    envelope,
    original,
    kind: 'failure',
    now: new Date(Date.UTC(2024, 0, 3, 0, 0, 0)),
    recipients: [
      { recipient: envelope.recipients[0], status: '5.1.1', diagnostic: '550 5.1.1 <bob@example.com>: Recipient address rejected', remoteMta: 'mx.example.com[192.0.2.1]:25', lastAttemptAt: Date.UTC(2024, 0, 2, 3, 5, 0) },
      { recipient: envelope.recipients[1], status: '5.1.10', diagnostic: '5.1.10 Domain example.net accepts no mail (null MX record, RFC 7505)', remoteMta: 'example.net' },
    ],
    ...extra,
  };
}

/**
 * The MIME parts of a multipart message as {type, body}. mailparser folds a
 * message/delivery-status part into `text`, so the structure is checked from the raw message.
 */
function rawParts(message: Buffer): Array<{ type: string; body: string }> {
  const raw = message.toString('utf8');
  const boundary = /boundary="([^"]+)"/.exec(raw)![1];
  const [, ...rest] = raw.split(`\r\n--${boundary}`);
  assert.equal(rest.pop(), '--\r\n', 'closing delimiter at the end');
  return rest.map((p) => {
    const [head, ...body] = p.replace(/^\r\n/, '').split('\r\n\r\n');
    return { type: /Content-Type: ([^;\r\n]+)/i.exec(head)![1], body: body.join('\r\n\r\n') };
  });
}

/** mailparser turns a message/rfc822 part into an attachment. */
function part(attachments: Attachment[], type: string): Attachment {
  const found = attachments.find((a) => a.contentType === type);
  assert.ok(found, `a ${type} part among ${attachments.map((a) => a.contentType).join(', ')}`);
  return found;
}

test('failure DSN: headers, three parts, per-recipient status fields, full original', async () => {
  const dsn = buildDsn(options())!;
  assert.equal(dsn.sender, '');
  assert.equal(dsn.recipient, 'alice@example.org');
  const raw = dsn.message.toString('utf8');
  for (const line of raw.split('\r\n')) assert.ok(Buffer.byteLength(line) <= 998);
  assert.ok(!/[^\r]\n/.test(raw), 'CRLF only');

  const parsed = await simpleParser(dsn.message);
  assert.equal(parsed.subject, 'Undelivered Mail Returned to Sender');
  assert.equal(parsed.from?.value[0].address, 'MAILER-DAEMON@mx1.tandem.test');
  assert.equal((Array.isArray(parsed.to) ? parsed.to[0] : parsed.to)?.value[0].address, 'alice@example.org');
  assert.equal(parsed.headers.get('auto-submitted'), 'auto-replied');
  assert.ok(parsed.messageId?.endsWith('@mx1.tandem.test>'));
  assert.ok(parsed.date instanceof Date);
  const contentType = parsed.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(contentType.value, 'multipart/report');
  assert.equal(contentType.params['report-type'], 'delivery-status');

  assert.match(parsed.text ?? '', /could not be delivered/);
  assert.match(parsed.text ?? '', /N1Q0001/);
  assert.match(parsed.text ?? '', /<bob@example\.com>: host mx\.example\.com\[192\.0\.2\.1\]:25 said: 550 5\.1\.1/);
  assert.match(parsed.text ?? '', /<carol@example\.net> \(expanded from <team@example\.org>\)/);

  const parts = rawParts(dsn.message);
  assert.deepEqual(parts.map((p) => p.type), ['text/plain', 'message/delivery-status', 'message/rfc822']);
  const status = parts[1].body;
  assert.match(status, /^Reporting-MTA: dns; mx1\.tandem\.test\r\n/);
  assert.match(status, /\r\nOriginal-Envelope-Id: ENV-42\r\n/);
  assert.match(status, /\r\nArrival-Date: Tue, 02 Jan 2024 03:04:05 \+0000\r\n/);
  const blocks = status.split('\r\n\r\n').filter((b) => b.trim());
  assert.equal(blocks.length, 3, 'one per-message block and two per-recipient blocks');
  assert.match(blocks[1], /Original-Recipient: rfc822; bob@example\.com/);
  assert.match(blocks[1], /Final-Recipient: rfc822; bob@example\.com/);
  assert.match(blocks[1], /Action: failed/);
  assert.match(blocks[1], /Status: 5\.1\.1/);
  assert.match(blocks[1], /Remote-MTA: dns; mx\.example\.com\r\n/);
  assert.match(blocks[1], /Diagnostic-Code: smtp; 550 5\.1\.1 <bob@example\.com>:/);
  assert.match(blocks[1], /Last-Attempt-Date: Tue, 02 Jan 2024 03:05:00 \+0000/);
  assert.doesNotMatch(blocks[2], /Original-Recipient/, 'no ORCPT was given for carol (RFC 3464 §2.3.1)');
  assert.match(blocks[2], /Final-Recipient: rfc822; carol@example\.net/);
  assert.match(blocks[2], /Status: 5\.1\.10/);
  assert.doesNotMatch(blocks[2], /Remote-MTA/);
  assert.match(blocks[2], /Diagnostic-Code: X-Tandem; 5\.1\.10 Domain/);
  assert.doesNotMatch(status, /Will-Retry-Until/);

  const returned = part(parsed.attachments, 'message/rfc822').content.toString();
  assert.match(returned, /Subject: Hello/);
  assert.match(returned, /the body\./);
});

test('RET=HDRS returns only the headers as text/rfc822-headers', async () => {
  const dsn = buildDsn(options({ envelope: { ...envelope, dsn: { ret: 'HDRS' } } }))!;
  assert.deepEqual(rawParts(dsn.message).map((p) => p.type), ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
  const raw = dsn.message.toString();
  assert.match(raw, /Content-Type: text\/rfc822-headers\r\n\r\nFrom: Alice <alice@example\.org>\r\n/);
  assert.match(raw, /Message-ID: <m1@example\.org>\r\n--/);
  assert.doesNotMatch(raw, /the body\./);
  assert.doesNotMatch(raw, /Original-Envelope-Id/);
});

test('a large original is returned as headers only, and the text says so', async () => {
  const big = Buffer.concat([original, Buffer.from('x'.repeat(200) + '\r\n')]);
  const dsn = buildDsn(options({ original: big, returnSizeLimit: 100 }))!;
  const raw = dsn.message.toString();
  assert.match(raw, /text\/rfc822-headers/);
  assert.match(raw, /only its headers are returned/);
});

test('delay DSN: subject, wording, Action delayed, Will-Retry-Until, headers only', async () => {
  const until = Date.UTC(2024, 0, 7, 3, 4, 5);
  const dsn = buildDsn(options({
    kind: 'delay',
    recipients: [{ recipient: envelope.recipients[0], status: '4.4.1', diagnostic: 'connect ECONNREFUSED 192.0.2.1:25', remoteMta: 'mx.example.com[192.0.2.1]:25', willRetryUntil: until }],
  }))!;
  const parsed = await simpleParser(dsn.message);
  assert.equal(parsed.subject, 'Delayed Mail (still being retried)');
  assert.match(parsed.text ?? '', /THIS IS A WARNING ONLY/);
  assert.match(parsed.text ?? '', /keep trying until Sun, 07 Jan 2024 03:04:05 \+0000\. No action is needed/);
  const parts = rawParts(dsn.message);
  assert.deepEqual(parts.map((p) => p.type), ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
  const status = parts[1].body;
  assert.match(status, /Action: delayed/);
  assert.match(status, /Status: 4\.4\.1/);
  assert.match(status, /Diagnostic-Code: X-Tandem; connect ECONNREFUSED/);
  assert.match(status, /Will-Retry-Until: Sun, 07 Jan 2024 03:04:05 \+0000/);
  assert.match(parts[2].body, /^From: Alice/);
});

test('long diagnostics are folded, non-ASCII text is quoted-printable, 8-bit originals are flagged', async () => {
  const long = `550 5.7.1 ${'blocked '.repeat(200)}`;
  const eightBit = Buffer.from('Subject: Grüße\r\n\r\nKörper\r\n', 'utf8');
  const dsn = buildDsn(options({
    original: eightBit,
    recipients: [{ recipient: { address: 'bob@example.com', original: 'bob@example.com' }, status: '5.7.1', diagnostic: `${long} — spam` }],
  }))!;
  for (const line of dsn.message.toString('utf8').split('\r\n')) assert.ok(Buffer.byteLength(line) <= 998);
  assert.equal(dsn.body8bit, true);
  assert.match(dsn.message.toString(), /Content-Transfer-Encoding: quoted-printable/);
  const parsed = await simpleParser(dsn.message);
  assert.match(parsed.text ?? '', /blocked blocked .* — spam/);
  assert.match(part(parsed.attachments, 'message/rfc822').content.toString('utf8'), /Körper/);
});

test('a fixed boundary is used as given', () => {
  const dsn = buildDsn(options({ boundary: 'BOUNDARY-1' }))!;
  assert.match(dsn.message.toString(), /boundary="BOUNDARY-1"/);
  assert.match(dsn.message.toString(), /\r\n--BOUNDARY-1--\r\n$/);
});

test('never a DSN to the null sender', () => {
  assert.equal(buildDsn(options({ envelope: { ...envelope, sender: '' } })), null);
});

test('a UTF-8 address makes a global DSN (RFC 6533): message/global-delivery-status, utf-8 address types in UTF-8, sent with SMTPUTF8', async () => {
  const env: Envelope = {
    ...envelope,
    sender: 'jöran@example.org',
    recipients: [
      { address: '日本@example.com', original: '日本@example.com', orcpt: { type: 'utf-8', address: '日本@example.com' } },
      { address: 'carol@example.net', original: 'carol@example.net', orcpt: { type: 'rfc822', address: 'carol@example.net' } },
    ],
  };
  const utf8Original = Buffer.from('From: jöran@example.org\r\nTo: 日本@example.com\r\nSubject: x\r\n\r\nhej\r\n');
  const dsn = buildDsn(options({
    envelope: env,
    original: utf8Original,
    recipients: [
      { recipient: env.recipients[0], status: '5.1.1', diagnostic: '550 5.1.1 <日本@example.com>: unknown', remoteMta: 'mx.example.com[192.0.2.1]:25' },
      { recipient: env.recipients[1], status: '5.1.1', diagnostic: '550 5.1.1 unknown', remoteMta: 'mx.example.com[192.0.2.1]:25' },
    ],
  }))!;
  assert.equal(dsn.smtputf8, true);
  assert.equal(dsn.body8bit, true);
  assert.equal(dsn.recipient, 'jöran@example.org');
  const raw = dsn.message.toString('utf8');
  assert.ok(Buffer.from(raw, 'utf8').equals(dsn.message), 'valid UTF-8');
  const parts = rawParts(dsn.message);
  assert.deepEqual(parts.map((p) => p.type), ['text/plain', 'message/global-delivery-status', 'message/global']);
  const blocks = parts[1].body.split('\r\n\r\n').filter((b) => b.trim());
  assert.match(blocks[1], /Original-Recipient: utf-8; 日本@example\.com\r\n/);
  assert.match(blocks[1], /Final-Recipient: utf-8; 日本@example\.com\r\n/);
  assert.match(blocks[2], /Original-Recipient: rfc822; carol@example\.net\r\n/, 'ASCII addresses keep the rfc822 type');
  assert.match(blocks[2], /Final-Recipient: rfc822; carol@example\.net\r\n/);
  assert.match(parts[2].body, /To: 日本@example\.com/);
  const headersOnly = buildDsn(options({ envelope: { ...env, dsn: { ret: 'HDRS' } }, original: utf8Original, recipients: [{ recipient: env.recipients[0], status: '5.1.1', diagnostic: 'x' }] }))!;
  assert.deepEqual(rawParts(headersOnly.message).map((p) => p.type), ['text/plain', 'message/global-delivery-status', 'message/global-headers']);
});

test('ASCII addresses only: the plain form, not sent with SMTPUTF8', () => {
  const dsn = buildDsn(options())!;
  assert.equal(dsn.smtputf8, false);
  assert.deepEqual(rawParts(dsn.message).map((p) => p.type), ['text/plain', 'message/delivery-status', 'message/rfc822']);
});

test('DSN fields from the longest allowed ENVID (100) and ORCPT (500), and a 3000-character diagnostic word, stay intact: folded, never cut into a new field', async () => {
  const envid = 'E'.repeat(100);
  const orcpt = `${'o'.repeat(490)}@x.test`; // "rfc822;" + this = 500 characters, the RFC 3461 cap
  const attack = `550 ${'A'.repeat(2000)}\r\nAction: delivered${'B'.repeat(1000)}`;
  const rcpt = { address: 'dave@example.net', original: 'dave@example.net', orcpt: { type: 'rfc822' as const, address: orcpt } };
  const built = buildDsn(options({
    envelope: { ...envelope, recipients: [rcpt], dsn: { envid } },
    recipients: [{ recipient: rcpt, status: '5.0.0', diagnostic: attack, remoteMta: 'mx.example.net[192.0.2.7]:25' }],
  }))!;
  const status = rawParts(built.message).find((p) => p.type === 'message/delivery-status')!.body;
  for (const line of status.split('\r\n')) assert.ok(Buffer.byteLength(line) <= 998, `a line of ${Buffer.byteLength(line)} octets`);
  // unfold (RFC 5322: CRLF before whitespace) and read the fields back
  const fields = status.replace(/\r\n(?=[ \t])/g, '').split('\r\n').filter((l) => l !== '');
  assert.deepEqual(fields.filter((l) => /^Action:/i.test(l)), ['Action: failed'], 'exactly one Action field, the real one');
  assert.ok(fields.includes(`Original-Envelope-Id: ${envid}`), 'ENVID whole on one logical line');
  assert.ok(fields.includes(`Original-Recipient: rfc822; ${orcpt}`), 'ORCPT whole on one logical line');
  const diag = fields.find((l) => l.startsWith('Diagnostic-Code:'))!;
  assert.equal(diag.replace(/\s/g, '').length, `Diagnostic-Code:smtp;${attack}`.replace(/\s/g, '').length, 'no part of the diagnostic lost');
  for (const l of fields) assert.match(l, /^[A-Za-z-]+: /, `every logical line is a field: ${l.slice(0, 60)}`);
});
