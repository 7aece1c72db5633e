/**
 * router/tables/table-router.test.ts — tests of TableRouter over real table files in a temp
 * folder: alias expansion (recursive, loops, self-reference, limits), unknown users, +detail,
 * relay decisions, transport precedence and syntaxes, relayHost, and reload atomicity.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TableRouter, type TableRouterOptions } from './table-router.ts';
import { routeKey } from '../types.ts';

interface Fixture {
  dir: string;
  router: TableRouter;
  warnings: string[];
  write(name: string, text: string): Promise<void>;
}

type Tables = Partial<Record<'local_domains' | 'virtual_mailboxes' | 'aliases' | 'transport' | 'relay_domains', string>>;

async function withRouter(tables: Tables, extra: Partial<TableRouterOptions>, fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-router-'));
  try {
    const write = (name: string, text: string) => writeFile(path.join(dir, name), text);
    const files: Record<string, string> = {};
    for (const [name, text] of Object.entries(tables)) {
      await write(name, text);
      files[name] = path.join(dir, name);
    }
    const warnings: string[] = [];
    const router = await TableRouter.create({
      tables: files, maildirRoot: path.join(dir, 'mail'), warn: (msg) => warnings.push(msg), ...extra,
    });
    await fn({ dir, router, warnings, write });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const BASE: Tables = {
  local_domains: 'example.com\nexample.org OK\n',
  virtual_mailboxes: [
    'alice@example.com  example.com/alice/',
    'bob@example.com    example.com/bob/',
    'carol@example.com  /srv/mail/carol/',
    '@example.org       example.org/catchall/',
  ].join('\n'),
  aliases: [
    'sales@example.com   alice@example.com, bob@example.com',
    'team@example.com    sales@example.com, carol@example.com, alice@example.com',
    'self@example.com    self@example.com, bob@example.com',
    'loop-a@example.com  loop-b@example.com',
    'loop-b@example.com  loop-a@example.com',
    'ext@example.com     someone@remote.test',
    'typo@example.com    alice@example.com, nobody@example.com',
    'postmaster: alice',
  ].join('\n'),
};

test('mailbox, recursive alias and dedup', async () => {
  await withRouter(BASE, {}, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('Alice@Example.COM'), { type: 'local', addresses: ['alice@example.com'] });
    assert.deepEqual(await router.resolveRecipient('team@example.com'),
      { type: 'local', addresses: ['alice@example.com', 'bob@example.com', 'carol@example.com'] });
    assert.deepEqual(await router.resolveRecipient('ext@example.com'), { type: 'local', addresses: ['someone@remote.test'] });
  });
});

test('bare alias key applies to every local domain and qualifies bare targets', async () => {
  await withRouter(BASE, {}, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('postmaster@example.com'), { type: 'local', addresses: ['alice@example.com'] });
    assert.deepEqual(await router.resolveRecipient('postmaster@example.org'), { type: 'local', addresses: ['alice@example.org'] });
  });
});

test('a self-including list delivers to its own mailbox too', async () => {
  await withRouter({ ...BASE, virtual_mailboxes: BASE.virtual_mailboxes + '\nself@example.com example.com/self/' }, {}, async ({ router, dir }) => {
    assert.deepEqual(await router.resolveRecipient('self@example.com'), { type: 'local', addresses: ['self@example.com', 'bob@example.com'] });
    assert.deepEqual(await router.routeAddress('self@example.com'), { type: 'maildir', path: path.join(dir, 'mail/example.com/self') });
  });
});

test('an alias loop a→b→a terminates with a; a without mailbox bounces 5.1.1 at routing', async () => {
  await withRouter(BASE, {}, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('loop-a@example.com'), { type: 'local', addresses: ['loop-a@example.com'] });
    assert.deepEqual(await router.resolveRecipient('loop-b@example.com'), { type: 'local', addresses: ['loop-b@example.com'] });
    assert.deepEqual(await router.routeAddress('loop-a@example.com'), { type: 'error', message: '5.1.1 <loop-a@example.com>: unknown user' });
  });
});

test('unknown targets in a local domain stay in the list and bounce at routing', async () => {
  await withRouter(BASE, {}, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('typo@example.com'), { type: 'local', addresses: ['alice@example.com', 'nobody@example.com'] });
    assert.equal((await router.routeAddress('nobody@example.com')).type, 'error');
  });
});

test('unknown local user; catch-all mailbox; +detail', async () => {
  await withRouter(BASE, {}, async ({ router, dir }) => {
    assert.deepEqual(await router.resolveRecipient('nobody@example.com'), { type: 'unknown-user' });
    assert.deepEqual(await router.resolveRecipient('anyone@example.org'), { type: 'local', addresses: ['anyone@example.org'] });
    assert.deepEqual(await router.routeAddress('anyone@example.org'), { type: 'maildir', path: path.join(dir, 'mail/example.org/catchall') });
    assert.deepEqual(await router.resolveRecipient('alice+lists@example.com'), { type: 'local', addresses: ['alice+lists@example.com'] });
    assert.deepEqual(await router.routeAddress('alice+lists@example.com'), { type: 'maildir', path: path.join(dir, 'mail/example.com/alice') });
    assert.deepEqual(await router.resolveRecipient('sales+q3@example.com'), { type: 'local', addresses: ['alice@example.com', 'bob@example.com'] });
    assert.deepEqual(await router.resolveRecipient('nobody+x@example.com'), { type: 'unknown-user' });
    assert.deepEqual(await router.routeAddress('carol@example.com'), { type: 'maildir', path: '/srv/mail/carol' });
  });
});

test('a catch-all alias does not hide a real mailbox', async () => {
  await withRouter({ ...BASE, aliases: '@example.com alice@example.com\n@example.net @example.com\n' }, { localDomains: ['example.net'] }, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('bob@example.com'), { type: 'local', addresses: ['bob@example.com'] });
    assert.deepEqual(await router.resolveRecipient('zed@example.com'), { type: 'local', addresses: ['alice@example.com'] });
    assert.deepEqual(await router.resolveRecipient('bob@example.net'), { type: 'local', addresses: ['bob@example.com'] });
  });
});

test('a huge list exceeds maxExpansion → invalid; deep nesting exceeds maxDepth → invalid', async () => {
  const members = Array.from({ length: 50 }, (_, i) => `m${i}@remote.test`).join(', ');
  const chain = Array.from({ length: 5 }, (_, i) => `c${i}@example.com c${i + 1}@example.com`).join('\n');
  await withRouter({ ...BASE, aliases: `big@example.com ${members}\n${chain}\n` }, { maxExpansion: 10, maxDepth: 4 }, async ({ router }) => {
    assert.deepEqual(await router.resolveRecipient('big@example.com'), { type: 'invalid', reason: 'alias expansion of big@example.com exceeds 10 addresses' });
    assert.deepEqual(await router.resolveRecipient('c1@example.com'), { type: 'local', addresses: ['c5@example.com'] });
    assert.deepEqual(await router.resolveRecipient('c0@example.com'), { type: 'invalid', reason: 'alias expansion of c0@example.com exceeds 4 nesting levels' });
  });
});

test('wide overlapping lists are bounded by lookups, not only by final addresses', async () => {
  // l0 → l1a, l1b; l1a/l1b → l2a, l2b; ... 2^levels paths to the same two addresses.
  const lines: string[] = [];
  for (let i = 0; i < 16; i++) lines.push(`l${i}a@example.com l${i + 1}a@example.com, l${i + 1}b@example.com`, `l${i}b@example.com l${i + 1}a@example.com, l${i + 1}b@example.com`);
  await withRouter({ ...BASE, aliases: lines.join('\n') }, { maxExpansion: 100 }, async ({ router }) => {
    const result = await router.resolveRecipient('l0a@example.com');
    assert.equal(result.type, 'invalid');
    assert.match((result as { reason: string }).reason, /exceeds 2000 lookups/);
  });
});

test('relay decisions: relay_domains, .parent, transport entry, other domains authorizedOnly', async () => {
  await withRouter({ ...BASE, relay_domains: 'partner.test\n.sub.test\n', transport: 'routed.test smtp:[192.0.2.5]\n* smtp:[smarthost.test]\n' }, { relayDomains: ['cfg.test'] }, async ({ router }) => {
    for (const addr of ['x@partner.test', 'x@a.sub.test', 'x@routed.test', 'x@cfg.test']) {
      assert.deepEqual(await router.resolveRecipient(addr), { type: 'relay', addresses: [addr], authorizedOnly: false }, addr);
    }
    assert.deepEqual(await router.resolveRecipient('x@sub.test'), { type: 'relay', addresses: ['x@sub.test'], authorizedOnly: true });
    assert.deepEqual(await router.resolveRecipient('X@Elsewhere.Test'), { type: 'relay', addresses: ['x@elsewhere.test'], authorizedOnly: true });
    assert.deepEqual(await router.resolveRecipient('no-at-sign'), { type: 'invalid', reason: '"no-at-sign" is not an address of the form user@domain' });
  });
});

test('transport precedence: address > domain > .parent > *', async () => {
  const transport = [
    'vip@a.example.net    smtp:[10.0.0.1]:2525',
    'a.example.net        smtp:[10.0.0.2]',
    '.example.net         smtp:[10.0.0.3]',
    '*                    smtp:[10.0.0.4]',
  ].join('\n');
  await withRouter({ ...BASE, transport }, {}, async ({ router }) => {
    assert.deepEqual(await router.routeAddress('vip@a.example.net'), { type: 'smtp', host: '10.0.0.1', port: 2525, mx: false });
    assert.deepEqual(await router.routeAddress('vip+x@a.example.net'), { type: 'smtp', host: '10.0.0.1', port: 2525, mx: false });
    assert.deepEqual(await router.routeAddress('other@a.example.net'), { type: 'smtp', host: '10.0.0.2', port: 25, mx: false });
    assert.deepEqual(await router.routeAddress('x@b.c.example.net'), { type: 'smtp', host: '10.0.0.3', port: 25, mx: false });
    assert.deepEqual(await router.routeAddress('x@example.net'), { type: 'smtp', host: '10.0.0.4', port: 25, mx: false });
    assert.deepEqual(await router.routeAddress('x@elsewhere.test'), { type: 'smtp', host: '10.0.0.4', port: 25, mx: false });
  });
});

test('every transport syntax becomes the right Route', async () => {
  const transport = [
    'fixed.test     smtp:[mx.fixed.test]:2525',
    'v6.test        smtp:[::1]:2525',
    'viamx.test     smtp:gateway.test',
    'viamxport.test smtp:gateway.test:587',
    'own.test       smtp:',
    'lmtp.test      lmtp:[127.0.0.1]:2424',
    'lmtp6.test     lmtp:[::1]',
    'example.com    maildir',
    'refused.test   error:5.7.1 we do not accept mail for refused.test',
  ].join('\n');
  await withRouter({ ...BASE, transport }, {}, async ({ router, dir }) => {
    const expect: [string, unknown][] = [
      ['u@fixed.test', { type: 'smtp', host: 'mx.fixed.test', port: 2525, mx: false }],
      ['u@v6.test', { type: 'smtp', host: '::1', port: 2525, mx: false }],
      ['u@viamx.test', { type: 'smtp', domain: 'gateway.test', port: 25, mx: true }],
      ['u@viamxport.test', { type: 'smtp', domain: 'gateway.test', port: 587, mx: true }],
      ['u@own.test', { type: 'smtp', domain: 'own.test', port: 25, mx: true }],
      ['u@lmtp.test', { type: 'lmtp', host: '127.0.0.1', port: 2424 }],
      ['u@lmtp6.test', { type: 'lmtp', host: '::1', port: 24 }],
      ['bob@example.com', { type: 'maildir', path: path.join(dir, 'mail/example.com/bob') }],
      ['u@refused.test', { type: 'error', message: '5.7.1 we do not accept mail for refused.test' }],
    ];
    for (const [addr, route] of expect) assert.deepEqual(await router.routeAddress(addr), route, addr);
    assert.match((await router.routeAddress('ghost@example.com') as { message: string }).message, /^5\.1\.1 <ghost@example.com>: unknown user/);
    assert.equal(routeKey(await router.routeAddress('u@v6.test')), 'smtp:[::1]:2525');
  });
});

test('default routes: MX of the domain, relayHost, address literals', async () => {
  await withRouter(BASE, {}, async ({ router }) => {
    assert.deepEqual(await router.routeAddress('u@remote.test'), { type: 'smtp', domain: 'remote.test', port: 25, mx: true });
    assert.deepEqual(await router.routeAddress('u@[192.0.2.7]'), { type: 'smtp', host: '192.0.2.7', port: 25, mx: false });
  });
  await withRouter({ ...BASE, transport: 'direct.test smtp:\n' }, { relayHost: { host: 'smarthost.test', port: 587 } }, async ({ router, dir }) => {
    assert.deepEqual(await router.routeAddress('u@remote.test'), { type: 'smtp', host: 'smarthost.test', port: 587, mx: false });
    assert.deepEqual(await router.routeAddress('u@direct.test'), { type: 'smtp', domain: 'direct.test', port: 25, mx: true });
    assert.deepEqual(await router.routeAddress('alice@example.com'), { type: 'maildir', path: path.join(dir, 'mail/example.com/alice') });
  });
});

test('malformed transport value fails create with file:line', async () => {
  await assert.rejects(withRouter({ ...BASE, transport: 'ok.test smtp:\nbad.test smtp:2001:db8::1\n' }, {}, async () => undefined),
    /transport:2: key "bad.test": .*IPv6 addresses must be in brackets/);
});

test('other load-time checks: bad domain, ".." path, pipe alias, bad options', async () => {
  await assert.rejects(withRouter({ local_domains: 'example.com\nuser@example.net\n' }, {}, async () => undefined), /local_domains:2: "user@example.net" is not a domain name/);
  await assert.rejects(withRouter({ ...BASE, virtual_mailboxes: 'a@example.com ../../etc/\n' }, {}, async () => undefined), /virtual_mailboxes:1: .*contains "\.\."/);
  await assert.rejects(withRouter({ ...BASE, aliases: 'x@example.com |/usr/bin/procmail\n' }, {}, async () => undefined), /aliases:1: .*pipe, file or :include:/);
  await assert.rejects(withRouter(BASE, { maxExpansion: 0 }, async () => undefined), /local.max_alias_expansion: 0/);
  await assert.rejects(withRouter(BASE, { relayHost: { host: 'h', port: 70000 } }, async () => undefined), /relay.host/);
});

test('warnings: mailbox outside local domains, duplicate keys', async () => {
  await withRouter({ ...BASE, virtual_mailboxes: 'x@remote.test r/\nalice@example.com a/\nalice@example.com b/\n' }, {}, async ({ warnings }) => {
    assert.equal(warnings.length, 2);
    assert.match(warnings.join('\n'), /not a local domain/);
    assert.match(warnings.join('\n'), /duplicate key "alice@example.com"/);
  });
});

test('reload picks up changes; a broken table keeps all old data and throws', async () => {
  await withRouter(BASE, {}, async ({ router, write }) => {
    await write('aliases', 'sales@example.com carol@example.com\n');
    await write('local_domains', 'example.com\nexample.org\nnew.test\n');
    await router.reload();
    assert.deepEqual(await router.resolveRecipient('sales@example.com'), { type: 'local', addresses: ['carol@example.com'] });
    assert.deepEqual(await router.resolveRecipient('x@new.test'), { type: 'unknown-user' });

    await write('local_domains', 'example.com\nexample.org\n');
    await write('aliases', 'sales@example.com bob@example.com\nbroken@example.com\n');
    await assert.rejects(router.reload(), /aliases:2: missing value for key "broken@example.com"/);
    assert.deepEqual(await router.resolveRecipient('sales@example.com'), { type: 'local', addresses: ['carol@example.com'] });
    assert.deepEqual(await router.resolveRecipient('x@new.test'), { type: 'unknown-user' }, 'local_domains must not be half-reloaded');
  });
});

test('reload of a missing file keeps the old data', async () => {
  await withRouter(BASE, {}, async ({ router, dir }) => {
    await rm(path.join(dir, 'virtual_mailboxes'));
    await assert.rejects(router.reload(), /cannot read table virtual_mailboxes .*ENOENT/);
    assert.deepEqual(await router.resolveRecipient('alice@example.com'), { type: 'local', addresses: ['alice@example.com'] });
  });
});
