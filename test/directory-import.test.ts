/**
 * `tandem dir import` on a real slapd: table files loaded into the directory give the same
 * answers from the directory router as the table router gives from the files (same semantics:
 * catch-alls, bare alias keys, +detail, loops, relay domains, transport order); `tandem dir`
 * refuses bad arguments before writing, and list/modify/remove work. A key that is both mailbox
 * and alias ("carol: carol, archive") is delivered to both, as with tables. Lists whose members
 * were removed (dangling member DNs, kept by slapd without refint): a list over
 * local.max_alias_expansion stays refused however many members dangle, and a list with no
 * member left waits (TempLookupError → 451) instead of being accepted for nobody.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { runCli, writeTables } from './harness/tandem.ts';
import { writeNodeConfig } from './harness/node.ts';
import { SLAPD_AVAILABLE, startMasterShadow, directorySection, waitForEntry, waitForReplicas, type LdapSetup } from './harness/slapd.ts';
import { loadConfig } from '../src/config/load.ts';
import { createRouter, createDirectoryPool } from '../src/node/wiring.ts';
import { DirectoryRouter, DirectoryAdmin } from '../src/router/directory/index.ts';
import { TempLookupError } from '../src/util/errors.ts';
import type { Router } from '../src/router/types.ts';

const skip = SLAPD_AVAILABLE ? false : 'slapd is not installed (apt-get install slapd ldap-utils)';
const procs = trackProcesses();
const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-dir-imp-'));
let ldap: LdapSetup;
let tablesConfig: string;
let directoryConfig: string;

after(async () => {
  await procs.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

before(async () => {
  if (skip) return;
  ldap = await startMasterShadow();
  const tables = writeTables(dir, {
    local_domains: 'example.com\nexample.org\n',
    relay_domains: 'partner.test\n.sub.test\n',
    virtual_mailboxes: 'alice@example.com example.com/alice/\nbob@example.com /srv/mail/bob/\n@example.org example.org/catchall/\ncarol@example.com example.com/carol/\n',
    aliases: [
      'sales@example.com alice@example.com, bob@example.com',
      'team@example.com sales@example.com, alice@example.com',
      'loop-a@example.com loop-b@example.com',
      'loop-b@example.com loop-a@example.com, bob@example.com',
      'postmaster: alice',
      '@example.net @example.com',
      'carol@example.com carol@example.com, archive@example.org',
    ].join('\n') + '\n',
    transport: 'vip@a.example.net smtp:[10.0.0.1]:2525\n.example.net smtp:[10.0.0.3]\nlmtp.test lmtp:[127.0.0.1]:2424\nrefused.test error:5.7.1 no thanks\n',
  });
  const common = { local: { maildir_root: path.join(dir, 'mail') }, relay: { host: 'smarthost.test:587' } };
  tablesConfig = writeNodeConfig(path.join(dir, 'tables-node'), { ...common, tables });
  directoryConfig = writeNodeConfig(path.join(dir, 'dir-node'), { ...common, directory: directorySection(ldap, ['master', 'shadow']) });
  const importConfig = writeNodeConfig(path.join(dir, 'import-node'), { ...common, tables, directory: directorySection(ldap, ['master', 'shadow']) });
  for (const args of [['init'], ['import']]) {
    const r = await runCli(['dir', ...args, '--config', importConfig]);
    assert.equal(r.code, 0, r.stderr);
  }
  // reads go to the master and the shadow: compare once the shadow has every imported entry
  await waitForReplicas(ldap);
});

test('the directory router answers like the table router for the same data', { skip }, async () => {
  const fromTables = await createRouter(await loadConfig(tablesConfig), undefined);
  const fromDirectory = await createRouter(await loadConfig(directoryConfig), () => undefined) as DirectoryRouter;
  try {
    const addresses = [
      'alice@example.com', 'Alice+x@Example.com', 'bob@example.com', 'nobody@example.com', 'sales+q3@example.com', 'team@example.com',
      'loop-a@example.com', 'postmaster@example.com', 'postmaster@example.org', 'anyone@example.org', 'bob@example.net', 'x@example.net',
      'x@partner.test', 'x@a.sub.test', 'x@sub.test', 'x@elsewhere.test', 'vip@a.example.net', 'other@a.example.net', 'u@lmtp.test', 'u@refused.test',
      'u@[192.0.2.7]', 'not-an-address', 'carol@example.com',
    ];
    const answers = async (r: Router) => Promise.all(addresses.map(async (a) => [a, await r.resolveRecipient(a), await r.routeAddress(a)]));
    assert.deepEqual(await answers(fromDirectory), await answers(fromTables));
    // mailbox and alias under one key: both copies delivered (the directory used to bounce carol's with 5.1.1)
    assert.deepEqual(await fromDirectory.resolveRecipient('carol@example.com'), { type: 'local', addresses: ['carol@example.com', 'archive@example.org'] });
    assert.deepEqual(await fromDirectory.routeAddress('carol@example.com'), { type: 'maildir', path: path.join(dir, 'mail', 'example.com', 'carol') });
  } finally {
    await fromDirectory.close();
  }
});

test('tandem dir refuses bad arguments before writing; list, modify and remove work', { skip }, async () => {
  const dirCli = (...args: string[]) => runCli(['dir', ...args, '--config', directoryConfig]);
  for (const [args, message] of [
    [['add', 'alias', 'x@example.com', '|/bin/sh'], /not an address.*pipes and files are not delivered to/],
    [['add', 'route', 'x.test', 'smtp:2001:db8::1'], /IPv6 addresses must be in brackets/],
    [['add', 'mailbox', 'not an address'], /is not an address/],
    [['add', 'gadget', 'x'], /"gadget" is not a kind/],
    [['add', 'list', 'l@example.com', 'ext@remote.test'], /needs at least one member that is a mailbox/],
  ] as const) {
    const r = await dirCli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const dup = await dirCli('add', 'domain', 'example.com');
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /refused the change: .*already exists/i);

  assert.equal((await dirCli('modify', 'route', 'lmtp.test', 'lmtp:[127.0.0.1]:2525')).code, 0);
  assert.equal((await dirCli('remove', 'alias', 'loop-a@example.com')).code, 0);
  const list = JSON.parse((await dirCli('list', '--json')).stdout) as Array<{ kind: string; key: string; value: string }>;
  assert.equal(list.find((e) => e.kind === 'route' && e.key === 'lmtp.test')?.value, 'lmtp:[127.0.0.1]:2525');
  assert.equal(list.find((e) => e.key === 'loop-a@example.com'), undefined);
  assert.deepEqual(list.filter((e) => e.kind === 'domain').map((e) => `${e.key} ${e.value}`).sort(),
    ['.sub.test relay', 'example.com local', 'example.org local', 'partner.test relay']);
});

test('lists with removed members: too big stays refused, none left waits (451), never delivered in part or to nobody', { skip }, async () => {
  const config = await loadConfig(writeNodeConfig(path.join(dir, 'lists-node'), {
    local: { maildir_root: path.join(dir, 'mail'), max_alias_expansion: 4 },
    directory: directorySection(ldap, ['master', 'shadow']),
  }));
  const pool = await createDirectoryPool(config);
  const admin = new DirectoryAdmin(pool, ldap.suffix);
  const router = await createRouter(config, () => undefined) as DirectoryRouter;
  try {
    const users = Array.from({ length: 6 }, (_, i) => `m${i}@example.com`);
    for (const u of [...users, 'solo-member@example.com']) await admin.add('mailbox', u, []);
    await admin.add('list', 'big@example.com', users);
    await admin.add('list', 'solo@example.com', ['solo-member@example.com']);
    // 3 of 6 members removed: 3 left would fit under 4, but the list declares 6
    for (const u of [...users.slice(0, 3), 'solo-member@example.com']) await admin.remove('mailbox', u);
    for (const u of [...users.slice(0, 3), 'solo-member@example.com']) await waitForEntry(ldap.servers[1].url, admin.dn('mailbox', u), false);
    assert.deepEqual(await router.resolveRecipient('big@example.com'), { type: 'invalid', reason: 'alias expansion of big@example.com exceeds 4 addresses' });
    await assert.rejects(router.resolveRecipient('solo@example.com'), (err: Error) => err instanceof TempLookupError && /solo@example\.com.* no usable target/.test(err.message));
  } finally {
    await router.close();
    await pool.close();
  }
});
