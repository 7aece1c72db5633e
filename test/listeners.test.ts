/**
 * listeners.test.ts — several listeners in one node process, each with its own policy, as an
 * MTA admin sets them up: "mx" (port 25 style: STARTTLS offered, AUTH offered, relay only for
 * relay.networks), "submission" (587: AUTH required before MAIL) and "smtps" (465: implicit
 * TLS, AUTH required). The per-client connection limit is one for the node, across listeners.
 * Relayed mail goes to a sink process; local mail to a Maildir. Skipped without openssl.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { runCli, writeTables } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { parseHostPort } from './harness/ports.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
const noOpenssl = openssl.error || openssl.status !== 0 ? `openssl is needed to make a test certificate: ${openssl.error?.message ?? openssl.stderr}` : false;
const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));
const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`, 'utf8').toString('base64');

/** Submit with nodemailer: AUTH PLAIN, then one message; `secure` = implicit TLS. */
async function submit(port: number, secure: boolean, to: string, message: string): Promise<{ ok: boolean; response: string }> {
  const conn = new SMTPConnection({ host: '127.0.0.1', port, secure, requireTLS: !secure, tls: { rejectUnauthorized: false }, name: 'client.test', authMethod: 'PLAIN', connectionTimeout: 10_000 } as SMTPConnection.Options);
  try {
    await new Promise<void>((resolve, reject) => { conn.once('error', reject); conn.connect(() => resolve()); });
    const loginErr = await new Promise<Error | null>((resolve) => conn.login({ user: 'alice', pass: 'secret' }, (err) => resolve(err ?? null)));
    if (loginErr) return { ok: false, response: String((loginErr as SMTPConnection.SMTPError).response ?? loginErr.message) };
    return await new Promise((resolve) => conn.send({ from: 'alice@client.test', to: [to] }, message, (err, info) => resolve(err
      ? { ok: false, response: String((err as SMTPConnection.SMTPError).response ?? err.message) }
      : { ok: true, response: info.response })));
  } finally {
    conn.close();
  }
}

describe('listeners with their own policies', { skip: noOpenssl }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-listeners-'));
  let node: RunningNode;
  let sink: Sink;
  let ports: Record<string, number>;

  before(async () => {
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=tandem.test', '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const hashed = await runCli(['passwd', 'hash'], { stdin: 'secret' });
    const passwords = path.join(dir, 'passwords');
    writeFileSync(passwords, `alice ${hashed.stdout.trim()}\n`);
    sink = await startSink();
    const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
    node = await startNode({
      config: writeNodeConfig(dir, {
        node: { id: 'ls', hostname: 'tandem.test' },
        smtp: {
          tls: { cert, key }, auth_passwords: passwords,
          limits: { client_connections: 2 },
          listeners: [
            { name: 'mx', listen: '127.0.0.1:0' },
            { name: 'submission', listen: '127.0.0.1:0', auth: 'required' },
            { name: 'smtps', listen: '127.0.0.1:0', tls: 'implicit', auth: 'required' },
          ],
        },
        relay: { host: sink.address, networks: ['192.0.2.0/24'] },
        local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
        tables: { virtual_mailboxes: tables.virtual_mailboxes },
      }),
      logFile: path.join(dir, 'tandem.out'),
    });
    const listeners = node.proc.readyLine!.json!.listeners as Record<string, string>;
    ports = Object.fromEntries(Object.entries(listeners).map(([k, v]) => [k, parseHostPort(v).port]));
  });
  after(() => sink?.stop());

  test('the ready line names every listener with its own port', () => {
    assert.deepEqual(Object.keys(ports).sort(), ['mx', 'smtps', 'submission']);
    assert.equal(new Set(Object.values(ports)).size, 3);
    assert.equal(node.smtp.port, ports.mx, 'the first listener is the node\'s SMTP address');
  });

  test('mx: anyone may mail a local mailbox, nobody unauthenticated may relay', async () => {
    const local = await sendMail(ports.mx, 'x@client.test', ['bob@example.test'], 'Subject: to bob\r\n\r\nhi\r\n');
    assert.equal(local.ok, true, local.response);
    const relay = await sendMail(ports.mx, 'x@client.test', ['someone@remote.test'], 'Subject: relay\r\n\r\nhi\r\n');
    assert.match(relay.response, /^554 5\.7\.1 /);
  });

  test('submission: MAIL before AUTH gets 530 5.7.0, inside TLS too; after AUTH the message is relayed', async () => {
    const c = await RawSmtpClient.connect(ports.submission);
    await c.readReply();
    assert.match(show(await c.command('EHLO client.test')), /STARTTLS/);
    assert.match(show(await c.command('MAIL FROM:<x@client.test>')), /^530 5\.7\.0 /);
    await c.command('STARTTLS');
    await c.startTls();
    assert.match(show(await c.command('EHLO client.test')), /AUTH/);
    assert.match(show(await c.command('MAIL FROM:<x@client.test>')), /^530 5\.7\.0 /, 'TLS alone does not open submission');
    assert.match(show(await c.command(`AUTH PLAIN ${plain('alice', 'secret')}`, 10_000)), /^235 /);
    assert.match(show(await c.command('MAIL FROM:<alice@client.test>')), /^250 /);
    c.close();
    const sent = await submit(ports.submission, false, 'someone@remote.test', 'Subject: submitted\r\nX-Test-Id: ls-submission\r\n\r\nhi\r\n');
    assert.equal(sent.ok, true, sent.response);
    await eventually('the submitted message at the sink', () => sink.readRecords().some((r) => r.testId === 'ls-submission'));
  });

  test('smtps: TLS from the first byte, no STARTTLS offered, AUTH then relay', async () => {
    const greeting = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: ports.smtps, rejectUnauthorized: false }, () => undefined);
      s.once('data', (d) => { resolve(d.toString()); s.destroy(); });
      s.once('error', reject);
    });
    assert.match(greeting, /^220 tandem\.test ESMTP/);
    const sent = await submit(ports.smtps, true, 'someone@remote.test', 'Subject: smtps\r\nX-Test-Id: ls-smtps\r\n\r\nhi\r\n');
    assert.equal(sent.ok, true, sent.response);
    await eventually('the smtps message at the sink', () => sink.readRecords().some((r) => r.testId === 'ls-smtps'));
  });

  test('the per-client connection limit counts across listeners', async () => {
    const a = await RawSmtpClient.connect(ports.mx, '127.0.0.1', 5000, '127.0.0.9');
    const b = await RawSmtpClient.connect(ports.submission, '127.0.0.1', 5000, '127.0.0.9');
    try {
      assert.match(show(await a.readReply()), /^220 /);
      assert.match(show(await b.readReply()), /^220 /);
      const third = await RawSmtpClient.connect(ports.submission, '127.0.0.1', 5000, '127.0.0.9');
      assert.match(show(await third.readReply()), /^421 4\.7\.0 .*too many connections from 127\.0\.0\.9/);
      third.close();
    } finally {
      a.close();
      b.close();
    }
  });
});
