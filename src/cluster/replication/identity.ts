/**
 * replication/identity.ts — a spool's identity: a UUID written once, when the spool is first
 * used for replication, to `<spool dir>/spool-id`. A shadow holder records it with the copies,
 * so it can tell an origin that comes back with its disk (same identity: reconcile) from one
 * whose disk was replaced (new identity: the holder keeps delivering the old copies itself).
 * The file is created durably if absent (temp file, fsync, rename, fsync folder: the same
 * protocol as a queue file).
 *
 * What can go wrong: a `spool-id` that is not a UUID (edited by hand, damaged) throws — a new
 * identity would silently make the holder treat the spool as a new disk.
 */
import { randomUUID } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirectory } from '../../util/fsync-dir.ts';
import { isErrno } from '../../util/errno.ts';
import { isSpoolId } from './protocol.ts';

export const SPOOL_ID_FILE = 'spool-id';

/** Write `text` to `path` durably (temp file, fsync, rename, fsync folder). */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomUUID()}`;
  const handle = await fsp.open(tmp, 'wx', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fsp.rename(tmp, path);
  } catch (err) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDirectory(join(path, '..'));
}

export async function spoolIdentity(dir: string): Promise<string> {
  const path = join(dir, SPOOL_ID_FILE);
  try {
    const text = (await fsp.readFile(path, 'utf8')).trim();
    if (!isSpoolId(text)) throw new Error(`${path} does not hold a spool identity (a UUID): ${JSON.stringify((text as string).slice(0, 80))}`);
    return text;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // Written to a temp file, then linked into place: link() never replaces an existing file, so
  // two processes creating the identity at once agree on the first one.
  const tmp = `${path}.tmp-${process.pid}-${randomUUID()}`;
  const handle = await fsp.open(tmp, 'wx', 0o600);
  try {
    await handle.writeFile(`${randomUUID()}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fsp.link(tmp, path);
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
  } finally {
    await fsp.unlink(tmp).catch(() => undefined);
  }
  await fsyncDirectory(dir);
  return spoolIdentity(dir);
}
