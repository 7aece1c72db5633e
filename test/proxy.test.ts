/**
 * proxy.test.ts — a node behind a load balancer that speaks PROXY protocol v1 or v2
 * (smtp.proxy_protocol: [127.0.0.1], the balancer's address): the address in the PROXY header
 * is the client, for the Received: trace header and for the relay decision (relay.networks); a
 * connection from the balancer that does not start with a valid PROXY header never gets an SMTP
 * session (and the node says why in its log); a peer that is not a listed balancer (127.0.0.2)
 * is served directly and cannot claim another address.
 *
 * One node process (relay.networks 127.0.0.0/8, local domain example.test delivered to a
 * Maildir, everything else to a sink process); raw sockets play the load balancer.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { eventually } from './harness/wait.ts';
import { PROXY_V2_SIGNATURE } from '../src/receiver/index.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-proxy-'));
let sink: Sink;
let node: RunningNode;

before(async () => {
  sink = await startSink();
  const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
  node = await startNode({
    config: writeNodeConfig(dir, {
      node: { id: 'px', hostname: 'tandem.test' },
      smtp: { proxy_protocol: ['127.0.0.1'], socket_timeout: '3s' },
      relay: { host: sink.address, networks: ['127.0.0.0/8'] },
      local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
      tables: { virtual_mailboxes: tables.virtual_mailboxes },
      queue: { min_backoff: '1s', max_backoff: '2s' },
    }),
    logFile: path.join(dir, 'tandem.out'),
  });
});


/** The reply's text for an assertion message. */
const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));

/** Connects as the load balancer would: PROXY header for `clientIp` (or the bytes given), then the greeting. */
async function proxiedSession(clientIp: string, header: string | Buffer = `PROXY TCP4 ${clientIp} 127.0.0.1 40000 25\r\n`): Promise<RawSmtpClient> {
  const c = await RawSmtpClient.connect(node.smtp.port);
  c.write(header);
  const greeting = await c.readReply();
  assert.equal(greeting.type === 'reply' && greeting.code, 220, `greeting after the PROXY header: ${show(greeting)}`);
  const ehlo = await c.command('EHLO client.test');
  assert.equal(ehlo.type === 'reply' && ehlo.code, 250, show(ehlo));
  return c;
}

/** MAIL, RCPT and DATA of one message; returns the RCPT reply and, if it was 250, the DATA end reply. */
async function transaction(c: RawSmtpClient, rcpt: string, message: string): Promise<{ rcpt: RawReply; data?: RawReply }> {
  const mail = await c.command('MAIL FROM:<sender@client.test>');
  assert.equal(mail.type === 'reply' && mail.code, 250, show(mail));
  const rcptReply = await c.command(`RCPT TO:<${rcpt}>`);
  if (rcptReply.type !== 'reply' || rcptReply.code !== 250) return { rcpt: rcptReply };
  const data = await c.command('DATA');
  assert.equal(data.type === 'reply' && data.code, 354, show(data));
  c.write(`${message}\r\n.\r\n`);
  return { rcpt: rcptReply, data: await c.readReply(10_000) };
}

test('the PROXY header\'s source address is the client named in the Received: header', async () => {
  const c = await proxiedSession('192.0.2.10');
  const { data } = await transaction(c, 'bob@example.test', 'From: sender@client.test\r\nSubject: through the balancer\r\n\r\nhello');
  assert.ok(data && data.type === 'reply', 'the message reached DATA');
  assert.match(data.text, /^250 2\.0\.0 Ok: queued as /);
  await c.command('QUIT');
  c.close();
  const newDir = path.join(dir, 'mail', 'bob', 'new');
  const file = await eventually('the message in bob\'s Maildir', () => existsSync(newDir) && readdirSync(newDir)[0]);
  const raw = readFileSync(path.join(newDir, file), 'latin1');
  const received = /^Received: [^]*?(?=\r?\n\S)/m.exec(raw)?.[0];
  assert.ok(received, `a Received: header in\n${raw}`);
  assert.match(received, /\[192\.0\.2\.10\]/, 'the real client behind the balancer');
  assert.doesNotMatch(received, /127\.0\.0\.1/, 'not the balancer\'s address');
});

test('relay permission is decided on the proxied address, not the balancer\'s', async () => {
  const outside = await proxiedSession('192.0.2.10');
  const refused = await transaction(outside, 'someone@remote.test', 'Subject: x\r\n\r\nx');
  assert.equal(refused.rcpt.type === 'reply' && refused.rcpt.code, 554, show(refused.rcpt));
  assert.match(show(refused.rcpt), /^554 5\.7\.1 /);
  outside.close();

  // the same balancer connection (from 127.0.0.1) for a client inside relay.networks may relay
  const inside = await proxiedSession('127.0.0.5');
  const ok = await transaction(inside, 'someone@remote.test', 'Subject: relayed\r\nX-Test-Id: proxy-inside-1\r\n\r\nx');
  assert.equal(ok.rcpt.type === 'reply' && ok.rcpt.code, 250, show(ok.rcpt));
  assert.match(ok.data ? show(ok.data) : '', /^250 /);
  inside.close();
  await eventually('the relayed message at the sink', () => sink.readRecords().find((r) => r.testId === 'proxy-inside-1'));
});

test('a connection without a PROXY header gets no SMTP session and is closed', async () => {
  const c = await RawSmtpClient.connect(node.smtp.port);
  c.write('EHLO client.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<bob@example.test>\r\n');
  const replies: RawReply[] = [];
  for (let r = await c.readReply(); r.type !== 'closed'; r = await c.readReply()) replies.push(r);
  assert.ok(replies.every((r) => r.type !== 'reply' || r.code >= 400), `no SMTP success without a PROXY header: ${replies.map(show).join(' | ')}`);

  // a client that sends nothing gets no greeting, and the socket does not stay open forever
  const silent = await RawSmtpClient.connect(node.smtp.port);
  assert.equal(await silent.waitClosed(10_000), true, 'closed after smtp.socket_timeout (3s)');
  const after = await silent.readReply();
  assert.equal(after.type, 'closed', `no greeting before the PROXY header: ${show(after)}`);
});

/** A PROXY v2 header as HAProxy's send-proxy-v2 writes it, for a TCP client at source. */
function proxyV2Header(source: string, family: 'inet' | 'inet6', command: 'proxy' | 'local' = 'proxy'): Buffer {
  const ip = (a: string) => (family === 'inet' ? Buffer.from(a.split('.').map(Number)) : Buffer.from(a.split(':').flatMap((h) => [parseInt(h, 16) >> 8, parseInt(h, 16) & 0xff])));
  const dest = family === 'inet' ? '127.0.0.1' : '0:0:0:0:0:0:0:1';
  const ports = Buffer.from([0x9c, 0x41, 0x00, 0x19]); // 40001 → 25
  const body = command === 'local' ? Buffer.alloc(0) : Buffer.concat([ip(source), ip(dest), ports]);
  return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([command === 'local' ? 0x20 : 0x21, command === 'local' ? 0x00 : family === 'inet' ? 0x11 : 0x21, 0, body.length]), body]);
}

/** The Received: header of the message with `subject` in bob's Maildir. */
async function receivedOf(subject: string): Promise<string> {
  const newDir = path.join(dir, 'mail', 'bob', 'new');
  const raw = await eventually(`the message "${subject}" in bob's Maildir`, () => existsSync(newDir) && readdirSync(newDir)
    .map((f) => readFileSync(path.join(newDir, f), 'latin1'))
    .find((m) => m.split(/\r?\n/).includes(`Subject: ${subject}`)));
  const received = /^Received: [^]*?(?=\r?\n\S)/m.exec(raw)?.[0];
  assert.ok(received, `a Received: header in\n${raw}`);
  return received;
}

/** One message to bob in a session; asserts the 250. */
async function sendToBob(c: RawSmtpClient, subject: string): Promise<void> {
  const { data } = await transaction(c, 'bob@example.test', `From: sender@client.test\r\nSubject: ${subject}\r\n\r\nhello`);
  assert.match(data ? show(data) : '', /^250 2\.0\.0 Ok: queued as /);
  await c.command('QUIT');
  c.close();
}

test('PROXY v2 (HAProxy send-proxy-v2), IPv4 and IPv6, even in pieces: the Received: header names the real client', async () => {
  const header = proxyV2Header('198.51.100.7', 'inet');
  const c = await RawSmtpClient.connect(node.smtp.port);
  c.write(header.subarray(0, 7)); // the header may arrive in more than one segment
  await new Promise((r) => setTimeout(r, 50));
  c.write(header.subarray(7));
  const greeting = await c.readReply();
  assert.equal(greeting.type === 'reply' && greeting.code, 220, `greeting after the v2 header: ${show(greeting)}`);
  await c.command('EHLO client.test');
  await sendToBob(c, 'v2 over IPv4');
  const r4 = await receivedOf('v2 over IPv4');
  assert.match(r4, /\[198\.51\.100\.7\]/, 'the real client behind the balancer');
  assert.doesNotMatch(r4, /127\.0\.0\.1/, 'not the balancer\'s address');

  await sendToBob(await proxiedSession('', proxyV2Header('2001:db8:0:0:0:0:0:77', 'inet6')), 'v2 over IPv6');
  assert.match(await receivedOf('v2 over IPv6'), /2001:db8::77/);
});

test('PROXY v2 LOCAL (a health check by the balancer itself) gets a session as the balancer', async () => {
  await sendToBob(await proxiedSession('', proxyV2Header('', 'inet', 'local')), 'v2 local');
  assert.match(await receivedOf('v2 local'), /\[127\.0\.0\.1\]/);
});

test('a malformed PROXY v2 header closes that connection with a log line; the next one is served', async () => {
  const bad = proxyV2Header('198.51.100.7', 'inet');
  bad[13] = 0x11;
  bad[15] = 4; // length too short for an IPv4 address block
  const c = await RawSmtpClient.connect(node.smtp.port);
  c.write(bad);
  const reply = await c.readReply();
  assert.equal(reply.type, 'other', `no SMTP greeting: ${show(reply)}`);
  assert.match(show(reply), /BAD Invalid PROXY header/);
  assert.equal(await c.waitClosed(5_000), true, 'the connection is closed');
  const line = await node.proc.waitForLine((l) => l.json?.event === 'proxy-header-invalid' && l.json.code === 'PROXY_LENGTH', 5_000);
  assert.match(String(line.json?.msg), /invalid PROXY header/);
  await sendToBob(await proxiedSession('', proxyV2Header('198.51.100.8', 'inet')), 'after a bad header');
  assert.match(await receivedOf('after a bad header'), /\[198\.51\.100\.8\]/);
});

test('a peer that is not a listed balancer is served directly and cannot claim an address', async () => {
  const c = await RawSmtpClient.connect(node.smtp.port, '127.0.0.1', 5_000, '127.0.0.2');
  const greeting = await c.readReply();
  assert.equal(greeting.type === 'reply' && greeting.code, 220, 'an SMTP greeting at once: no header expected');
  const claim = await c.command('PROXY TCP4 192.0.2.99 127.0.0.1 40000 25');
  assert.ok(claim.type === 'reply' && claim.code >= 500, `a PROXY line is just an unknown command: ${show(claim)}`);
  await c.command('EHLO client.test');
  await sendToBob(c, 'direct from 127.0.0.2');
  const received = await receivedOf('direct from 127.0.0.2');
  assert.match(received, /\[127\.0\.0\.2\]/);
  assert.doesNotMatch(received, /192\.0\.2\.99/);
});
