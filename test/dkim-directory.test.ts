/**
 * dkim-directory.test.ts — DKIM signing keys from the LDAP directory (dkim.directory), on a node
 * process reading a real slapd master + shadow, verified with mailauth against a local DNS server:
 *  - a domain entry with the key in it (tandemDkimPrivateKey, RSA) and one naming a key file on
 *    the node (tandemDkimKeyFile, Ed25519): mail from a trusted client is signed with the entry's
 *    selector and verifies;
 *  - a domain without an entry: accepted unsigned;
 *  - an entry whose key file is missing: 451 (the client keeps the message), the entry and the
 *    file named in the log; nothing delivered;
 *  - `tandem config check` reads every entry's key and names the bad entry and file; a bad file in
 *    dkim.keys is named too.
 * 127.0.0.1 is in relay.networks (trusted: its mail is signed).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';
import { dkimVerify } from 'mailauth';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { startDnsServer, type TestDns } from './harness/dns.ts';
import { eventually } from './harness/wait.ts';
import { SLAPD_AVAILABLE, startMasterShadow, waitForEntry, directorySection, type LdapSetup } from './harness/slapd.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dkim-dir-'));
const missingKeyFile = path.join(dir, 'keys', 'missing.pem');
let ldap: LdapSetup;
let dns: TestDns;
let node: RunningNode;
let configFile: string;

after(async () => {
  await dns?.close();
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const inbox = path.join(dir, 'mail', 'example.test', 'bob', 'new');
const delivered = () => (existsSync(inbox) ? readdirSync(inbox).map((f) => readFileSync(path.join(inbox, f), 'utf8')) : []);
const find = (from: string) => delivered().find((m) => m.includes(`Subject: from ${from}`));
const msg = (from: string) => `From: <${from}>\r\nTo: <bob@example.test>\r\nSubject: from ${from}\r\nMessage-ID: <${from.replace('@', '.')}@client.test>\r\nDate: Mon, 7 Dec 2026 05:00:00 +0000\r\n\r\nhello\r\n`;

async function ldapAdd(dn: string, attrs: Record<string, string[]>): Promise<void> {
  const c = new Client({ url: ldap.servers[0].url, connectTimeout: 1000, timeout: 5000 });
  try {
    await c.bind(ldap.rootDn, ldap.rootPw);
    await c.add(dn, attrs);
  } finally {
    await c.unbind().catch(() => undefined);
  }
}

/** A domain entry (tandemDomain) with a DKIM key (tandemDkimDomain). */
const dkimDomain = (domain: string, selector: string, key: { file: string } | { pem: string }) => ldapAdd(`associatedDomain=${domain},ou=domains,${ldap.suffix}`, {
  objectClass: ['tandemDomain', 'tandemDkimDomain'], associatedDomain: [domain], tandemDomainType: ['relay'], tandemDkimSelector: [selector],
  ...('file' in key ? { tandemDkimKeyFile: [key.file] } : { tandemDkimPrivateKey: [key.pem] }),
});

before(async () => {
  if (skip) return;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const ed = generateKeyPairSync('ed25519');
  const edFile = path.join(dir, 'filed.test.pem');
  writeFileSync(edFile, ed.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  dns = await startDnsServer({
    'dir2026._domainkey.signed.test': [`v=DKIM1; k=rsa; p=${rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`],
    // Ed25519 (RFC 8463): the raw 32-byte public key, the end of its SPKI form
    'ed1._domainkey.filed.test': [`v=DKIM1; k=ed25519; p=${ed.publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64')}`],
  });
  ldap = await startMasterShadow();
  configFile = writeNodeConfig(dir, {
    node: { id: 'dk', hostname: 'mx.tandem.test' },
    local: { maildir_root: path.join(dir, 'mail') },
    relay: { networks: ['127.0.0.1/32'] },
    directory: directorySection(ldap, ['master', 'shadow']),
    dkim: { directory: true },
  });
  for (const args of [['init'], ['add', 'domain', 'example.test'], ['add', 'mailbox', 'bob@example.test']]) {
    const r = await runCli(['dir', ...args, '--config', configFile]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  await dkimDomain('signed.test', 'dir2026', { pem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string });
  await dkimDomain('filed.test', 'ed1', { file: edFile });
  await dkimDomain('broken.test', 'b1', { file: missingKeyFile });
  await waitForEntry(ldap.servers[1].url, `associatedDomain=broken.test,ou=domains,${ldap.suffix}`, true);
  node = await startNode({ config: configFile, logFile: path.join(dir, 'node.log') });
});

async function verified(m: string): Promise<{ result: string; domain: string; selector: string }> {
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([dns.address]);
  const res = await dkimVerify(Buffer.from(m.replace(/\r?\n/g, '\r\n')), { resolver: (name: string, rr: string) => resolver.resolve(name, rr as 'TXT') } as any);
  const r = res.results[0] as any;
  return { result: r?.status?.result, domain: r?.signingDomain, selector: r?.selector };
}

test('keys from directory entries (in the entry, or a key file it names) sign mail from trusted clients; the signatures verify', { skip }, async () => {
  for (const [from, selector] of [['me@signed.test', 'dir2026'], ['me@filed.test', 'ed1']] as const) {
    const r = await sendMail(node.smtp.port, from, ['bob@example.test'], msg(from));
    assert.equal(r.ok, true, r.response);
    const m = await eventually(`${from} delivered`, () => find(from));
    assert.match(m, new RegExp(`^DKIM-Signature: [\\s\\S]*s=${selector}`, 'm'));
    assert.deepEqual(await verified(m), { result: 'pass', domain: from.split('@')[1], selector });
  }
});

test('a domain without a DKIM entry: accepted and delivered unsigned', { skip }, async () => {
  const r = await sendMail(node.smtp.port, 'me@plain.test', ['bob@example.test'], msg('me@plain.test'));
  assert.equal(r.ok, true, r.response);
  const m = await eventually('delivered', () => find('me@plain.test'));
  assert.doesNotMatch(m, /^DKIM-Signature:/m);
});

test('an entry whose key file is missing: 451 (never sent on unsigned, nothing lost), the entry and the file named in the log', { skip }, async () => {
  const r = await sendMail(node.smtp.port, 'me@broken.test', ['bob@example.test'], msg('me@broken.test'));
  assert.match(r.response, /^451 4\.3\.0 .*DKIM signing key of broken\.test/);
  const line = await node.proc.waitForLine((l) => l.json?.event === 'dkim-key-unavailable', 5000);
  assert.match(String(line.json?.err), /associatedDomain=broken\.test,ou=domains/);
  assert.ok(String(line.json?.err).includes(missingKeyFile), String(line.json?.err));
  assert.equal(find('me@broken.test'), undefined);
});

test('tandem config check reads every DKIM key, naming the bad directory entry and the bad file', { skip }, async () => {
  const check = await runCli(['config', 'check', configFile]);
  assert.notEqual(check.code, 0, check.stdout);
  assert.match(check.stdout, /ok +DKIM key of signed\.test \(selector dir2026\) in directory entry associatedDomain=signed\.test,ou=domains.*: key in the entry/);
  assert.match(check.stdout, /ok +DKIM key of filed\.test \(selector ed1\) in directory entry .*: key file /);
  const bad = check.stdout.split('\n').find((l) => /FAIL DKIM key of broken\.test/.test(l));
  assert.ok(bad && bad.includes('associatedDomain=broken.test,ou=domains') && bad.includes(missingKeyFile), check.stdout);

  // dkim.keys: a file that is no key
  const notKey = path.join(dir, 'not-a-key.pem');
  writeFileSync(notKey, '-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n');
  const other = path.join(dir, 'other');
  const file = writeNodeConfig(other, { dkim: { keys: [{ domain: 'x.test', selector: 's1', key_file: notKey }] } });
  const c2 = await runCli(['config', 'check', file]);
  assert.notEqual(c2.code, 0, c2.stdout);
  assert.match(c2.stdout, new RegExp(`FAIL DKIM key of x\\.test \\(selector s1\\) ${notKey.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*not a PEM private key`));
});
