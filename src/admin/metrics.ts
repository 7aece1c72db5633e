/**
 * admin/metrics.ts — Prometheus metrics with stable names (prom-client, own registry).
 *
 * Names:
 *   tandem_messages_received_total, tandem_received_bytes_total,
 *   tandem_smtp_rejections_total{stage,code},
 *   tandem_smtp_limit_refusals_total{limit} (per-client limits, timeouts, error limits, AUTH throttling),
 *   tandem_content_filter_failures_total (Rspamd unreachable, timed out or answering nonsense),
 *   tandem_deliveries_total{outcome,channel}, tandem_delivery_duration_seconds{channel},
 *   tandem_dsn_total{kind}, tandem_tracking_write_errors_total,
 *   tandem_queue_messages{state} (read from the queue manager on scrape),
 *   tandem_directory_server_up{server,role[,site]} (1 up, 0 down or not yet contacted; read on scrape),
 *   tandem_directory_requests_total{server,op,outcome}, tandem_directory_lookup_seconds{server,op},
 *   tandem_directory_cache_total{result} (hit, miss, stale, failure; read on scrape).
 */
import client from 'prom-client';
import type { QueueMetrics } from '../qmgr/index.ts';
import type { DirectoryServerStatus, CacheStats } from '../router/directory/index.ts';

export class Metrics implements QueueMetrics {
  readonly registry = new client.Registry();
  private receivedTotal = new client.Counter({ name: 'tandem_messages_received_total', help: 'Messages accepted (250 after DATA)', registers: [this.registry] });
  private receivedBytes = new client.Counter({ name: 'tandem_received_bytes_total', help: 'Bytes of accepted messages', registers: [this.registry] });
  private limitRefusals = new client.Counter({ name: 'tandem_smtp_limit_refusals_total', help: 'Clients refused or disconnected by a limit (receiver/connection-slots.ts, client-limits.ts, session-guard.ts, auth-throttle.ts)', labelNames: ['limit'], registers: [this.registry] });
  private filterFailures = new client.Counter({ name: 'tandem_content_filter_failures_total', help: 'Content filter (Rspamd) requests that failed', registers: [this.registry] });
  private rejections = new client.Counter({ name: 'tandem_smtp_rejections_total', help: 'SMTP commands refused', labelNames: ['stage', 'code'], registers: [this.registry] });
  private deliveries = new client.Counter({ name: 'tandem_deliveries_total', help: 'Per-recipient delivery outcomes', labelNames: ['outcome', 'channel'], registers: [this.registry] });
  private durations = new client.Histogram({ name: 'tandem_delivery_duration_seconds', help: 'Time of one delivery transaction', labelNames: ['channel'], buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [this.registry] });
  private trackingErrors = new client.Counter({ name: 'tandem_tracking_write_errors_total', help: 'Tracking log lines or syncs that failed', registers: [this.registry] });
  private consoleLogins = new client.Counter({ name: 'tandem_console_logins_total', help: 'Console logins: ok, failed (wrong user or password), throttled (refused unchecked: too many failures from the address or for the user)', labelNames: ['result'], registers: [this.registry] });
  private consoleLoginBlocks = new client.Counter({ name: 'tandem_console_login_blocks_total', help: 'Console login delays and lockouts started, by what was counted (address, user) and kind (delay, lockout)', labelNames: ['by', 'kind'], registers: [this.registry] });
  private dsns = new client.Counter({ name: 'tandem_dsn_total', help: 'Delivery status notifications generated', labelNames: ['kind'], registers: [this.registry] });

  private directoryRequests = new client.Counter({ name: 'tandem_directory_requests_total', help: 'Directory operations by server and outcome', labelNames: ['server', 'op', 'outcome'], registers: [this.registry] });
  private directoryLatency = new client.Histogram({ name: 'tandem_directory_lookup_seconds', help: 'Time of one directory operation (bind included when a connection is made)', labelNames: ['server', 'op'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5], registers: [this.registry] });

  /** With SMTP workers (node/smtp-workers.ts): their metrics summed with this registry's. */
  withWorkers?: (own: client.Registry) => Promise<string>;

  /** The Prometheus text of the node: this process's metrics, and its SMTP workers' summed in. */
  text(): Promise<string> {
    return this.withWorkers ? this.withWorkers(this.registry) : this.registry.metrics();
  }

  constructor(queueCounts: () => Record<string, number>) {
    new client.Gauge({
      name: 'tandem_queue_messages',
      help: 'Messages in the queue by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        for (const [state, n] of Object.entries(queueCounts())) this.set({ state }, n);
      },
    });
    client.collectDefaultMetrics({ register: this.registry, prefix: 'tandem_' });
  }

  received(bytes: number): void {
    this.receivedTotal.inc();
    this.receivedBytes.inc(bytes);
  }

  rejected(stage: string, code: number): void {
    this.rejections.inc({ stage, code: String(code) });
  }

  limitRefused(limit: string): void {
    this.limitRefusals.inc({ limit });
  }

  contentFilterFailed(): void {
    this.filterFailures.inc();
  }

  delivery(outcome: string, channel: string): void {
    this.deliveries.inc({ outcome, channel });
  }

  transaction(channel: string, seconds: number): void {
    this.durations.observe({ channel }, seconds);
  }

  trackingError(): void {
    this.trackingErrors.inc();
  }

  consoleLogin(result: 'ok' | 'failed' | 'throttled'): void {
    this.consoleLogins.inc({ result });
  }

  consoleLoginBlocked(by: string, lockout: boolean): void {
    this.consoleLoginBlocks.inc({ by, kind: lockout ? 'lockout' : 'delay' });
  }

  dsn(kind: string): void {
    this.dsns.inc({ kind });
  }

  directoryRequest(server: string, op: string, seconds: number, ok: boolean): void {
    this.directoryRequests.inc({ server, op, outcome: ok ? 'ok' : 'error' });
    if (ok) this.directoryLatency.observe({ server, op }, seconds);
  }

  /** Server states and cache counters read on each scrape. */
  watchDirectory(servers: () => DirectoryServerStatus[], cache: () => CacheStats): void {
    new client.Gauge({
      name: 'tandem_directory_server_up',
      help: 'Directory server state: 1 up, 0 down or not yet contacted',
      labelNames: ['server', 'role', 'site'],
      registers: [this.registry],
      collect() {
        for (const s of servers()) this.set({ server: s.url, role: s.role, ...(s.site !== undefined ? { site: s.site } : {}) }, s.state === 'up' ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'tandem_directory_cache_total',
      help: 'Directory lookups by cache result since start (hit, miss, stale answer used, failure)',
      labelNames: ['result'],
      registers: [this.registry],
      collect() {
        const c = cache();
        this.set({ result: 'hit' }, c.hits);
        this.set({ result: 'miss' }, c.misses);
        this.set({ result: 'stale' }, c.stale);
        this.set({ result: 'failure' }, c.failures);
      },
    });
  }
}
