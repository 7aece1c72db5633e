/**
 * console/history.ts — the last hours of traffic, per minute, kept in memory for the console's
 * charts: messages received, recipients delivered / deferred / bounced (failed or expired),
 * and the queue depth.
 *
 * Read from the node's own Prometheus counters (admin/metrics.ts) every 10 s: a minute's
 * figure is the counters' increase within it, so nothing in the mail path changes for it.
 * Kept: the last 6 hours (360 points); a restart starts empty.
 */
import type { Registry } from 'prom-client';

export interface HistoryPoint { t: number; received: number; delivered: number; deferred: number; bounced: number; queue: number }

const SAMPLE_MS = 10_000;
const KEEP = 360;

export class TrafficHistory {
  private points: HistoryPoint[] = [];
  private last?: { received: number; delivered: number; deferred: number; bounced: number };
  private timer: NodeJS.Timeout;

  constructor(private readonly registry: Registry, private readonly queueDepth: () => number) {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  private async totals() {
    const sum = async (name: string, pick: (labels: Record<string, unknown>) => boolean) => {
      const m = this.registry.getSingleMetric(name);
      if (!m) return 0;
      const data = await m.get();
      return data.values.filter((v) => pick(v.labels)).reduce((a, v) => a + v.value, 0);
    };
    return {
      received: await sum('tandem_messages_received_total', () => true),
      delivered: await sum('tandem_deliveries_total', (l) => l.outcome === 'delivered'),
      deferred: await sum('tandem_deliveries_total', (l) => l.outcome === 'deferred'),
      bounced: await sum('tandem_deliveries_total', (l) => l.outcome === 'failed' || l.outcome === 'expired'),
    };
  }

  /** Add the increase since the last sample to the current minute. */
  async sample(now = Date.now()): Promise<void> {
    const cur = await this.totals();
    const prev = this.last ?? cur;
    this.last = cur;
    const minute = Math.floor(now / 60_000) * 60_000;
    let p = this.points[this.points.length - 1];
    if (!p || p.t !== minute) {
      p = { t: minute, received: 0, delivered: 0, deferred: 0, bounced: 0, queue: 0 };
      this.points.push(p);
      if (this.points.length > KEEP) this.points.shift();
    }
    p.received += cur.received - prev.received;
    p.delivered += cur.delivered - prev.delivered;
    p.deferred += cur.deferred - prev.deferred;
    p.bounced += cur.bounced - prev.bounced;
    p.queue = this.queueDepth();
  }

  series(): HistoryPoint[] {
    return this.points.map((p) => ({ ...p }));
  }

  close(): void {
    clearInterval(this.timer);
  }
}
