/**
 * Directory-based configuration on a real OpenLDAP master + shadow (syncrepl), with a real node
 * process: entries written with `tandem dir` route mail; reads are spread over both servers;
 * with the master killed mail keeps flowing from the shadow and `tandem dir` writes fail with
 * "directory master unavailable — retry later" (exit 75); with the master back, writes work again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { eventually } from './harness/wait.ts';
import { SLAPD_AVAILABLE, startMasterShadow, waitForEntry, waitForReplicas, directorySection, type LdapSetup } from './harness/slapd.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-ms-'));
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
const health = async () => {
  const res = await fetch(`http://127.0.0.1:${node.admin!.port}/health`);
  return { code: res.status, body: (await res.json()) as { directory: { servers: Array<{ url: string; state: string; reads: number; lastLatencyMs?: number }> } } };
};
const msg = (subject: string) => `From: sender@remote.test\r\nSubject: ${subject}\r\n\r\n${subject}\r\n`;

before(async () => {
  if (skip) return;
  ldap = await startMasterShadow();
  configFile = writeNodeConfig(dir, {
    local: { maildir_root: path.join(dir, 'mail') },
    directory: directorySection(ldap, ['master', 'shadow'], { cache_ttl: '300ms', negative_cache_ttl: '200ms' }),
    admin: { listen: '127.0.0.1:0' },
  });
  for (const args of [['init'], ['add', 'domain', 'example.test'], ['add', 'mailbox', 'alice@example.test']]) {
    const r = await dirCli(...args);
    assert.equal(r.code, 0, r.stderr);
  }
  // the check reads the shadow too: it must hold what the master was just given (syncrepl is
  // asynchronous; without the wait the check once ran before the base entry had arrived)
  await waitForReplicas(ldap);
  const check = await runCli(['config', 'check', configFile]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stdout, new RegExp(`ok +directory server ${ldap.servers[1].url}: bound and read`));
  node = await startNode({ config: configFile, logFile: path.join(dir, 'node.log') });
});

test('an entry added with tandem dir on the master routes mail; reads go to master and shadow', { skip }, async () => {
  const add = await dirCli('add', 'mailbox', 'bob@example.test');
  assert.equal(add.code, 0, add.stderr);
  await waitForEntry(ldap.servers[1].url, `uid=bob@example.test,ou=people,${ldap.suffix}`, true);
  const list = await dirCli('add', 'list', 'team@example.test', 'alice@example.test', 'bob@example.test');
  assert.equal(list.code, 0, list.stderr);
  await waitForEntry(ldap.servers[1].url, `cn=team@example.test,ou=lists,${ldap.suffix}`, true);
  for (let i = 0; i < 4; i++) {
    const res = await sendMail(node.smtp.port, 'sender@remote.test', ['team@example.test'], msg(`team ${i}`));
    assert.equal(res.ok, true, res.response);
  }
  await eventually('8 deliveries', () => delivered('alice') === 4 && delivered('bob') === 4);
  const h = await health();
  assert.equal(h.code, 200);
  const [master, shadow] = h.body.directory.servers;
  assert.ok(master.reads > 0 && shadow.reads > 0, `reads on both servers: ${JSON.stringify(h.body.directory.servers)}`);
  assert.equal(master.state, 'up');
  assert.equal(typeof shadow.lastLatencyMs, 'number');
  const metrics = await (await fetch(`http://127.0.0.1:${node.admin!.port}/metrics`)).text();
  assert.match(metrics, new RegExp(`tandem_directory_server_up\\{server="${ldap.servers[1].url}",role="shadow"\\} 1`));
  assert.match(metrics, /tandem_directory_lookup_seconds_count\{server="[^"]+",op="read"\} \d+/);
});

test('master killed: mail keeps flowing from the shadow, writes fail with exit 75; master back: writes work', { skip }, async () => {
  const [master, shadow] = ldap.servers;
  await master.kill();
  const before = delivered('alice');
  const shadowReads = (await health()).body.directory.servers[1].reads;
  for (let i = 0; i < 3; i++) {
    // wait past cache_ttl so the lookups really go to the directory
    await new Promise((r) => setTimeout(r, 400));
    const res = await sendMail(node.smtp.port, 'sender@remote.test', ['alice@example.test', 'bob@example.test'], msg(`master down ${i}`));
    assert.equal(res.ok, true, res.response);
  }
  await eventually('deliveries with the master down', () => delivered('alice') === before + 3);
  const write = await dirCli('add', 'mailbox', 'carol@example.test');
  assert.equal(write.code, 75, write.stdout + write.stderr);
  assert.match(write.stderr, /directory master unavailable — retry later/);
  const h = await health();
  assert.equal(h.code, 200, 'the node stays ready: mail flows from the shadow');
  assert.equal(h.body.directory.servers.find((s) => s.url === master.url)!.state, 'down');
  assert.equal(h.body.directory.servers.find((s) => s.url === shadow.url)!.state, 'up');
  assert.ok(h.body.directory.servers[1].reads > shadowReads, 'the lookups went to the shadow');

  await master.start();
  const again = await dirCli('add', 'mailbox', 'carol@example.test');
  assert.equal(again.code, 0, again.stderr);
  await waitForEntry(shadow.url, `uid=carol@example.test,ou=people,${ldap.suffix}`, true);
  // carol was never looked up, so no negative answer is cached: the first try routes
  const res = await eventually('carol accepted', async () => {
    const r = await sendMail(node.smtp.port, 'sender@remote.test', ['carol@example.test'], msg('to carol'));
    return r.ok ? r : undefined;
  });
  assert.ok(res.ok);
  await eventually('carol delivered', () => delivered('carol') === 1);
});
