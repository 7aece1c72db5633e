/**
 * track/index-thread.ts — the tracking index kept up to date by a worker thread
 * (index-worker.ts), so that indexing never holds up the node's main thread.
 *
 * Why: every 2 s the tracker indexes what the node logged meanwhile (three lines per relayed
 * message), in SQLite transactions of about 250 lines. Measured on the 2-core VM, 30,000 lines
 * take 470–580 ms of synchronous work in blocks of about 20 ms each: on the main thread, which
 * also answers every SMTP command, each block held up the replies due meanwhile, a visible part
 * of the 99th percentile of time-to-250 (docs/operations.md). On a thread of its own the writes
 * use another core; the main thread keeps its own connection for searches (reads, which WAL
 * mode lets run beside the writer).
 *
 * IndexThread.sync()/prune()/close() post a request and resolve with the worker's answer, in
 * order. If the thread cannot be started, or dies, the same work is done on the main thread by
 * the `local` index (the behaviour before), and `onThread` says false.
 * What can go wrong: an index error (disk full) rejects sync() or prune() with the worker's
 * message, as the local calls would; the caller logs it and tries again at its next tick.
 */
import { Worker } from 'node:worker_threads';
import type { TrackingIndex } from './index-db.ts';
import type { IndexReply, IndexRequest, IndexWorkerData } from './index-worker.ts';
import { workerEntry } from '../util/worker-entry.ts';

type Request = IndexRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;
type Pending = { resolve: (r: number | undefined) => void; reject: (e: Error) => void };

export class IndexThread {
  private worker?: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  /** `local`: the main thread's connection (searches, and the fallback when there is no thread). */
  constructor(private readonly local: TrackingIndex, private readonly warn: (msg: string) => void) {
    try {
      const [entry, options] = workerEntry(import.meta.url, 'index-worker');
      const worker = new Worker(entry, { ...options, name: 'tracking-index', workerData: { dbFile: local.dbFile, logFile: local.logFile, nodeId: local.nodeId } satisfies IndexWorkerData });
      worker.on('message', (r: IndexReply) => {
        const p = this.pending.get(r.id);
        if (!p) return;
        this.pending.delete(r.id);
        if (this.pending.size === 0) worker.unref();
        if (r.error !== undefined) p.reject(new Error(r.error));
        else p.resolve(r.result);
      });
      worker.on('error', (err) => this.lost(`tracking index thread failed: ${err.message}; indexing on the main thread`));
      worker.on('exit', () => this.lost(this.closed ? undefined : 'tracking index thread ended; indexing on the main thread'));
      worker.unref();
      this.worker = worker;
    } catch (err) {
      this.warn(`tracking index thread not started (${(err as Error).message}); indexing on the main thread`);
    }
  }

  /** The writes run on the worker thread (false: on the main thread, as a fallback). */
  get onThread(): boolean {
    return this.worker !== undefined;
  }

  sync(): Promise<void> {
    return this.worker ? this.request({ op: 'sync' }).then(() => undefined) : this.local.sync();
  }

  async prune(maxAgeMs: number, now: number): Promise<number> {
    return this.worker ? ((await this.request({ op: 'prune', maxAgeMs, now })) ?? 0) : this.local.prune(maxAgeMs, now);
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    if (worker) {
      await this.request({ op: 'close' }).catch(() => undefined);
      await worker.terminate();
    }
    await this.local.close();
  }

  private request(req: Request): Promise<number | undefined> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      // an awaited answer keeps the process alive; an idle thread does not
      if (this.pending.size === 0) this.worker!.ref();
      this.pending.set(id, { resolve, reject });
      this.worker!.postMessage({ ...req, id } as IndexRequest);
    });
  }

  /** The thread is gone: pending requests fail (their callers retry at the next tick), later ones run here. */
  private lost(why: string | undefined): void {
    if (!this.worker) return;
    this.worker = undefined;
    if (why) this.warn(why);
    for (const p of this.pending.values()) p.reject(new Error(why ?? 'tracking index thread closed'));
    this.pending.clear();
  }
}
