/**
 * lock.ts — single-writer lock for a spool folder: the file `<dir>/lock`.
 *
 * The lock file holds JSON {pid, hostname, startedAt}. It is created atomically with its
 * content: written to a private temp file, then hard-linked to `lock` (link fails with EEXIST
 * if the lock exists — the O_EXCL of the classic NFS-safe recipe), so nobody ever sees an
 * empty lock file. A lock is stale if it was taken on this host by a pid that is no longer
 * alive (process.kill(pid, 0)); a stale lock is replaced. A lock from another host cannot be
 * checked from here: acquire throws unless `force` is given, which only the cluster may use,
 * holding the spool's claim (a takeover of a dead or fenced node, or a handback).
 *
 * What can go wrong: SpoolLockedError (held by a live process, or by another host); a lock file
 * that is not valid JSON (disk damage or a hand edit) is reported with what to do, not replaced.
 * XXX: two processes on one host replacing the same stale lock at the same instant can both
 * believe they won. This lock guards against a second process started by mistake; the
 * cluster's claim file with its fencing epoch is what keeps two nodes off one spool.
 */
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { isErrno } from '../util/errno.ts';
import { pidAlive } from '../util/pid.ts';
import { TandemError } from '../util/errors.ts';

export interface SpoolLockInfo {
  pid: number;
  hostname: string;
  startedAt: number;
}

export class SpoolLockedError extends TandemError {
  readonly code = 'SPOOL_LOCKED';
  readonly pid: number;
  readonly hostname: string;
  readonly path: string;
  constructor(path: string, holder: SpoolLockInfo) {
    super(
      `spool lock ${path} is held by pid ${holder.pid} on ${holder.hostname} since ${new Date(holder.startedAt).toISOString()}; ` +
        'stop that process first (if it is a dead node, let the cluster take the spool over)',
    );
    this.name = 'SpoolLockedError';
    this.pid = holder.pid;
    this.hostname = holder.hostname;
    this.path = path;
  }
}

function lockPath(dir: string): string {
  return join(dir, 'lock');
}


/** The current holder, or undefined if there is no lock file. */
export async function readSpoolLock(dir: string): Promise<SpoolLockInfo | undefined> {
  const path = lockPath(dir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  let value: Partial<SpoolLockInfo> | null = null;
  try {
    value = JSON.parse(text) as Partial<SpoolLockInfo>;
  } catch {
    // reported below
  }
  if (!value || !Number.isInteger(value.pid) || typeof value.hostname !== 'string' || typeof value.startedAt !== 'number') {
    throw new Error(`spool lock ${path} is unreadable (${JSON.stringify(text.slice(0, 80))}); if no Tandem process uses this spool, delete the file and start again`);
  }
  return { pid: value.pid!, hostname: value.hostname, startedAt: value.startedAt };
}

function sameHolder(a: SpoolLockInfo | undefined, b: SpoolLockInfo): boolean {
  return a !== undefined && a.pid === b.pid && a.hostname === b.hostname && a.startedAt === b.startedAt;
}

/** Create `<dir>/lock` with content, atomically; false if it already exists. */
async function tryCreateLock(dir: string, info: SpoolLockInfo): Promise<boolean> {
  const temp = join(dir, `lock.${info.pid}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(temp, JSON.stringify(info) + '\n', { flag: 'wx', mode: 0o644 });
  try {
    await link(temp, lockPath(dir));
    return true;
  } catch (err) {
    if (isErrno(err, 'EEXIST')) return false;
    throw err;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * Take the spool's single-writer lock; `force` replaces any lock, even a live holder's: only the
 * cluster uses it, holding the spool's claim (whose epoch is what fences the old holder out).
 * Throws SpoolLockedError if a live process holds it.
 */
export interface SpoolLock {
  release(): Promise<void>;
  /**
   * Whether the lock file still names this holder. A delivering process asks this every
   * cluster.heartbeat_interval: a lock taken from it (forced by another process) means another
   * process delivers the spool now, and it must stop at once. A read error rejects.
   */
  held(): Promise<{ held: true } | { held: false; holder?: SpoolLockInfo }>;
}

export async function acquireSpoolLock(dir: string, opts: { force?: boolean } = {}): Promise<SpoolLock> {
  const me: SpoolLockInfo = { pid: process.pid, hostname: osHostname(), startedAt: Date.now() };
  const path = lockPath(dir);
  for (let attempt = 0; ; attempt++) {
    if (await tryCreateLock(dir, me)) break;
    const holder = await readSpoolLock(dir);
    if (holder === undefined) continue; // released between our link and our read: try again
    const stale = opts.force === true || (holder.hostname === me.hostname && !pidAlive(holder.pid));
    if (!stale || attempt >= 3) throw new SpoolLockedError(path, holder);
    // Move the stale lock aside (atomic), then try to create ours again.
    const aside = join(dir, `lock.stale.${holder.pid}.${randomBytes(4).toString('hex')}`);
    try {
      await rename(path, aside);
      await unlink(aside);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
  let released = false;
  return {
    async held() {
      const holder = await readSpoolLock(dir);
      return sameHolder(holder, me) ? { held: true } : { held: false, ...(holder ? { holder } : {}) };
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      // Only remove the lock if it is still ours (a forced takeover may have replaced it).
      if (sameHolder(await readSpoolLock(dir).catch(() => undefined), me)) {
        await unlink(path).catch((err) => {
          if (!isErrno(err, 'ENOENT')) throw err;
        });
      }
    },
  };
}
