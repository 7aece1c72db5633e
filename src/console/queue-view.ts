/**
 * console/queue-view.ts — what the console's Queues page shows of this node's queue: the
 * message list (filtered, paged), and a qshape-like table (destination domain × age).
 *
 * The list comes from the queue manager's memory (ids, states; no file read), so paging stays
 * fast with 100,000 queued messages: only the page's files are read (envelope and status,
 * not the message). Filters on sender or recipient domain and the qshape table need every
 * message's envelope: those come from a cache of envelopes (an envelope never changes) filled
 * in the background (every 5 s, at most READ_BUDGET files, while the page was used in the last
 * 10 minutes); until it has read everything the page says how much it has read.
 */
import type { Spool } from '../spool/index.ts';
import type { QueueManager } from '../qmgr/index.ts';
import type { QueueState } from '../spool/types.ts';

export interface QueueFilter { state?: string; from?: string; to?: string; page?: number; pageSize?: number }

interface Envelope { sender: string; domains: string[]; recipients: string[]; arrivedAt: number; size: number }

export interface QueueRow {
  queueId: string; state: QueueState; busy: boolean; nextAttemptAt?: number;
  sender?: string; recipients?: string[]; arrivedAt?: number; size?: number; pending?: number; lastReply?: string; error?: string;
}

export interface QShape { buckets: string[]; rows: Array<{ domain: string; total: number; counts: number[] }>; read: number; total: number }

const READ_BUDGET = 5000;
const IN_USE_MS = 10 * 60_000;
const READ_CONCURRENCY = 16;
const AGE_BUCKETS: Array<[string, number]> = [['0-5m', 5], ['5-10m', 10], ['10-20m', 20], ['20-40m', 40], ['40-80m', 80], ['80-160m', 160], ['160-320m', 320], ['320m+', Infinity]];

const newestFirst = (a: { queueId: string }, b: { queueId: string }) => (a.queueId < b.queueId ? 1 : a.queueId > b.queueId ? -1 : 0);
/** Beyond this many messages before a page's end, the whole list is sorted. */
const TOP_K_MAX = 5000;

/**
 * Page `page` of `all`, newest first (queue ids start with their time). The first pages — what
 * people look at — are picked in one pass that keeps only the newest page × size ids, instead
 * of sorting the whole queue (100,000 ids) for every page view; later pages sort (`all` too).
 */
export function newestPage<T extends { queueId: string }>(all: T[], page: number, size: number): T[] {
  const k = page * size;
  if (k > TOP_K_MAX) return all.sort(newestFirst).slice(k - size, k);
  const top: T[] = [];
  for (const m of all) {
    if (top.length === k && m.queueId <= top[k - 1].queueId) continue;
    let lo = 0;
    let hi = top.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (top[mid].queueId > m.queueId) lo = mid + 1; else hi = mid;
    }
    top.splice(lo, 0, m);
    if (top.length > k) top.pop();
  }
  return top.slice(k - size);
}

export class QueueView {
  private envelopes = new Map<string, Envelope>();
  private refreshing?: Promise<void>;
  private timer: NodeJS.Timeout;
  /** When a page last used the view: the background reading runs only while someone looks. */
  private usedAt = 0;

  constructor(private readonly spool: () => Spool, private readonly qmgr: () => QueueManager) {
    this.timer = setInterval(() => { if (Date.now() - this.usedAt < IN_USE_MS) void this.refresh(); }, 5000);
    this.timer.unref();
  }

  /** Read envelopes not yet cached (bounded), forget those no longer queued. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      const list = this.qmgr().list();
      const ids = new Set(list.map((m) => m.queueId));
      for (const id of this.envelopes.keys()) if (!ids.has(id)) this.envelopes.delete(id);
      const todo = list.filter((m) => !this.envelopes.has(m.queueId)).slice(0, READ_BUDGET);
      let i = 0;
      await Promise.all(Array.from({ length: READ_CONCURRENCY }, async () => {
        while (i < todo.length) {
          const m = todo[i++];
          try {
            const qf = await this.spool().readInfo(m.queueId, m.state);
            const recipients = qf.envelope.recipients.map((r) => r.address.toLowerCase());
            this.envelopes.set(m.queueId, {
              sender: qf.envelope.sender.toLowerCase(), recipients, arrivedAt: qf.envelope.arrivedAt, size: qf.size,
              domains: [...new Set(recipients.map((r) => r.slice(r.lastIndexOf('@') + 1)))],
            });
          } catch { /* moved or gone meanwhile: read again next time */ }
        }
      }));
    })().finally(() => { this.refreshing = undefined; });
    return this.refreshing;
  }

  private matches(id: string, f: QueueFilter): boolean | undefined {
    if (!f.from && !f.to) return true;
    const e = this.envelopes.get(id);
    if (!e) return undefined;
    const test = (value: string, want: string) => (want.includes('@') && !want.startsWith('@') ? value === want : value.endsWith(`@${want.replace(/^@/, '')}`) || value === want.replace(/^@/, ''));
    if (f.from && !test(e.sender, f.from.toLowerCase())) return false;
    if (f.to && !e.recipients.some((r) => test(r, f.to!.toLowerCase()))) return false;
    return true;
  }

  /** One page of the list; `unknown`: messages whose envelope is not read yet (not filtered). */
  async list(f: QueueFilter): Promise<{ rows: QueueRow[]; total: number; unknown: number; page: number; pages: number }> {
    if (this.usedAt === 0) void this.refresh();
    this.usedAt = Date.now();
    const pageSize = Math.min(Math.max(f.pageSize ?? 50, 1), 500);
    let all = this.qmgr().list();
    if (f.state) all = all.filter((m) => m.state === f.state);
    let unknown = 0;
    if (f.from || f.to) {
      all = all.filter((m) => {
        const ok = this.matches(m.queueId, f);
        if (ok === undefined) unknown++;
        return ok === true;
      });
    }
    const pages = Math.max(1, Math.ceil(all.length / pageSize));
    const page = Math.min(Math.max(f.page ?? 1, 1), pages);
    const slice = newestPage(all, page, pageSize);
    const rows = await Promise.all(slice.map(async (m): Promise<QueueRow> => {
      try {
        const qf = await this.spool().readInfo(m.queueId, m.state);
        return {
          ...m, sender: qf.envelope.sender, recipients: qf.envelope.recipients.map((r) => r.address), arrivedAt: qf.envelope.arrivedAt,
          size: qf.size, pending: qf.pending.length, ...(qf.deferral ? { lastReply: qf.deferral.lastReply } : {}),
        };
      } catch (err) {
        return { ...m, error: (err as Error).message };
      }
    }));
    return { rows, total: all.length, unknown, page, pages };
  }

  /** Messages by recipient domain and age (a message counts once per domain it has recipients in). */
  qshape(now = Date.now(), top = 20): QShape {
    const byDomain = new Map<string, number[]>();
    const list = this.qmgr().list();
    let read = 0;
    for (const m of list) {
      const e = this.envelopes.get(m.queueId);
      if (!e) continue;
      read++;
      const minutes = (now - e.arrivedAt) / 60_000;
      const b = AGE_BUCKETS.findIndex(([, max]) => minutes < max);
      for (const d of e.domains) {
        const counts = byDomain.get(d) ?? new Array(AGE_BUCKETS.length).fill(0);
        counts[b]++;
        byDomain.set(d, counts);
      }
    }
    const rows = [...byDomain].map(([domain, counts]) => ({ domain, counts, total: counts.reduce((a, b) => a + b, 0) }))
      .sort((a, b) => b.total - a.total).slice(0, top);
    return { buckets: AGE_BUCKETS.map(([n]) => n), rows, read, total: list.length };
  }

  close(): void {
    clearInterval(this.timer);
  }
}
