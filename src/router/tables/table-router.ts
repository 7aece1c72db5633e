/**
 * router/tables/table-router.ts — the Router backed by Postfix-style table files.
 *
 * Exports: TableRouter (implements Router), TableRouterOptions.
 *
 * Semantics:
 *  - Addresses and domains are compared lower-cased (XXX: local parts too; see address.ts).
 *    "user+detail@d": each lookup tries "user+detail@d" first, then "user@d" (delimiter '+').
 *    The final address keeps its +detail; the detail is not copied onto alias targets.
 *  - An address in a local domain is looked up in this order (first hit wins):
 *      1. aliases "user@d" (also the bare key "user") → expand;
 *      2. virtual_mailboxes "user@d" → final address (its mailbox);
 *      3. aliases "@d" catch-all → expand (so a catch-all alias never hides a real mailbox:
 *         XXX deviation from Postfix, where virtual_alias_maps "@d" captures every user);
 *      4. virtual_mailboxes "@d" catch-all → final address;
 *      5. otherwise unknown: resolveRecipient → unknown-user; routeAddress → error 5.1.1.
 *    Addresses in other domains are expanded through "user@d" and "@d" alias keys the same way.
 *  - Expansion is depth-first. An address already on the current expansion path is not
 *    expanded again but kept as a final address: "a@x  a@x, b@x" delivers to a@x's mailbox
 *    and b@x; a loop a→b, b→a expanded from a gives [a] (a's mailbox, or a 5.1.1 bounce at
 *    routing if a has none). Final addresses are deduplicated, in first-seen order.
 *    More than maxExpansion final addresses, more than maxDepth nested aliases, or more than
 *    maxExpansion × maxDepth lookups (XXX: a bound on wide, overlapping lists) → invalid.
 *    Expansion targets in local domains that are unknown stay in the list; routeAddress
 *    answers 5.1.1 for them, so they bounce instead of failing the whole RCPT.
 *  - Non-local domain: relay domain (relay_domains, exact or ".parent" key) or an address,
 *    domain or ".parent" transport entry → relay, authorizedOnly false; otherwise relay,
 *    authorizedOnly true. The "*" transport entry does not make a domain relayable (it would
 *    make us an open relay). XXX: a ".com" transport key makes all of .com relayable.
 *  - routeAddress: transport(5) order — address, address without +detail, domain, each parent
 *    as ".parent", "*" — then: local domain → maildir of the mailbox or 5.1.1 error; address
 *    literal [ip] → that IP port 25; relayHost → it; else MX of the domain, port 25.
 *    Like Postfix, a transport entry (even "*") also applies to local domains.
 *  - Lookups are in memory, so TempLookupError is never thrown; table problems surface at
 *    create()/reload(), which keep the old snapshot and throw.
 * Config keys: tables.*, local.domains, relay.domains, local.maildir_root,
 * relay.host, local.max_alias_expansion, local.max_alias_depth (passed in as options).
 */
import type { RecipientResolution, Route, Router } from '../types.ts';
import { parseAddress, type ParsedAddress } from './address.ts';
import { loadTableData, type TableData, type TableFiles } from './table-data.ts';
import { transportLookupKeys, type TransportSpec } from './transport.ts';

export interface TableRouterOptions {
  tables: TableFiles;
  /** Extra local domains from the config file. */
  localDomains?: string[];
  relayDomains?: string[];
  /** Relative mailbox paths are under it. */
  maildirRoot: string;
  /** Like Postfix relayhost: all non-local mail goes there unless the transport map says otherwise. */
  relayHost?: { host: string; port: number };
  /** Final addresses per RCPT; default 1000. */
  maxExpansion?: number;
  /** Nesting levels of aliases; default 20. */
  maxDepth?: number;
  warn?: (msg: string, fields?: object) => void;
}

/** Thrown inside expansion to stop it; turned into {type:'invalid'}. */
class ExpansionLimit extends Error {}

export class TableRouter implements Router {
  private data: TableData;
  private readonly opts: TableRouterOptions;
  private readonly maxExpansion: number;
  private readonly maxDepth: number;
  private pendingReload: Promise<void> = Promise.resolve();

  private constructor(opts: TableRouterOptions, data: TableData, maxExpansion: number, maxDepth: number) {
    this.opts = opts;
    this.data = data;
    this.maxExpansion = maxExpansion;
    this.maxDepth = maxDepth;
  }

  /** Check the options and load every table; throws if anything is wrong. */
  static async create(opts: TableRouterOptions): Promise<TableRouter> {
    const maxExpansion = positiveInt(opts.maxExpansion ?? 1000, 'local.max_alias_expansion');
    const maxDepth = positiveInt(opts.maxDepth ?? 20, 'local.max_alias_depth');
    if (opts.relayHost) {
      const { host, port } = opts.relayHost;
      if (host.trim() === '') throw new Error('relay.host: the host is empty');
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`relay.host: port ${port} must be from 1 to 65535`);
    }
    const data = await loadTableData(TableRouter.dataOptions(opts));
    return new TableRouter(opts, data, maxExpansion, maxDepth);
  }

  private static dataOptions(opts: TableRouterOptions) {
    return {
      tables: opts.tables, localDomains: opts.localDomains, relayDomains: opts.relayDomains,
      maildirRoot: opts.maildirRoot, warn: opts.warn ?? ((msg: string) => process.emitWarning(msg)),
    };
  }

  /** Re-read all tables; on failure the previous tables stay in use and the error is thrown. */
  reload(): Promise<void> {
    const next = this.pendingReload.catch(() => undefined).then(async () => {
      this.data = await loadTableData(TableRouter.dataOptions(this.opts));
    });
    this.pendingReload = next;
    return next;
  }

  async resolveRecipient(address: string): Promise<RecipientResolution> {
    const data = this.data;
    const parsed = parseAddress(address);
    if (!parsed) return { type: 'invalid', reason: `"${address}" is not an address of the form user@domain` };

    const local = data.localDomains.has(parsed.domain);
    if (local && !aliasTargets(data, parsed) && !mailboxPath(data, parsed)) return { type: 'unknown-user' };

    let addresses: string[];
    try {
      addresses = this.expand(data, parsed.address);
    } catch (err) {
      if (err instanceof ExpansionLimit) return { type: 'invalid', reason: err.message };
      throw err;
    }
    if (local) return { type: 'local', addresses };
    return { type: 'relay', addresses, authorizedOnly: !isRelayable(data, parsed) };
  }

  async routeAddress(address: string): Promise<Route> {
    const data = this.data;
    const parsed = parseAddress(address);
    if (!parsed) return { type: 'error', message: `5.1.3 <${address}>: not an address of the form user@domain` };

    for (const key of transportLookupKeys(parsed.address, parsed.base, parsed.domain)) {
      const spec = data.transport.get(key);
      if (spec) return transportRoute(data, parsed, spec);
    }
    if (data.localDomains.has(parsed.domain)) {
      const mailbox = mailboxPath(data, parsed);
      return mailbox ? { type: 'maildir', path: mailbox } : { type: 'error', message: `5.1.1 <${parsed.address}>: unknown user` };
    }
    if (parsed.domain.startsWith('[')) {
      return { type: 'smtp', host: addressLiteralHost(parsed.domain), port: 25, mx: false };
    }
    if (this.opts.relayHost) return { type: 'smtp', host: this.opts.relayHost.host, port: this.opts.relayHost.port, mx: false };
    return { type: 'smtp', domain: parsed.domain, port: 25, mx: true };
  }

  /** Expand `root` through the aliases into deduplicated final addresses (see header). */
  private expand(data: TableData, root: string): string[] {
    const finals = new Set<string>();
    const path = new Set<string>();
    const maxSteps = this.maxExpansion * this.maxDepth;
    let steps = 0;

    const addFinal = (address: string): void => {
      finals.add(address);
      if (finals.size > this.maxExpansion) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${this.maxExpansion} addresses`);
    };
    const visit = (address: string, depth: number): void => {
      if (++steps > maxSteps) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${maxSteps} lookups; lists are nested too widely`);
      const parsed = parseAddress(address);
      const targets = parsed && aliasTargets(data, parsed);
      if (!targets) return addFinal(address);
      if (depth >= this.maxDepth) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${this.maxDepth} nesting levels`);
      path.add(address);
      for (const target of targets) {
        if (path.has(target)) addFinal(target);
        else visit(target, depth + 1);
      }
      path.delete(address);
    };
    visit(root, 0);
    return [...finals];
  }
}

/** Alias targets for an address, qualified, in the lookup order of the header; undefined if none. */
function aliasTargets(data: TableData, a: ParsedAddress): string[] | undefined {
  const local = data.localDomains.has(a.domain);
  let targets = data.aliases.get(a.address) ?? (a.base !== undefined ? data.aliases.get(a.base) : undefined);
  if (!targets && local) targets = data.aliases.get(a.local) ?? (a.baseLocal !== undefined ? data.aliases.get(a.baseLocal) : undefined);
  if (!targets && !explicitMailbox(data, a)) targets = data.aliases.get('@' + a.domain);
  return targets?.map((target) => qualify(target, a));
}

/** "@other" → local@other; bare "user" → user@domain of the address; else unchanged. */
function qualify(target: string, a: ParsedAddress): string {
  if (target.startsWith('@')) return a.local + target;
  if (!target.includes('@')) return `${target}@${a.domain}`;
  return target;
}

function explicitMailbox(data: TableData, a: ParsedAddress): string | undefined {
  return data.mailboxes.get(a.address) ?? (a.base !== undefined ? data.mailboxes.get(a.base) : undefined);
}

function mailboxPath(data: TableData, a: ParsedAddress): string | undefined {
  return explicitMailbox(data, a) ?? data.mailboxes.get('@' + a.domain);
}

/** A relay domain (exact or ".parent" key) or an address/domain transport entry other than "*". */
function isRelayable(data: TableData, a: ParsedAddress): boolean {
  const keys = transportLookupKeys(a.address, a.base, a.domain, false);
  return keys.some((key) => data.transport.has(key)) || keys.slice(a.base ? 2 : 1).some((key) => data.relayDomains.has(key));
}

function transportRoute(data: TableData, a: ParsedAddress, spec: TransportSpec): Route {
  switch (spec.kind) {
    case 'smtp-fixed': return { type: 'smtp', host: spec.host, port: spec.port, mx: false };
    case 'smtp-mx': return { type: 'smtp', domain: spec.domain, port: spec.port, mx: true };
    case 'smtp-recipient-mx': return a.domain.startsWith('[')
      ? { type: 'smtp', host: addressLiteralHost(a.domain), port: spec.port, mx: false }
      : { type: 'smtp', domain: a.domain, port: spec.port, mx: true };
    case 'lmtp': return { type: 'lmtp', host: spec.host, port: spec.port };
    case 'error': return { type: 'error', message: spec.message };
    case 'maildir': {
      const mailbox = mailboxPath(data, a);
      return mailbox
        ? { type: 'maildir', path: mailbox }
        : { type: 'error', message: `5.1.1 <${a.address}>: unknown user (the transport map says maildir, but virtual_mailboxes has no mailbox for it)` };
    }
  }
}

/** "[192.0.2.1]" or "[ipv6:2001:db8::1]" → the IP text. */
function addressLiteralHost(domain: string): string {
  return domain.slice(1, -1).replace(/^ipv6:/, '');
}

function positiveInt(value: number, key: string): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${key}: ${value} must be a whole number of at least 1`);
  return value;
}
