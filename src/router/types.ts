/**
 * router/types.ts — the router port: what the receiver, the queue manager and the node need of a
 * router, filled by the table router (tables/) and the directory router (directory/, LDAP with
 * the tables first).
 *
 * Two questions are asked of a router:
 *  - at RCPT time, `resolveRecipient`: is this address ours, relayable, or unknown; and to which
 *    final addresses does it expand (aliases, lists — recursive, loop-safe)?
 *  - at delivery time, `routeAddress`: which channel and next hop carries a final address?
 * A lookup that cannot be answered (file unreadable, directory down) throws TempLookupError:
 * the caller answers 451 or defers; it never bounces. Besides: reload (SIGHUP), health (the
 * directory's servers and cache, for the admin API and metrics) and close.
 */
import type { DirectoryServerStatus } from './directory/pool.ts';
import type { CacheStats } from './directory/cache.ts';

/** Where one final address goes. */
export type Route =
  /** `owner`: uid/gid of the mailbox from the directory (posixAccount uidNumber/gidNumber). */
  | { type: 'maildir'; path: string; owner?: MailboxOwner }
  /** SMTP to a fixed host (transport map `smtp:[host]:port`, or the relay host): no MX lookup. */
  | { type: 'smtp'; host: string; port: number; mx: false }
  /** SMTP by MX lookup of `domain` (transport map `smtp:domain` without brackets, or default). */
  | { type: 'smtp'; domain: string; port: number; mx: true }
  | { type: 'lmtp'; host: string; port: number }
  /** The transport map says this domain's mail is refused (`error:text`). */
  | { type: 'error'; message: string };

/** Numeric owner of a mailbox's files, where the routing data names one. */
export interface MailboxOwner {
  uid?: number;
  gid?: number;
}

/** Result of checking a recipient at RCPT time. */
export type RecipientResolution =
  /** Local domain, address known: deliver to these final addresses (after alias/list expansion). */
  | { type: 'local'; addresses: string[] }
  /** Domain we relay for (relay_domains or transport map), or a remote domain: route later. */
  | {
    type: 'relay'; addresses: string[]; authorizedOnly: boolean;
    /**
     * authorizedOnly rests on a stale "not ours" answer (the directory is unreachable): a client
     * that may not relay gets a 4xx, not a refusal, since the domain may have become ours.
     */
    uncertain?: boolean;
  }
  /** Local domain, no such user. */
  | { type: 'unknown-user' }
  /** An alias expansion loops or exceeds the limits: refuse with a clear reason. */
  | { type: 'invalid'; reason: string };

export interface Router {
  /**
   * Resolve a RCPT address. `authorizedOnly: true` on a relay result means the domain is not
   * one of ours, so only clients in relay networks or authenticated ones may send to it.
   * Throws TempLookupError when the answer cannot be known now.
   */
  resolveRecipient(address: string): Promise<RecipientResolution>;
  /** Route a final address to a channel/next hop. Throws TempLookupError when unknown now. */
  routeAddress(address: string): Promise<Route>;
  /** Reload tables (SIGHUP). Keeps the old data if the new data does not load, and throws. */
  reload(): Promise<void>;
  /** The directory's servers and cache counters; undefined for a router without a directory. */
  health(): RouterHealth | undefined;
  /** Release what the router holds open (directory connections). */
  close(): Promise<void>;
}

/** What a router with a directory reports about it. */
export interface RouterHealth {
  servers: DirectoryServerStatus[];
  cache: CacheStats;
}

/** Key for per-destination concurrency and backoff: the next hop a Route goes to. */
export function routeKey(route: Route): string {
  switch (route.type) {
    case 'maildir': return `maildir:${route.path}`;
    case 'smtp': return route.mx ? `smtp:${route.domain}:${route.port}` : `smtp:[${route.host}]:${route.port}`;
    case 'lmtp': return `lmtp:${route.host}:${route.port}`;
    case 'error': return 'error';
  }
}
