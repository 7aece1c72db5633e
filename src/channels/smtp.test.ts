/**
 * smtp.test.ts — SmtpChannel against real smtp-server next hops on 127.0.0.1 (port 0):
 * reply mapping, STARTTLS, MX order and fallbacks, DNS failures, connection reuse, dead cached
 * connections, lost connections, SIZE and SMTPUTF8 limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpChannel, type SmtpChannelOptions } from './smtp.ts';
import { makeJob, startScriptedServer, startSmtpServer, type TestSmtpServer } from '../../test/harness/channel-servers.ts';
import type { ResolveHost, ResolveMx } from './smtp-nexthop.ts';
import type { MessageSource } from '../message/source.ts';
import { Readable } from 'node:stream';

const base: SmtpChannelOptions = { heloName: 'tandem.test', connectTimeout: 2000, commandTimeout: 5000 };
const fixed = (port: number) => ({ type: 'smtp' as const, host: '127.0.0.1', port, mx: false as const });
const byMx = (port: number, domain = 'example.test') => ({ type: 'smtp' as const, domain, port, mx: true as const });
const dnsError = (code: string) => Object.assign(new Error(`query ${code}`), { code });

/** Run `body` with a channel and servers, closing all of them whatever happens. */
async function withChannel(opts: Partial<SmtpChannelOptions>, servers: TestSmtpServer[], body: (ch: SmtpChannel) => Promise<void>) {
  const channel = new SmtpChannel({ ...base, ...opts });
  try {
    await body(channel);
  } finally {
    await channel.close();
    await Promise.all(servers.map((s) => s.close()));
  }
}

test('delivers over STARTTLS with SIZE and BODY=8BITMIME, reply and via as an admin reads them', async () => {
  const server = await startSmtpServer({ server: { size: 100_000 } });
  await withChannel({}, [server], async (ch) => {
    const results = await ch.deliver(makeJob(fixed(server.port), ['a@example.com', 'b@example.com'], { body8bit: true }));
    assert.equal(results.length, 2);
    for (const r of results) {
      assert.equal(r.outcome, 'delivered');
      assert.match(r.reply, /^250 .*Ok: queued as Q1$/);
      assert.equal(r.via, `127.0.0.1[127.0.0.1]:${server.port}`);
    }
    assert.equal(server.messages.length, 1);
    const m = server.messages[0];
    assert.equal(m.secure, true, 'STARTTLS was used');
    assert.deepEqual(m.to, ['a@example.com', 'b@example.com']);
    assert.equal(m.from, 'sender@example.org');
    assert.equal(m.mailArgs.BODY, '8BITMIME');
    assert.ok(Number(m.mailArgs.SIZE) > 0);
    assert.match(m.data.toString(), /Subject: test/);
  });
});

test('per-recipient replies: 550 failed, 451 deferred, others delivered', async () => {
  const server = await startSmtpServer({
    rcpt: (a) => (a.startsWith('bad') ? { code: 550, message: 'No such user' } : a.startsWith('later') ? { code: 451, message: 'Try again' } : undefined),
  });
  await withChannel({}, [server], async (ch) => {
    const results = await ch.deliver(makeJob(fixed(server.port), ['ok@example.com', 'bad@example.com', 'later@example.com']));
    const byIndex = new Map(results.map((r) => [r.index, r]));
    assert.equal(byIndex.get(0)?.outcome, 'delivered');
    assert.equal(byIndex.get(1)?.outcome, 'failed');
    assert.match(byIndex.get(1)!.reply, /^550 .*No such user/);
    assert.equal(byIndex.get(2)?.outcome, 'deferred');
    assert.match(byIndex.get(2)!.reply, /^451 .*Try again/);
    assert.deepEqual(server.messages[0].to, ['ok@example.com']);
  });
});

test('all recipients rejected, then the cached connection is RSET and reused', async () => {
  const server = await startSmtpServer({ rcpt: (a) => (a.startsWith('bad') ? { code: 550, message: 'No such user' } : undefined) });
  await withChannel({}, [server], async (ch) => {
    const first = await ch.deliver(makeJob(fixed(server.port), ['bad1@example.com', 'bad2@example.com']));
    assert.deepEqual(first.map((r) => r.outcome), ['failed', 'failed']);
    await new Promise((r) => setTimeout(r, 50));
    const second = await ch.deliver(makeJob(fixed(server.port), ['ok@example.com']));
    assert.equal(second[0].outcome, 'delivered');
    assert.equal(server.connections, 1);
  });
});

test('a 5xx reply to the end of data fails the accepted recipients only', async () => {
  const server = await startSmtpServer({
    rcpt: (a) => (a.startsWith('later') ? { code: 452, message: 'Too many recipients' } : undefined),
    data: () => ({ code: 554, message: 'Message rejected as spam' }),
  });
  await withChannel({}, [server], async (ch) => {
    const results = await ch.deliver(makeJob(fixed(server.port), ['a@example.com', 'later@example.com']));
    assert.equal(results.find((r) => r.index === 0)?.outcome, 'failed');
    assert.match(results.find((r) => r.index === 0)!.reply, /^554 .*spam/);
    assert.equal(results.find((r) => r.index === 1)?.outcome, 'deferred');
  });
});

test('a connection lost during DATA defers every recipient', async () => {
  const server = await startScriptedServer((command) => command === 'DATA');
  await withChannel({}, [server], async (ch) => {
    const results = await ch.deliver(makeJob(fixed(server.port), ['a@example.com', 'b@example.com']));
    assert.deepEqual(results.map((r) => r.outcome), ['deferred', 'deferred']);
    assert.match(results[0].reply, /lost connection/i);
  });
});

test('a cached connection found dead is retried once on a fresh one', async () => {
  // The second MAIL FROM on any connection kills it: the reused connection dies, a fresh one works.
  const server = await startScriptedServer((command, transaction) => command === 'MAIL' && transaction === 2);
  await withChannel({}, [server], async (ch) => {
    assert.equal((await ch.deliver(makeJob(fixed(server.port), ['a@example.com'])))[0].outcome, 'delivered');
    const second = await ch.deliver(makeJob(fixed(server.port), ['b@example.com']));
    assert.equal(second[0].outcome, 'delivered', second[0].reply);
    assert.equal(server.connections, 2);
  });
});

test('connection reuse: 20 sequential messages use far fewer than 20 connections', async () => {
  const server = await startSmtpServer();
  await withChannel({}, [server], async (ch) => {
    for (let i = 0; i < 20; i++) {
      const [r] = await ch.deliver(makeJob(fixed(server.port), [`u${i}@example.com`]));
      assert.equal(r.outcome, 'delivered');
    }
    assert.equal(server.messages.length, 20);
    assert.ok(server.connections <= 2, `saw ${server.connections} connections`);
    assert.equal(ch.idleConnections, 1);
  });
});

test('parallel deliveries open parallel connections and keep them idle up to the limit', async () => {
  const server = await startSmtpServer();
  await withChannel({ maxIdleConnections: 2 }, [server], async (ch) => {
    const jobs = Array.from({ length: 5 }, (_, i) => ch.deliver(makeJob(fixed(server.port), [`p${i}@example.com`])));
    const results = await Promise.all(jobs);
    assert.ok(results.every(([r]) => r.outcome === 'delivered'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ch.idleConnections, 2);
  });
});

test('idle connections are closed after idleTimeout', async () => {
  const server = await startSmtpServer();
  await withChannel({ idleTimeout: 50 }, [server], async (ch) => {
    await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
    assert.equal(ch.idleConnections, 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(ch.idleConnections, 0);
  });
});

test('MX: unreachable preferred host, then the next one', async () => {
  const server = await startSmtpServer();
  const resolveMx: ResolveMx = async () => [{ exchange: 'mx2.example.test', priority: 20 }, { exchange: 'mx1.example.test', priority: 10 }];
  // Nothing listens on 127.0.0.2 (servers bind 127.0.0.1 only): connection refused.
  const resolveHost: ResolveHost = async (h) => (h === 'mx1.example.test' ? ['127.0.0.2'] : ['127.0.0.1']);
  await withChannel({ resolveMx, resolveHost }, [server], async (ch) => {
    const [r] = await ch.deliver(makeJob(byMx(server.port), ['a@example.test']));
    assert.equal(r.outcome, 'delivered', r.reply);
    assert.equal(r.via, `mx2.example.test[127.0.0.1]:${server.port}`);
  });
});

test('MX: every host unreachable → deferred with the last error', async () => {
  const resolveMx: ResolveMx = async () => [{ exchange: 'mx1.example.test', priority: 10 }];
  const resolveHost: ResolveHost = async () => ['127.0.0.2'];
  await withChannel({ resolveMx, resolveHost }, [], async (ch) => {
    const [r] = await ch.deliver(makeJob(byMx(1), ['a@example.test']));
    assert.equal(r.outcome, 'deferred');
    assert.match(r.reply, /ECONNREFUSED/);
    assert.equal(r.via, 'mx1.example.test[127.0.0.2]:1');
  });
});

test('implicit MX: no MX record → the domain itself', async () => {
  const server = await startSmtpServer();
  const asked: string[] = [];
  const resolveMx: ResolveMx = async () => { throw dnsError('ENODATA'); };
  const resolveHost: ResolveHost = async (h) => { asked.push(h); return ['127.0.0.1']; };
  await withChannel({ resolveMx, resolveHost }, [server], async (ch) => {
    const [r] = await ch.deliver(makeJob(byMx(server.port), ['a@example.test']));
    assert.equal(r.outcome, 'delivered');
    assert.deepEqual(asked, ['example.test']);
  });
});

test('null MX → failed 5.1.10 without connecting', async () => {
  const resolveMx: ResolveMx = async () => [{ exchange: '', priority: 0 }];
  await withChannel({ resolveMx, resolveHost: async () => assert.fail('no address lookup') }, [], async (ch) => {
    const results = await ch.deliver(makeJob(byMx(25), ['a@example.test', 'b@example.test']));
    assert.deepEqual(results.map((r) => r.outcome), ['failed', 'failed']);
    assert.match(results[0].reply, /^5\.1\.10 .*accepts no mail/);
  });
});

test('NXDOMAIN → failed 5.1.2; SERVFAIL → deferred', async () => {
  const nx = { resolveMx: async () => { throw dnsError('ENOTFOUND'); }, resolveHost: async () => { throw dnsError('ENOTFOUND'); } };
  await withChannel(nx, [], async (ch) => {
    const [r] = await ch.deliver(makeJob(byMx(25, 'nowhere.test'), ['a@nowhere.test']));
    assert.equal(r.outcome, 'failed');
    assert.match(r.reply, /^5\.1\.2 /);
  });
  await withChannel({ resolveMx: async () => { throw dnsError('ESERVFAIL'); } }, [], async (ch) => {
    const [r] = await ch.deliver(makeJob(byMx(25), ['a@example.test']));
    assert.equal(r.outcome, 'deferred');
    assert.match(r.reply, /^4\.4\.3 .*ESERVFAIL/);
  });
});

test('a 421 greeting defers (it is never a bounce)', async () => {
  const server = await startSmtpServer({ refuseConnection: { code: 421, message: 'Too busy' } });
  await withChannel({}, [server], async (ch) => {
    const [r] = await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
    assert.equal(r.outcome, 'deferred');
    assert.match(r.reply, /421/);
  });
});

test('requireTls to a server without STARTTLS defers; without requireTls it goes in plaintext', async () => {
  const server = await startSmtpServer({ server: { disabledCommands: ['STARTTLS'] } });
  await withChannel({ requireTls: true }, [], async (ch) => {
    const [r] = await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
    assert.equal(r.outcome, 'deferred');
  });
  await withChannel({}, [server], async (ch) => {
    const [r] = await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
    assert.equal(r.outcome, 'delivered');
    assert.equal(server.messages[0].secure, false);
  });
});

test('SMTPUTF8 needed but not offered → failed 5.6.7; offered → sent with SMTPUTF8', async () => {
  const plain = await startSmtpServer({ server: { hideSMTPUTF8: true } as Partial<import('smtp-server').SMTPServerOptions> });
  const utf8 = await startSmtpServer();
  await withChannel({}, [plain, utf8], async (ch) => {
    const [r] = await ch.deliver(makeJob(fixed(plain.port), ['jörg@example.com'], { smtputf8: true }));
    assert.equal(r.outcome, 'failed');
    assert.match(r.reply, /^5\.6\.7 /);
    const [ok] = await ch.deliver(makeJob(fixed(utf8.port), ['jörg@example.com'], { smtputf8: true }));
    assert.equal(ok.outcome, 'delivered', ok.reply);
    assert.equal(utf8.messages[0].mailArgs.SMTPUTF8, true);
  });
});

test('a message over the peer SIZE limit fails 5.3.4', async () => {
  const server = await startSmtpServer({ server: { size: 50 } });
  await withChannel({}, [server], async (ch) => {
    const [r] = await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
    assert.equal(r.outcome, 'failed', r.reply);
    assert.match(r.reply, /^5\.3\.4 /);
  });
});

test('close() ends idle connections', async () => {
  const server = await startSmtpServer();
  const ch = new SmtpChannel(base);
  await ch.deliver(makeJob(fixed(server.port), ['a@example.com']));
  assert.equal(ch.idleConnections, 1);
  await ch.close();
  assert.equal(ch.idleConnections, 0);
  const started = Date.now();
  await server.close();
  assert.ok(Date.now() - started < 150, 'no connection left for the server to wait for');
});

test('a route of another type is a bug', async () => {
  await withChannel({}, [], async (ch) => {
    await assert.rejects(ch.deliver(makeJob({ type: 'lmtp', host: '127.0.0.1', port: 1 }, ['a@example.com'])), /bug/);
  });
});

test('DSN parameters are passed on: NOTIFY and ORCPT on RCPT, RET and ENVID on MAIL (RFC 3461 §5.2)', async () => {
  const server = await startSmtpServer();
  await withChannel({}, [server], async (ch) => {
    const job = makeJob(fixed(server.port), ['alice@example.com', 'bob@example.com'], { dsn: { ret: 'HDRS', envid: 'ENV1' } });
    job.recipients = job.recipients.map((r) => ({ ...r, original: 'team@example.org', notify: ['SUCCESS', 'FAILURE'] }));
    const results = await ch.deliver(job);
    assert.ok(results.every((r) => r.outcome === 'delivered'));
    const m = server.messages[0];
    assert.equal(m.mailArgs.RET, 'HDRS');
    assert.equal(m.mailArgs.ENVID, 'ENV1');
    for (const r of m.rcptDsn) {
      assert.deepEqual(r.notify, ['SUCCESS', 'FAILURE']);
      assert.equal(r.orcpt, 'rfc822;team@example.org');
    }
  });
});

test('NOTIFY and ORCPT per recipient in one transaction: ORCPT as given (rfc822 xtext, utf-8 utf-8-addr), added only for an expanded address', async () => {
  const server = await startSmtpServer({ server: { hideSMTPUTF8: false } });
  await withChannel({}, [server], async (ch) => {
    const job = makeJob(fixed(server.port), ['alice@example.com', 'bob@example.com', 'carol@example.com', 'dave@example.com'], { dsn: { ret: 'FULL' } });
    job.recipients[0] = { ...job.recipients[0], notify: ['SUCCESS'], orcpt: { type: 'rfc822', address: 'first+second@example.org' } };
    job.recipients[1] = { ...job.recipients[1], orcpt: { type: 'utf-8', address: 'jöran@example.org' } };
    job.recipients[2] = { ...job.recipients[2], original: 'team@example.org' }; // expanded, no ORCPT given
    const results = await ch.deliver(job);
    assert.ok(results.every((r) => r.outcome === 'delivered'), JSON.stringify(results));
    assert.equal(server.messages.length, 1, 'one transaction');
    const [a, b, c, d] = server.messages[0].rcptDsn;
    assert.deepEqual(a.notify, ['SUCCESS']);
    assert.equal(a.orcpt, 'rfc822;first+second@example.org', 'xtext "+2B" decoded by the server');
    assert.equal(b.notify, undefined);
    assert.equal(b.orcpt, 'utf-8;j\\x{F6}ran@example.org', 'utf-8-addr-xtext (RFC 6533)');
    assert.equal(c.orcpt, 'rfc822;team@example.org');
    assert.equal(d.orcpt, undefined, 'no ORCPT given and the address unchanged: none added');
  });
});

test('a 421 to one RCPT defers every recipient without a final reply with that 421, not as a lost connection', async () => {
  const server = await startSmtpServer({ rcpt: (a) => (a.startsWith('b') ? { code: 421, message: 'Too busy, closing' } : undefined) });
  await withChannel({}, [server], async (ch) => {
    const results = await ch.deliver(makeJob(fixed(server.port), ['a@example.com', 'b@example.com', 'c@example.com']));
    assert.equal(results.length, 3);
    for (const r of results) {
      assert.equal(r.outcome, 'deferred');
      assert.match(r.reply, /^421 .*Too busy, closing/, r.reply);
    }
  });
});

test('a large message goes to the next hop as a stream, byte for byte; a read error defers', async () => {
  const server = await startSmtpServer({});
  const body = Buffer.from(`Subject: streamed\r\n\r\n${'0123456789abcdef streamed line\r\n'.repeat(80_000)}`);
  const streamed = (chunks: Buffer[], fail = false): MessageSource => ({
    size: body.length,
    head: Buffer.from('Subject: streamed\r\n\r\n'),
    stream: () => Readable.from((async function* () {
      yield* chunks;
      if (fail) throw new Error('EIO: i/o error, read');
    })()),
  });
  const pieces = Array.from({ length: 40 }, (_, i) => body.subarray(i * (body.length / 40 | 0), i === 39 ? body.length : (i + 1) * (body.length / 40 | 0)));
  await withChannel({}, [server], async (ch) => {
    const [ok] = await ch.deliver({ ...makeJob(fixed(server.port), ['a@example.com']), message: streamed(pieces) });
    assert.equal(ok.outcome, 'delivered', ok.reply);
    const m = server.messages[0];
    assert.ok(m.data.equals(body), 'received byte for byte');
    const [broken] = await ch.deliver({ ...makeJob(fixed(server.port), ['b@example.com']), message: streamed(pieces.slice(0, 10), true) });
    assert.equal(broken.outcome, 'deferred', broken.reply);
    assert.match(broken.reply, /reading the queue file/);
    assert.equal(server.messages.length, 1, 'the next hop kept nothing of the broken transaction');
  });
});
