/**
 * router/directory/directory-router.ts — the Router over the LDAP directory, alone or combined
 * with the table files.
 *
 * Semantics are router/resolver.ts's, the same as TableRouter's. With tables as well, every
 * lookup key (domain, address, transport key) is answered by the tables first and by the
 * directory only when the tables have no entry for that key — as Postfix does with two maps
 * in one parameter. So a table entry overrides the directory entry with the same key, and the
 * directory adds what the tables do not have. An address in a domain local in the tables is
 * still looked up in the directory when the tables do not know it.
 * What can go wrong: the directory unreachable with no recent cached answer → TempLookupError
 * (451 at RCPT, deferral in the queue). While no server answers, a rejection (unknown user at
 * RCPT, a 5.x.x error route in the queue) that rests on a "not found" past its TTL is not given:
 * TempLookupError instead, so an address created since then is never refused during an outage; reload() re-reads the tables (throws and keeps the old
 * ones on a bad table) and makes the directory cache stale.
 * Config keys: none directly (see wiring.ts).
 */
import type { RecipientResolution, Route, Router, RouterHealth } from '../types.ts';
import { resolveRecipientWith, routeAddressWith, type ResolverOptions, type RoutingSource } from '../resolver.ts';
import type { TableRouter } from '../tables/table-router.ts';
import type { DirectorySource } from './directory-source.ts';
import type { DirectoryPool } from './pool.ts';
import type { LookupContext } from './cache.ts';
import { TempLookupError } from '../../util/errors.ts';

function staleRefusal(address: string): TempLookupError {
  return new TempLookupError(`no directory server answers, and ${address} would be refused on a "not found" answer past its cache TTL (it may exist by now); retry later`);
}

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

  private source(ctx: LookupContext): RoutingSource {
    const directory = this.directory.withContext(ctx);
    return this.tables ? combineSources(this.tables.source(), directory) : directory;
  }

  async resolveRecipient(address: string): Promise<RecipientResolution> {
    const ctx: LookupContext = { staleNegative: false };
    const result = await resolveRecipientWith(this.source(ctx), this.options, address);
    if (result.type === 'unknown-user' && ctx.staleNegative) throw staleRefusal(address);
    if (result.type === 'relay' && result.authorizedOnly && ctx.staleNegative) return { ...result, uncertain: true };
    return result;
  }

  async routeAddress(address: string): Promise<Route> {
    const ctx: LookupContext = { staleNegative: false };
    const route = await routeAddressWith(this.source(ctx), this.options, address);
    if (route.type === 'error' && ctx.staleNegative) throw staleRefusal(address);
    return route;
  }

  async reload(): Promise<void> {
    this.directory.expireCache();
    await this.tables?.reload();
  }

  health(): RouterHealth {
    return { servers: this.pool.status(), cache: this.directory.cacheStats() };
  }

  /** Close the directory connections. */
  close(): Promise<void> {
    return this.pool.close();
  }
}
