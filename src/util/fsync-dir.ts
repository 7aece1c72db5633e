/**
 * util/fsync-dir.ts — make a folder's entries (creations, renames, unlinks) durable: open the
 * folder read-only, fsync it, close it. Used by the spool (grouped, spool/dirsync.ts), the
 * Maildir channel and the cluster's claim records.
 *
 * What can go wrong: the open or the fsync fails (ENOENT for a missing folder, EIO): thrown as is.
 */
import { open } from 'node:fs/promises';

export type FsyncDir = (dir: string) => Promise<void>;

/** Make a folder's entries (creations, renames, unlinks) durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
