/**
 * router/directory/pool.test.ts — unit tests of DirectoryPool with fake LDAP clients and a fake
 * clock: round robin over healthy servers, failover and back-off, binding per connection,
 * writes to one master at a time, refusals versus outages, the typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlreadyExistsError, InvalidCredentialsError } from 'ldapts';
import { DirectoryPool, DirectoryUnavailableError, DirectoryMasterUnavailableError, DirectoryWriteError, DirectoryWriteOutcomeUnknownError, type LdapClient, type DirectoryServerConfig } from './pool.ts';

/** up false: the connection is gone and connects fail; timeout: the write is applied but no answer comes. */
interface FakeServer { up: boolean; binds: number; ops: number; refuse?: boolean; timeout?: boolean; badBind?: boolean }

function setup(servers: DirectoryServerConfig[]) {
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
  const pool = new DirectoryPool({ servers, connectTimeoutMs: 100, operationTimeoutMs: 100, backoffMs: 1000, now: () => clock.t, createClient, bindDn: 'cn=x', bindPassword: 'y' });
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
