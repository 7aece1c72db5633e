/**
 * A node reading from a real master + shadow when every directory server is down, and when the
 * directory holds bad data:
 *  - mail accepted just before the outage is deferred (never bounced) and delivered once, when
 *    the directory returns; known addresses keep working on cached answers; an address never
 *    looked up gets 451 (try later), not 550;
 *  - a malformed address in a list is skipped with a warning naming the entry, an alias loop
 *    ends, a list bigger than local.max_alias_expansion is refused at RCPT with the reason.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient } from './harness/raw-smtp.ts';
import { eventually } from './harness/wait.ts';
import { SLAPD_AVAILABLE, startMasterShadow, waitForEntry, directorySection, type LdapSetup } from './harness/slapd.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-out-'));
let ldap: LdapSetup;
let node: RunningNode;
let configFile: string;

after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const dirCli = (...args: string[]) => runCli(['dir', ...args, '--config', configFile]);
const delivered = (user: string) => {
  const d = path.join(dir, 'mail', 'example.test', user, 'new');
  return existsSync(d) ? readdirSync(d).length : 0;
};
const tracking = () => readFileSync(path.join(dir, 'tracking.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; queueId: string; recipient?: string; reply?: string });
const msg = (subject: string) => `From: sender@remote.test\r\nSubject: ${subject}\r\n\r\n${subject}\r\n`;

async function ldapAdd(dn: string, attrs: Record<string, string[]>): Promise<void> {
  const c = new Client({ url: ldap.servers[0].url, connectTimeout: 1000, timeout: 5000 });
  try {
    await c.bind(ldap.rootDn, ldap.rootPw);
    await c.add(dn, attrs);
  } finally {
    await c.unbind().catch(() => undefined);
  }
}

before(async () => {
  if (skip) return;
  ldap = await startMasterShadow();
  configFile = writeNodeConfig(dir, {
    local: { maildir_root: path.join(dir, 'mail'), max_alias_expansion: 50 },
    directory: directorySection(ldap, ['master', 'shadow'], { cache_ttl: '300ms', negative_cache_ttl: '200ms', max_stale: '60s' }),
    queue: { min_backoff: '1s', max_backoff: '2s' },
  });
  for (const args of [
    ['init'], ['add', 'domain', 'example.test'],
    ['add', 'mailbox', 'alice@example.test'], ['add', 'mailbox', 'bob@example.test'], ['add', 'mailbox', 'dora@example.test'],
    ['add', 'alias', 'loop-a@example.test', 'loop-b@example.test'], ['add', 'alias', 'loop-b@example.test', 'loop-a@example.test', 'dora@example.test'],
  ]) {
    const r = await dirCli(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  // bad data the CLI would refuse, written straight into the directory
  await ldapAdd(`cn=mixed@example.test,ou=aliases,${ldap.suffix}`, {
    objectClass: ['nisMailAlias', 'inetLocalMailRecipient'], cn: ['mixed@example.test'], mailLocalAddress: ['mixed@example.test'],
    rfc822MailMember: ['alice@example.test', 'not an address', 'bob@@'],
  });
  await ldapAdd(`cn=huge@example.test,ou=aliases,${ldap.suffix}`, {
    objectClass: ['nisMailAlias', 'inetLocalMailRecipient'], cn: ['huge@example.test'], mailLocalAddress: ['huge@example.test'],
    rfc822MailMember: Array.from({ length: 2000 }, (_, i) => `member${i}@remote.test`),
  });
  await waitForEntry(ldap.servers[1].url, `cn=huge@example.test,ou=aliases,${ldap.suffix}`, true);
  node = await startNode({ config: configFile, logFile: path.join(dir, 'node.log') });
});

test('bad directory data: malformed member skipped with a warning, alias loop ends, huge list refused', { skip }, async () => {
  const mixed = await sendMail(node.smtp.port, 'sender@remote.test', ['mixed@example.test'], msg('mixed'));
  assert.equal(mixed.ok, true, mixed.response);
  await eventually('alice got the mixed-list message', () => delivered('alice') === 1);
  const warning = await node.proc.waitForLine((l) => l.json?.event === 'directory-bad-entry' && /not an address/.test(String(l.json?.msg)), 5000);
  assert.match(String(warning.json?.msg), /cn=mixed@example\.test,ou=aliases/);

  const loop = await sendMail(node.smtp.port, 'sender@remote.test', ['loop-a@example.test'], msg('loop'));
  assert.equal(loop.ok, true, loop.response);
  await eventually('dora got the message through the loop, once', () => delivered('dora') === 1);

  const huge = await sendMail(node.smtp.port, 'sender@remote.test', ['huge@example.test'], msg('huge'));
  assert.equal(huge.ok, false);
  assert.match(huge.response, /^550 5\.4\.6 .*exceeds 50 addresses/);
});

test('every directory server down: accepted mail deferred, not bounced, delivered once when it returns', { skip }, async () => {
  const aliceBefore = delivered('alice');
  const warm = await sendMail(node.smtp.port, 'sender@remote.test', ['alice@example.test'], msg('warm'));
  assert.equal(warm.ok, true, warm.response);
  await eventually('warm-up delivered', () => delivered('alice') === aliceBefore + 1);

  // bob is resolved at RCPT while the directory is up; his route is looked up only after DATA
  const smtp = await RawSmtpClient.connect(node.smtp.port);
  try {
    assert.equal(((await smtp.readReply(5000)) as { code: number }).code, 220);
    await smtp.command('EHLO client.test', 5000);
    assert.equal(((await smtp.command('MAIL FROM:<sender@remote.test>', 5000)) as { code: number }).code, 250);
    assert.equal(((await smtp.command('RCPT TO:<bob@example.test>', 5000)) as { code: number }).code, 250);
    await Promise.all(ldap.servers.map((s) => s.kill()));
    assert.equal(((await smtp.command('DATA', 5000)) as { code: number }).code, 354);
    const queued = await smtp.command(`${msg('during outage')}.`, 10_000);
    assert.equal((queued as { code: number }).code, 250, JSON.stringify(queued));
    await smtp.command('QUIT', 5000);
  } finally {
    smtp.close();
  }
  const deferred = await eventually('bob deferred', () => tracking().find((e) => e.event === 'deferred' && e.recipient === 'bob@example.test'));
  assert.match(String(deferred.reply), /^4\.3\.0 routing lookup failed/);

  await new Promise((r) => setTimeout(r, 400));
  const cached = await sendMail(node.smtp.port, 'sender@remote.test', ['alice@example.test'], msg('cached'));
  assert.equal(cached.ok, true, `a known address keeps working on cached answers: ${cached.response}`);
  const unknown = await sendMail(node.smtp.port, 'sender@remote.test', ['never-seen@example.test'], msg('unknown'));
  assert.equal(unknown.ok, false);
  assert.match(unknown.response, /^451 4\.3\.0 /);

  await Promise.all(ldap.servers.map((s) => s.start()));
  await eventually('bob delivered after the directory returned', () => delivered('bob') === 1, 20_000);
  // the Maildir file is there a moment before the tracking line that records it
  await eventually('bob\'s delivery recorded', () => tracking().some((e) => e.queueId === deferred.queueId && e.event === 'delivered'), 10_000);
  const events = tracking().filter((e) => e.queueId === deferred.queueId);
  assert.equal(events.filter((e) => e.event === 'delivered').length, 1);
  assert.equal(events.filter((e) => e.event === 'bounced').length, 0, 'never bounced for a lookup failure');
});
