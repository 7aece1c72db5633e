/**
 * router/directory/pool.ts — a pool of LDAP connections (ldapts) over the configured directory
 * servers: reads spread and failed over, writes to one master at a time.
 *
 * Reads: round robin over the servers that are up (masters and shadows alike); a server that
 * fails (connection refused or lost, connect or operation timeout, any LDAP error) is marked down
 * for `backoffMs` and the read goes to the next one. A down server whose back-off has passed is
 * tried again by the next read (that read is the probe). A read therefore ends within
 * servers × (connectTimeoutMs + operationTimeoutMs) at worst. When no server answers:
 * DirectoryUnavailableError (the cache turns it into a stale answer or a TempLookupError).
 * Sites: with `site` (the node's own) and a `site` on each server, reads go round robin over the
 * own site's servers that are up, and to the other sites' servers only when every one of the own
 * site's is down (failed now or within its back-off); the next read after a back-off probes the
 * own site's server again, so reads come back to the own site by themselves. Without sites every
 * server is one group, as above.
 * Writes: to the first master (with sites: the own site's master, else the first in config
 * order); to the second master only when the write never reached the first: its connect or
 * bind failed now or within the last `backoffMs` (read failures of other kinds do not count),
 * or it answered busy/unavailable. Two masters written at once can diverge
 * for good on OpenLDAP 2.5 (see docs/directory.md), hence one at a time. A write sent to a master
 * that then times out or loses its connection may have been applied there: it is not repeated
 * on the other master — DirectoryWriteOutcomeUnknownError (code DIRECTORY_WRITE_OUTCOME_UNKNOWN,
 * "outcome unknown on master X — check and retry"). An LDAP refusal of the write itself (entry
 * exists, schema violation, no access) or of the bind (wrong password) is not an outage:
 * DirectoryWriteError, no failover.
 * No master reachable: DirectoryMasterUnavailableError, code DIRECTORY_MASTER_UNAVAILABLE.
 * Every connection binds (bindDn/bindPassword, or anonymously) before its first operation and
 * again after a reconnect. Connect and operation timeouts are always set (ldapts has none).
 * Config keys (passed in): directory.servers (url, role, site), directory.site (or the node's
 * cluster.nodes[].site, resolved by config/schema.ts directorySite), directory.bind_dn,
 * directory.bind_password(_file), directory.connect_timeout, directory.operation_timeout,
 * directory.server_backoff.
 */
import { Client, ResultCodeError, UnavailableError, BusyError, NoSuchObjectError } from 'ldapts';
import type { SearchOptions, SearchResult, Attribute, Change } from 'ldapts';
import { TandemError } from '../../util/errors.ts';

export type DirectoryRole = 'master' | 'shadow';

export interface DirectoryServerConfig {
  url: string;
  role: DirectoryRole;
  /** The site (data centre) the server is in: servers of the node's own site are used first. */
  site?: string;
}

/** The part of ldapts' Client the pool uses. */
export interface LdapClient {
  readonly isBound: boolean;
  bind(dn: string, password?: string): Promise<void>;
  unbind(): Promise<void>;
  search(baseDn: string, options: SearchOptions): Promise<SearchResult>;
  add(dn: string, attributes: Attribute[] | Record<string, string[] | string>): Promise<void>;
  modify(dn: string, changes: Change | Change[]): Promise<void>;
  del(dn: string): Promise<void>;
}

export interface DirectoryPoolOptions {
  servers: DirectoryServerConfig[];
  /** The node's own site: its servers are read first, its master written first (see header). */
  site?: string;
  bindDn?: string;
  bindPassword?: string;
  connectTimeoutMs: number;
  operationTimeoutMs: number;
  /** How long a failed server is skipped. */
  backoffMs: number;
  /** Called after every operation (metrics). */
  onRequest?: (server: string, op: 'read' | 'write', seconds: number, ok: boolean) => void;
  /** Called when a server changes state (logs). */
  onStateChange?: (server: string, up: boolean, error?: string) => void;
  now?: () => number;
  createClient?: (url: string, connectTimeoutMs: number, operationTimeoutMs: number) => LdapClient;
}

export interface DirectoryServerStatus {
  url: string;
  role: DirectoryRole;
  site?: string;
  state: 'unknown' | 'up' | 'down';
  /** ms since the epoch of the last state change. */
  since?: number;
  lastError?: string;
  reads: number;
  writes: number;
  errors: number;
  /** Latency of the last successful operation and a moving average, in ms. */
  lastLatencyMs?: number;
  avgLatencyMs?: number;
}

/** No directory server answered a read. */
export class DirectoryUnavailableError extends TandemError {
  readonly code = 'DIRECTORY_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'DirectoryUnavailableError';
  }
}

/** No master is reachable for a write: retry later. */
export class DirectoryMasterUnavailableError extends TandemError {
  readonly code = 'DIRECTORY_MASTER_UNAVAILABLE';
  constructor(detail: string) {
    super(`directory master unavailable — retry later (${detail})`);
    this.name = 'DirectoryMasterUnavailableError';
  }
}

/** The master refused a write (entry exists, no such entry, schema violation, access). */
export class DirectoryWriteError extends TandemError {
  readonly code = 'DIRECTORY_WRITE_REFUSED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DirectoryWriteError';
  }
}

/** A write was sent to a master that then did not answer: it may or may not have been applied. */
export class DirectoryWriteOutcomeUnknownError extends TandemError {
  readonly code = 'DIRECTORY_WRITE_OUTCOME_UNKNOWN';
  constructor(readonly url: string, options?: { cause?: unknown }) {
    super(`outcome unknown on master ${url} — check and retry (the change was sent but no answer came: ${(options?.cause as Error | undefined)?.message ?? 'no answer'}; look with tandem dir list before repeating it)`, options);
    this.name = 'DirectoryWriteOutcomeUnknownError';
  }
}

/** The operation never reached the server: connect or bind failed, or the socket was already gone. */
class NotSentError extends TandemError {
  readonly code = 'DIRECTORY_NOT_SENT';
  constructor(cause: Error) {
    super(cause.message || String(cause), { cause });
    this.name = 'NotSentError';
  }
}

interface Server {
  config: DirectoryServerConfig;
  client?: LdapClient;
  binding?: Promise<void>;
  status: DirectoryServerStatus;
  /** Reads skip the server until then (any failure). */
  retryAt: number;
  /** Writes skip the server until then (connect or bind failure only). */
  unreachableUntil: number;
}

export class DirectoryPool {
  private readonly servers: Server[];
  /** Read preference: the own site's servers, then the others (one group without sites). */
  private readonly readGroups: Server[][];
  /** Write order: the own site's master(s) first, then the others in config order. */
  private readonly masters: Server[];
  private next = 0;
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly opts: DirectoryPoolOptions) {
    if (opts.servers.length === 0) throw new Error('directory.servers: at least one server is needed');
    this.now = opts.now ?? Date.now;
    this.servers = opts.servers.map((config) => ({
      config, retryAt: 0, unreachableUntil: 0,
      status: { url: config.url, role: config.role, ...(config.site !== undefined ? { site: config.site } : {}), state: 'unknown', reads: 0, writes: 0, errors: 0 },
    }));
    const own = (s: Server) => opts.site !== undefined && s.config.site === opts.site;
    this.readGroups = [this.servers.filter(own), this.servers.filter((s) => !own(s))].filter((g) => g.length > 0);
    const masters = this.servers.filter((s) => s.config.role === 'master');
    this.masters = [...masters.filter(own), ...masters.filter((s) => !own(s))];
  }

  /** Each server's state and counters (for /health and metrics). */
  status(): DirectoryServerStatus[] {
    return this.servers.map((s) => ({ ...s.status }));
  }

  /** Run a read on the next server that is up, failing over to the others (see header). */
  async read<T>(op: (client: LdapClient) => Promise<T>): Promise<T> {
    const now = this.now();
    const order: Server[] = [];
    for (const group of this.readGroups) {
      for (let i = 0; i < group.length; i++) order.push(group[(this.next + i) % group.length]);
    }
    this.next = (this.next + 1) % Number.MAX_SAFE_INTEGER;
    const candidates = order.filter((s) => s.retryAt <= now);
    if (candidates.length === 0) {
      throw new DirectoryUnavailableError(`every directory server is down (${this.lastErrors()}); retrying each after ${this.opts.backoffMs} ms`);
    }
    for (const server of candidates) {
      try {
        return await this.run(server, 'read', op);
      } catch {
        continue;
      }
    }
    throw new DirectoryUnavailableError(`no directory server answered (${this.lastErrors()})`);
  }

  /** Run a write on the first master, or on the second while the first is down (see header). */
  async write<T>(op: (client: LdapClient) => Promise<T>): Promise<T> {
    const masters = this.masters;
    if (masters.length === 0) throw new DirectoryMasterUnavailableError('no server has role master in directory.servers');
    const now = this.now();
    const candidates = masters.filter((s) => s.unreachableUntil <= now);
    for (const server of candidates) {
      try {
        return await this.run(server, 'write', op);
      } catch (err) {
        if (err instanceof NotSentError && isRefusal(err.cause)) {
          throw new DirectoryWriteError(`${server.config.url} refused the bind: ${describeResult(err.cause)}; check directory.bind_dn and the password`, { cause: err.cause });
        }
        if (err instanceof NotSentError || err instanceof UnavailableError || err instanceof BusyError) continue;
        if (isRefusal(err)) throw new DirectoryWriteError(`${server.config.url} refused the change: ${describeResult(err)}`, { cause: err });
        throw new DirectoryWriteOutcomeUnknownError(server.config.url, { cause: err });
      }
    }
    throw new DirectoryMasterUnavailableError(masters.map((s) => `${s.config.url}: ${s.status.lastError ?? 'down'}`).join('; '));
  }

  /** Bind and read the base entry on every server; one line per server (config check). */
  async check(baseDn: string): Promise<Array<{ url: string; ok: boolean; detail: string }>> {
    return Promise.all(this.servers.map(async (server) => {
      try {
        const t0 = this.now();
        await this.run(server, 'read', (c) => c.search(baseDn, { scope: 'base', attributes: ['1.1'] }));
        return { url: server.config.url, ok: true, detail: `bound and read ${baseDn} in ${this.now() - t0} ms` };
      } catch (err) {
        if (err instanceof NoSuchObjectError) return { url: server.config.url, ok: false, detail: `the base entry ${baseDn} (directory.base_dn) does not exist there yet: run tandem dir init` };
        return { url: server.config.url, ok: false, detail: (err as Error).message };
      }
    }));
  }

  /** Close every connection. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.servers.map((s) => this.drop(s)));
  }

  private async run<T>(server: Server, kind: 'read' | 'write', op: (client: LdapClient) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      let client: LdapClient;
      try {
        client = await this.connected(server);
      } catch (err) {
        server.unreachableUntil = this.now() + this.opts.backoffMs;
        throw new NotSentError(err as Error);
      }
      const result = await op(client).catch((err: Error) => {
        // ldapts throws this before writing anything when the socket is already closed
        throw err?.message === 'Socket connection not established' ? new NotSentError(err) : err;
      });
      const ms = performance.now() - t0;
      this.markUp(server, ms);
      if (kind === 'read') server.status.reads++;
      else server.status.writes++;
      this.opts.onRequest?.(server.config.url, kind, ms / 1000, true);
      return result;
    } catch (err) {
      this.opts.onRequest?.(server.config.url, kind, (performance.now() - t0) / 1000, false);
      if (kind === 'write' && isRefusal(err)) this.markUp(server, performance.now() - t0);
      else this.markDown(server, err as Error);
      throw err;
    }
  }

  /** The server's client, bound (once per connection; concurrent callers share the bind). */
  private async connected(server: Server): Promise<LdapClient> {
    if (this.closed) throw new Error('the directory pool is closed');
    server.client ??= (this.opts.createClient ?? defaultClient)(server.config.url, this.opts.connectTimeoutMs, this.opts.operationTimeoutMs);
    const client = server.client;
    if (!client.isBound) {
      if (!server.binding) {
        const binding: Promise<void> = client.bind(this.opts.bindDn ?? '', this.opts.bindPassword ?? '').finally(() => {
          // only this connection's bind: after a drop, a new connection may be binding already
          if (server.binding === binding) server.binding = undefined;
        });
        server.binding = binding;
      }
      await server.binding;
    }
    // dropped meanwhile (another operation failed on it): the operation was not sent
    if (server.client !== client) throw new Error(`connection to ${server.config.url} was closed after another operation on it failed`);
    return client;
  }

  private markUp(server: Server, ms: number): void {
    const s = server.status;
    s.lastLatencyMs = Math.round(ms * 1000) / 1000;
    s.avgLatencyMs = Math.round((s.avgLatencyMs === undefined ? ms : s.avgLatencyMs * 0.9 + ms * 0.1) * 1000) / 1000;
    server.retryAt = 0;
    server.unreachableUntil = 0;
    if (s.state !== 'up') {
      s.state = 'up';
      s.since = this.now();
      this.opts.onStateChange?.(server.config.url, true);
    }
  }

  private markDown(server: Server, err: Error): void {
    const s = server.status;
    s.errors++;
    s.lastError = err.message || String(err);
    server.retryAt = this.now() + this.opts.backoffMs;
    void this.drop(server);
    if (s.state !== 'down') {
      s.state = 'down';
      s.since = this.now();
      this.opts.onStateChange?.(server.config.url, false, s.lastError);
    }
  }

  /** Forget a server's connection (a new one is made on next use). */
  private async drop(server: Server): Promise<void> {
    const client = server.client;
    server.client = undefined;
    server.binding = undefined;
    await client?.unbind().catch(() => undefined);
  }

  private lastErrors(): string {
    return this.servers.map((s) => `${s.config.url}: ${s.status.lastError ?? s.status.state}`).join('; ');
  }
}

/** An LDAP answer refusing the operation itself (not busy/unavailable): the server is fine. */
function isRefusal(err: unknown): err is ResultCodeError {
  return err instanceof ResultCodeError && !(err instanceof UnavailableError) && !(err instanceof BusyError);
}

/** "AlreadyExistsError" with code 68 → "already exists (LDAP result 68)", plus the server's text if any. */
function describeResult(err: ResultCodeError): string {
  const what = err.name.replace(/Error$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
  const text = err.message.replace(/\s*Code: 0x[0-9a-f]+\s*/i, ' ').trim();
  return `${what} (LDAP result ${err.code})${text ? `: ${text}` : ''}`;
}

function defaultClient(url: string, connectTimeoutMs: number, operationTimeoutMs: number): LdapClient {
  return new Client({ url, connectTimeout: connectTimeoutMs, timeout: operationTimeoutMs, strictDN: false });
}
