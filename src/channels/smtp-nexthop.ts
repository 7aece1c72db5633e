/**
 * smtp-nexthop.ts — where an SMTP or LMTP route goes: the ordered list of addresses to try.
 *
 * {type:'smtp', mx:true}: MX lookup of the domain (RFC 5321 §5.1), sorted by preference, random
 * among equal preferences. No MX record (ENODATA) or no such name (ENOTFOUND) → the domain itself
 * is the implicit MX. A null MX (RFC 7505, a single "." record) → failed 5.1.10. Each MX host is
 * then resolved to its addresses (IPv4 first, then IPv6).
 * {type:'smtp', mx:false} and {type:'lmtp'}: the fixed host, resolved to its addresses.
 *
 * What can go wrong, and what it becomes:
 *  - the implicit-MX domain has no address (NXDOMAIN or no A/AAAA) → failed 5.1.2: nobody can
 *    receive mail for it.
 *  - SERVFAIL, timeouts, refused queries → deferred 4.4.3: the DNS may answer later.
 *  - an explicit MX host or a fixed relay/LMTP host that has no address → deferred 4.4.4. This is
 *    a configuration error (theirs or ours) that must not bounce mail; it expires with the queue
 *    lifetime if nobody fixes it.
 * Resolvers are injectable (tests, a future caching resolver). They follow node:dns error
 * conventions: `err.code` 'ENODATA' (name exists, no record of that type), 'ENOTFOUND' (no such
 * name); any other code is temporary.
 *
 * XXX: no DNS cache here, as Postfix has none either: run a local caching resolver on MX hosts.
 * Config read: none (the channel passes resolvers in).
 */
import { promises as dns } from 'node:dns';
import net from 'node:net';
import type { Route } from '../router/types.ts';

export interface MxRecord { exchange: string; priority: number }
/** MX lookup; rejects with a node:dns style error (`code`). */
export type ResolveMx = (domain: string) => Promise<MxRecord[]>;
/** Host name → IP addresses; rejects with a node:dns style error (`code`). */
export type ResolveHost = (host: string) => Promise<string[]>;

/** One address to connect to; `name` is the host name it was found under (for SNI and logs). */
export interface HopTarget { name: string; address: string; port: number }

export type NextHopPlan =
  | { type: 'targets'; targets: HopTarget[] }
  /** No delivery is possible: every recipient gets this outcome without a connection. */
  | { type: 'failed' | 'deferred'; reply: string; via: string };

/** Postfix' smtp_mx_address_limit: each unreachable address may cost a connect timeout. */
export const MAX_TARGETS_PER_DELIVERY = 5;

const NOT_FOUND_CODES = new Set(['ENODATA', 'ENOTFOUND']);

/** The ordered addresses to try for an smtp or lmtp route. */
export async function resolveNextHop(
  route: Route,
  resolvers: { resolveMx: ResolveMx; resolveHost: ResolveHost; random?: () => number },
): Promise<NextHopPlan> {
  if (route.type === 'smtp' && route.mx) {
    return resolveByMx(route.domain, route.port, resolvers);
  }
  if (route.type === 'smtp' || route.type === 'lmtp') {
    return resolveHosts([route.host], route.port, resolvers.resolveHost, route.host, false);
  }
  throw new Error(`bug: resolveNextHop called for a ${route.type} route`);
}

/** MX lookup with implicit-MX fallback and null-MX detection. */
async function resolveByMx(
  domain: string,
  port: number,
  resolvers: { resolveMx: ResolveMx; resolveHost: ResolveHost; random?: () => number },
): Promise<NextHopPlan> {
  let records: MxRecord[];
  try {
    records = await resolvers.resolveMx(domain);
  } catch (err) {
    const code = errorCode(err);
    if (NOT_FOUND_CODES.has(code)) return resolveHosts([domain], port, resolvers.resolveHost, domain, true);
    return { type: 'deferred', reply: `4.4.3 MX lookup for ${domain} failed (${code || String(err)}); will try again later`, via: domain };
  }
  const isNull = (r: MxRecord) => r.exchange === '' || r.exchange === '.';
  if (records.length === 1 && isNull(records[0])) {
    return { type: 'failed', reply: `5.1.10 Domain ${domain} accepts no mail (null MX record, RFC 7505)`, via: domain };
  }
  // RFC 7505 §3: a null MX mixed with real ones is a misconfiguration; use the real ones.
  const usable = records.filter((r) => !isNull(r));
  if (usable.length === 0) return resolveHosts([domain], port, resolvers.resolveHost, domain, true);
  const ordered = orderByPreference(usable, resolvers.random ?? Math.random);
  return resolveHosts(ordered.map((r) => r.exchange.replace(/\.$/, '')), port, resolvers.resolveHost, domain, false);
}

/** Sort by preference, shuffling records of equal preference (RFC 5321 §5.1). */
function orderByPreference(records: MxRecord[], random: () => number): MxRecord[] {
  const keyed = records.map((r) => ({ r, tie: random() }));
  keyed.sort((a, b) => a.r.priority - b.r.priority || a.tie - b.tie);
  return keyed.map((k) => k.r);
}

/** Resolve host names in order into at most MAX_TARGETS_PER_DELIVERY targets. */
async function resolveHosts(
  hosts: string[],
  port: number,
  resolveHost: ResolveHost,
  via: string,
  implicitMx: boolean,
): Promise<NextHopPlan> {
  const lookups = await Promise.allSettled(hosts.map((h) => (net.isIP(h) ? Promise.resolve([h]) : resolveHost(h))));
  const targets: HopTarget[] = [];
  let lastProblem = '';
  let allNotFound = true;
  lookups.forEach((result, i) => {
    if (result.status === 'fulfilled') {
      for (const address of result.value) targets.push({ name: hosts[i], address, port });
      if (result.value.length === 0) lastProblem = `${hosts[i]} has no address`;
      return;
    }
    const code = errorCode(result.reason);
    if (!NOT_FOUND_CODES.has(code)) allNotFound = false;
    lastProblem = `address lookup for ${hosts[i]} failed (${code || String(result.reason)})`;
  });
  if (targets.length > 0) return { type: 'targets', targets: targets.slice(0, MAX_TARGETS_PER_DELIVERY) };
  if (implicitMx && allNotFound) {
    return { type: 'failed', reply: `5.1.2 Domain ${via} not found: no MX and no address record (${lastProblem})`, via };
  }
  if (allNotFound) {
    return { type: 'deferred', reply: `4.4.4 No address for next hop of ${via}: ${lastProblem}; check the DNS or the transport map`, via };
  }
  return { type: 'deferred', reply: `4.4.3 ${lastProblem}; will try again later`, via };
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** MX lookup through the system's DNS servers. */
export const defaultResolveMx: ResolveMx = (domain) => dns.resolveMx(domain);

/**
 * A and AAAA through DNS (IPv4 first). Names DNS does not know (ENOTFOUND/ENODATA) are then looked
 * up with getaddrinfo so /etc/hosts entries work for relay and LMTP hosts.
 */
export const defaultResolveHost: ResolveHost = async (host) => {
  const [v4, v6] = await Promise.allSettled([dns.resolve4(host), dns.resolve6(host)]);
  const addresses = [
    ...(v4.status === 'fulfilled' ? v4.value : []),
    ...(v6.status === 'fulfilled' ? v6.value : []),
  ];
  if (addresses.length > 0) return addresses;
  const failures = [v4, v6].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  const temporary = failures.find((e) => !NOT_FOUND_CODES.has(errorCode(e)));
  if (temporary) throw temporary;
  try {
    const found = await dns.lookup(host, { all: true });
    if (found.length > 0) return found.map((a) => a.address);
  } catch {
    // getaddrinfo did not know it either: report the DNS answer below.
  }
  throw failures.find((e) => errorCode(e) === 'ENOTFOUND') ?? failures[0]
    ?? Object.assign(new Error(`${host} has no A or AAAA record`), { code: 'ENODATA' });
};
