/**
 * track/tracker.ts — the node's tracking search service: keeps the index (index-db.ts) up to
 * date with the log, applies retention, answers searches.
 *
 * Timers (unref'd, stopped by close()): index the new lines every 2 s (and before each search,
 * so an answer includes what was just logged), on a worker thread (index-thread.ts: indexing on
 * the main thread held up its SMTP replies), while searches read the index on this thread; once
 * a minute, rotate the log when it passed tracking.rotate_size (<log> → <log>.1 → … →
 * <log>.<rotate_keep>, the oldest removed; then the node's TrackingLog reopens the file) and,
 * hourly, delete index rows and rotated files older than tracking.max_age.
 * Reads config keys: tracking.path, tracking.index, tracking.max_age, tracking.rotate_size,
 * tracking.rotate_keep.
 * What can go wrong: an index that cannot be written (disk full): logged through `warn`, tried
 * again at the next tick; the log goes on regardless. Size rotation assumes the log file is
 * this node's alone (with one file shared by several nodes, rotate it with logrotate and
 * SIGHUP every node instead).
 */
import path from 'node:path';
import { renameSync, statSync, unlinkSync } from 'node:fs';
import { TrackingIndex, type TrackQuery } from './index-db.ts';
import { IndexThread } from './index-thread.ts';
import type { NodeAnswer } from './search.ts';
import type { TandemConfig } from '../config/schema.ts';

const SYNC_MS = 2000;
const ROTATE_CHECK_MS = 60_000;
const PRUNE_MS = 3_600_000;

/** What the tracker reads of the config: the tracking section and the node's id. */
export interface TrackerConfig {
  tracking: TandemConfig['tracking'];
  node: Pick<TandemConfig['node'], 'id'>;
}

/** tracking.index, or by default `<log folder>/<log name>.<node>.index.db`. */
export function indexPathFor(c: TrackerConfig, nodeId = c.node.id): string {
  if (c.tracking.index) return c.tracking.index;
  return path.join(path.dirname(c.tracking.path), `${path.basename(c.tracking.path)}.${nodeId}.index.db`);
}

export class Tracker {
  /** The main thread's connection: searches (and the writes, when there is no thread). */
  readonly index: TrackingIndex;
  /** The writes: sync and prune. */
  readonly writer: IndexThread;
  private timers: NodeJS.Timeout[] = [];
  private lastPrune = 0;

  constructor(private readonly c: TrackerConfig, private readonly reopenLog: () => void, private readonly warn: (msg: string) => void) {
    this.index = new TrackingIndex(indexPathFor(c), c.tracking.path, c.node.id);
    if (this.index.rebuilt) this.warn(`rebuilding the index from the log: ${this.index.rebuilt}`);
    this.writer = new IndexThread(this.index, this.warn);
    const every = (ms: number, fn: () => void | Promise<void>) => {
      const t = setInterval(() => { Promise.resolve().then(fn).catch((err) => this.warn(String((err as Error).message ?? err))); }, ms);
      t.unref();
      this.timers.push(t);
    };
    this.writer.sync().catch((err) => this.warn(`tracking index: ${err.message}`));
    every(SYNC_MS, () => this.writer.sync());
    every(ROTATE_CHECK_MS, () => this.maintain());
  }

  async search(q: TrackQuery): Promise<NodeAnswer> {
    await this.writer.sync();
    return { node: this.c.node.id, ...this.index.search(q) };
  }

  /** Size rotation and age retention (see the header). */
  async maintain(now = Date.now()): Promise<void> {
    const { path: log, rotate_size: maxSize, rotate_keep: keep, max_age: maxAge } = this.c.tracking;
    if (maxSize > 0) {
      let size = 0;
      try { size = statSync(log).size; } catch { /* no log yet */ }
      if (size >= maxSize) {
        await this.writer.sync(); // index the file up to its end before it moves
        try { unlinkSync(`${log}.${keep}`); } catch { /* none */ }
        for (let i = keep - 1; i >= 1; i--) { try { renameSync(`${log}.${i}`, `${log}.${i + 1}`); } catch { /* none */ } }
        renameSync(log, `${log}.1`);
        this.reopenLog();
      }
    }
    if (maxAge > 0 && now - this.lastPrune >= PRUNE_MS) {
      this.lastPrune = now;
      await this.writer.prune(maxAge, now);
      for (let i = 1; i <= Math.max(keep, 1) + 1; i++) {
        try { if (now - statSync(`${log}.${i}`).mtimeMs > maxAge) unlinkSync(`${log}.${i}`); } catch { /* none */ }
      }
    }
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.writer.close();
  }
}
