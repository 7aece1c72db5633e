/**
 * router/directory/directory-router.test.ts — the precedence of tables over the directory when
 * both are configured (combineSources), with real table files and a fake directory source: per
 * key, the tables answer first and the directory fills in what they do not have.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TableRouter } from '../tables/table-router.ts';
import { parseTransportValue, type TransportSpec } from '../tables/transport.ts';
import { resolveRecipientWith, routeAddressWith, type AddressInfo, type DomainKind, type RoutingSource } from '../resolver.ts';
import { combineSources } from './directory-router.ts';
import { TempLookupError } from '../../util/errors.ts';

function fakeDirectory(data: { domains?: Record<string, DomainKind>; addresses?: Record<string, AddressInfo>; routes?: Record<string, string> }): RoutingSource & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    domainKind: async (k) => { asked.push(`d:${k}`); return data.domains?.[k]; },
    address: async (k) => { asked.push(`a:${k}`); return data.addresses?.[k]; },
    transports: async (keys) => keys.map((k): TransportSpec | undefined => (data.routes?.[k] ? parseTransportValue(data.routes[k]) : undefined)),
  };
}

async function withTables(fn: (tables: TableRouter, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-combined-'));
  try {
    const files = { local_domains: path.join(dir, 'ld'), aliases: path.join(dir, 'al'), virtual_mailboxes: path.join(dir, 'vm'), transport: path.join(dir, 'tr') };
    await writeFile(files.local_domains, 'example.com\n');
    await writeFile(files.aliases, 'sales@example.com alice@example.com\n');
    await writeFile(files.virtual_mailboxes, 'alice@example.com alice/\n');
    await writeFile(files.transport, '* smtp:[smarthost.test]\n');
    await fn(await TableRouter.create({ tables: files, maildirRoot: path.join(dir, 'mail') }), dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('tables first, per key: a table alias hides the directory alias with the same key', async () => {
  await withTables(async (tables) => {
    const directory = fakeDirectory({ addresses: { 'sales@example.com': { targets: ['bob@example.com'] }, 'bob@example.com': { mailbox: '/m/bob' } } });
    const source = combineSources(tables.source(), directory);
    assert.deepEqual(await resolveRecipientWith(source, tables.resolverOptions(), 'sales@example.com'), { type: 'local', addresses: ['alice@example.com'] });
  });
});

test('the directory adds what the tables do not have: mailboxes, domains, routes per key', async () => {
  await withTables(async (tables) => {
    const directory = fakeDirectory({
      domains: { 'dir.test': 'local' },
      addresses: { 'bob@example.com': { mailbox: '/m/bob' }, 'carol@dir.test': { mailbox: '/m/carol' } },
      routes: { 'partner.test': 'smtp:[192.0.2.9]:2525' },
    });
    const source = combineSources(tables.source(), directory);
    const opts = tables.resolverOptions();
    assert.deepEqual(await resolveRecipientWith(source, opts, 'bob@example.com'), { type: 'local', addresses: ['bob@example.com'] });
    assert.deepEqual(await resolveRecipientWith(source, opts, 'carol@dir.test'), { type: 'local', addresses: ['carol@dir.test'] });
    assert.deepEqual(await resolveRecipientWith(source, opts, 'nobody@dir.test'), { type: 'unknown-user' });
    // the directory's domain key comes before the tables' "*" in transport(5) order
    assert.deepEqual(await routeAddressWith(source, opts, 'x@partner.test'), { type: 'smtp', host: '192.0.2.9', port: 2525, mx: false });
    assert.deepEqual(await routeAddressWith(source, opts, 'x@other.test'), { type: 'smtp', host: 'smarthost.test', port: 25, mx: false });
    assert.deepEqual(await resolveRecipientWith(source, opts, 'x@partner.test'), { type: 'relay', addresses: ['x@partner.test'], authorizedOnly: false });
  });
});

test('a directory that cannot answer: TempLookupError (never a wrong answer) where a lookup reaches it', async () => {
  await withTables(async (tables) => {
    const down: RoutingSource = {
      domainKind: async () => { throw new TempLookupError('directory down'); },
      address: async () => { throw new TempLookupError('directory down'); },
      transports: async () => { throw new TempLookupError('directory down'); },
    };
    const source = combineSources(tables.source(), down);
    const opts = tables.resolverOptions();
    // keys before "*" (address, domain, parents) must be asked of the directory first
    await assert.rejects(routeAddressWith(source, opts, 'x@other.test'), TempLookupError);
    // alice has a table mailbox, but a directory alias "alice" (bare key) could still exist
    await assert.rejects(resolveRecipientWith(source, opts, 'alice@example.com'), TempLookupError);
  });
});
