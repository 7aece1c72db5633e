/**
 * sender-auth.test.ts — SPF, DKIM, DMARC verification and DKIM signing on a node process, with
 * a local authoritative DNS server on loopback (test/harness/dns.ts) and no internet:
 * pass/fail/none cases in Authentication-Results, a DMARC p=reject forgery refused (550 5.7.1)
 * on the "enforce" listener and only recorded on the "record" listener, p=quarantine held,
 * a DNS failure answered 451 (never 5xx), a forged Authentication-Results with our name
 * removed, and a message signed by the node verifying with mailauth.
 * Clients: 127.0.0.1 is in relay.networks (trusted: its mail is signed), 127.0.0.2 is not.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import os from 'node:os';
import path from 'node:path';
import { dkimVerify } from 'mailauth';
import { trackProcesses } from './harness/procs.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { parseHostPort } from './harness/ports.ts';
import { startDnsServer, type TestDns } from './harness/dns.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());
const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));

/** One message over a raw session from `from`; the reply to the final dot (or the first refusal). */
async function send(port: number, from: string, mailFrom: string, headerFrom: string, extraHeaders = ''): Promise<string> {
  const c = await RawSmtpClient.connect(port, '127.0.0.1', 5000, from);
  try {
    await c.readReply(10_000);
    await c.command('EHLO client.test');
    for (const cmd of [`MAIL FROM:<${mailFrom}>`, 'RCPT TO:<bob@example.test>']) {
      const r = await c.command(cmd);
      if (!(r.type === 'reply' && r.code === 250)) return show(r);
    }
    const d = await c.command('DATA');
    if (!(d.type === 'reply' && d.code === 354)) return show(d);
    c.write(`${extraHeaders}From: <${headerFrom}>\r\nTo: <bob@example.test>\r\nSubject: test from ${headerFrom}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@client.test>\r\nDate: Mon, 7 Dec 2026 01:00:00 +0000\r\n\r\nhello\r\n.\r\n`);
    const r = await c.readReply(20_000);
    await c.command('QUIT').catch(() => undefined);
    return show(r);
  } finally {
    c.close();
  }
}

describe('sender authentication with a local DNS server', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-senderauth-'));
  let node: RunningNode;
  let dns: TestDns;
  let ports: Record<string, number>;
  let publicKey: string;
  const maildir = path.join(dir, 'mail', 'bob', 'new');
  const delivered = () => (existsSync(maildir) ? readdirSync(maildir).map((f) => readFileSync(path.join(maildir, f), 'utf8')) : []);
  const find = (subject: string) => delivered().find((m) => m.includes(`Subject: test from ${subject}`));

  before(async () => {
    const keys = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const keyFile = path.join(dir, 'signed.test.pem');
    writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    publicKey = keys.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    dns = await startDnsServer({
      'pass.test': ['v=spf1 ip4:127.0.0.0/8 -all'],
      '_dmarc.pass.test': ['v=DMARC1; p=reject'],
      'forged.test': ['v=spf1 ip4:192.0.2.1 -all'],
      '_dmarc.forged.test': ['v=DMARC1; p=reject'],
      'quar.test': ['v=spf1 ip4:192.0.2.1 -all'],
      '_dmarc.quar.test': ['v=DMARC1; p=quarantine'],
      'broken.test': ['v=spf1 ip4:192.0.2.1 -all'],
      'signed.test': ['v=spf1 ip4:127.0.0.1 -all'],
      '_dmarc.signed.test': ['v=DMARC1; p=reject'],
      'sel._domainkey.signed.test': [`v=DKIM1; k=rsa; p=${publicKey}`],
    }, { servfail: ['_dmarc.broken.test'] });
    const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
    node = await startNode({
      config: writeNodeConfig(dir, {
        node: { id: 'sa', hostname: 'mx.tandem.test' },
        smtp: { listeners: [{ name: 'enforce', listen: '127.0.0.1:0', sender_auth: 'enforce' }, { name: 'record', listen: '127.0.0.1:0', sender_auth: 'record' }] },
        sender_auth: { dns_servers: [dns.address], dns_timeout: '2s' },
        dkim: { keys: [{ domain: 'signed.test', selector: 'sel', key_file: keyFile }] },
        relay: { networks: ['127.0.0.1/32'] },
        local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
        tables: { virtual_mailboxes: tables.virtual_mailboxes },
      }),
      logFile: path.join(dir, 'tandem.out'),
    });
    const listeners = node.proc.readyLine!.json!.listeners as Record<string, string>;
    ports = Object.fromEntries(Object.entries(listeners).map(([k, v]) => [k, parseHostPort(v).port]));
  });
  after(() => dns?.close());

  test('SPF pass / DMARC pass: accepted, with Authentication-Results from our name on top', async () => {
    assert.match(await send(ports.enforce, '127.0.0.2', 'a@pass.test', 'a@pass.test'), /^250 /);
    await eventually('delivered', () => find('a@pass.test'));
    const m = find('a@pass.test')!;
    assert.match(m, /^Authentication-Results: mx\.tandem\.test;[\s\S]*spf=pass[\s\S]*dmarc=pass/m);
    assert.ok(m.indexOf('Authentication-Results:') < m.indexOf('Received:'), 'the results come before our Received: header');
  });

  test('no records at all: accepted, spf=none dmarc=none', async () => {
    assert.match(await send(ports.enforce, '127.0.0.2', 'a@nothing.test', 'a@nothing.test'), /^250 /);
    await eventually('delivered', () => find('a@nothing.test'));
    assert.match(find('a@nothing.test')!, /spf=none[\s\S]*dmarc=none/);
  });

  test('a forgery of a DMARC p=reject domain is refused with 550 5.7.1 on the enforce listener, recorded as fail on the record listener', async () => {
    assert.match(await send(ports.enforce, '127.0.0.2', 'ceo@forged.test', 'ceo@forged.test'), /^550 5\.7\.1 .*DMARC/);
    assert.match(await send(ports.record, '127.0.0.2', 'ceo@forged.test', 'ceo@forged.test'), /^250 /);
    await eventually('the recorded forgery delivered', () => find('ceo@forged.test'));
    assert.equal(delivered().filter((m) => m.includes('test from ceo@forged.test')).length, 1, 'only the record listener took it');
    assert.match(find('ceo@forged.test')!, /spf=fail[\s\S]*dmarc=fail/);
  });

  test('DMARC p=quarantine failing: accepted and held, not delivered', async () => {
    const r = await send(ports.enforce, '127.0.0.2', 'x@quar.test', 'x@quar.test');
    assert.match(r, /^250 /);
    const id = /queued as (\S+)/.exec(r)![1];
    await eventually('the message in hold/', () => existsSync(path.join(dir, 'spool', 'sa', 'hold')) && readdirSync(path.join(dir, 'spool', 'sa', 'hold')).some((f) => f.startsWith(id)));
    assert.equal(find('x@quar.test'), undefined);
  });

  test('a DNS failure (SERVFAIL for the DMARC record) gives 451, never 5xx', async () => {
    assert.match(await send(ports.enforce, '127.0.0.2', 'x@broken.test', 'x@broken.test'), /^451 4\.4\.3 /);
  });

  test('a forged Authentication-Results with our name is removed; another host\'s is kept', async () => {
    const forged = 'Authentication-Results: mx.tandem.test; spf=pass smtp.mailfrom=forged;\r\n dmarc=pass\r\nAuthentication-Results: other.example; spf=pass\r\n';
    assert.match(await send(ports.enforce, '127.0.0.2', 'b@nothing.test', 'b@nothing.test', forged), /^250 /);
    await eventually('delivered', () => find('b@nothing.test'));
    const m = find('b@nothing.test')!;
    assert.equal(m.match(/^Authentication-Results: mx\.tandem\.test;/gm)?.length, 1, 'only our own results');
    assert.doesNotMatch(m, /smtp\.mailfrom=forged/);
    assert.match(m, /^Authentication-Results: other\.example; spf=pass/m);
  });

  test('a message from a trusted client is DKIM-signed by the node and verifies with mailauth', async () => {
    assert.match(await send(ports.enforce, '127.0.0.1', 'me@signed.test', 'me@signed.test'), /^250 /);
    await eventually('delivered', () => find('me@signed.test'));
    const m = find('me@signed.test')!;
    assert.match(m, /^DKIM-Signature: .*d=signed\.test/m);
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([dns.address]);
    const res = await dkimVerify(Buffer.from(m.replace(/\r?\n/g, '\r\n')), { resolver: (name: string, rr: string) => resolver.resolve(name, rr as 'TXT') } as any);
    assert.equal(res.results[0]?.status.result, 'pass', JSON.stringify(res.results[0]?.status));
    assert.match(m, /dmarc=pass/, 'and it passes our own DMARC check too');
  });
});
