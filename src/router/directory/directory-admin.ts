/**
 * router/directory/directory-admin.ts — the directory changes behind `tandem dir`: base entries,
 * domains, mailboxes, aliases, lists and routes, written to the master through the pool.
 *
 * Layout written (the router itself finds entries anywhere under the base DN by attribute):
 *   ou=domains   associatedDomain=<domain>     tandemDomain (tandemDomainType local|relay)
 *   ou=people    uid=<address>                 inetOrgPerson + inetLocalMailRecipient
 *                                              + tandemMailbox (mail, mailLocalAddress,
 *                                              tandemMaildir, mailHost)
 *   ou=aliases   cn=<address>                  nisMailAlias + inetLocalMailRecipient
 *                                              (mailLocalAddress, rfc822MailMember)
 *   ou=lists     cn=<address>                  groupOfNames + inetLocalMailRecipient
 *                                              + tandemMailList (member: DNs of mailboxes,
 *                                              rfc822MailMember: other addresses)
 *   ou=routes    tandemRouteKey=<key>          tandemRoute (tandemTransport)
 * Every value is checked before it is written (addresses, domains, transport values), so a bad
 * argument is refused with the reason and nothing is written.
 * What can go wrong: DirectoryMasterUnavailableError (no master reachable: retry later),
 * DirectoryWriteError (the master refused: entry exists, no such entry, schema not loaded —
 * the message says which), Error for a bad argument.
 * Config keys (passed in): directory.base_dn, local.maildir_root (import).
 */
import { AlreadyExistsError, Attribute, Change, NoSuchObjectError, type Entry } from 'ldapts';
import { parseAddress, normalizeDomain } from '../tables/address.ts';
import { parseTransportValue } from '../tables/transport.ts';
import { loadTableEntries, type TableEntry } from '../tables/table-file.ts';
import { DOMAIN_OR_SUBDOMAINS_PATTERN } from '../../util/names.ts';
import type { TableFiles } from '../tables/table-data.ts';
import type { DirectoryPool } from './pool.ts';

export const DIR_KINDS = ['domain', 'mailbox', 'alias', 'list', 'route'] as const;
export type DirKind = (typeof DIR_KINDS)[number];

/** One entry as `dir list` shows it. */
export interface DirEntry {
  kind: DirKind;
  key: string;
  dn: string;
  /** What it means, e.g. "local", "→ a@x, b@x", "maildir example.com/alice". */
  value: string;
}

export interface ImportCounts {
  written: number;
  byKind: Record<DirKind, number>;
}

const OU: Record<DirKind, string> = { domain: 'domains', mailbox: 'people', alias: 'aliases', list: 'lists', route: 'routes' };
const RDN: Record<DirKind, string> = { domain: 'associatedDomain', mailbox: 'uid', alias: 'cn', list: 'cn', route: 'tandemRouteKey' };

type Attrs = Record<string, string[]>;

export class DirectoryAdmin {
  constructor(private readonly pool: DirectoryPool, private readonly baseDn: string) {}

  /** DN of the entry `tandem dir` writes for kind/key. */
  dn(kind: DirKind, key: string): string {
    return `${RDN[kind]}=${escapeDnValue(key)},ou=${OU[kind]},${this.baseDn}`;
  }

  /** Create the base entry (if it is dc=...) and the five ou entries; returns what it created. */
  async init(): Promise<string[]> {
    const created: string[] = [];
    const first = /^dc=([^,]+)/i.exec(this.baseDn);
    const entries: Array<[string, Attrs]> = [];
    if (first) entries.push([this.baseDn, { objectClass: ['dcObject', 'organization'], dc: [first[1]], o: [first[1]] }]);
    for (const ou of Object.values(OU)) entries.push([`ou=${ou},${this.baseDn}`, { objectClass: ['organizationalUnit'], ou: [ou] }]);
    for (const [dn, attrs] of entries) {
      if (await this.pool.write(async (c) => {
        try {
          await c.add(dn, attrs);
          return true;
        } catch (err) {
          if (err instanceof AlreadyExistsError) return false;
          throw err;
        }
      })) created.push(dn);
    }
    return created;
  }

  /** Add an entry; `values` as for the CLI (see attributesFor). */
  async add(kind: DirKind, key: string, values: string[], opts: { relay?: boolean; maildir?: string; mailHost?: string } = {}): Promise<string> {
    const k = normalizeKey(kind, key);
    const attrs = await this.attributesFor(kind, k, values, opts);
    const dn = this.dn(kind, k);
    await this.pool.write((c) => c.add(dn, attrs));
    return dn;
  }

  /** Replace an entry's values (its key stays). */
  async modify(kind: DirKind, key: string, values: string[], opts: { relay?: boolean; maildir?: string; mailHost?: string } = {}): Promise<string> {
    const k = normalizeKey(kind, key);
    const attrs = await this.attributesFor(kind, k, values, opts);
    const dn = this.dn(kind, k);
    const changes = ALLOWED[kind].map((type) => new Change({ operation: 'replace', modification: new Attribute({ type, values: attrs[type] ?? [] }) }));
    await this.pool.write((c) => c.modify(dn, changes));
    return dn;
  }

  async remove(kind: DirKind, key: string): Promise<string> {
    const dn = this.dn(kind, normalizeKey(kind, key));
    await this.pool.write((c) => c.del(dn));
    return dn;
  }

  /** Entries of one kind (or all), sorted by key; read from any server. */
  async list(kind?: DirKind): Promise<DirEntry[]> {
    const kinds = kind ? [kind] : [...DIR_KINDS];
    const out: DirEntry[] = [];
    for (const k of kinds) {
      const entries = await this.pool.read(async (c) => {
        try {
          return (await c.search(`ou=${OU[k]},${this.baseDn}`, { scope: 'one', attributes: ['*'], paged: true })).searchEntries;
        } catch (err) {
          if (err instanceof NoSuchObjectError) return [];
          throw err;
        }
      });
      for (const e of entries) out.push(describe(k, e));
    }
    return out.sort((a, b) => a.kind.localeCompare(b.kind) || a.key.localeCompare(b.key));
  }

  /** Write every entry of the table files (and the config's domain lists); existing entries are replaced. */
  async importTables(tables: TableFiles, extra: { localDomains: string[]; relayDomains: string[] }, warn: (msg: string) => void): Promise<ImportCounts> {
    const counts: ImportCounts = { written: 0, byKind: { domain: 0, mailbox: 0, alias: 0, list: 0, route: 0 } };
    const read = (name: keyof TableFiles, valueRequired: boolean): Promise<Map<string, TableEntry>> =>
      tables[name] ? loadTableEntries(tables[name]!, { name, warn, valueRequired }) : Promise.resolve(new Map());
    const upsert = async (kind: DirKind, key: string, values: string[], opts: { relay?: boolean; maildir?: string } = {}) => {
      try {
        await this.add(kind, key, values, opts);
      } catch (err) {
        if (!/already exists/i.test((err as Error).message)) throw err;
        await this.modify(kind, key, values, opts);
      }
      counts.written++;
      counts.byKind[kind]++;
    };
    for (const d of [...(await read('local_domains', false)).keys(), ...extra.localDomains]) await upsert('domain', d, []);
    for (const d of [...(await read('relay_domains', false)).keys(), ...extra.relayDomains]) await upsert('domain', d, [], { relay: true });
    for (const [key, { value }] of await read('virtual_mailboxes', true)) await upsert('mailbox', key, [], { maildir: value });
    for (const [key, { value }] of await read('aliases', true)) await upsert('alias', key, value.split(/[\s,]+/).filter((t) => t !== ''));
    for (const [key, { value }] of await read('transport', true)) await upsert('route', key, [value]);
    return counts;
  }

  /** Checked LDAP attributes for an entry of `kind` (also used by modify). */
  private async attributesFor(kind: DirKind, key: string, values: string[], opts: { relay?: boolean; maildir?: string; mailHost?: string }): Promise<Attrs> {
    switch (kind) {
      case 'domain':
        if (values.length) throw new Error('a domain takes no values (use --relay for a relay domain)');
        return { objectClass: ['tandemDomain'], associatedDomain: [key], tandemDomainType: [opts.relay ? 'relay' : 'local'] };
      case 'mailbox': {
        if (values.length) throw new Error('a mailbox takes no values (use --maildir PATH or --mail-host HOST)');
        if (opts.maildir !== undefined && !opts.maildir.startsWith('/') && opts.maildir.split(/[\\/]/).includes('..')) {
          throw new Error(`maildir "${opts.maildir}" contains ".."; use a path inside local.maildir_root or an absolute path`);
        }
        const local = key.startsWith('@') ? 'catchall' : key.slice(0, key.lastIndexOf('@'));
        return {
          objectClass: ['inetOrgPerson', 'inetLocalMailRecipient', 'tandemMailbox'],
          uid: [key], cn: [key], sn: [local],
          ...(key.startsWith('@') ? {} : { mail: [key] }),
          mailLocalAddress: [key],
          ...(opts.maildir !== undefined ? { tandemMaildir: [opts.maildir] } : {}),
          ...(opts.mailHost ? { mailHost: [opts.mailHost] } : {}),
        };
      }
      case 'alias':
        return { objectClass: ['nisMailAlias', 'inetLocalMailRecipient'], cn: [key], mailLocalAddress: [key], rfc822MailMember: checkTargets(values, true) };
      case 'list': {
        const targets = checkTargets(values, false);
        const members: string[] = [];
        const others: string[] = [];
        for (const t of targets) {
          const dn = this.dn('mailbox', t);
          const exists = await this.pool.write(async (c) => (await c.search(dn, { scope: 'base', attributes: ['1.1'] }).catch((err: Error) => {
            if (err instanceof NoSuchObjectError) return { searchEntries: [] };
            throw err;
          })).searchEntries.length > 0);
          (exists ? members : others).push(exists ? dn : t);
        }
        if (members.length === 0) throw new Error(`a list needs at least one member that is a mailbox in the directory (groupOfNames requires a member); for addresses only, use "alias"`);
        return {
          objectClass: ['groupOfNames', 'inetLocalMailRecipient', 'tandemMailList'], cn: [key], mailLocalAddress: [key],
          member: members, ...(others.length ? { rfc822MailMember: others } : {}),
        };
      }
      case 'route': {
        if (values.length !== 1) throw new Error('a route takes one transport value, e.g. smtp:[192.0.2.1]:25');
        parseTransportValue(values[0]);
        return { objectClass: ['tandemRoute'], tandemRouteKey: [key], tandemTransport: [values[0]] };
      }
    }
  }
}

/** Attributes `modify` replaces per kind. */
const ALLOWED: Record<DirKind, string[]> = {
  domain: ['tandemDomainType'],
  mailbox: ['tandemMaildir', 'mailHost'],
  alias: ['rfc822MailMember'],
  list: ['member', 'rfc822MailMember'],
  route: ['tandemTransport'],
};

/** Lower-case and check a key: a domain, an address ("@d" and bare "user" for aliases), a transport key. */
function normalizeKey(kind: DirKind, key: string): string {
  const k = key.trim().toLowerCase();
  const bad = (what: string) => new Error(`"${key}" is not ${what}`);
  switch (kind) {
    case 'domain': {
      const d = normalizeDomain(k);
      if (!DOMAIN_OR_SUBDOMAINS_PATTERN.test(d)) throw bad('a domain name (or .domain for its subdomains)');
      return d;
    }
    case 'mailbox':
    case 'alias':
    case 'list':
      if (k.startsWith('@') && DOMAIN_OR_SUBDOMAINS_PATTERN.test(k.slice(1)) && kind !== 'list') return k;
      if (kind === 'alias' && /^[a-z0-9._-]+$/.test(k)) return k;
      if (parseAddress(k)?.address === k) return k;
      throw bad(kind === 'alias' ? 'an address (user@domain, @domain or a bare user)' : kind === 'mailbox' ? 'an address (user@domain or @domain)' : 'an address (user@domain)');
    case 'route':
      if (k === '*' || DOMAIN_OR_SUBDOMAINS_PATTERN.test(k) || parseAddress(k)?.address === k) return k;
      throw bad('a transport key (user@domain, domain, .domain or *)');
  }
}

/** Alias/list targets: addresses (aliases also "@domain" and bare "user"), lower-cased. */
function checkTargets(values: string[], aliasForms: boolean): string[] {
  const targets = values.flatMap((v) => v.split(/[\s,]+/)).filter((t) => t !== '').map((t) => t.toLowerCase());
  if (targets.length === 0) throw new Error('give at least one target address');
  for (const t of targets) {
    const ok = parseAddress(t)?.address === t || (aliasForms && ((t.startsWith('@') && DOMAIN_OR_SUBDOMAINS_PATTERN.test(t.slice(1))) || /^[a-z0-9._-]+$/.test(t)));
    if (!ok) throw new Error(`"${t}" is not an address${aliasForms ? ' (user@domain, @domain or a bare user)' : ' (user@domain)'}; pipes and files are not delivered to`);
  }
  return targets;
}

/** RFC 4514 escaping of an attribute value in a DN. */
function escapeDnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

function describe(kind: DirKind, e: Entry): DirEntry {
  const v = (name: string): string[] => {
    const found = Object.entries(e).find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
    return found === undefined ? [] : (Array.isArray(found) ? found : [found]).map(String);
  };
  switch (kind) {
    case 'domain': return { kind, key: v('associatedDomain')[0] ?? e.dn, dn: e.dn, value: v('tandemDomainType')[0] ?? '' };
    case 'mailbox': {
      const host = v('mailHost')[0];
      return { kind, key: v('mailLocalAddress').join(' '), dn: e.dn, value: `${v('tandemMaildir')[0] ? `maildir ${v('tandemMaildir')[0]}` : 'maildir (default)'}${host ? `, mail host ${host}` : ''}` };
    }
    case 'alias':
    case 'list': return { kind, key: v('mailLocalAddress').join(' '), dn: e.dn, value: `→ ${[...v('member'), ...v('rfc822MailMember'), ...v('mailRoutingAddress')].join(', ')}` };
    case 'route': return { kind, key: v('tandemRouteKey')[0] ?? e.dn, dn: e.dn, value: v('tandemTransport')[0] ?? '' };
  }
}
