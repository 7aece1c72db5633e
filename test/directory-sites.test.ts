/**
 * Directory per site, on real OpenLDAP: a master per site (dc1, dc2) replicating each other
 * (multi-provider) and a shadow per site, with a real node process in each site. Each node reads
 * only from its own site's servers and `tandem dir` writes go to its own site's master; with
 * dc1's master and shadow killed (the directory side of a site loss) the dc1 node reads from dc2
 * and writes to dc2's master while the dc2 node never notices; with them back, the dc1 node's
 * reads and writes return to dc1 and the two masters converge (same entries, same contextCSN).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';
import { trackProcesses } from './harness/procs.ts';
import { runCli } from './harness/tandem.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { eventually } from './harness/wait.ts';
import { SLAPD_AVAILABLE, startTwoSites, waitForEntry, waitForReplicas, directorySection, type LdapSetup, type SlapdServer } from './harness/slapd.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-sites-'));
const ROLES = ['master', 'master', 'shadow', 'shadow'] as const;
let ldap: LdapSetup;
let masterDc1: SlapdServer, masterDc2: SlapdServer, shadowDc1: SlapdServer, shadowDc2: SlapdServer;

interface SiteNode { site: string; config: string; mail: string; node: RunningNode }
const sites: Record<'dc1' | 'dc2', SiteNode> = {} as Record<'dc1' | 'dc2', SiteNode>;

after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const dirCli = (at: SiteNode | string, ...args: string[]) => runCli(['dir', ...args, '--config', typeof at === 'string' ? at : at.config]);
const people = (user: string) => `uid=${user}@example.test,ou=people,${ldap.suffix}`;
const delivered = (at: SiteNode, user: string) => {
  const d = path.join(at.mail, 'example.test', user, 'new');
  return existsSync(d) ? readdirSync(d).length : 0;
};
const msg = (subject: string) => `From: sender@remote.test\r\nSubject: ${subject}\r\n\r\n${subject}\r\n`;

interface ServerHealth { url: string; site?: string; state: string; reads: number; errors: number }
/** The node's directory servers by name (master-dc1 …), from /health. */
async function servers(at: SiteNode): Promise<Record<string, ServerHealth>> {
  const res = await fetch(`http://127.0.0.1:${at.node.admin!.port}/health`);
  const body = (await res.json()) as { directory: { servers: ServerHealth[] } };
  return Object.fromEntries(ldap.servers.map((s) => [s.name, body.directory.servers.find((x) => x.url === s.url)!]));
}
const readsAt = (h: Record<string, ServerHealth>, site: string) => ldap.servers.filter((s) => s.site === site).map((s) => h[s.name].reads);
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Send one message through the site's node (every recipient is looked up: cache_ttl 0). */
async function mail(at: SiteNode, to: string[], subject: string): Promise<void> {
  const res = await sendMail(at.node.smtp.port, 'sender@remote.test', to.map((u) => `${u}@example.test`), msg(subject));
  assert.equal(res.ok, true, `${at.site}: ${res.response}`);
}

/** The serverID that wrote an entry (third field of its entryCSN): 1 = master-dc1, 2 = master-dc2. */
async function writtenBy(server: SlapdServer, dn: string): Promise<number> {
  const [csn] = await attribute(server, dn, 'entryCSN');
  assert.ok(csn, `${dn} on ${server.name}`);
  return Number(csn.split('#')[2]);
}

async function attribute(server: SlapdServer, dn: string, name: string): Promise<string[]> {
  const c = new Client({ url: server.url, connectTimeout: 1000, timeout: 2000 });
  try {
    const { searchEntries } = await c.search(dn, { scope: 'base', attributes: [name] });
    const v = searchEntries[0]?.[name];
    return v === undefined ? [] : (Array.isArray(v) ? v : [v]).map(String).sort();
  } finally {
    await c.unbind().catch(() => undefined);
  }
}

before(async () => {
  if (skip) return;
  ldap = await startTwoSites();
  [masterDc1, masterDc2, shadowDc1, shadowDc2] = ldap.servers;
  for (const site of ['dc1', 'dc2'] as const) {
    const d = path.join(dir, site);
    const mailRoot = path.join(d, 'mail');
    // cache_ttl 0: every lookup reads the directory, so the counters show where reads go
    const config = writeNodeConfig(d, {
      local: { maildir_root: mailRoot },
      directory: directorySection(ldap, [...ROLES], { site, cache_ttl: '0s', negative_cache_ttl: '0s' }),
      admin: { listen: '127.0.0.1:0' },
    });
    sites[site] = { site, config, mail: mailRoot, node: undefined as unknown as RunningNode };
  }
  for (const args of [['init'], ['add', 'domain', 'example.test'], ['add', 'mailbox', 'alice@example.test']]) {
    const r = await dirCli(sites.dc1, ...args);
    assert.equal(r.code, 0, r.stderr);
  }
  await waitForReplicas(ldap);
  for (const at of Object.values(sites)) at.node = await startNode({ config: at.config, logFile: path.join(dir, `${at.site}.log`) });
});

test('each node reads only from its own site\'s servers; tandem dir writes go to its own site\'s master', { skip }, async () => {
  assert.equal(await writtenBy(masterDc1, people('alice')), 1, 'the dc1 config wrote alice on master-dc1');
  const bob = await dirCli(sites.dc2, 'add', 'mailbox', 'bob@example.test');
  assert.equal(bob.code, 0, bob.stderr);
  assert.equal(await writtenBy(masterDc2, people('bob')), 2, 'the dc2 config wrote bob on master-dc2');
  await waitForReplicas(ldap);

  for (let i = 0; i < 3; i++) {
    await mail(sites.dc1, ['alice', 'bob'], `dc1 ${i}`);
    await mail(sites.dc2, ['alice', 'bob'], `dc2 ${i}`);
  }
  await eventually('12 deliveries', () => ['alice', 'bob'].every((u) => delivered(sites.dc1, u) === 3 && delivered(sites.dc2, u) === 3));
  const [h1, h2] = [await servers(sites.dc1), await servers(sites.dc2)];
  assert.ok(readsAt(h1, 'dc1').every((n) => n > 0), `dc1 node: reads spread over master-dc1 and shadow-dc1: ${JSON.stringify(h1)}`);
  assert.deepEqual(readsAt(h1, 'dc2'), [0, 0], 'dc1 node: no read in dc2');
  assert.ok(readsAt(h2, 'dc2').every((n) => n > 0), `dc2 node: reads spread over dc2: ${JSON.stringify(h2)}`);
  assert.deepEqual(readsAt(h2, 'dc1'), [0, 0], 'dc2 node: no read in dc1');
  assert.equal(h1['master-dc2'].site, 'dc2', '/health shows each server\'s site');
  const metrics = await (await fetch(`http://127.0.0.1:${sites.dc1.node.admin!.port}/metrics`)).text();
  assert.ok(metrics.includes(`tandem_directory_server_up{server="${shadowDc1.url}",role="shadow",site="dc1"} 1`), metrics);

  // the site can also come from the cluster config (cluster.nodes[].site of --node-id)
  const clusterFile = writeNodeConfig(path.join(dir, 'cluster'), {
    cluster: {
      secret: 'directory-sites-test-secret-0123456789',
      nodes: [{ id: 'a', heartbeat: '127.0.0.1:1', site: 'dc1' }, { id: 'b', heartbeat: '127.0.0.1:2', site: 'dc2' }],
    },
    directory: directorySection(ldap, [...ROLES]),
  });
  const route = await runCli(['dir', 'add', 'route', 'partner.test', 'smtp:[192.0.2.10]:25', '--config', clusterFile, '--node-id', 'b']);
  assert.equal(route.code, 0, route.stderr);
  assert.equal(await writtenBy(masterDc2, `tandemRouteKey=partner.test,ou=routes,${ldap.suffix}`), 2, 'node b (dc2) wrote on master-dc2');
  const check = await runCli(['config', 'check', clusterFile, '--node-id', 'b', '--no-connect']);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.ok(check.stdout.includes(`ok   directory site dc2: reads from ${masterDc2.url}, ${shadowDc2.url}, the other sites' servers only while these are down; writes to ${masterDc2.url} first`), check.stdout);
});

test('dc1\'s servers killed: the dc1 node reads from dc2 and writes to master-dc2, dc2 unaffected; back: dc1 again, the masters converge', { skip }, async () => {
  const before1 = await servers(sites.dc1);
  const before2 = await servers(sites.dc2);
  await Promise.all([masterDc1.kill(), shadowDc1.kill()]);

  const carol = await dirCli(sites.dc1, 'add', 'mailbox', 'carol@example.test');
  assert.equal(carol.code, 0, carol.stderr);
  assert.equal(await writtenBy(masterDc2, people('carol')), 2, 'written on master-dc2 while master-dc1 is down');
  await waitForEntry(shadowDc2.url, people('carol'), true);
  const dave = await dirCli(sites.dc2, 'add', 'mailbox', 'dave@example.test');
  assert.equal(dave.code, 0, dave.stderr);
  await waitForEntry(shadowDc2.url, people('dave'), true);

  const sent = { dc1: delivered(sites.dc1, 'alice'), dc2: delivered(sites.dc2, 'alice') };
  for (let i = 0; i < 3; i++) {
    await mail(sites.dc1, ['alice', 'carol', 'dave'], `dc1 down ${i}`);
    await mail(sites.dc2, ['alice', 'carol', 'dave'], `dc2 ${i}`);
  }
  await eventually('deliveries in both sites with dc1\'s directory down', () => delivered(sites.dc1, 'alice') === sent.dc1 + 3
    && delivered(sites.dc2, 'alice') === sent.dc2 + 3 && delivered(sites.dc1, 'carol') === 3 && delivered(sites.dc2, 'dave') === 3);
  const down1 = await servers(sites.dc1);
  assert.deepEqual([down1['master-dc1'].state, down1['shadow-dc1'].state], ['down', 'down']);
  assert.ok(sum(readsAt(down1, 'dc2')) > 0, `the dc1 node read from dc2: ${JSON.stringify(down1)}`);
  assert.deepEqual(readsAt(down1, 'dc1'), readsAt(before1, 'dc1'), 'no read answered in dc1');
  const down2 = await servers(sites.dc2);
  assert.ok(sum(readsAt(down2, 'dc2')) > sum(readsAt(before2, 'dc2')));
  assert.deepEqual(ldap.servers.map((s) => down2[s.name].errors), [0, 0, 0, 0], 'the dc2 node never noticed dc1\'s loss');
  assert.deepEqual(readsAt(down2, 'dc1'), [0, 0]);

  await Promise.all([masterDc1.start(), shadowDc1.start()]);
  await waitForReplicas(ldap);
  // every read probes dc1's servers again once their back-off (500 ms) has passed
  let n = 0;
  await eventually('the dc1 node reads from dc1 again', async () => {
    await mail(sites.dc1, ['alice'], `dc1 back ${n++}`);
    const h = await servers(sites.dc1);
    return h['master-dc1'].state === 'up' && h['shadow-dc1'].state === 'up';
  }, 20_000, 100);
  const back = await servers(sites.dc1);
  for (let i = 0; i < 3; i++) await mail(sites.dc1, ['alice', 'carol'], `dc1 home ${i}`);
  const home = await servers(sites.dc1);
  assert.deepEqual(readsAt(home, 'dc2'), readsAt(back, 'dc2'), 'no read in dc2 once dc1 is back');
  assert.ok(readsAt(home, 'dc1').every((x, i) => x > readsAt(back, 'dc1')[i]), `reads spread over dc1 again: ${JSON.stringify(home)}`);
  await eventually('carol delivered in dc1', () => delivered(sites.dc1, 'carol') === 6);

  const erin = await dirCli(sites.dc1, 'add', 'mailbox', 'erin@example.test');
  assert.equal(erin.code, 0, erin.stderr);
  assert.equal(await writtenBy(masterDc1, people('erin')), 1, 'master-dc1 back: the dc1 node writes there again');

  // convergence: every server holds the same entries with the same entryCSN, and both masters
  // the same contextCSN, with a value for each master's serverID
  await waitForReplicas(ldap);
  const csns = await eventually('the masters\' contextCSN agree', async () => {
    const [a, b] = [await attribute(masterDc1, ldap.suffix, 'contextCSN'), await attribute(masterDc2, ldap.suffix, 'contextCSN')];
    return JSON.stringify(a) === JSON.stringify(b) ? a : undefined;
  });
  assert.deepEqual(csns.map((c) => c.split('#')[2]).sort(), ['001', '002']);
  for (const s of [masterDc2, shadowDc1, shadowDc2]) {
    for (const u of ['carol', 'dave', 'erin']) assert.equal((await attribute(s, people(u), 'mail')).length, 1, `${u} on ${s.name}`);
  }
});
