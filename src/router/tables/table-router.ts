/**
 * router/tables/table-router.ts — the Router backed by Postfix-style table files.
 *
 * Besides the Router port, source() and resolverOptions() serve a combined router (directory/).
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
 *  - The algorithm itself is router/resolver.ts (shared with the directory router); this
 *    module supplies the table snapshot as its RoutingSource.
 * Config keys: tables.*, local.domains, relay.domains, local.maildir_root,
 * relay.host, local.max_alias_expansion, local.max_alias_depth (passed in as options).
 */
import type { RecipientResolution, Route, Router } from '../types.ts';
import { loadTableData, type TableData, type TableFiles } from './table-data.ts';
import { resolveRecipientWith, routeAddressWith, type ResolverOptions, type RoutingSource } from '../resolver.ts';

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
    return resolveRecipientWith(tableSource(this.data), this.resolverOptions(), address);
  }

  async routeAddress(address: string): Promise<Route> {
    return routeAddressWith(tableSource(this.data), this.resolverOptions(), address);
  }

  /** The current snapshot as a RoutingSource (for a router that combines tables and directory). */
  /** No directory here. */
  health(): undefined {
    return undefined;
  }

  /** Nothing held open: the tables are in memory. */
  async close(): Promise<void> {}

  source(): RoutingSource {
    return tableSource(this.data);
  }

  resolverOptions(): ResolverOptions {
    return { maxExpansion: this.maxExpansion, maxDepth: this.maxDepth, ...(this.opts.relayHost ? { relayHost: this.opts.relayHost } : {}) };
  }
}

/** A snapshot's maps as a RoutingSource; answers come from memory. */
function tableSource(data: TableData): RoutingSource {
  return {
    domainKind: async (key) => (data.localDomains.has(key) ? 'local' : data.relayDomains.has(key) ? 'relay' : undefined),
    address: async (key) => {
      const mailbox = data.mailboxes.get(key);
      const targets = data.aliases.get(key);
      return mailbox === undefined && targets === undefined ? undefined : { ...(mailbox !== undefined ? { mailbox } : {}), ...(targets ? { targets } : {}) };
    },
    transports: async (keys) => keys.map((key) => data.transport.get(key)),
  };
}

function positiveInt(value: number, key: string): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${key}: ${value} must be a whole number of at least 1`);
  return value;
}
