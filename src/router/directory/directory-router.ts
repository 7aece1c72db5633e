/**
 * router/directory/directory-router.ts — the Router over the LDAP directory, alone or combined
 * with the table files.
 *
 * Exports: DirectoryRouter, combineSources.
 *
 * Semantics are router/resolver.ts's, the same as TableRouter's. With tables as well, every
 * lookup key (domain, address, transport key) is answered by the tables first and by the
 * directory only when the tables have no entry for that key — as Postfix does with two maps
 * in one parameter. So a table entry overrides the directory entry with the same key, and the
 * directory adds what the tables do not have. An address in a domain local in the tables is
 * still looked up in the directory when the tables do not know it.
 * What can go wrong: the directory unreachable with no recent cached answer → TempLookupError
 * (451 at RCPT, deferral in the queue); reload() re-reads the tables (throws and keeps the old
 * ones on a bad table) and makes the directory cache stale.
 * Config keys: none directly (see wiring.ts).
 */
import type { RecipientResolution, Route, Router } from '../types.ts';
import { resolveRecipientWith, routeAddressWith, type ResolverOptions, type RoutingSource } from '../resolver.ts';
import type { TableRouter } from '../tables/table-router.ts';
import type { DirectorySource } from './directory-source.ts';
import type { DirectoryPool } from './pool.ts';

/** first's answer per key, second's where first has none. */
export function combineSources(first: RoutingSource, second: RoutingSource): RoutingSource {
  return {
    domainKind: async (key) => (await first.domainKind(key)) ?? second.domainKind(key),
    address: async (key) => (await first.address(key)) ?? second.address(key),
    transports: async (keys) => {
      const a = await first.transports(keys);
      if (a.every((s) => s !== undefined)) return a;
      const b = await second.transports(keys);
      return a.map((s, i) => s ?? b[i]);
    },
  };
}

export class DirectoryRouter implements Router {
  constructor(
    readonly pool: DirectoryPool,
    readonly directory: DirectorySource,
    private readonly options: ResolverOptions,
    private readonly tables?: TableRouter,
  ) {}

  private source(): RoutingSource {
    return this.tables ? combineSources(this.tables.source(), this.directory) : this.directory;
  }

  resolveRecipient(address: string): Promise<RecipientResolution> {
    return resolveRecipientWith(this.source(), this.options, address);
  }

  routeAddress(address: string): Promise<Route> {
    return routeAddressWith(this.source(), this.options, address);
  }

  async reload(): Promise<void> {
    this.directory.expireCache();
    await this.tables?.reload();
  }

  /** Close the directory connections. */
  close(): Promise<void> {
    return this.pool.close();
  }
}
