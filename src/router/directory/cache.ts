/**
 * router/directory/cache.ts — the lookup cache in front of the directory: bounded TTL,
 * negative caching, stale answers while every server is down.
 *
 * get(key, load):
 *  - a fresh entry (younger than ttlMs, or negativeTtlMs for "not found") is returned as is;
 *  - otherwise `load` runs (concurrent gets of one key share one load) and its answer is stored;
 *  - when `load` throws DirectoryUnavailableError (no server answered) and an entry younger
 *    than its TTL + maxStaleMs exists, that stale answer is returned (counted as `stale`);
 *    without one, TempLookupError is thrown: the receiver answers 451, the queue defers.
 *    A stale "not found" is served the same way (a known mailbox needs the "no alias, no
 *    catch-all, no route" answers too), but it marks the caller's LookupContext: the router
 *    then never turns it into a rejection (unknown user, 5.x route) — it answers 451 / defers.
 *  - other errors (a malformed entry the source refuses) pass through unchanged and nothing is
 *    stored.
 * So a change on the master is seen within ttlMs (negativeTtlMs for a new address) plus the
 * replication delay. At most maxEntries keys are kept (the oldest stored go first).
 * expireAll() (SIGHUP) makes every entry stale: the next get reloads, but the old answers stay
 * usable while the directory is down.
 * Config keys (passed in): directory.cache_ttl, directory.negative_cache_ttl,
 * directory.max_stale, directory.cache_max_entries.
 */
import { TempLookupError } from '../../util/errors.ts';
import { DirectoryUnavailableError } from './pool.ts';

export interface LookupCacheOptions {
  ttlMs: number;
  negativeTtlMs: number;
  maxStaleMs: number;
  maxEntries: number;
  now?: () => number;
}

/** Per-lookup record of how the answers were obtained (see header). */
export interface LookupContext {
  /** A "not found" answer past its TTL was used because no server answered. */
  staleNegative: boolean;
}

export interface CacheStats {
  hits: number;
  misses: number;
  stale: number;
  failures: number;
}

interface Entry<T> {
  value: T | undefined;
  storedAt: number;
  ttl: number;
}

export class LookupCache<T> {
  private readonly entries = new Map<string, Entry<T>>();
  private readonly loading = new Map<string, Promise<{ value: T | undefined; staleNegative: boolean }>>();
  private readonly now: () => number;
  readonly stats: CacheStats = { hits: 0, misses: 0, stale: 0, failures: 0 };

  constructor(private readonly opts: LookupCacheOptions) {
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The cached answer for key, or load's (see header). */
  get(key: string, load: () => Promise<T | undefined>, ctx?: LookupContext): Promise<T | undefined> {
    const entry = this.entries.get(key);
    const now = this.now();
    if (entry && now - entry.storedAt < entry.ttl) {
      this.stats.hits++;
      return Promise.resolve(entry.value);
    }
    let pending = this.loading.get(key);
    if (!pending) {
      this.stats.misses++;
      pending = this.load(key, load).finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending.then((answer) => {
      if (answer.staleNegative && ctx) ctx.staleNegative = true;
      return answer.value;
    });
  }

  /** Run load and store its answer, or fall back to a stale one (see header). */
  private async load(key: string, load: () => Promise<T | undefined>): Promise<{ value: T | undefined; staleNegative: boolean }> {
    try {
      const value = await load();
      this.store(key, value);
      return { value, staleNegative: false };
    } catch (err) {
      if (!(err instanceof DirectoryUnavailableError)) throw err;
      const old = this.entries.get(key);
      if (old && this.now() - old.storedAt < old.ttl + this.opts.maxStaleMs) {
        this.stats.stale++;
        return { value: old.value, staleNegative: old.value === undefined };
      }
      this.stats.failures++;
      throw new TempLookupError(`directory lookup of ${key} failed and no cached answer is recent enough: ${err.message}`, { cause: err });
    }
  }

  /** Make every entry stale (still usable while the directory is down). */
  expireAll(): void {
    for (const entry of this.entries.values()) {
      entry.storedAt = Math.min(entry.storedAt, this.now() - entry.ttl);
    }
  }

  private store(key: string, value: T | undefined): void {
    this.entries.delete(key);
    this.entries.set(key, { value, storedAt: this.now(), ttl: value === undefined ? this.opts.negativeTtlMs : this.opts.ttlMs });
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
