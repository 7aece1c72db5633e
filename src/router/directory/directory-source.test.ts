/**
 * router/directory/directory-source.test.ts — unit tests of DirectorySource and DirectoryRouter
 * over an in-memory fake LDAP server (entries, equality/and/or filters, base searches): lists
 * over the expansion limit are refused whatever members are dangling, a list with no usable
 * member waits (TempLookupError) instead of being accepted for nobody, a key that is both
 * mailbox and alias delivers to both, a malformed route only blocks the keys it would decide,
 * and a stale "not found" during an outage gives 451 / a deferral, never a rejection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NoSuchObjectError, EqualityFilter, AndFilter, OrFilter, type Entry, type SearchOptions } from 'ldapts';
import { DirectoryPool, type LdapClient } from './pool.ts';
import { DirectorySource } from './directory-source.ts';
import { DirectoryRouter } from './directory-router.ts';
import { TempLookupError } from '../../util/errors.ts';

const BASE = 'dc=t';
type Filter = EqualityFilter | AndFilter | OrFilter;

function matches(e: Entry, f: Filter): boolean {
  if (f instanceof AndFilter) return f.filters.every((x) => matches(e, x as Filter));
  if (f instanceof OrFilter) return f.filters.some((x) => matches(e, x as Filter));
  const values = Object.entries(e).find(([k]) => k.toLowerCase() === f.attribute.toLowerCase())?.[1];
  return (Array.isArray(values) ? values : values === undefined ? [] : [values]).some((v) => String(v).toLowerCase() === String(f.value).toLowerCase());
}

/** A directory of `entries` (dn → attributes); `down` makes every operation fail like a dead server. */
function setup(entries: Record<string, Record<string, string[]>>, opts: { maxExpansion?: number } = {}) {
  const state = { down: false, searches: 0 };
  const clock = { t: 1_000_000 };
  const all = (): Entry[] => Object.entries(entries).map(([dn, attrs]) => ({ dn, ...attrs }));
  const client: LdapClient = {
    get isBound() { return !state.down; },
    bind: async () => { if (state.down) throw new Error('connect ECONNREFUSED'); },
    unbind: async () => undefined,
    search: async (base: string, o: SearchOptions) => {
      if (state.down) throw new Error('connect ECONNREFUSED');
      state.searches++;
      if (o.scope === 'base') {
        const e = all().find((x) => x.dn === base);
        if (!e) throw new NoSuchObjectError('no such object');
        return { searchEntries: [e], searchReferences: [] };
      }
      return { searchEntries: all().filter((e) => matches(e, o.filter as Filter)), searchReferences: [] };
    },
    add: async () => undefined, modify: async () => undefined, del: async () => undefined,
  };
  const pool = new DirectoryPool({ servers: [{ url: 'ldap://fake', role: 'master' }], connectTimeoutMs: 100, operationTimeoutMs: 100, backoffMs: 1, now: () => clock.t, createClient: () => client });
  const warnings: string[] = [];
  const maxExpansion = opts.maxExpansion ?? 10;
  const source = new DirectorySource({
    pool, baseDn: BASE, maildirRoot: '/m', maxTargets: maxExpansion, warn: (m) => warnings.push(m),
    cache: { ttlMs: 60_000, negativeTtlMs: 1000, maxStaleMs: 3_600_000, maxEntries: 1000, now: () => clock.t },
  });
  const router = new DirectoryRouter(pool, source, { maxExpansion, maxDepth: 5 });
  return { router, state, clock, warnings, entries };
}

const domain = (d: string) => ({ [`associatedDomain=${d},ou=domains,${BASE}`]: { objectClass: ['tandemDomain'], associatedDomain: [d], tandemDomainType: ['local'] } });
const mailbox = (a: string) => ({ [`uid=${a},ou=people,${BASE}`]: { objectClass: ['inetOrgPerson', 'inetLocalMailRecipient'], mail: [a], mailLocalAddress: [a] } });
const list = (a: string, members: string[], extra: Record<string, string[]> = {}) => ({ [`cn=${a},ou=lists,${BASE}`]: { objectClass: ['groupOfNames', 'inetLocalMailRecipient'], mailLocalAddress: [a], member: members, ...extra } });
const dnOf = (a: string) => `uid=${a},ou=people,${BASE}`;
const route = (key: string, value: string) => ({ [`tandemRouteKey=${key},ou=routes,${BASE}`]: { objectClass: ['tandemRoute'], tandemRouteKey: [key], tandemTransport: [value] } });

test('a list over max_alias_expansion is refused even when dangling members would bring it under (never delivered in part)', async () => {
  const users = Array.from({ length: 12 }, (_, i) => `u${i}@x.test`);
  const members = [...['gone1', 'gone2', 'gone3'].map((g) => `uid=${g},ou=people,${BASE}`), ...users.map(dnOf)];
  const s = setup(Object.assign({}, domain('x.test'), ...users.map(mailbox), list('big@x.test', members)), { maxExpansion: 10 });
  assert.deepEqual(await s.router.resolveRecipient('big@x.test'), { type: 'invalid', reason: 'alias expansion of big@x.test exceeds 10 addresses' });
  // at the limit, with dangling members skipped, the list is delivered to every real member
  const s2 = setup(Object.assign({}, domain('x.test'), ...users.slice(0, 8).map(mailbox), list('ok@x.test', [...members.slice(0, 2), ...users.slice(0, 8).map(dnOf)])), { maxExpansion: 10 });
  assert.deepEqual(await s2.router.resolveRecipient('ok@x.test'), { type: 'local', addresses: users.slice(0, 8) });
  assert.equal(s2.warnings.filter((w) => /does not exist or has no mail address; skipped/.test(w)).length, 2);
});

test('a list or alias with no usable target is not accepted for nobody: TempLookupError naming the entry', async () => {
  const s = setup(Object.assign({}, domain('x.test'), list('team@x.test', [dnOf('alice@x.test')]), {
    [`cn=pipe@x.test,ou=aliases,${BASE}`]: { objectClass: ['nisMailAlias', 'inetLocalMailRecipient'], mailLocalAddress: ['pipe@x.test'], rfc822MailMember: ['|/bin/sh'] },
  }));
  await assert.rejects(s.router.resolveRecipient('team@x.test'), (err: Error) => err instanceof TempLookupError && /cn=team@x\.test,ou=lists,dc=t is an alias or list with no usable target/.test(err.message));
  await assert.rejects(s.router.resolveRecipient('pipe@x.test'), TempLookupError);
  // fixed entry: delivered once the member's "not found" has expired
  Object.assign(s.entries, mailbox('alice@x.test'));
  s.clock.t += 1000;
  assert.deepEqual(await s.router.resolveRecipient('team@x.test'), { type: 'local', addresses: ['alice@x.test'] });
});

test('a key that is both mailbox and alias ("a: a, archive") delivers to the mailbox and to the other targets, as the tables do', async () => {
  const s = setup(Object.assign({}, domain('x.test'), mailbox('a@x.test'), mailbox('archive@x.test'), {
    [`cn=a@x.test,ou=aliases,${BASE}`]: { objectClass: ['nisMailAlias', 'inetLocalMailRecipient'], mailLocalAddress: ['a@x.test'], rfc822MailMember: ['a@x.test', 'archive@x.test'] },
  }));
  assert.deepEqual(await s.router.resolveRecipient('a@x.test'), { type: 'local', addresses: ['a@x.test', 'archive@x.test'] });
  assert.deepEqual(await s.router.routeAddress('a@x.test'), { type: 'maildir', path: '/m/x.test/a' });
  assert.deepEqual(s.warnings, [], 'one mailbox and one alias entry for a key is not a duplicate');
});

test('a malformed route blocks only the lookups it would decide: a more specific valid route wins', async () => {
  const s = setup(Object.assign({}, domain('x.test'), mailbox('a@x.test'), route('partner.example', 'smtp:[192.0.2.10]:25'), route('.example', 'bogus:thing')));
  assert.deepEqual(await s.router.routeAddress('x@partner.example'), { type: 'smtp', host: '192.0.2.10', port: 25, mx: false });
  assert.deepEqual(await s.router.resolveRecipient('x@partner.example'), { type: 'relay', addresses: ['x@partner.example'], authorizedOnly: false });
  await assert.rejects(s.router.routeAddress('x@other.example'), (err: Error) => err instanceof TempLookupError && /tandemTransport/.test(err.message) && /\.example/.test(err.message));
  // two entries for one key: the first by DN wins on every server, with a warning
  Object.assign(s.entries, { [`tandemRouteKey=dup.example,ou=b,${BASE}`]: { objectClass: ['tandemRoute'], tandemRouteKey: ['dup.example'], tandemTransport: ['smtp:[192.0.2.2]'] } });
  Object.assign(s.entries, { [`tandemRouteKey=dup.example,ou=a,${BASE}`]: { objectClass: ['tandemRoute'], tandemRouteKey: ['dup.example'], tandemTransport: ['smtp:[192.0.2.1]'] } });
  assert.deepEqual(await s.router.routeAddress('x@dup.example'), { type: 'smtp', host: '192.0.2.1', port: 25, mx: false });
  assert.match(s.warnings.join('\n'), /tandemRouteKey=dup\.example,ou=a,dc=t and tandemRouteKey=dup\.example,ou=b,dc=t both have tandemRouteKey dup\.example/);
  // where the malformed entry is the one chosen (here the domain key of a local mailbox), the mail waits
  Object.assign(s.entries, route('x.test', 'bad value'));
  await assert.rejects(s.router.routeAddress('a@x.test'), TempLookupError);
});

test('directory down: a stale "not found" never refuses an address (451 / deferral); known answers are still used', async () => {
  const s = setup(Object.assign({}, domain('x.test'), mailbox('alice@x.test')));
  assert.deepEqual(await s.router.resolveRecipient('new@x.test'), { type: 'unknown-user' }, 'fresh negative: refused');
  assert.deepEqual(await s.router.routeAddress('new@x.test'), { type: 'error', message: '5.1.1 <new@x.test>: unknown user' });
  assert.deepEqual(await s.router.resolveRecipient('alice@x.test'), { type: 'local', addresses: ['alice@x.test'] });
  assert.deepEqual(await s.router.routeAddress('alice@x.test'), { type: 'maildir', path: '/m/x.test/alice' });
  assert.deepEqual(await s.router.resolveRecipient('x@elsewhere.example'), { type: 'relay', addresses: ['x@elsewhere.example'], authorizedOnly: true }, 'fresh: not a relay domain');
  Object.assign(s.entries, mailbox('new@x.test'));
  s.state.down = true;
  s.clock.t += 5000; // past the negative TTL (1 s), within max_stale
  await assert.rejects(s.router.resolveRecipient('new@x.test'), (err: Error) => err instanceof TempLookupError && /past its cache TTL/.test(err.message));
  await assert.rejects(s.router.routeAddress('new@x.test'), TempLookupError);
  assert.deepEqual(await s.router.resolveRecipient('alice@x.test'), { type: 'local', addresses: ['alice@x.test'] }, 'a known mailbox still resolves from the cache');
  assert.deepEqual(await s.router.resolveRecipient('x@elsewhere.example'), { type: 'relay', addresses: ['x@elsewhere.example'], authorizedOnly: true, uncertain: true },
    'stale: "not a relay domain" is not confirmed, so an unauthorized client gets a 4xx (the receiver), not a refusal');
  assert.deepEqual(await s.router.routeAddress('alice@x.test'), { type: 'maildir', path: '/m/x.test/alice' });
  s.state.down = false;
  s.clock.t += 1;
  assert.deepEqual(await s.router.resolveRecipient('new@x.test'), { type: 'local', addresses: ['new@x.test'] });
});
