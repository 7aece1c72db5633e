/**
 * Unit tests of the SMTP receiver with a fake router and spool (real smtp-server, real
 * nodemailer client over loopback): policy replies and the "250 only after commit" rule.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { SmtpReceiver, type ReceiverDeps, type AcceptState } from './smtp-receiver.ts';
import { configSchema } from '../config/schema.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { TempLookupError } from '../util/errors.ts';
import { RawSmtpClient } from '../../test/harness/raw-smtp.ts';
import type { Envelope } from '../spool/types.ts';
import type { RecipientResolution, Router } from '../router/types.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-rcv-'));
const committed: Array<{ env: Envelope; msg: Buffer }> = [];
let commitHook: ((beside?: () => Promise<void>) => Promise<void>) | undefined;
let n = 0;

const router: Router = {
  async resolveRecipient(a: string): Promise<RecipientResolution> {
    if (a.startsWith('down@')) throw new TempLookupError('directory unreachable');
    if (a.endsWith('@maybe-ours.test')) return { type: 'relay', addresses: [a], authorizedOnly: true, uncertain: true };
    if (a.endsWith('@local.test')) return a.startsWith('nobody@') ? { type: 'unknown-user' } : a.startsWith('list@') ? { type: 'local', addresses: ['x@local.test', 'y@local.test'] } : { type: 'local', addresses: [a] };
    return { type: 'relay', addresses: [a], authorizedOnly: true };
  },
  async routeAddress() { return { type: 'maildir', path: '/nowhere' }; },
  async reload() {},
  health() { return undefined; },
  async close() {},
};

function startReceiver(relayClient: boolean, overrides: Record<string, unknown> = {}, acceptState: () => AcceptState = () => ({ type: 'accepting' }), trackingPath = path.join(dir, `track-${n}.log`)) {
  const config = configSchema.parse({ node: { id: 'a', hostname: 'mx.test' }, smtp: { listen: '127.0.0.1:0', max_message_size: '10KiB', max_recipients: 3, ...overrides } });
  const deps: ReceiverDeps = {
    config, router,
    beginMessage: () => {
      const chunks: Buffer[] = [];
      return {
        get size() { return chunks.reduce((n, c) => n + c.length, 0); },
        async write(c: Buffer) { chunks.push(c); },
        async commit(env: Envelope, beside?: () => Promise<void>) {
          if (commitHook) await commitHook(beside);
          const msg = Buffer.concat(chunks);
          committed.push({ env, msg });
          return msg;
        },
        async abort() { chunks.length = 0; },
      };
    },
    newQueueId: () => `Q${++n}.a`,
    tracking: new TrackingLog(trackingPath, 'a'),
    logger: pino({ level: 'silent' }),
    isRelayClient: () => relayClient,
    acceptState,
    onQueued: () => {},
  };
  const r = new SmtpReceiver(deps);
  after(() => r.close());
  return r;
}

/** Send one message; resolve with the final reply or the error's response. */
async function send(port: number, from: string, to: string[], body: string): Promise<{ ok: boolean; response: string; rejected?: string[] }> {
  const conn = new SMTPConnection({ host: '127.0.0.1', port, ignoreTLS: true, connectionTimeout: 5000 } as any);
  await new Promise<void>((res, rej) => conn.connect((err?: Error) => (err ? rej(err) : res())));
  try {
    return await new Promise((resolve) => {
      conn.send({ from, to }, body, (err: any, info: any) => {
        if (err) resolve({ ok: false, response: String(err.response ?? err.message), rejected: err.rejected });
        else resolve({ ok: true, response: info.response, rejected: info.rejected });
      });
    });
  } finally {
    conn.quit();
  }
}

const msg = 'Subject: hi\r\nMessage-ID: <m1@x>\r\n\r\nhello\r\n';

test('accepts mail for a known local user and commits it with a Received: header', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  const res = await send(port, 's@remote.test', ['u@local.test'], msg);
  assert.equal(res.ok, true, res.response);
  assert.match(res.response, /^250 2\.0\.0 Ok: queued as Q\d+\.a/);
  const c = committed.at(-1)!;
  assert.equal(c.env.recipients[0].address, 'u@local.test');
  assert.match(c.msg.toString(), /^Received: from .*\s+by mx\.test \(Tandem\) with E?SMTP id Q\d+\.a/s);
  assert.equal(c.env.messageId, '<m1@x>');
});

test('unknown local user gets 550 5.1.1 at RCPT, relay to a foreign domain is refused with 554 5.7.1', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  const a = await send(port, 's@remote.test', ['nobody@local.test'], msg);
  assert.equal(a.ok, false);
  assert.match(a.response, /^550 5\.1\.1 /);
  const b = await send(port, 's@remote.test', ['someone@elsewhere.test'], msg);
  assert.match(b.response, /^554 5\.7\.1 .*Relay access denied/);
});

test('relay networks may relay; a failing lookup gives 451, never 5xx', async () => {
  const r = startReceiver(true);
  const { port } = await r.listen();
  assert.equal((await send(port, 's@x.test', ['someone@elsewhere.test'], msg)).ok, true);
  const d = await send(port, 's@x.test', ['down@local.test'], msg);
  assert.match(d.response, /^451 4\.3\.0 /);
});

test('lists expand to their members; too many recipients get 452 4.5.3', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  const res = await send(port, 's@x.test', ['list@local.test'], msg);
  assert.equal(res.ok, true);
  assert.deepEqual(committed.at(-1)!.env.recipients.map((x) => x.address), ['x@local.test', 'y@local.test']);
  const many = await send(port, 's@x.test', ['a@local.test', 'b@local.test', 'c@local.test', 'd@local.test'], msg);
  assert.equal(many.ok, true); // the first three accepted
  assert.deepEqual(many.rejected, ['d@local.test']);
  assert.equal(committed.at(-1)!.env.recipients.length, 3);
});

test('an oversized message gets 552 5.3.4 after the whole body and nothing is committed', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  const before = committed.length;
  const res = await send(port, 's@x.test', ['u@local.test'], 'Subject: big\r\n\r\n' + 'x'.repeat(20_000) + '\r\n');
  assert.equal(res.ok, false);
  assert.match(res.response, /^552 5\.3\.4 /);
  assert.equal(committed.length, before);
});

test('250 comes only after the commit resolves; a failing commit gives 451 4.3.0', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  let commitDone = false;
  // a slow disk: the commit is held across many turns of the timer queue, not one tick, so a
  // reply sent a few ticks before the commit resolves reaches the client while it is held
  commitHook = async () => {
    for (let i = 0; i < 10; i++) await new Promise((res) => setTimeout(res, 10));
    commitDone = true;
  };
  const res = await send(port, 's@x.test', ['u@local.test'], msg).then((r) => ({ ...r, afterCommit: commitDone }));
  commitHook = undefined;
  assert.equal(res.ok, true, res.response);
  assert.equal(res.afterCommit, true, 'no reply may reach the client before the commit is durable');
  commitHook = async () => { throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }); };
  const full = await send(port, 's@x.test', ['u@local.test'], msg);
  commitHook = undefined;
  assert.match(full.response, /^451 4\.3\.0 /);
});

test('the received line: written during the commit (the writer runs it beside its folder fsync), before the 250; a commit failing after it gets 451 and a deleted line', async () => {
  const log = path.join(dir, 'track-received.log');
  const r = startReceiver(true, {}, undefined, log);
  const { port } = await r.listen();
  const lines = () => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  let seenDuringCommit: string[] = [];
  commitHook = async (beside) => {
    await beside?.();
    seenDuringCommit = lines().map((l) => String(l.event));
  };
  const ok = await send(port, 's@x.test', ['u@local.test'], 'Subject: one\r\n\r\nbody\r\n');
  assert.equal(ok.ok, true, ok.response);
  assert.deepEqual(seenDuringCommit, ['received'], 'the line is on disk while the commit is still under way');
  // the folder fsync fails after the line was written: the message is taken back
  commitHook = async (beside) => {
    await beside?.();
    throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
  };
  const failed = await send(port, 's@x.test', ['u@local.test'], 'Subject: two\r\n\r\nbody\r\n');
  // a writer that ignores `beside` still gets its received line, after its commit
  commitHook = async () => { seenDuringCommit = lines().map((l) => String(l.event)); };
  const plain = await send(port, 's@x.test', ['u@local.test'], 'Subject: three\r\n\r\nbody\r\n');
  commitHook = undefined;
  assert.match(failed.response, /^451 4\.3\.0 /);
  assert.equal(plain.ok, true, plain.response);
  const events = lines().map((l) => [l.event, l.queueId, l.by]);
  const [first, second, third] = [events[0][1], events[1][1], events[3][1]];
  assert.deepEqual(events, [
    ['received', first, undefined],
    ['received', second, undefined], ['deleted', second, 'receiver'],
    ['received', third, undefined],
  ]);
  assert.deepEqual(seenDuringCommit, ['received', 'received', 'deleted'], 'without `beside` the line comes after the commit');
});

test('MAIL FROM with SIZE= above the limit is refused at MAIL with 552 5.3.4; the limit itself is accepted', async () => {
  // a raw client: nodemailer would refuse to send the oversized SIZE= itself
  const r = startReceiver(false);
  const { port } = await r.listen();
  const client = await RawSmtpClient.connect(port);
  try {
    assert.equal(((await client.readReply(5000)) as { code?: number }).code, 220);
    assert.equal(((await client.command('EHLO c.test', 5000)) as { code?: number }).code, 250);
    const big = await client.command('MAIL FROM:<s@x.test> SIZE=10241', 5000);
    assert.equal(big.type, 'reply');
    assert.match((big as { text: string }).text, /^552 5\.3\.4 /);
    const fits = await client.command('MAIL FROM:<s@x.test> SIZE=10240', 5000);
    assert.match((fits as { text: string }).text, /^250 /);
  } finally {
    client.close();
  }
});

test('draining: a transaction under way finishes with 250; new sessions and new transactions get 421 4.3.2', async () => {
  let state: AcceptState = { type: 'accepting' };
  const r = startReceiver(false, {}, () => state);
  const { port } = await r.listen();
  const open = new SMTPConnection({ host: '127.0.0.1', port, ignoreTLS: true, connectionTimeout: 5000 } as any);
  open.on('error', () => undefined);
  await new Promise<void>((res, rej) => open.connect((err?: Error) => (err ? rej(err) : res())));
  commitHook = async () => { state = { type: 'draining' }; }; // the drain comes while DATA is being committed
  const during = await send(port, 's@x.test', ['u@local.test'], msg);
  commitHook = undefined;
  assert.equal(during.ok, true, during.response);
  const late = new SMTPConnection({ host: '127.0.0.1', port, ignoreTLS: true, connectionTimeout: 5000 } as any);
  const greeting = await new Promise<string>((resolve) => {
    late.once('error', (err: any) => resolve(String(err?.response ?? err?.message)));
    late.connect(() => resolve('connected'));
  });
  late.close();
  assert.match(greeting, /^421 4\.3\.2 mx\.test node is draining; try another server/);
  const next = await new Promise<string>((resolve) => open.send({ from: 's@x.test', to: ['u@local.test'] }, msg, (err: any) => resolve(String(err?.response ?? 'accepted'))));
  assert.match(next, /^421 4\.3\.2 Node is draining; try another server/);
  open.close();
});

test('a relay refusal that rests on an unconfirmed directory answer is a 451, not a 554', async () => {
  const r = startReceiver(false);
  const { port } = await r.listen();
  const res = await send(port, 'a@remote.test', ['x@maybe-ours.test'], 'Subject: t\r\n\r\nx\r\n');
  assert.equal(res.ok, false);
  assert.match(res.response, /^451 4\.3\.0 .*directory unreachable/);
});

/** One transaction written line by line (as a client without a library would), replies read back. */
async function rawTransaction(port: number, lines: string[]): Promise<string[]> {
  const { RawSmtpClient } = await import('../../test/harness/raw-smtp.ts');
  const c = await RawSmtpClient.connect(port);
  try {
    const replies: string[] = [];
    const first = await c.readReply(5000);
    replies.push(first.type === 'reply' ? first.text : first.type);
    for (const line of lines) {
      const r = await c.command(Buffer.from(line, 'utf8').toString('latin1'), 5000); // the client writes latin1
      replies.push(r.type === 'reply' ? r.text : r.type);
    }
    return replies;
  } finally {
    c.close();
  }
}

const RAW_BODY = 'Subject: x\r\n\r\nx\r\n.';

test('SMTPUTF8: the Received: header is valid UTF-8, labelled UTF8SMTP, and names the UTF-8 recipient', async () => {
  const r = startReceiver(true);
  const { port } = await r.listen();
  const replies = await rawTransaction(port, ['EHLO client.test', 'MAIL FROM:<jöran@remote.test> SMTPUTF8', 'RCPT TO:<日本@local.test>', 'DATA', RAW_BODY, 'QUIT']);
  assert.match(replies[5], /^250 /, replies.join(' | '));
  const c = committed.at(-1)!;
  const text = c.msg.toString('utf8');
  assert.equal(Buffer.from(text, 'utf8').equals(c.msg), true, 'the stored message is valid UTF-8');
  assert.match(text, /^Received: from client\.test .*\r\n\tby mx\.test \(Tandem\) with UTF8SMTP id Q\d+\.a\r\n\tfor <日本@local\.test>;/);
  assert.equal(c.env.sender, 'jöran@remote.test');
  assert.equal(c.env.recipients[0].address, '日本@local.test');
  assert.equal(c.env.smtputf8, true);
});

test('without SMTPUTF8 the protocol stays ESMTP; UTF8SMTP labels follow TLS and AUTH (RFC 6531 §3.7.3)', async () => {
  const { receivedProtocol } = await import('./received-header.ts');
  assert.equal(receivedProtocol('ESMTP', false), 'ESMTP');
  assert.equal(receivedProtocol('ESMTP', true), 'UTF8SMTP');
  assert.equal(receivedProtocol('ESMTPS', true), 'UTF8SMTPS');
  assert.equal(receivedProtocol('ESMTPA', true), 'UTF8SMTPA');
  assert.equal(receivedProtocol('ESMTPSA', true), 'UTF8SMTPSA');
});

test('ORCPT of both types is kept as given: rfc822 xtext-decoded, utf-8 with \\x{} escapes decoded; none given → none kept', async () => {
  const r = startReceiver(true);
  const { port } = await r.listen();
  const replies = await rawTransaction(port, [
    'EHLO client.test', 'MAIL FROM:<s@remote.test> SMTPUTF8',
    'RCPT TO:<a+b@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;first+2Bsecond@remote.test',
    'RCPT TO:<jöran@local.test> ORCPT=utf-8;j\\x{F6}ran@pf.test',
    'RCPT TO:<plain@local.test>',
    'DATA', RAW_BODY, 'QUIT',
  ]);
  assert.match(replies[7], /^250 /, replies.join(' | '));
  const rcpts = committed.at(-1)!.env.recipients;
  assert.deepEqual(rcpts[0].orcpt, { type: 'rfc822', address: 'first+second@remote.test' });
  assert.equal(rcpts[0].original, 'a+b@local.test');
  assert.deepEqual(rcpts[1].orcpt, { type: 'utf-8', address: 'jöran@pf.test' });
  assert.equal(rcpts[2].orcpt, undefined);
  assert.equal(rcpts[2].original, 'plain@local.test');
});

test('an xtext ORCPT holding UTF-8 octets, as Postfix 3.7 sends it, is accepted and kept as the utf-8 type', async () => {
  const r = startReceiver(true);
  const { port } = await r.listen();
  const replies = await rawTransaction(port, [
    'EHLO client.test', 'MAIL FROM:<s@remote.test> SMTPUTF8',
    'RCPT TO:<日本@local.test> ORCPT=rfc822;+E6+97+A5+E6+9C+AC@pf.test NOTIFY=SUCCESS',
    'DATA', RAW_BODY, 'QUIT',
  ]);
  assert.match(replies[3], /^250 /, `smtp-server alone answers 501 5.1.3 here: ${replies[3]}`);
  assert.match(replies[5], /^250 /, replies.join(' | '));
  const [rcpt] = committed.at(-1)!.env.recipients;
  assert.deepEqual(rcpt.orcpt, { type: 'utf-8', address: '日本@pf.test' });
  assert.deepEqual(rcpt.notify, ['SUCCESS']);
});

test('a malformed utf-8 ORCPT gets 501 at RCPT', async () => {
  const r = startReceiver(true);
  const { port } = await r.listen();
  const replies = await rawTransaction(port, ['EHLO client.test', 'MAIL FROM:<s@remote.test>', 'RCPT TO:<u@local.test> ORCPT=utf-8;j\\x{ZZ}ran@pf.test', 'QUIT']);
  assert.match(replies[3], /^501 5\.5\.4 Bad ORCPT/);
});
