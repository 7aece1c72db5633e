/**
 * router/tables/table-data.ts — load all routing tables into one immutable snapshot.
 *
 * A snapshot is built completely before anyone sees it, so a reload either replaces all tables
 * or none. Per table (see table-router.ts for what the entries mean):
 *  - local_domains, relay_domains: keys are domains (values ignored, may be empty). In
 *    relay_domains a key ".example.com" also covers every subdomain.
 *  - virtual_mailboxes: "user@domain path" or "@domain path"; relative paths are resolved
 *    under maildirRoot here; ".." in a relative path is refused (it would leave the root).
 *  - aliases: "key target, target ..." (commas and/or whitespace). Keys: "user@domain",
 *    "@domain" (catch-all), or a bare "user" (for every local domain, as /etc/aliases).
 *    Targets: "user@domain", a bare "user" (gets the domain of the address being expanded)
 *    or "@otherdomain" (keeps the local part). Pipes, files and :include: are refused.
 *  - transport: values parsed by transport.ts; a bad value fails the load.
 * What can go wrong: unreadable file or bad line → Error naming file:line; the caller keeps
 * its previous snapshot. Warnings (duplicate keys, mailboxes outside local domains, domains
 * both local and relay) go to `warn`.
 * Config keys: tables.{local_domains,virtual_mailboxes,aliases,transport,relay_domains},
 * local.domains, relay.domains, local.maildir_root (passed in by the caller).
 */
import path from 'node:path';
import { loadTableEntries, TableFormatError, type TableEntry } from './table-file.ts';
import { parseTransportValue, type TransportSpec } from './transport.ts';
import { normalizeDomain, parseAddress } from './address.ts';
import { DOMAIN_OR_SUBDOMAINS_PATTERN } from '../../util/names.ts';

export interface TableFiles {
  local_domains?: string;
  virtual_mailboxes?: string;
  aliases?: string;
  transport?: string;
  relay_domains?: string;
}

export interface TableDataOptions {
  tables: TableFiles;
  localDomains?: string[];
  relayDomains?: string[];
  maildirRoot: string;
  warn: (msg: string, fields?: object) => void;
}

export interface TableData {
  localDomains: ReadonlySet<string>;
  /** Exact domains and ".parent" keys. */
  relayDomains: ReadonlySet<string>;
  /** "user@domain" or "@domain" → absolute maildir path. */
  mailboxes: ReadonlyMap<string, string>;
  /** "user@domain", "@domain" or bare "user" → raw targets (qualified when expanded). */
  aliases: ReadonlyMap<string, readonly string[]>;
  /** transport(5) keys → parsed value. */
  transport: ReadonlyMap<string, TransportSpec>;
}


/** Load every configured table; throws on the first one that does not load. */
export async function loadTableData(opts: TableDataOptions): Promise<TableData> {
  const { tables, warn } = opts;
  const read = (name: keyof TableFiles, valueRequired: boolean): Promise<Map<string, TableEntry>> => {
    const file = tables[name];
    return file === undefined ? Promise.resolve(new Map()) : loadTableEntries(file, { name, warn, valueRequired });
  };
  const [localTable, relayTable, mailboxTable, aliasTable, transportTable] = await Promise.all([
    read('local_domains', false), read('relay_domains', false), read('virtual_mailboxes', true),
    read('aliases', true), read('transport', true),
  ]);

  const localDomains = domainSet(localTable, tables.local_domains, opts.localDomains ?? [], 'local.domains', false);
  const relayDomains = domainSet(relayTable, tables.relay_domains, opts.relayDomains ?? [], 'relay.domains', true);
  for (const domain of localDomains) {
    if (relayDomains.has(domain)) warn(`domain ${domain} is both local and a relay domain; it is treated as local`, { domain });
  }

  const mailboxes = new Map<string, string>();
  for (const [key, { value, line }] of mailboxTable) {
    const file = tables.virtual_mailboxes!;
    const domain = checkAddressKey(key, file, line, false);
    if (!path.isAbsolute(value) && value.split(/[\\/]/).includes('..')) {
      throw new TableFormatError(file, line, `mailbox path "${value}" for ${key} contains ".."; use a path inside the maildir root or an absolute path`);
    }
    if (!localDomains.has(domain)) {
      warn(`${file}:${line}: mailbox for ${key} is in ${domain}, which is not a local domain; it is used only where the transport map says "maildir"`, { file, line, key });
    }
    mailboxes.set(key, path.resolve(opts.maildirRoot, value));
  }

  const aliases = new Map<string, string[]>();
  for (const [key, { value, line }] of aliasTable) {
    const file = tables.aliases!;
    checkAddressKey(key, file, line, true);
    aliases.set(key, parseAliasTargets(value, file, line));
  }

  const transport = new Map<string, TransportSpec>();
  for (const [key, { value, line }] of transportTable) {
    try {
      transport.set(key, parseTransportValue(value));
    } catch (err) {
      throw new TableFormatError(tables.transport!, line, `key "${key}": ${(err as Error).message}`);
    }
  }

  return { localDomains, relayDomains, mailboxes, aliases, transport };
}

/** Domains from a table plus the config list; `dotted` allows ".example.com" keys. */
function domainSet(table: Map<string, TableEntry>, file: string | undefined, extra: string[], configKey: string, dotted: boolean): Set<string> {
  const set = new Set<string>();
  for (const [key, { line }] of table) {
    const domain = normalizeDomain(key);
    if (!DOMAIN_OR_SUBDOMAINS_PATTERN.test(domain) || (!dotted && domain.startsWith('.'))) {
      throw new TableFormatError(file!, line, `"${key}" is not a domain name${dotted ? ' (or .domain for its subdomains)' : ''}`);
    }
    set.add(domain);
  }
  for (const entry of extra) {
    const domain = normalizeDomain(entry);
    if (!DOMAIN_OR_SUBDOMAINS_PATTERN.test(domain) || (!dotted && domain.startsWith('.'))) {
      throw new Error(`${configKey}: "${entry}" is not a domain name${dotted ? ' (or .domain for its subdomains)' : ''}`);
    }
    set.add(domain);
  }
  return set;
}

/** Check "user@domain" / "@domain" (/ bare "user" if allowed) and return the domain ('' for bare). */
function checkAddressKey(key: string, file: string, line: number, bareAllowed: boolean): string {
  if (key.startsWith('@')) {
    const domain = key.slice(1);
    if (!DOMAIN_OR_SUBDOMAINS_PATTERN.test(domain) || domain.startsWith('.')) throw new TableFormatError(file, line, `"${key}": expected @domain`);
    return domain;
  }
  if (!key.includes('@')) {
    if (bareAllowed) return '';
    throw new TableFormatError(file, line, `"${key}" is not an address; use user@domain or @domain`);
  }
  const parsed = parseAddress(key);
  if (!parsed || parsed.address !== key) throw new TableFormatError(file, line, `"${key}" is not an address; use user@domain or @domain`);
  return parsed.domain;
}

/** Split an alias value into targets and refuse the aliases(5) forms we do not deliver to. */
function parseAliasTargets(value: string, file: string, line: number): string[] {
  const targets = value.split(/[\s,]+/).filter((t) => t !== '').map((t) => t.toLowerCase());
  if (targets.length === 0) throw new TableFormatError(file, line, 'alias has no targets');
  for (const target of targets) {
    if (target.startsWith('|') || target.startsWith('/') || target.startsWith(':include:') || target.startsWith('"')) {
      throw new TableFormatError(file, line, `alias target "${target}" is a pipe, file or :include:, which Tandem does not deliver to; use addresses only`);
    }
    const ok = target.startsWith('@') ? DOMAIN_OR_SUBDOMAINS_PATTERN.test(target.slice(1)) && !target.startsWith('@.') : target.includes('@') ? parseAddress(target) !== undefined : /^[^@<>()\[\]\\;:]+$/.test(target);
    if (!ok) throw new TableFormatError(file, line, `alias target "${target}" is not an address (user@domain, user, or @domain)`);
  }
  return targets;
}
