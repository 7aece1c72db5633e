/**
 * interop.test.ts — Tandem between real MTAs: a private Postfix 3.7 as its client and as its
 * next hop, and a private Dovecot 2.3 LMTP server, all started here on free loopback ports.
 *
 *   client ─SMTPUTF8─▶ Postfix "in" ─content_filter─▶ Tandem ─▶ Postfix "out" ─▶ virtual Maildir
 *                                                       │  └─LMTP─▶ Dovecot ─▶ its Maildirs
 *                                                       └─▶ Tandem's Maildirs (nobody:nogroup),
 *                                                           read by Dovecot as the mail user
 * DSNs: Postfix "out" reports to the sender's domain through its relayhost, which is Tandem.
 * What is checked: UTF-8 addresses and headers arrive as valid UTF-8 with UTF8SMTP labels, ORCPT
 * of both types comes back unchanged in Postfix's own DSN, Tandem's DSN for a UTF-8 sender is a
 * global one, LMTP delivery into Dovecot, and Dovecot reading (and moving to cur/) what Tandem
 * delivered while running as another user.
 * Skipped, with the reason, where Postfix or Dovecot is not installed or we are not root.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { freePort } from './harness/ports.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { RawSmtpClient } from './harness/raw-smtp.ts';
import { eventually } from './harness/wait.ts';
import { POSTFIX_AVAILABLE, startPostfix, type PostfixInstance } from './harness/postfix.ts';
import { DOVECOT_AVAILABLE, MAIL_UID, startDovecot, type DovecotInstance } from './harness/dovecot.ts';

const skip = POSTFIX_AVAILABLE ?? DOVECOT_AVAILABLE ?? false;
const procs = trackProcesses();
const dir = mkdtempSync(path.join(searchableTmp(), 'tandem-interop-'));
chmodSync(dir, 0o755); // the postfix user and the mail user must reach their folders below

/** os.tmpdir() if every folder up to it lets others through (test/run.sh's is 0700), else /tmp. */
function searchableTmp(): string {
  for (let d = os.tmpdir(); ; d = path.dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return '/tmp';
    if (path.dirname(d) === d) return os.tmpdir();
  }
}
let postfix: PostfixInstance;
let dovecot: DovecotInstance;
let node: RunningNode;

before(async () => {
  if (skip) return;
  const tandemPort = await freePort('127.0.0.1');
  const tandem = { host: '127.0.0.1', port: tandemPort };
  [postfix, dovecot] = await Promise.all([
    startPostfix({
      dir: path.join(dir, 'postfix'),
      hostname: 'pf.test',
      listeners: { in: [`content_filter=smtp:[127.0.0.1]:${tandemPort}`], out: [] },
      relayHost: tandem,
      virtualDomains: ['out.test'],
      mainCf: ['smtpd_recipient_restrictions=check_recipient_access inline:{{bounce@out.test=550 5.1.1 no such user}}'],
    }),
    startDovecot({ dir: path.join(dir, 'dovecot') }),
  ]);
  const tables = writeTables(dir, {
    local_domains: 'tandem.test ok\n',
    virtual_mailboxes: 'sender@tandem.test sender/\njöran@tandem.test joran/\nreader@tandem.test reader/\n',
    transport: `out.test smtp:[127.0.0.1]:${postfix.listeners.out}\nlmtp.test lmtp:[127.0.0.1]:${dovecot.lmtpPort}\n`,
  });
  node = await startNode({
    config: writeNodeConfig(dir, {
      tables,
      local: { maildir_root: path.join(dir, 'mail'), maildir_owners: { 'tandem.test': { owner: 'nobody', group: 'nogroup', mode: '0600' } } },
      queue: { min_backoff: '1s', max_backoff: '2s' },
    }),
    listen: `127.0.0.1:${tandemPort}`,
    logFile: path.join(dir, 'tandem.out'),
  });
});

after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

/** One SMTP session, line by line; fails on any reply that is not 2xx/3xx. */
async function converse(port: number, lines: string[]): Promise<string[]> {
  const c = await RawSmtpClient.connect(port);
  try {
    const replies: string[] = [];
    const greeting = await c.readReply(10_000);
    assert.equal(greeting.type, 'reply');
    for (const line of lines) {
      const r = await c.command(Buffer.from(line, 'utf8').toString('latin1'), 30_000); // UTF-8 on the wire
      assert.ok(r.type === 'reply' && r.code < 400, `${line.slice(0, 60)} → ${JSON.stringify(r)}`);
      replies.push(r.text);
    }
    return replies;
  } finally {
    c.close();
  }
}

/** The files in a Maildir's new/ (and cur/), raw. */
function maildirFiles(box: string): Buffer[] {
  return ['new', 'cur'].flatMap((sub) => {
    const d = path.join(box, sub);
    return existsSync(d) ? readdirSync(d).map((f) => readFileSync(path.join(d, f))) : [];
  });
}

const isUtf8 = (b: Buffer) => Buffer.from(b.toString('utf8'), 'utf8').equals(b);
const tandemBox = (name: string) => path.join(dir, 'mail', name);

test('UTF-8 addresses from Postfix through Tandem to Postfix: valid UTF-8, UTF8SMTP on every hop, ORCPT of both types back unchanged in Postfix\'s DSN', { skip }, async () => {
  await converse(postfix.listeners.in, [
    'EHLO client.test',
    'MAIL FROM:<sender@tandem.test> SMTPUTF8',
    'RCPT TO:<日本@out.test> NOTIFY=SUCCESS',
    'RCPT TO:<first+x@out.test> NOTIFY=SUCCESS ORCPT=rfc822;first+2Bx@orig.test',
    'DATA',
    'From: <sender@tandem.test>\r\nTo: <日本@out.test>\r\nSubject: Grüße aus Tandem\r\nMessage-ID: <interop-1@client.test>\r\n\r\nfür dich\r\n.',
  ]);
  const delivered = await eventually('both copies in Postfix\'s virtual Maildir', () => {
    const files = maildirFiles(postfix.maildir).filter((f) => f.includes('interop-1@client.test'));
    return files.length === 2 && files;
  }, 60_000);
  for (const f of delivered) {
    assert.ok(isUtf8(f), 'valid UTF-8 all the way');
    const text = f.toString('utf8');
    assert.match(text, /by tandem\.test \(Tandem\) with UTF8SMTP id /, 'Tandem labels the hop from Postfix UTF8SMTP');
    assert.match(text, /from tandem\.test .*\r?\n\s+by pf\.test \(Postfix\) with UTF8SMTP/, 'Tandem sent SMTPUTF8 to Postfix');
    assert.match(text, /Subject: Grüße aus Tandem/);
    assert.match(text, /für dich/);
  }
  // Postfix "out" sends success DSNs for NOTIFY=SUCCESS to the sender, through Tandem
  const dsns = await eventually('the success DSN(s) from Postfix in the sender\'s Maildir', () => {
    const files = maildirFiles(tandemBox('sender')).map((f) => f.toString('utf8')).filter((t) => t.includes('interop-1@client.test'));
    const all = files.join('\n');
    return /first\+x@orig\.test/.test(all) && /日本@out\.test/.test(all) && files;
  }, 60_000);
  const all = dsns.join('\n');
  assert.match(all, /Original-Recipient: rfc822; ?first\+x@orig\.test/i, 'the rfc822 ORCPT the client gave, passed on by Tandem');
  assert.match(all, /Original-Recipient: utf-8; ?(日本|\\x\{65E5\}\\x\{672C\})@out\.test/i, 'the utf-8 ORCPT Postfix added, passed on by Tandem');
  assert.doesNotMatch(all, /rfc822;\s*utf-8/i, 'no ORCPT mangled into the other type');
});

test('a bounce for a UTF-8 sender is a global DSN (message/global-delivery-status) in valid UTF-8', { skip }, async () => {
  await converse(node.smtp.port, [
    'EHLO client.test',
    'MAIL FROM:<jöran@tandem.test> SMTPUTF8',
    'RCPT TO:<bounce@out.test>',
    'DATA',
    'Subject: will bounce\r\nMessage-ID: <interop-2@client.test>\r\n\r\nx\r\n.',
  ]);
  const [dsn] = await eventually('the DSN in jöran\'s Maildir', () => {
    const files = maildirFiles(tandemBox('joran')).filter((f) => f.includes('interop-2@client.test'));
    return files.length > 0 && files;
  }, 60_000);
  assert.ok(isUtf8(dsn));
  const text = dsn.toString('utf8');
  assert.match(text, /Content-Type: message\/global-delivery-status/);
  assert.match(text, /To: <jöran@tandem\.test>/);
  assert.match(text, /Final-Recipient: rfc822; bounce@out\.test/);
  assert.match(text, /Diagnostic-Code: smtp; 550 5\.1\.1/);
  assert.doesNotMatch(text, /Original-Recipient/, 'the client gave no ORCPT');
});

test('LMTP into Dovecot: an 8-bit message is delivered; a UTF-8 recipient, which Dovecot 2.3 cannot take (no SMTPUTF8), bounces with 5.6.7 in a global DSN', { skip }, async () => {
  await converse(node.smtp.port, [
    'EHLO client.test',
    'MAIL FROM:<sender@tandem.test> BODY=8BITMIME',
    'RCPT TO:<reader@lmtp.test>',
    'DATA',
    'Subject: lmtp\r\nMessage-ID: <interop-3@client.test>\r\n\r\nGrüße über LMTP\r\n.',
    'MAIL FROM:<sender@tandem.test> SMTPUTF8',
    'RCPT TO:<日本@lmtp.test>',
    'DATA',
    'Subject: lmtp utf-8\r\nMessage-ID: <interop-5@client.test>\r\n\r\nx\r\n.',
  ]);
  const fetched = await eventually('Dovecot has the message', async () => {
    const out = await dovecot.fetch('reader@lmtp.test').catch(() => '');
    return out.includes('interop-3@client.test') && out;
  }, 60_000);
  assert.match(fetched, /Grüße über LMTP/);
  const dsn = await eventually('the 5.6.7 DSN for 日本@lmtp.test', () =>
    maildirFiles(tandemBox('sender')).map((f) => f.toString('utf8')).find((x) => x.includes('interop-5@client.test')), 60_000);
  assert.match(dsn, /Content-Type: message\/global-delivery-status/);
  assert.match(dsn, /Final-Recipient: utf-8; 日本@lmtp\.test/);
  assert.match(dsn, /Status: 5\.6\.7/);
});

test('Dovecot, running as the mail user, reads and files what Tandem delivered into a Maildir owned by that user', { skip }, async () => {
  await converse(node.smtp.port, [
    'EHLO client.test',
    'MAIL FROM:<sender@tandem.test>',
    'RCPT TO:<reader@tandem.test>',
    'DATA',
    'Subject: for dovecot\r\nMessage-ID: <interop-4@client.test>\r\n\r\nread me as nobody\r\n.',
  ]);
  const box = tandemBox('reader');
  const [file] = await eventually('delivered into the Maildir', () => {
    const d = path.join(box, 'new');
    return existsSync(d) && readdirSync(d).length > 0 && readdirSync(d).map((f) => path.join(d, f));
  }, 30_000);
  const st = statSync(file);
  assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [MAIL_UID, MAIL_UID, 0o600]);
  const out = await dovecot.fetch('reader@tandem.test', `maildir:${box}`);
  assert.match(out, /read me as nobody/);
  await dovecot.doveadm(['flags', 'add'], 'reader@tandem.test', ['\\Seen', 'mailbox', 'INBOX', 'all'], `maildir:${box}`);
  // Dovecot could write: the message file renamed with the Seen flag, its index files created
  const names = ['new', 'cur'].flatMap((sub) => readdirSync(path.join(box, sub)));
  assert.equal(names.length, 1);
  assert.match(names[0], /:2,S$/, 'marked seen by Dovecot (a rename inside the Maildir)');
  assert.equal(statSync(path.join(box, 'dovecot-uidlist')).uid, MAIL_UID, 'Dovecot wrote its index as the mail user');
});
