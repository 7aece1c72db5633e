/**
 * receiver/client-limits.ts — per-client counters and rates for the SMTP listeners, like
 * Postfix's anvil: concurrent connections per client address and per network (/24 for IPv4,
 * /64 for IPv6), and per-client rates of connections, messages, recipients and AUTH failures
 * over a sliding window.
 *
 * One ClientLimits is shared by every listener of a node, so a client cannot get around a limit
 * by using another port. A limit of 0 is "no limit". Clients in the exception list (by default
 * the relay networks, as Postfix's smtpd_client_event_limit_exceptions = $mynetworks) are not
 * counted against the connection and rate limits; AUTH failures count for everybody.
 * Rates: each counter keeps the event times inside the window (at most `limit` of them, so
 * memory is bounded by the limits, not by the attacker); idle entries are dropped by a sweep.
 * Pure bookkeeping: no timers of its own except the unref'ed sweep, no I/O.
 */
import ipaddr from 'ipaddr.js';

export interface ClientLimitsOptions {
  /** Concurrent connections per client address (smtpd_client_connection_count_limit). */
  clientConnections: number;
  /** Concurrent connections per /24 (IPv4) or /64 (IPv6). */
  networkConnections: number;
  /** New connections per client per window (smtpd_client_connection_rate_limit). */
  connectionRate: number;
  /** MAIL transactions accepted per client per window (smtpd_client_message_rate_limit). */
  messageRate: number;
  /** Recipients accepted per client per window (smtpd_client_recipient_rate_limit). */
  recipientRate: number;
  /** Failed AUTH attempts per client per window. */
  authFailureRate: number;
  /** The rate window (anvil_rate_time_unit). */
  windowMs: number;
  /** Clients not held to the connection and rate limits (not to AUTH failures). */
  isExempt(address: string): boolean;
  now?: () => number;
}

/** Why a client was refused: the metric label and what to tell it. */
export interface LimitRefusal {
  limit: 'client_connections' | 'network_connections' | 'connection_rate' | 'message_rate' | 'recipient_rate' | 'auth_failure_rate';
  message: string;
}

/** The address as a counting key: IPv4-mapped IPv6 counts as IPv4. */
export function clientKey(address: string): string {
  try {
    const a = ipaddr.process(address);
    return a.toNormalizedString();
  } catch {
    return address;
  }
}

/** The client's /24 (IPv4) or /64 (IPv6) as text, e.g. "192.0.2.0/24". */
export function networkKey(address: string): string {
  try {
    const a = ipaddr.process(address);
    if (a.kind() === 'ipv4') {
      const o = (a as ipaddr.IPv4).octets;
      return `${o[0]}.${o[1]}.${o[2]}.0/24`;
    }
    const p = (a as ipaddr.IPv6).parts;
    return `${p.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
  } catch {
    return address;
  }
}

/** Event times of one key inside the window, oldest first. */
class Window {
  times: number[] = [];
}

export class ClientLimits {
  private readonly perClient = new Map<string, number>();
  private readonly perNetwork = new Map<string, number>();
  private readonly rates = new Map<string, Window>();
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly o: ClientLimitsOptions) {
    this.now = o.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, o.windowMs)).unref();
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  /**
   * A new connection from `address`: counted and undefined, or refused (not counted).
   * Call release(address) when a counted connection ends.
   */
  connect(address: string): LimitRefusal | undefined {
    const key = clientKey(address);
    const net = networkKey(address);
    const exempt = this.o.isExempt(address);
    if (!exempt) {
      const { clientConnections, networkConnections, connectionRate } = this.o;
      if (clientConnections && (this.perClient.get(key) ?? 0) >= clientConnections) {
        return { limit: 'client_connections', message: `Error: too many connections from ${address} (limit ${clientConnections})` };
      }
      if (networkConnections && (this.perNetwork.get(net) ?? 0) >= networkConnections) {
        return { limit: 'network_connections', message: `Error: too many connections from ${net} (limit ${networkConnections})` };
      }
      if (!this.take(`c ${key}`, connectionRate, 1)) {
        return { limit: 'connection_rate', message: `Error: too many connections from ${address} (limit ${connectionRate} per ${this.o.windowMs / 1000} s)` };
      }
    }
    this.perClient.set(key, (this.perClient.get(key) ?? 0) + 1);
    this.perNetwork.set(net, (this.perNetwork.get(net) ?? 0) + 1);
    return undefined;
  }

  /** A connection counted by connect() has ended. */
  release(address: string): void {
    dec(this.perClient, clientKey(address));
    dec(this.perNetwork, networkKey(address));
  }

  /** Connections now open from this address (counted ones). */
  connections(address: string): number {
    return this.perClient.get(clientKey(address)) ?? 0;
  }

  /** A MAIL command is about to be accepted: within the message rate? */
  message(address: string): LimitRefusal | undefined {
    if (this.o.isExempt(address) || this.take(`m ${clientKey(address)}`, this.o.messageRate, 1)) return undefined;
    return { limit: 'message_rate', message: `Error: too many messages from ${address} (limit ${this.o.messageRate} per ${this.o.windowMs / 1000} s)` };
  }

  /** A RCPT is about to be accepted: within the recipient rate? */
  recipient(address: string): LimitRefusal | undefined {
    if (this.o.isExempt(address) || this.take(`r ${clientKey(address)}`, this.o.recipientRate, 1)) return undefined;
    return { limit: 'recipient_rate', message: `Error: too many recipients from ${address} (limit ${this.o.recipientRate} per ${this.o.windowMs / 1000} s)` };
  }

  /** Is this client over its AUTH failure rate (then no password is even checked)? */
  authBlocked(address: string): LimitRefusal | undefined {
    const limit = this.o.authFailureRate;
    if (!limit || this.count(`a ${clientKey(address)}`) < limit) return undefined;
    return { limit: 'auth_failure_rate', message: `Error: too many failed authentications from ${address}; try again later` };
  }

  /** Record one failed AUTH of this client. */
  authFailed(address: string): void {
    if (this.o.authFailureRate) this.take(`a ${clientKey(address)}`, this.o.authFailureRate, 0);
  }

  /**
   * Count one event against `limit` in the window; false (not counted) when the limit is
   * reached. `slack` 0 records even at the limit (a failure that happened anyway), keeping
   * at most `limit` times.
   */
  private take(key: string, limit: number, slack: 0 | 1): boolean {
    if (!limit) return true;
    const w = this.prune(key);
    if (slack && w.times.length >= limit) return false;
    w.times.push(this.now());
    if (w.times.length > limit) w.times.shift();
    return true;
  }

  private count(key: string): number {
    return this.rates.has(key) ? this.prune(key).times.length : 0;
  }

  private prune(key: string): Window {
    let w = this.rates.get(key);
    if (!w) {
      w = new Window();
      this.rates.set(key, w);
    }
    const from = this.now() - this.o.windowMs;
    let drop = 0;
    while (drop < w.times.length && w.times[drop] <= from) drop++;
    if (drop) w.times.splice(0, drop);
    return w;
  }

  private sweep(): void {
    for (const key of [...this.rates.keys()]) {
      if (this.prune(key).times.length === 0) this.rates.delete(key);
    }
  }
}

function dec(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 0) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}
