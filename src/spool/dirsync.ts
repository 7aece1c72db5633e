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
 * What can go wrong: the fsync fails (EIO, ENOSPC on some file systems, the folder vanished):
 * every caller of that batch gets the error; the next batch tries again.
 */
import { fsyncDirectory, type FsyncDir } from '../util/fsync-dir.ts';

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

  constructor(fsyncDir: FsyncDir = fsyncDirectory) {
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
