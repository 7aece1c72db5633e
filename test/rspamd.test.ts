/**
 * rspamd.test.ts — the content filter against a real Rspamd 3.4 (Debian's, started by the test:
 * test/harness/rspamd.ts) in front of a node process:
 *  - a plain message is scanned and delivered with the verdict on top (X-Spam-Action, -Score),
 *    and Rspamd saw the envelope: both recipients, from its own log;
 *  - Rspamd's "reject" (the GTUBE pattern) gets 550 5.7.1, nothing delivered;
 *  - "add header" (GTUBE's Y variant) is delivered marked X-Spam: Yes;
 *  - Rspamd stopped, with fail_open false: 451 4.7.1 — the client keeps the message.
 * The client, 127.0.0.2, is not in relay.networks (unauthenticated mail is scanned).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { startDnsServer, type TestDns } from './harness/dns.ts';
import { eventually } from './harness/wait.ts';
import { RSPAMD_AVAILABLE, startRspamd, type RspamdInstance } from './harness/rspamd.ts';

const skip = RSPAMD_AVAILABLE ?? false;
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-rspamd-'));
let dns: TestDns;
let rspamd: RspamdInstance;
let node: RunningNode;

after(async () => {
  await procs.stopAll();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));
const GTUBE = (variant: 'X' | 'Y') => `${variant}JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X`;
const inbox = (user: string) => path.join(dir, 'mail', user, 'new');
const delivered = (user: string) => (existsSync(inbox(user)) ? readdirSync(inbox(user)).map((f) => readFileSync(path.join(inbox(user), f), 'utf8')) : []);
const find = (user: string, subject: string) => delivered(user).find((m) => m.includes(`Subject: ${subject}\r\n`) || m.includes(`Subject: ${subject}\n`));

/** One message from 127.0.0.2; the reply to the final dot (or the first refusal). */
async function send(subject: string, body: string, rcpts = ['bob@example.test']): Promise<string> {
  const c = await RawSmtpClient.connect(node.smtp.port, '127.0.0.1', 5000, '127.0.0.2');
  try {
    await c.readReply(10_000);
    await c.command('EHLO client.example.net');
    for (const cmd of ['MAIL FROM:<someone@client.test>', ...rcpts.map((r) => `RCPT TO:<${r}>`), 'DATA']) {
      const r = await c.command(cmd);
      if (!(r.type === 'reply' && (r.code === 250 || r.code === 354))) return show(r);
    }
    c.write(`From: Someone <someone@client.test>\r\nTo: ${rcpts.map((r) => `<${r}>`).join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@client.test>\r\nDate: Mon, 7 Dec 2026 05:00:00 +0000\r\n\r\n${body}\r\n.\r\n`);
    const r = await c.readReply(30_000);
    await c.command('QUIT').catch(() => undefined);
    return show(r);
  } finally {
    c.close();
  }
}

before(async () => {
  if (skip) return;
  dns = await startDnsServer({});
  rspamd = await startRspamd({ dir: path.join(dir, 'rspamd'), dns: dns.address });
  const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\ncarol@example.test carol/\n' });
  node = await startNode({
    config: writeNodeConfig(dir, {
      node: { id: 'rs', hostname: 'mx.tandem.test' },
      content_filter: { rspamd_url: rspamd.url, timeout: '20s', fail_open: false, on_spam: 'header' },
      relay: { networks: ['127.0.0.1/32'] },
      local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
      tables: { virtual_mailboxes: tables.virtual_mailboxes },
    }),
    logFile: path.join(dir, 'node.log'),
  });
});

test('a plain message is scanned by Rspamd and delivered with its verdict on top; Rspamd saw both recipients', { skip }, async () => {
  assert.match(await send('plain hello', 'Hello Bob and Carol, the minutes of the meeting are attached below.', ['bob@example.test', 'carol@example.test']), /^250 /);
  const m = await eventually('delivered to bob', () => find('bob', 'plain hello'));
  assert.match(m, /^X-Spam-Action: no action\r?$/m);
  assert.match(m, /^X-Spam-Score: -?\d+\.\d\d \/ \d+\.\d\d\r?$/m);
  assert.doesNotMatch(m, /^X-Spam: Yes/m);
  // each Maildir gets its copy in turn: carol's may come a moment after bob's
  await eventually('delivered to carol too', () => find('carol', 'plain hello'));
  // Rspamd's own log line for the task: the envelope recipients it parsed from our request
  const line = await rspamd.proc.waitForLine((l) => /rspamd_task_write_log/.test(l.text) && /plainhello@client\.test/.test(l.text), 10_000);
  assert.match(line.text, /rcpts: <bob@example\.test,carol@example\.test>/);
});

test('Rspamd\'s reject (GTUBE) gets 550 5.7.1 and nothing is delivered', { skip }, async () => {
  assert.match(await send('gtube reject', GTUBE('X')), /^550 5\.7\.1 /);
  assert.equal(find('bob', 'gtube reject'), undefined);
});

test('Rspamd\'s "add header" is delivered marked X-Spam: Yes', { skip }, async () => {
  assert.match(await send('gtube add header', GTUBE('Y')), /^250 /);
  const m = await eventually('delivered', () => find('bob', 'gtube add header'));
  assert.match(m, /^X-Spam: Yes\r?$/m);
  assert.match(m, /^X-Spam-Action: add header\r?$/m);
});

test('Rspamd down with fail_open false: 451 4.7.1, the client keeps the message', { skip }, async () => {
  await rspamd.stop();
  assert.match(await send('while down', 'hello'), /^451 4\.7\.1 /);
  assert.equal(find('bob', 'while down'), undefined);
});
