/**
 * dirsync.ts — grouped folder fsync: many concurrent requests share one fsync of a folder.
 *
 * DirSyncer.sync(dir) resolves once a fsync of `dir` that STARTED after the call has completed;
 * the fsync itself is given (by default the real one, util/fsync-dir.ts).
 *
 * Batching: if no fsync of `dir` is running, one starts at once. If one is running, the request
 * joins the next batch, which starts when the running one finishes; every caller of a batch
 * resolves (or rejects) together. A request never rides on a fsync that was already running,
 * because that fsync may not cover the entry the caller just renamed or unlinked.
 *
 * The default fsync (keptOpenFsync) keeps each folder's descriptor open while the folder is busy
 * and closes it after a second without a fsync: one fsync(2) per batch instead of open + fsync +
 * close, each a trip through the thread pool. The spool's folders are never replaced, so the
 * descriptor always names the folder whose entries were changed.
 *
 * What can go wrong: the fsync fails (EIO, ENOSPC on some file systems, the folder vanished):
 * every caller of that batch gets the error; the next batch tries again (with a fresh descriptor).
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { FsyncDir } from '../util/fsync-dir.ts';

interface KeptDir {
  handle: Promise<FileHandle>;
  timer: NodeJS.Timeout;
  /** fsyncs under way on this descriptor */
  users: number;
  /** dropped from the map (idle or failed): close once its last user is done */
  retired: boolean;
}

/**
 * An FsyncDir that opens each folder once and keeps the descriptor until the folder has had no
 * fsync for idleMs (an unref'd timer: it keeps no process alive). A failed open or fsync drops
 * the descriptor, so the next call opens the folder again.
 */
export function keptOpenFsync(idleMs = 1000): FsyncDir {
  const kept = new Map<string, KeptDir>();
  const retire = (dir: string, entry: KeptDir): void => {
    if (kept.get(dir) === entry) kept.delete(dir);
    clearTimeout(entry.timer);
    entry.retired = true;
    if (entry.users === 0) entry.handle.then((h) => h.close()).catch(() => undefined);
  };
  return async (dir) => {
    let entry = kept.get(dir);
    if (entry) {
      entry.timer.refresh();
    } else {
      const fresh: KeptDir = { handle: open(dir, 'r'), timer: setTimeout(() => fresh.users > 0 ? fresh.timer.refresh() : retire(dir, fresh), idleMs).unref(), users: 0, retired: false };
      kept.set(dir, (entry = fresh));
    }
    const e = entry;
    e.users++;
    try {
      await (await e.handle).sync();
    } catch (err) {
      if (!e.retired) retire(dir, e);
      throw err;
    } finally {
      e.users--;
      if (e.retired && e.users === 0) e.handle.then((h) => h.close()).catch(() => undefined);
    }
  };
}

interface NextBatch {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface DirState {
  running: boolean;
  next?: NextBatch;
}

export class DirSyncer {
  readonly #fsyncDir: FsyncDir;
  readonly #dirs = new Map<string, DirState>();

  constructor(fsyncDir: FsyncDir = keptOpenFsync()) {
    this.#fsyncDir = fsyncDir;
  }

  /** Resolves when `dir` has been fsynced by a fsync that began after this call. */
  sync(dir: string): Promise<void> {
    let state = this.#dirs.get(dir);
    if (!state) {
      state = { running: false };
      this.#dirs.set(dir, state);
    }
    if (!state.running) return this.#run(dir, state);
    if (!state.next) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      state.next = { promise, resolve, reject };
    }
    return state.next.promise;
  }

  /** Start one fsync now; when it settles, start the waiting batch if there is one. */
  #run(dir: string, state: DirState): Promise<void> {
    state.running = true;
    const done = Promise.resolve().then(() => this.#fsyncDir(dir));
    const settle = (): void => {
      state.running = false;
      const next = state.next;
      state.next = undefined;
      if (next) this.#run(dir, state).then(next.resolve, next.reject);
      else this.#dirs.delete(dir);
    };
    done.then(settle, settle);
    return done;
  }
}
