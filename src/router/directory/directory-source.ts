/**
 * router/directory/directory-source.ts — the directory as a RoutingSource: domains, addresses
 * and transport routes read from LDAP entries under the base DN, through the lookup cache.
 *
 * What an entry means (schema in docs/directory.md and deploy/ldap/tandem.schema):
 *  - tandemDomain: associatedDomain (a domain, or ".parent" for relay subdomains) with
 *    tandemDomainType local | relay. A domain with both kinds of entry is local.
 *  - any entry with mailLocalAddress = the key ("user@d", "@d" catch-all, or bare "user" for
 *    every local domain, as in the tables):
 *      targets = the address of each `member` DN (its `mail`, else its lowest
 *      mailLocalAddress) + mailRoutingAddress + rfc822MailMember (as in the aliases table:
 *      "user@d", "@other" keeping the local part, or a bare "user" in the key's domain):
 *      the key is an alias or list;
 *      no targets: the key is a mailbox, maildir = tandemMaildir (relative to
 *      local.maildir_root; ".." refused), else "<domain>/<local>/" of the entry's `mail` or of
 *      the key itself; with mailHost, mail for the key goes by SMTP to that host (port 25);
 *      an entry with uidNumber/gidNumber (posixAccount) has its maildir files owned by them.
 *  - tandemRoute: tandemRouteKey (a transport(5) key: address, domain, ".parent", "*") with
 *    tandemTransport (a transport(5) value: smtp:[host]:port, lmtp:..., maildir, error:...).
 *  - tandemDkimDomain (auxiliary, on a domain entry): associatedDomain's DKIM signing key,
 *    tandemDkimSelector with tandemDkimPrivateKey (PEM) or tandemDkimKeyFile (a PEM file on
 *    the node); read by dkimEntry() for receiver/dkim-keys.ts. An entry with neither or both,
 *    or a selector that is not a DNS label, is a TempLookupError naming it.
 * Several entries for one address are combined as the tables combine virtual_mailboxes and
 * aliases: a mailbox entry (no targets) and an alias/list entry give "the mailbox plus the
 * targets" (the "a: a, archive" idiom). Two entries of the same kind: the first by DN is used,
 * with a warning. The same for two tandemRoute entries with one key.
 * Bad data: a target that is not an address, a member DN that does not exist or has no address —
 * reported through `warn` (once per entry and problem) and skipped. An alias/list entry none of
 * whose targets is usable throws TempLookupError naming the entry: the tables refuse such an
 * alias, and mail for it waits (451 / deferral) rather than being accepted for nobody.
 * A malformed tandemTransport is returned as a TempLookupError for its key: the resolver throws
 * it only when that key is the one chosen (a more specific valid route still wins), so mail for
 * it waits rather than going the wrong way; the error names the entry to fix.
 * An entry with more than maxTargets target values (counted before anything is skipped) is not
 * read further: it is returned with declaredTargets set, and the resolver refuses it as too
 * large, as the tables do — a list is never delivered to part of its members.
 * Config keys (passed in): directory.base_dn, local.maildir_root, local.max_alias_expansion.
 */
import path from 'node:path';
import { AndFilter, OrFilter, EqualityFilter, NoSuchObjectError, InvalidDNSyntaxError, type Entry } from 'ldapts';
import { TempLookupError } from '../../util/errors.ts';
import { DOMAIN_PATTERN } from '../../util/names.ts';
import { DKIM_SELECTOR_PATTERN } from '../../util/names.ts';
import type { AddressInfo, DomainKind, RoutingSource } from '../resolver.ts';
import { parseAddress } from '../tables/address.ts';
import { parseTransportValue, type TransportSpec } from '../tables/transport.ts';
import type { DirectoryPool } from './pool.ts';
import { LookupCache, type LookupCacheOptions, type LookupContext } from './cache.ts';

export interface DirectorySourceOptions {
  pool: DirectoryPool;
  baseDn: string;
  maildirRoot: string;
  cache: LookupCacheOptions;
  /** Targets read per alias/list entry at most (see header): local.max_alias_expansion, as the resolver's. */
  maxTargets: number;
  warn: (msg: string, fields?: object) => void;
}

/** What a tandemDkimDomain entry says: its selector and the key (PEM) or the key file's path. */
export interface DirectoryDkimEntry {
  dn: string;
  selector: string;
  keyFile?: string;
  privateKey?: string;
}

/** An address entry as the router needs it, plus the mailHost route. */
interface DirectoryAddress extends AddressInfo {
  mailHost?: string;
}

const ADDRESS_ATTRIBUTES = ['objectClass', 'mail', 'mailLocalAddress', 'mailRoutingAddress', 'mailHost', 'rfc822MailMember', 'member', 'tandemMaildir', 'uidNumber', 'gidNumber'];

export class DirectorySource implements RoutingSource {
  private readonly domains: LookupCache<DomainKind>;
  private readonly addresses: LookupCache<DirectoryAddress>;
  private readonly routes: LookupCache<TransportSpec | TempLookupError>;
  private readonly members: LookupCache<string>;
  private readonly dkim: LookupCache<DirectoryDkimEntry | TempLookupError>;
  private readonly warned = new Set<string>();

  constructor(private readonly opts: DirectorySourceOptions) {
    this.domains = new LookupCache(opts.cache);
    this.addresses = new LookupCache(opts.cache);
    this.routes = new LookupCache(opts.cache);
    this.members = new LookupCache(opts.cache);
    this.dkim = new LookupCache(opts.cache);
  }

  /** Hits, misses and stale answers of all lookups together. */
  cacheStats(): { hits: number; misses: number; stale: number; failures: number; entries: number } {
    const caches = [this.domains, this.addresses, this.routes, this.members, this.dkim];
    const sum = (k: 'hits' | 'misses' | 'stale' | 'failures') => caches.reduce((n, c) => n + c.stats[k], 0);
    return { hits: sum('hits'), misses: sum('misses'), stale: sum('stale'), failures: sum('failures'), entries: caches.reduce((n, c) => n + c.size, 0) };
  }

  /** SIGHUP: re-read everything on next use (old answers stay usable while the directory is down). */
  expireCache(): void {
    for (const c of [this.domains, this.addresses, this.routes, this.members, this.dkim]) c.expireAll();
  }

  /** This source with every lookup recorded in ctx (whether a stale "not found" was used). */
  withContext(ctx: LookupContext): RoutingSource {
    return {
      domainKind: (key) => this.domainKind(key, ctx),
      address: (key) => this.address(key, ctx),
      transports: (keys) => this.transports(keys, ctx),
    };
  }

  domainKind(key: string, ctx?: LookupContext): Promise<DomainKind | undefined> {
    return this.domains.get(key, async () => {
      const entries = await this.search(new AndFilter({ filters: [eq('objectClass', 'tandemDomain'), eq('associatedDomain', key)] }), ['tandemDomainType']);
      const kinds = new Set<string>();
      for (const e of entries) {
        const kind = first(e, 'tandemDomainType')?.toLowerCase();
        if (kind === 'local' || kind === 'relay') kinds.add(kind);
        else this.warnOnce(e.dn, 'type', `directory entry ${e.dn}: tandemDomainType "${kind ?? ''}" is neither local nor relay; entry ignored`);
      }
      return kinds.has('local') ? 'local' : kinds.has('relay') ? 'relay' : undefined;
    }, ctx);
  }

  async address(key: string, ctx?: LookupContext): Promise<AddressInfo | undefined> {
    const info = await this.addressEntry(key, ctx);
    return info && (info.mailbox !== undefined || info.targets) ? info : undefined;
  }

  async transports(keys: readonly string[], ctx?: LookupContext): Promise<Array<TransportSpec | TempLookupError | undefined>> {
    // the keys that are not cached are read with one search for all of them
    let batch: Promise<Map<string, TransportSpec | TempLookupError>> | undefined;
    const load = async (key: string) => (await (batch ??= this.readRoutes(keys))).get(key);
    return Promise.all(keys.map(async (key) => {
      const route = await this.routes.get(key, () => load(key), ctx);
      if (route || !key.includes('@')) return route;
      const mailHost = (await this.addressEntry(key, ctx))?.mailHost;
      return mailHost ? { kind: 'smtp-fixed', host: mailHost, port: 25 } : undefined;
    }));
  }

  /** The DKIM signing key entry of a domain (see header), through the cache. */
  dkimEntry(domain: string): Promise<DirectoryDkimEntry | TempLookupError | undefined> {
    return this.dkim.get(domain, async () => (await this.readDkim(domain)).get(domain));
  }

  /** Every domain's DKIM entry, uncached (tandem config check); all of them when `domain` is not given. */
  async readDkim(domain?: string): Promise<Map<string, DirectoryDkimEntry | TempLookupError>> {
    const filter = new AndFilter({ filters: [eq('objectClass', 'tandemDkimDomain'), ...(domain ? [eq('associatedDomain', domain)] : [])] });
    const found = new Map<string, DirectoryDkimEntry | TempLookupError>();
    const used = new Map<string, string>();
    for (const e of byDn(await this.search(filter, ['associatedDomain', 'tandemDkimSelector', 'tandemDkimKeyFile', 'tandemDkimPrivateKey']))) {
      for (const d of all(e, 'associatedDomain').map((v) => v.toLowerCase())) {
        if (domain && d !== domain) continue;
        if (used.has(d)) {
          this.warnOnce(e.dn, `dup-dkim:${d}`, `directory entries ${used.get(d)} and ${e.dn} both have a DKIM key for ${d}; using ${used.get(d)}`);
          continue;
        }
        used.set(d, e.dn);
        found.set(d, dkimOf(e));
      }
    }
    return found;
  }

  private addressEntry(key: string, ctx?: LookupContext): Promise<DirectoryAddress | undefined> {
    return this.addresses.get(key, async () => {
      const entries = byDn(await this.search(eq('mailLocalAddress', key), ADDRESS_ATTRIBUTES));
      const aliases = entries.filter(hasTargets);
      const mailboxes = entries.filter((e) => !hasTargets(e));
      for (const [kind, same] of [['alias or list', aliases], ['mailbox', mailboxes]] as const) {
        if (same.length > 1) this.warnOnce(key, `dup:${kind}`, `${same.length} directory ${kind} entries have mailLocalAddress ${key} (${same.map((e) => e.dn).join('; ')}); using ${same[0].dn}`);
      }
      const mailbox = mailboxes[0] && this.readMailbox(mailboxes[0], key);
      const alias = aliases[0] && (await this.readAlias(aliases[0]));
      if (!mailbox && !alias) return undefined;
      return { ...mailbox, ...alias };
    }, ctx);
  }

  /** The targets of an alias/list entry (see header); throws TempLookupError if none is usable. */
  private async readAlias(e: Entry): Promise<Pick<DirectoryAddress, 'targets' | 'declaredTargets'>> {
    const raw = [...all(e, 'mailRoutingAddress'), ...all(e, 'rfc822MailMember')];
    const dns = all(e, 'member');
    const declared = raw.length + dns.length;
    if (declared > this.opts.maxTargets) return { targets: [], declaredTargets: declared };
    const targets: string[] = [];
    const memberAddresses = await Promise.all(dns.map((dn) => this.members.get(dn, () => this.readMember(dn))));
    dns.forEach((dn, i) => {
      const address = memberAddresses[i];
      if (address) targets.push(address);
      else this.warnOnce(e.dn, `m:${dn}`, `directory entry ${e.dn}: member ${dn} does not exist or has no mail address; skipped`);
    });
    for (const value of raw) {
      const target = aliasTarget(value);
      if (target) targets.push(target);
      else this.warnOnce(e.dn, `t:${value}`, `directory entry ${e.dn}: "${value}" is not an address (user@domain, @domain or a bare user); skipped`);
    }
    if (targets.length === 0) {
      throw new TempLookupError(`directory entry ${e.dn} is an alias or list with no usable target (members deleted or not addresses); fix the entry (mail for it waits until then)`);
    }
    return { targets };
  }

  /** A mailbox entry: its maildir, the owner of its files (posixAccount) and mailHost. */
  private readMailbox(e: Entry, key: string): DirectoryAddress {
    const mailHost = first(e, 'mailHost');
    const mailbox = this.maildirOf(e, key);
    const id = (attr: string): number | undefined => {
      const v = first(e, attr);
      return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
    };
    const uid = id('uidNumber');
    const gid = id('gidNumber');
    const owner = uid !== undefined || gid !== undefined ? { mailboxOwner: { ...(uid !== undefined ? { uid } : {}), ...(gid !== undefined ? { gid } : {}) } } : {};
    return { ...(mailbox !== undefined ? { mailbox, ...owner } : {}), ...(mailHost ? { mailHost: mailHost.toLowerCase() } : {}) };
  }

  /** The maildir of a mailbox entry (see header); undefined, with a warning, if there is none. */
  private maildirOf(e: Entry, key: string): string | undefined {
    const explicit = first(e, 'tandemMaildir');
    if (explicit !== undefined) {
      if (!path.isAbsolute(explicit) && explicit.split(/[\\/]/).includes('..')) {
        this.warnOnce(e.dn, 'maildir', `directory entry ${e.dn}: tandemMaildir "${explicit}" contains ".."; use a path inside local.maildir_root or an absolute path`);
        return undefined;
      }
      return path.resolve(this.opts.maildirRoot, explicit);
    }
    const named = parseAddress(first(e, 'mail') ?? '') ?? parseAddress(key);
    if (!named) {
      this.warnOnce(e.dn, 'maildir', `directory entry ${e.dn}: a mailbox for ${key} needs tandemMaildir or a mail address`);
      return undefined;
    }
    return path.resolve(this.opts.maildirRoot, named.domain, named.local);
  }

  private async readMember(dn: string): Promise<string | undefined> {
    // a member DN that does not exist is an answer (skip it), not a server failure
    const entries = await this.opts.pool.read(async (c) => {
      try {
        return (await c.search(dn, { scope: 'base', attributes: ['mail', 'mailLocalAddress'] })).searchEntries;
      } catch (err) {
        if (err instanceof NoSuchObjectError || err instanceof InvalidDNSyntaxError) return [];
        throw err;
      }
    });
    const e = entries[0];
    if (!e) return undefined;
    const candidates = [first(e, 'mail'), ...all(e, 'mailLocalAddress').sort()];
    return candidates.map((c) => parseAddress(c ?? '')).find((p) => p !== undefined)?.address;
  }

  /** The tandemRoute entries of `keys`; a malformed value becomes a TempLookupError for its key. */
  private async readRoutes(keys: readonly string[]): Promise<Map<string, TransportSpec | TempLookupError>> {
    const filter = new AndFilter({ filters: [eq('objectClass', 'tandemRoute'), new OrFilter({ filters: keys.map((k) => eq('tandemRouteKey', k)) })] });
    const found = new Map<string, TransportSpec | TempLookupError>();
    const used = new Map<string, string>();
    for (const e of byDn(await this.search(filter, ['tandemRouteKey', 'tandemTransport']))) {
      const key = first(e, 'tandemRouteKey')?.toLowerCase();
      if (key === undefined) continue;
      if (used.has(key)) {
        this.warnOnce(e.dn, 'dup-route', `directory entries ${used.get(key)} and ${e.dn} both have tandemRouteKey ${key}; using ${used.get(key)}`);
        continue;
      }
      used.set(key, e.dn);
      const value = first(e, 'tandemTransport') ?? '';
      try {
        found.set(key, parseTransportValue(value));
      } catch (err) {
        found.set(key, new TempLookupError(`directory entry ${e.dn}: tandemTransport ${(err as Error).message}; fix the entry (mail for ${key} waits until then)`));
      }
    }
    return found;
  }

  private search(filter: EqualityFilter | AndFilter | OrFilter, attributes: string[]): Promise<Entry[]> {
    return this.opts.pool.read(async (c) => (await c.search(this.opts.baseDn, { scope: 'sub', filter, attributes })).searchEntries);
  }

  private warnOnce(subject: string, problem: string, msg: string): void {
    const key = `${subject}\0${problem}`;
    if (this.warned.has(key)) return;
    if (this.warned.size > 10_000) this.warned.clear();
    this.warned.add(key);
    this.opts.warn(msg, { event: 'directory-bad-entry', entry: subject });
  }
}


/** A tandemDkimDomain entry as the signer needs it, or the reason it is unusable. */
function dkimOf(e: Entry): DirectoryDkimEntry | TempLookupError {
  const selector = first(e, 'tandemDkimSelector') ?? '';
  const keyFile = first(e, 'tandemDkimKeyFile');
  const privateKey = first(e, 'tandemDkimPrivateKey');
  const bad = (why: string) => new TempLookupError(`directory entry ${e.dn}: ${why}; fix the entry (mail it would sign waits until then)`);
  if (!DKIM_SELECTOR_PATTERN.test(selector)) return bad(`tandemDkimSelector "${selector}" is not a DNS label`);
  if ((keyFile === undefined) === (privateKey === undefined)) return bad('a DKIM key needs exactly one of tandemDkimKeyFile and tandemDkimPrivateKey');
  return { dn: e.dn, selector, ...(keyFile !== undefined ? { keyFile } : { privateKey: privateKey! }) };
}

/** An alias target as the tables accept it — "user@domain", "@domain" or a bare "user" — lower-cased; undefined if none. */
function aliasTarget(value: string): string | undefined {
  const t = value.trim().toLowerCase();
  if (t.startsWith('@')) return DOMAIN_PATTERN.test(t.slice(1)) ? t : undefined;
  if (t.includes('@')) return parseAddress(t)?.address;
  return /^[^@<>()[\]\\;:\s",|/]+$/.test(t) ? t : undefined;
}

/** Entries sorted by DN: every server and node picks the same one of duplicates. */
function byDn(entries: Entry[]): Entry[] {
  return entries.sort((a, b) => (a.dn < b.dn ? -1 : a.dn > b.dn ? 1 : 0));
}

function hasTargets(e: Entry): boolean {
  return all(e, 'mailRoutingAddress').length + all(e, 'rfc822MailMember').length + all(e, 'member').length > 0;
}

function eq(attribute: string, value: string): EqualityFilter {
  return new EqualityFilter({ attribute, value });
}

/** All values of an attribute as strings (attribute names compared case-insensitively). */
function all(e: Entry, name: string): string[] {
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(e)) {
    if (k.toLowerCase() !== lower) continue;
    const values = Array.isArray(v) ? v : [v];
    return values.map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : String(x)));
  }
  return [];
}

function first(e: Entry, name: string): string | undefined {
  return all(e, name)[0];
}
