/**
 * router/directory/pool.test.ts — unit tests of DirectoryPool with fake LDAP clients and a fake
 * clock: round robin over healthy servers, failover and back-off, binding per connection,
 * writes to one master at a time, refusals versus outages, the typed errors, the own site's
 * servers first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlreadyExistsError, InvalidCredentialsError } from 'ldapts';
import { DirectoryPool, DirectoryUnavailableError, DirectoryMasterUnavailableError, DirectoryWriteError, DirectoryWriteOutcomeUnknownError, type LdapClient, type DirectoryServerConfig } from './pool.ts';

/** up false: the connection is gone and connects fail; timeout: the write is applied but no answer comes. */
interface FakeServer { up: boolean; binds: number; ops: number; refuse?: boolean; timeout?: boolean; badBind?: boolean }

function setup(servers: DirectoryServerConfig[], site?: string) {
  const clock = { t: 0 };
  const fakes = new Map<string, FakeServer>(servers.map((s) => [s.url, { up: true, binds: 0, ops: 0 }]));
  const createClient = (url: string): LdapClient => {
    const f = fakes.get(url)!;
    let bound = false;
    const op = async () => {
      if (!f.up) { bound = false; throw new Error(`connect ECONNREFUSED ${url}`); }
      f.ops++;
      if (f.refuse) throw new AlreadyExistsError('Already exists');
      if (f.timeout) throw new Error('AddRequest: Operation timed out');
    };
    return {
      get isBound() { return bound && f.up; },
      bind: async () => {
        if (!f.up) throw new Error(`connect ECONNREFUSED ${url}`);
        if (f.badBind) throw new InvalidCredentialsError('Invalid credentials');
        f.binds++; bound = true;
      },
      unbind: async () => { bound = false; },
      search: async () => { await op(); return { searchEntries: [], searchReferences: [] }; },
      add: op, modify: op, del: op,
    };
  };
  const pool = new DirectoryPool({ servers, ...(site !== undefined ? { site } : {}), connectTimeoutMs: 100, operationTimeoutMs: 100, backoffMs: 1000, now: () => clock.t, createClient, bindDn: 'cn=x', bindPassword: 'y' });
  const read = () => pool.read((c) => c.search('dc=x', {}));
  const write = () => pool.write((c) => c.add('cn=y', {}));
  return { clock, fakes, pool, read, write, f: (url: string) => fakes.get(url)! };
}

const MS: DirectoryServerConfig[] = [{ url: 'ldap://m', role: 'master' }, { url: 'ldap://s1', role: 'shadow' }, { url: 'ldap://s2', role: 'shadow' }];

test('reads are spread round robin over every server; one bind per connection', async () => {
  const s = setup(MS);
  for (let i = 0; i < 9; i++) await s.read();
  assert.deepEqual(MS.map((m) => s.f(m.url).ops), [3, 3, 3]);
  assert.deepEqual(MS.map((m) => s.f(m.url).binds), [1, 1, 1]);
  assert.deepEqual(s.pool.status().map((x) => [x.state, x.reads]), [['up', 3], ['up', 3], ['up', 3]]);
});

test('a failing server is marked down, reads fail over, it is retried after the back-off and rebinds', async () => {
  const s = setup(MS);
  s.f('ldap://s1').up = false;
  for (let i = 0; i < 6; i++) await s.read();
  assert.equal(s.f('ldap://s1').ops, 0);
  assert.equal(s.f('ldap://m').ops + s.f('ldap://s2').ops, 6);
  const st = s.pool.status()[1];
  assert.equal(st.state, 'down');
  assert.equal(st.errors, 1, 'tried once, then skipped during the back-off');
  assert.match(st.lastError!, /ECONNREFUSED/);
  s.f('ldap://s1').up = true;
  s.clock.t += 1000;
  for (let i = 0; i < 3; i++) await s.read();
  assert.equal(s.f('ldap://s1').ops, 1);
  assert.equal(s.pool.status()[1].state, 'up');
});

test('every server down: DirectoryUnavailableError; during the back-off without trying any', async () => {
  const s = setup(MS);
  for (const m of MS) s.f(m.url).up = false;
  await assert.rejects(s.read(), (err: Error) => err instanceof DirectoryUnavailableError && /ldap:\/\/m: connect ECONNREFUSED/.test(err.message));
  const errors = s.pool.status().map((x) => x.errors);
  await assert.rejects(s.read(), DirectoryUnavailableError);
  assert.deepEqual(s.pool.status().map((x) => x.errors), errors, 'no server tried during the back-off');
});

test('writes go to the master only; none reachable → DirectoryMasterUnavailableError', async () => {
  const s = setup(MS);
  await s.write();
  assert.deepEqual(MS.map((m) => s.f(m.url).ops), [1, 0, 0]);
  s.f('ldap://m').up = false;
  await assert.rejects(s.write(), (err: Error) => err instanceof DirectoryMasterUnavailableError
    && err.message.startsWith('directory master unavailable — retry later') && (err as DirectoryMasterUnavailableError).code === 'DIRECTORY_MASTER_UNAVAILABLE');
  assert.deepEqual(MS.map((m) => s.f(m.url).ops), [1, 0, 0], 'never written to a shadow');
});

test('two masters: the first, the second only while the first is down, back to the first after the back-off', async () => {
  const s = setup([{ url: 'ldap://a', role: 'master' }, { url: 'ldap://b', role: 'master' }]);
  await s.write();
  await s.write();
  assert.deepEqual([s.f('ldap://a').ops, s.f('ldap://b').ops], [2, 0]);
  s.f('ldap://a').up = false;
  await s.write();
  await s.write();
  assert.deepEqual([s.f('ldap://a').ops, s.f('ldap://b').ops], [2, 2]);
  s.f('ldap://a').up = true;
  s.clock.t += 1000;
  await s.write();
  assert.deepEqual([s.f('ldap://a').ops, s.f('ldap://b').ops], [3, 2]);
});

test('a refused write is DirectoryWriteError, not a failover and not a server failure', async () => {
  const s = setup([{ url: 'ldap://a', role: 'master' }, { url: 'ldap://b', role: 'master' }]);
  s.f('ldap://a').refuse = true;
  await assert.rejects(s.write(), (err: Error) => err instanceof DirectoryWriteError && /ldap:\/\/a refused the change: already exists \(LDAP result 68\)/.test(err.message));
  assert.equal(s.f('ldap://b').ops, 0);
  assert.equal(s.pool.status()[0].state, 'up');
});

test('no master configured: writes fail with the reason', async () => {
  const s = setup([{ url: 'ldap://s', role: 'shadow' }]);
  await assert.rejects(s.write(), /no server has role master/);
});

test('a write that times out after it was sent is not repeated on the second master: outcome unknown, names the master', async () => {
  const s = setup([{ url: 'ldap://a', role: 'master' }, { url: 'ldap://b', role: 'master' }]);
  s.f('ldap://a').timeout = true;
  await assert.rejects(s.write(), (err: Error) => err instanceof DirectoryWriteOutcomeUnknownError
    && err.code === 'DIRECTORY_WRITE_OUTCOME_UNKNOWN' && err.message.startsWith('outcome unknown on master ldap://a — check and retry'));
  assert.deepEqual([s.f('ldap://a').ops, s.f('ldap://b').ops], [1, 0], 'applied on a only, never replayed on b');
});

test('a read failure of the first master does not send later writes to the second; only a failed connect does', async () => {
  const s = setup([{ url: 'ldap://a', role: 'master' }, { url: 'ldap://b', role: 'master' }]);
  s.f('ldap://a').timeout = true;
  await s.read().catch(() => undefined);
  await s.read().catch(() => undefined);
  assert.equal(s.pool.status()[0].state, 'down', 'a read timed out on a: reads skip it for the back-off');
  s.f('ldap://a').timeout = false;
  await s.write();
  assert.deepEqual(s.pool.status().map((x) => x.writes), [1, 0], 'the write still goes to a');
  s.f('ldap://a').up = false;
  await s.write();
  assert.deepEqual(s.pool.status().map((x) => x.writes), [1, 1], 'a refuses connections: the write never reached it, so b takes it');
});

test('a bind the master refuses (wrong password) is a clear refusal, not "retry later" and not a failover', async () => {
  const s = setup([{ url: 'ldap://a', role: 'master' }, { url: 'ldap://b', role: 'master' }]);
  s.f('ldap://a').badBind = true;
  await assert.rejects(s.write(), (err: Error) => err instanceof DirectoryWriteError && /ldap:\/\/a refused the bind: invalid credentials \(LDAP result 49\).*check directory\.bind_dn/.test(err.message));
  assert.equal(s.f('ldap://b').ops, 0);
});

/** A master and a shadow per site, the other site's listed first (config order must not matter). */
const SITES: DirectoryServerConfig[] = [
  { url: 'ldap://m2', role: 'master', site: 'dc2' }, { url: 'ldap://s2', role: 'shadow', site: 'dc2' },
  { url: 'ldap://m1', role: 'master', site: 'dc1' }, { url: 'ldap://s1', role: 'shadow', site: 'dc1' },
];
const ops = (s: ReturnType<typeof setup>) => Object.fromEntries(SITES.map((m) => [m.url, s.f(m.url).ops]));

test("sites: reads spread over the own site's servers only, the other site's only while all of the own are down, back after the back-off", async () => {
  const s = setup(SITES, 'dc1');
  for (let i = 0; i < 6; i++) await s.read();
  assert.deepEqual(ops(s), { 'ldap://m2': 0, 'ldap://s2': 0, 'ldap://m1': 3, 'ldap://s1': 3 });
  s.f('ldap://m1').up = false;
  for (let i = 0; i < 4; i++) await s.read();
  assert.deepEqual(ops(s), { 'ldap://m2': 0, 'ldap://s2': 0, 'ldap://m1': 3, 'ldap://s1': 7 }, 'one own server left: it takes every read');
  s.f('ldap://s1').up = false;
  for (let i = 0; i < 6; i++) await s.read();
  assert.deepEqual(ops(s), { 'ldap://m2': 3, 'ldap://s2': 3, 'ldap://m1': 3, 'ldap://s1': 7 }, 'own site down: spread over the other site');
  assert.deepEqual(s.pool.status().map((x) => [x.site, x.state]), [['dc2', 'up'], ['dc2', 'up'], ['dc1', 'down'], ['dc1', 'down']]);
  s.f('ldap://m1').up = true;
  s.f('ldap://s1').up = true;
  s.clock.t += 1000;
  for (let i = 0; i < 6; i++) await s.read();
  assert.deepEqual(ops(s), { 'ldap://m2': 3, 'ldap://s2': 3, 'ldap://m1': 6, 'ldap://s1': 10 }, 'own site back: the first read after the back-off probes it, and reads stay there');
});

test("sites: a read that fails on the own site's last server goes to the other site at once", async () => {
  const s = setup(SITES, 'dc1');
  await s.read();
  s.f('ldap://m1').up = false;
  s.f('ldap://s1').up = false;
  await s.read();
  assert.equal(s.f('ldap://m2').ops + s.f('ldap://s2').ops, 1);
  for (const m of SITES) s.f(m.url).up = false;
  s.clock.t += 1000;
  await assert.rejects(s.read(), DirectoryUnavailableError);
});

test("sites: writes go to the own site's master, to the other site's only while it is unreachable", async () => {
  const dc1 = setup(SITES, 'dc1');
  await dc1.write();
  assert.deepEqual([dc1.f('ldap://m1').ops, dc1.f('ldap://m2').ops], [1, 0]);
  dc1.f('ldap://m1').up = false;
  await dc1.write();
  assert.deepEqual([dc1.f('ldap://m1').ops, dc1.f('ldap://m2').ops], [1, 1]);
  dc1.f('ldap://m1').up = true;
  dc1.clock.t += 1000;
  await dc1.write();
  assert.deepEqual([dc1.f('ldap://m1').ops, dc1.f('ldap://m2').ops], [2, 1]);
  const dc2 = setup(SITES, 'dc2');
  await dc2.write();
  assert.deepEqual([dc2.f('ldap://m1').ops, dc2.f('ldap://m2').ops], [0, 1], "a dc2 node writes to dc2's master");
  const none = setup(SITES);
  await none.write();
  assert.deepEqual([none.f('ldap://m1').ops, none.f('ldap://m2').ops], [0, 1], 'no own site: the first master in config order');
});
