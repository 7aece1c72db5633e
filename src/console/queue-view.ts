/**
 * console/queue-view.ts — what the console's Queues page shows of this node's queue: the
 * message list (filtered, paged), counts, and a qshape-like table (destination domain × age).
 *
 * Everything comes from the queue manager's envelope index (qmgr/envelope-index.ts), which
 * holds every queued message, in memory and on disk alike: no queue file is read for the page,
 * and a filter means the same messages as the bulk actions offered under it (the admin API's
 * selection: sender and recipient an address or a domain, recipients still pending). While the
 * index is being filled (the start-up scan of a large queue) it lists what is read so far and
 * says so (`complete: false`).
 */
import type { QueueManager, IndexFilter, IndexedMessage } from '../qmgr/index.ts';
import { QUEUE_STATES, type QueueState } from '../spool/types.ts';

export interface QueueFilter { state?: string; from?: string; to?: string; page?: number; pageSize?: number }

export type QueueRow = IndexedMessage & { busy: boolean };

export interface QShape { buckets: string[]; rows: Array<{ domain: string; total: number; counts: number[] }>; messages: number }

const AGE_BUCKETS: Array<[string, number]> = [['0-5m', 5], ['5-10m', 10], ['10-20m', 20], ['20-40m', 40], ['40-80m', 80], ['80-160m', 160], ['160-320m', 320]];
const OLDEST_BUCKET = '320m+';
/** A qshape table older than this is computed again (after the page that showed it). */
const SHAPE_TTL_MS = 2000;

/**
 * The Queues page's filter as a selection (the admin API's, qmgr/queue-listing.ts): sender and
 * recipient are an address (exact; `<>` the null sender) or a domain (`@d` or `d`).
 */
export function filterSelection(f: { state?: string; from?: string; to?: string }): IndexFilter {
  const sel: IndexFilter = {};
  const isAddress = (v: string) => v.includes('@') && !v.startsWith('@');
  if (f.state && (QUEUE_STATES as readonly string[]).includes(f.state) && f.state !== 'corrupt') sel.state = f.state as QueueState;
  const from = f.from?.trim();
  if (from) {
    if (from === '<>' || isAddress(from)) sel.sender = from; else sel.senderDomain = from.replace(/^@/, '');
  }
  const to = f.to?.trim();
  if (to) {
    if (isAddress(to)) sel.recipient = to; else sel.domain = to.replace(/^@/, '');
  }
  return sel;
}

export class QueueView {
  private shapeCache?: { at: number; complete: boolean; shape: QShape };

  constructor(private readonly qmgr: () => QueueManager) {}

  /** One page of the list, newest first; `complete`: the index holds every queued message. */
  list(f: QueueFilter): { rows: QueueRow[]; total: number; page: number; pages: number; complete: boolean } {
    const qmgr = this.qmgr();
    const pageSize = Math.min(Math.max(f.pageSize ?? 50, 1), 500);
    const sel = filterSelection(f);
    let page = Math.max(f.page ?? 1, 1);
    let { rows, total } = qmgr.index.page(sel, page, pageSize);
    const pages = Math.max(1, Math.ceil(total / pageSize));
    if (page > pages) ({ rows, total } = qmgr.index.page(sel, (page = pages), pageSize)); // past the end: the last page
    return { rows: rows.map((r) => ({ ...r, busy: qmgr.isBusy(r.queueId) })), total, page, pages, complete: qmgr.index.complete };
  }

  /**
   * Messages by recipient domain and age (a message counts once per domain it has pending
   * recipients in), the `top` domains. It walks the whole index, so a page view does not wait
   * for it: the last table is shown, and one older than SHAPE_TTL_MS is computed again after
   * the response (only the first view, or one after the index became complete, computes it).
   */
  qshape(top = 20): QShape & { complete: boolean; at: number } {
    const index = this.qmgr().index;
    const cached = this.shapeCache;
    if (!cached || cached.complete !== index.complete) return this.computeShape(top);
    if (Date.now() - cached.at >= SHAPE_TTL_MS && !this.shapeQueued) {
      this.shapeQueued = true;
      setImmediate(() => {
        this.shapeQueued = false;
        this.computeShape(top);
      });
    }
    return { ...cached.shape, complete: cached.complete, at: cached.at };
  }

  private shapeQueued = false;

  private computeShape(top: number): QShape & { complete: boolean; at: number } {
    const index = this.qmgr().index;
    const now = Date.now();
    const { rows, messages } = index.shape({ edgesMin: AGE_BUCKETS.map(([, m]) => m), perRecipient: false, now });
    const shape: QShape = {
      buckets: [...AGE_BUCKETS.map(([n]) => n), OLDEST_BUCKET],
      rows: [...rows].map(([domain, counts]) => ({ domain, counts, total: counts.reduce((a, b) => a + b, 0) }))
        .sort((a, b) => b.total - a.total || a.domain.localeCompare(b.domain)).slice(0, top),
      messages,
    };
    this.shapeCache = { at: now, complete: index.complete, shape };
    return { ...shape, complete: index.complete, at: now };
  }
}
