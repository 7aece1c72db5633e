/**
 * track/index-worker.ts — the tracking index's writer, on a worker thread of its own (started by
 * IndexThread in index-thread.ts, which has the why).
 *
 * Opens its own connection to the index (index-db.ts; the main thread opened and, if need be,
 * rebuilt the file first) and answers the main thread's requests one at a time, in order:
 *   {id, op: 'sync'}                    index what was appended to the log since the last sync
 *   {id, op: 'prune', maxAgeMs, now}    delete what is older than maxAgeMs (result: rows deleted)
 *   {id, op: 'close'}                   finish, close the connection
 * Each is answered {id, result?} or {id, error}. Nothing else is written to the index meanwhile:
 * the main thread only reads it (searches), which SQLite's WAL mode lets run beside the writer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TrackingIndex } from './index-db.ts';

export interface IndexWorkerData { dbFile: string; logFile: string; nodeId: string }
export type IndexRequest = { id: number; op: 'sync' } | { id: number; op: 'prune'; maxAgeMs: number; now: number } | { id: number; op: 'close' };
export type IndexReply = { id: number; result?: number; error?: string };

const d = workerData as IndexWorkerData;
const index = new TrackingIndex(d.dbFile, d.logFile, d.nodeId);
let queue: Promise<void> = Promise.resolve();

parentPort!.on('message', (m: IndexRequest) => {
  queue = queue.then(async () => {
    try {
      let result: number | undefined;
      if (m.op === 'sync') await index.sync();
      else if (m.op === 'prune') result = index.prune(m.maxAgeMs, m.now);
      else await index.close();
      parentPort!.postMessage({ id: m.id, result } satisfies IndexReply);
      if (m.op === 'close') parentPort!.close();
    } catch (err) {
      parentPort!.postMessage({ id: m.id, error: String((err as Error)?.message ?? err) } satisfies IndexReply);
    }
  });
});
