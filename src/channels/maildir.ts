/**
 * maildir.ts — the local delivery channel for {type:'maildir', path} routes.
 *
 * Delivery protocol (per recipient, one copy each), as the Maildir spec and qmail do it:
 *   1. create path/{tmp,new,cur} if missing (mode 0700);
 *   2. write tmp/<time>.M<micro>P<pid>Q<counter>.<host> (O_EXCL, mode 0600): a
 *      `Return-Path: <sender>` and a `Delivered-To: <address>` header, then the message;
 *   3. fsync the file, close it, rename it into new/, fsync new/;
 *   4. only then is the recipient delivered. At worst a message may be delivered twice (a crash
 *      between 3 and the queue's record of it), never lost.
 * Lines are written with LF endings, as Postfix and Dovecot store maildir files.
 *
 * What can go wrong: every file system error defers (a full disk or a quota must never bounce):
 * ENOSPC/EDQUOT/EIO/EACCES/EPERM/EROFS, and a path that is not a directory (ENOTDIR/EEXIST) —
 * the reply says which and why, and a half-written tmp/ file is removed. A message that already
 * carries `Delivered-To: <this address>` fails 5.4.6 (a forwarding loop, as Postfix' local(8)).
 * Errors without an errno code are bugs and are thrown.
 * Config read: none (the hostname for file names is an option, default os.hostname()).
 */
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Channel, DeliveryJob, RecipientResult } from './types.ts';
import { fsyncDirectory } from '../util/fsync-dir.ts';
import { headerBlock } from '../util/message-headers.ts';

export interface MaildirChannelOptions {
  /** Host name in file names (default os.hostname()); '/' and ':' are escaped per the spec. */
  hostname?: string;
}

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
let deliveryCounter = 0;
const PREPARING = 'preparing the maildir';

/** A unique maildir file name: "<sec>.M<usec>P<pid>Q<counter>.<host>". */
export function maildirFileName(hostname: string): string {
  const nowMicros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const seconds = Math.floor(nowMicros / 1e6);
  const micros = nowMicros % 1e6;
  deliveryCounter += 1;
  const host = hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
  return `${seconds}.M${micros}P${process.pid}Q${deliveryCounter}.${host}`;
}

export class MaildirChannel implements Channel {
  private readonly hostname: string;

  constructor(opts: MaildirChannelOptions = {}) {
    this.hostname = opts.hostname ?? os.hostname();
  }

  async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
    if (job.route.type !== 'maildir') throw new Error(`bug: maildir channel given a ${job.route.type} route for ${job.queueId}`);
    const dir = job.route.path;
    const via = `maildir:${dir}`;
    try {
      await ensureMaildir(dir);
    } catch (err) {
      const reply = describeFsError(err, dir, PREPARING);
      return job.recipients.map((r) => ({ index: r.index, outcome: 'deferred', reply, via }));
    }
    const body = toLf(job.message);
    const alreadyDeliveredTo = deliveredToHeaders(job.message);
    const results: RecipientResult[] = [];
    for (const r of job.recipients) {
      if (alreadyDeliveredTo.has(r.address.toLowerCase())) {
        results.push({ index: r.index, outcome: 'failed', reply: `5.4.6 Mail forwarding loop for ${r.address}: the message was already delivered to it`, via });
        continue;
      }
      const header = Buffer.from(`Return-Path: <${job.sender}>\nDelivered-To: ${r.address}\n`, 'utf8');
      try {
        const name = await writeMaildirFile(dir, this.hostname, [header, body]);
        results.push({ index: r.index, outcome: 'delivered', reply: `2.0.0 Delivered to maildir as new/${name}`, via });
      } catch (err) {
        results.push({ index: r.index, outcome: 'deferred', reply: describeFsError(err, dir, 'writing the message'), via });
      }
    }
    return results;
  }
}

/** mkdir -p path/{tmp,new,cur}; fsync the maildir and its parent when something was created. */
async function ensureMaildir(dir: string): Promise<void> {
  let created = false;
  for (const sub of ['tmp', 'new', 'cur']) {
    if ((await mkdir(path.join(dir, sub), { recursive: true, mode: DIR_MODE })) !== undefined) created = true;
  }
  if (created) {
    await fsyncDirectory(dir);
    await fsyncDirectory(path.dirname(dir));
  }
}

/** tmp/ → fsync → new/ → fsync new/. Returns the file name; removes the tmp file on failure. */
async function writeMaildirFile(dir: string, hostname: string, parts: Buffer[]): Promise<string> {
  const name = maildirFileName(hostname);
  const tmpPath = path.join(dir, 'tmp', name);
  const file = await open(tmpPath, 'wx', FILE_MODE);
  try {
    try {
      await file.writeFile(Buffer.concat(parts));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmpPath, path.join(dir, 'new', name));
  } catch (err) {
    await unlink(tmpPath).catch(() => undefined);
    throw err;
  }
  await fsyncDirectory(path.join(dir, 'new'));
  return name;
}

/** CRLF → LF (a lone CR or LF is kept as it is). */
function toLf(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(message.length);
  let written = 0;
  let start = 0;
  for (let i = message.indexOf('\r\n'); i !== -1; i = message.indexOf('\r\n', start)) {
    written += message.copy(out, written, start, i);
    out[written++] = 0x0a;
    start = i + 2;
  }
  written += message.copy(out, written, start);
  return out.subarray(0, written);
}

/** Lower-cased addresses of the message's Delivered-To headers. */
function deliveredToHeaders(message: Buffer): Set<string> {
  const headers = headerBlock(message, 'utf8');
  const found = new Set<string>();
  for (const m of headers.matchAll(/^delivered-to:[ \t]*(.*?)[ \t]*$/gim)) found.add(m[1].toLowerCase());
  return found;
}

/** An fs error → a deferral reply saying what happened and what to do. Throws errors that are bugs. */
function describeFsError(err: unknown, dir: string, doing: string): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') throw err;
  const detail = (err as Error).message;
  switch (code) {
    case 'EDQUOT':
      return `4.2.2 Mailbox ${dir} is over quota while ${doing}; will retry (${detail})`;
    case 'ENOSPC':
      return `4.3.1 No space left on the device of ${dir} while ${doing}; free space, mail is kept queued (${detail})`;
    case 'EEXIST':
      // From open(O_EXCL) a tmp/ name collision, from mkdir a file where a directory should be.
      if (doing !== PREPARING) return `4.3.0 ${code}: tmp/ file name already in use in ${dir}; will retry (${detail})`;
      return `4.3.5 Maildir ${dir} is not a directory (a file is in the way) while ${doing}; fix the path or the route (${detail})`;
    case 'ENOTDIR':
      return `4.3.5 Maildir ${dir} is not a directory (a file is in the way) while ${doing}; fix the path or the route (${detail})`;
    case 'EACCES':
    case 'EPERM':
      return `4.3.0 Permission denied on ${dir} while ${doing}; fix ownership or modes (${detail})`;
    case 'EROFS':
      return `4.3.0 File system of ${dir} is read-only while ${doing} (${detail})`;
    default:
      return `4.3.0 ${code} on ${dir} while ${doing}; will retry (${detail})`;
  }
}
