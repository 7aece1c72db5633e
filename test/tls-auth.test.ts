/**
 * tls-auth.test.ts — STARTTLS and SMTP AUTH on a node process: passwords only travel inside
 * TLS, an unauthenticated client outside relay.networks may deliver to our own mailboxes but
 * not relay, and a client that authenticates with the password from `tandem passwd hash` may.
 *
 * One node with smtp.tls (a self-signed certificate made by openssl), smtp.auth_passwords and
 * relay.networks that do NOT include 127.0.0.1 (192.0.2.0/24: only a config value); local
 * domain example.test delivered to a Maildir, everything else to a sink process.
 * Skipped (with the reason) when openssl is not installed.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { runCli, writeTables } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
const noOpenssl = openssl.error || openssl.status !== 0 ? `openssl is needed to make a test certificate: ${openssl.error?.message ?? openssl.stderr}` : false;

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-tls-'));
const PASSWORD = 'secret';


const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

type SubmitResult = { stage: 'login' | 'send' | 'ok'; code?: number; response: string };

/** Submit one message as a mail client would: STARTTLS (required), AUTH PLAIN, send. */
async function submit(port: number, pass: string, to: string, message: string): Promise<SubmitResult> {
  const conn = new SMTPConnection({
    host: '127.0.0.1', port, requireTLS: true, tls: { rejectUnauthorized: false }, name: 'client.test',
    authMethod: 'PLAIN', connectionTimeout: 10_000, socketTimeout: 10_000,
  } as SMTPConnection.Options);
  try {
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.connect(() => resolve());
    });
    assert.equal(conn.secure, true, 'the session is inside TLS before AUTH');
    const loginErr = await new Promise<SMTPConnection.SMTPError | null>((resolve) => conn.login({ user: 'alice', pass }, (err) => resolve(err ?? null)));
    if (loginErr) return { stage: 'login', code: loginErr.responseCode, response: String(loginErr.response ?? loginErr.message) };
    return await new Promise<SubmitResult>((resolve) => {
      conn.send({ from: 'alice@client.test', to: [to] }, message, (err, info) => {
        if (err) resolve({ stage: 'send', code: (err as SMTPConnection.SMTPError).responseCode, response: String((err as SMTPConnection.SMTPError).response ?? err.message) });
        else resolve({ stage: 'ok', response: info.response });
      });
    });
  } finally {
    conn.close();
  }
}

describe('STARTTLS and AUTH', { skip: noOpenssl }, () => {
  let sink: Sink;
  let node: RunningNode;

  before(async () => {
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=tandem.test', '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    assert.equal(made.status, 0, `openssl req failed: ${made.stderr}`);
    const hashed = await runCli(['passwd', 'hash'], { stdin: PASSWORD });
    assert.equal(hashed.code, 0, hashed.stderr);
    assert.match(hashed.stdout, /^scrypt\$/);
    assert.doesNotMatch(hashed.stdout, new RegExp(PASSWORD), 'the hash does not contain the password');
    const passwords = path.join(dir, 'passwords');
    writeFileSync(passwords, `alice ${hashed.stdout.trim()}\n`);
    sink = await startSink();
    const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
    node = await startNode({
      config: writeNodeConfig(dir, {
        node: { id: 'tls', hostname: 'tandem.test' },
        smtp: { tls: { cert, key }, auth_passwords: passwords },
        relay: { host: sink.address, networks: ['192.0.2.0/24'] },
        local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
        tables: { virtual_mailboxes: tables.virtual_mailboxes },
        queue: { min_backoff: '1s', max_backoff: '2s' },
      }),
      logFile: path.join(dir, 'tandem.out'),
    });
  });

  test('without TLS, EHLO offers STARTTLS but not AUTH (passwords only inside TLS)', async () => {
    const c = await RawSmtpClient.connect(node.smtp.port);
    assert.equal((await c.readReply()).type, 'reply');
    const ehlo = await c.command('EHLO client.test');
    assert.ok(ehlo.type === 'reply' && ehlo.code === 250, show(ehlo));
    assert.match(ehlo.text, /^250[ -]STARTTLS$/m);
    assert.doesNotMatch(ehlo.text, /^250[ -]AUTH\b/m, 'AUTH is advertised on a clear-text session');
    c.close();
  });

  test('AUTH before STARTTLS is refused and does not authenticate; after STARTTLS AUTH PLAIN is offered', async () => {
    const c = await RawSmtpClient.connect(node.smtp.port);
    assert.equal((await c.readReply()).type, 'reply');
    assert.equal((await c.command('EHLO client.test')).type, 'reply');
    const auth = await c.command(`AUTH PLAIN ${b64(`\0alice\0${PASSWORD}`)}`);
    assert.ok(auth.type === 'reply' && auth.code >= 500, `AUTH before STARTTLS must fail: ${show(auth)}`);
    // it did not authenticate: relaying is still refused on this connection
    assert.match(show(await c.command('MAIL FROM:<alice@client.test>')), /^250 /);
    assert.match(show(await c.command('RCPT TO:<someone@remote.test>')), /^554 5\.7\.1 /);
    await c.command('RSET');
    const starttls = await c.command('STARTTLS');
    assert.ok(starttls.type === 'reply' && starttls.code === 220, show(starttls));
    await c.startTls();
    const ehlo = await c.command('EHLO client.test');
    assert.match(show(ehlo), /^250[ -]AUTH .*\bPLAIN\b/m);
    assert.doesNotMatch(show(ehlo), /^250[ -]STARTTLS$/m, 'no second STARTTLS');
    await c.command('QUIT');
    c.close();
  });

  test('an unauthenticated client outside relay.networks may not relay (554 5.7.1) but may mail a local mailbox', async () => {
    const relay = await sendMail(node.smtp.port, 'x@client.test', ['someone@remote.test'], 'Subject: relay attempt\r\nX-Test-Id: tls-unauth-relay\r\n\r\nx\r\n');
    assert.equal(relay.ok, false);
    assert.match(relay.response, /^554 5\.7\.1 /);
    const local = await sendMail(node.smtp.port, 'x@client.test', ['bob@example.test'], 'Subject: for bob\r\n\r\nhello bob\r\n');
    assert.equal(local.ok, true, local.response);
    const newDir = path.join(dir, 'mail', 'bob', 'new');
    await eventually('the message in bob\'s Maildir', () => existsSync(newDir) && readdirSync(newDir).length === 1);
    assert.equal(sink.readRecords().some((r) => r.testId === 'tls-unauth-relay'), false, 'the refused message was not relayed');
  });

  test('after STARTTLS, a wrong password gets 535 5.7.8 and relaying stays closed', async () => {
    const res = await submit(node.smtp.port, 'not-the-secret', 'someone@remote.test', 'Subject: wrong\r\nX-Test-Id: tls-wrong-pw\r\n\r\nx\r\n');
    assert.equal(res.stage, 'login', JSON.stringify(res));
    assert.equal(res.code, 535);
    assert.match(res.response, /^535 5\.7\.8 /);
    await node.proc.waitForLine((l) => l.json?.msg === 'authentication failed' && l.json?.user === 'alice', 5_000);
    assert.doesNotMatch(node.proc.output(), /not-the-secret/, 'the log never shows a password');
  });

  test('after STARTTLS and AUTH PLAIN with the right password, relaying to a remote domain is accepted and delivered', async () => {
    const res = await submit(node.smtp.port, PASSWORD, 'someone@remote.test', 'Subject: authenticated relay\r\nX-Test-Id: tls-auth-relay\r\n\r\nx\r\n');
    assert.equal(res.stage, 'ok', JSON.stringify(res));
    assert.match(res.response, /^250 2\.0\.0 Ok: queued as /);
    const rec = await eventually('the relayed message at the sink', () => sink.readRecords().find((r) => r.testId === 'tls-auth-relay'));
    assert.deepEqual(rec.to, ['someone@remote.test']);
    assert.equal(rec.from, 'alice@client.test');
    assert.equal(sink.readRecords().some((r) => r.testId === 'tls-wrong-pw'), false, 'nothing from the failed login was relayed');
  });
});
