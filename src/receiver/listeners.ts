/**
 * receiver/listeners.ts — the node's SMTP listeners and the defenses they share.
 *
 * Without smtp.listeners there is one listener, "smtp", on smtp.listen: STARTTLS when smtp.tls
 * is set, AUTH offered after it when smtp.auth_passwords is set, as before listeners existed.
 * With smtp.listeners each entry is a listener with its own address and policy:
 *   tls: none | starttls (offered when smtp.tls is set) | implicit (TLS from the first byte, 465)
 *   auth: none | offered (after TLS, when smtp.auth_passwords is set) | required (MAIL only
 *         after AUTH: a submission port, 587/465)
 *   proxy_protocol, max_connections, sender_auth: default to smtp.proxy_protocol,
 *         smtp.max_connections, sender_auth.policy.
 * Every other smtp.* key applies to all listeners. The per-client limits (ClientLimits) and
 * the AUTH throttle (its hashing slots and failure rates) are one per node, shared by all
 * listeners, so another port is no way around them.
 * Config keys read: smtp.*, relay.networks (via isRelayClient).
 */
import type { TandemConfig } from '../config/schema.ts';
import { ClientLimits, type ClientLimitsApi } from './client-limits.ts';
import { AuthThrottle } from './auth-throttle.ts';
import { SenderAuth, CachingResolver } from './sender-auth.ts';
import { DkimKeys, type DirectoryDkimLookup } from './dkim-keys.ts';
import { RspamdFilter } from './content-filter.ts';

export interface ListenerSpec {
  name: string;
  listen: { host: string; port: number };
  tls: 'none' | 'starttls' | 'implicit';
  auth: 'none' | 'offered' | 'required';
  proxyProtocol: boolean | string[];
  maxConnections: number;
  senderAuth: 'off' | 'record' | 'enforce';
}

export function resolveListeners(c: Pick<TandemConfig, 'smtp' | 'sender_auth'>): ListenerSpec[] {
  const s = c.smtp;
  if (!s.listeners) {
    return [{ name: 'smtp', listen: s.listen, tls: s.tls ? 'starttls' : 'none', auth: 'offered', proxyProtocol: s.proxy_protocol, maxConnections: s.max_connections, senderAuth: c.sender_auth.policy }];
  }
  return s.listeners.map((l) => ({
    name: l.name,
    listen: l.listen,
    tls: l.tls === 'starttls' && !s.tls ? 'none' : l.tls,
    auth: l.auth,
    proxyProtocol: l.proxy_protocol ?? s.proxy_protocol,
    maxConnections: l.max_connections ?? s.max_connections,
    senderAuth: l.sender_auth ?? c.sender_auth.policy,
  }));
}

export function createClientLimits(c: Pick<TandemConfig, 'smtp'>, isRelayClient: (address: string) => boolean): ClientLimits {
  const l = c.smtp.limits;
  return new ClientLimits({
    clientConnections: l.client_connections,
    networkConnections: l.network_connections,
    connectionRate: l.connection_rate,
    messageRate: l.message_rate,
    recipientRate: l.recipient_rate,
    authFailureRate: c.smtp.auth_limits.failure_rate,
    windowMs: l.rate_window,
    isExempt: l.exempt_relay_networks ? isRelayClient : () => false,
  });
}

/**
 * The sender authentication and DKIM signing of the node, when either is configured; `directory`
 * answers for the domains dkim.keys does not have (with dkim.directory). Throws when a key file
 * of dkim.keys is unreadable or not a usable key.
 */
export function createSenderAuth(c: Pick<TandemConfig, 'dkim' | 'node' | 'sender_auth' | 'smtp'>, directory?: DirectoryDkimLookup): SenderAuth | undefined {
  const verifying = resolveListeners(c).some((l) => l.senderAuth !== 'off');
  const dkim = new DkimKeys(c.dkim.keys, c.dkim.directory ? directory : undefined);
  if (!verifying && !dkim.any) return undefined;
  const sa = c.sender_auth;
  const resolver = new CachingResolver({ servers: sa.dns_servers, timeoutMs: sa.dns_timeout, ttlMs: sa.dns_cache_ttl, maxEntries: sa.dns_cache_entries });
  return new SenderAuth({ hostname: c.node.hostname, resolver, dkim });
}

export function createContentFilter(c: Pick<TandemConfig, 'content_filter'>, onFailure: (why: string) => void): RspamdFilter | undefined {
  const f = c.content_filter;
  return f ? new RspamdFilter({ url: f.rspamd_url, timeoutMs: f.timeout, failOpen: f.fail_open, onSpam: f.on_spam, onFailure }) : undefined;
}

export function createAuthThrottle(
  c: Pick<TandemConfig, 'smtp'>, limits: ClientLimitsApi,
  verify: (user: string, password: string) => Promise<boolean>, onRefusal: (reason: string) => void,
): AuthThrottle {
  const a = c.smtp.auth_limits;
  return new AuthThrottle({
    maxFailures: a.max_failures, failureDelay: a.failure_delay, hashConcurrency: a.hash_concurrency, hashQueue: a.hash_queue,
    limits, verify, onRefusal,
  });
}
