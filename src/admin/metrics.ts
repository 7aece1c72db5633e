/**
 * admin/metrics.ts — Prometheus metrics with stable names (prom-client, own registry).
 *
 * Exports: Metrics. Names:
 *   tandem_messages_received_total, tandem_received_bytes_total,
 *   tandem_smtp_rejections_total{stage,code},
 *   tandem_deliveries_total{outcome,channel}, tandem_delivery_duration_seconds{channel},
 *   tandem_dsn_total{kind}, tandem_tracking_write_errors_total,
 *   tandem_queue_messages{state} (read from the queue manager on scrape).
 */
import client from 'prom-client';
import type { QueueMetrics } from '../qmgr/queue-manager.ts';

export class Metrics implements QueueMetrics {
  readonly registry = new client.Registry();
  private receivedTotal = new client.Counter({ name: 'tandem_messages_received_total', help: 'Messages accepted (250 after DATA)', registers: [this.registry] });
  private receivedBytes = new client.Counter({ name: 'tandem_received_bytes_total', help: 'Bytes of accepted messages', registers: [this.registry] });
  private rejections = new client.Counter({ name: 'tandem_smtp_rejections_total', help: 'SMTP commands refused', labelNames: ['stage', 'code'], registers: [this.registry] });
  private deliveries = new client.Counter({ name: 'tandem_deliveries_total', help: 'Per-recipient delivery outcomes', labelNames: ['outcome', 'channel'], registers: [this.registry] });
  private durations = new client.Histogram({ name: 'tandem_delivery_duration_seconds', help: 'Time of one delivery transaction', labelNames: ['channel'], buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [this.registry] });
  private trackingErrors = new client.Counter({ name: 'tandem_tracking_write_errors_total', help: 'Tracking log lines or syncs that failed', registers: [this.registry] });
  private dsns = new client.Counter({ name: 'tandem_dsn_total', help: 'Delivery status notifications generated', labelNames: ['kind'], registers: [this.registry] });

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

  delivery(outcome: string, channel: string): void {
    this.deliveries.inc({ outcome, channel });
  }

  transaction(channel: string, seconds: number): void {
    this.durations.observe({ channel }, seconds);
  }

  trackingError(): void {
    this.trackingErrors.inc();
  }

  dsn(kind: string): void {
    this.dsns.inc({ kind });
  }
}
