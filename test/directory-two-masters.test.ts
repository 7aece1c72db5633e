/**
 * Two OpenLDAP masters replicating each other (multi-provider), both configured as masters:
 * `tandem dir` writes go to the first; with either one killed they go to the other; after a
 * restart both converge to the same entries.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { writeNodeConfig } from './harness/node.ts';
import { eventually } from './harness/wait.ts';
import { SLAPD_AVAILABLE, startTwoMasters, waitForEntry, directorySection, type LdapSetup } from './harness/slapd.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-mm-'));
let ldap: LdapSetup;
let configFile: string;

after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const dirCli = (...args: string[]) => runCli(['dir', ...args, '--config', configFile]);

/** DN → entryCSN of every entry on one server. */
async function contents(url: string): Promise<Map<string, string>> {
  const c = new Client({ url, connectTimeout: 1000, timeout: 2000 });
  try {
    const { searchEntries } = await c.search(ldap.suffix, { scope: 'sub', attributes: ['entryCSN'] });
    return new Map(searchEntries.map((e) => [e.dn.toLowerCase(), String(e.entryCSN)]));
  } finally {
    await c.unbind().catch(() => undefined);
  }
}

/** The serverID that made an entry (third field of its entryCSN): 1 = first master, 2 = second. */
async function writtenBy(url: string, dn: string): Promise<number> {
  const csn = (await contents(url)).get(dn.toLowerCase());
  assert.ok(csn, `${dn} on ${url}`);
  return Number(csn.split('#')[2]);
}

before(async () => {
  if (skip) return;
  ldap = await startTwoMasters();
  configFile = writeNodeConfig(dir, { directory: directorySection(ldap, ['master', 'master']) });
  const init = await dirCli('init');
  assert.equal(init.code, 0, init.stderr);
  await waitForEntry(ldap.servers[1].url, `ou=routes,${ldap.suffix}`, true);
});

test('writes go to the first master while it is up', { skip }, async () => {
  const r = await dirCli('add', 'domain', 'first.test');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await writtenBy(ldap.servers[0].url, `associatedDomain=first.test,ou=domains,${ldap.suffix}`), 1);
});

test('either master killed: writes go to the other; restarted: both converge', { skip }, async () => {
  const [a, b] = ldap.servers;
  await a.kill();
  const onB = await dirCli('add', 'mailbox', 'while-a-down@example.test');
  assert.equal(onB.code, 0, onB.stderr);
  const dnB = `uid=while-a-down@example.test,ou=people,${ldap.suffix}`;
  assert.equal(await writtenBy(b.url, dnB), 2, 'written on the second master');
  await a.start();
  await waitForEntry(a.url, dnB, true);

  await b.kill();
  const onA = await dirCli('add', 'route', 'partner.test', 'smtp:[192.0.2.10]:25');
  assert.equal(onA.code, 0, onA.stderr);
  const dnA = `tandemRouteKey=partner.test,ou=routes,${ldap.suffix}`;
  assert.equal(await writtenBy(a.url, dnA), 1);
  await b.start();
  await waitForEntry(b.url, dnA, true);

  const [ca, cb] = await eventually('both masters hold the same entries', async () => {
    const [x, y] = [await contents(a.url), await contents(b.url)];
    return JSON.stringify([...x].sort()) === JSON.stringify([...y].sort()) ? [x, y] : undefined;
  });
  assert.ok(ca.has(dnB.toLowerCase()) && cb.has(dnA.toLowerCase()));

  await Promise.all([a.kill(), b.kill()]);
  const none = await dirCli('remove', 'route', 'partner.test');
  assert.equal(none.code, 75);
  assert.match(none.stderr, /directory master unavailable — retry later/);
});
