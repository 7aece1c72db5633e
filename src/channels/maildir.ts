/**
 * maildir.ts — the local delivery channel for {type:'maildir', path} routes.
 *
 * Delivery protocol (per recipient, one copy each), as the Maildir spec and qmail do it:
 *   1. create path/{tmp,new,cur} if missing (mode 0700), and any missing folder above it;
 *   2. write tmp/<time>.M<micro>P<pid>Q<counter>.<host> (O_EXCL, mode 0600): a
 *      `Return-Path: <sender>` and a `Delivered-To: <address>` header, then the message;
 *   3. fsync the file, close it, rename it into new/, fsync new/;
 *   4. only then is the recipient delivered. At worst a message may be delivered twice (a crash
 *      between 3 and the queue's record of it), never lost.
 * Lines are written with LF endings, as Postfix and Dovecot store maildir files.
 * Ownership (maildir-owner.ts, as Postfix virtual(8)'s uid/gid maps): where the config or the
 * directory names an owner, group or mode for the mailbox, the folders this delivery creates
 * and every file get them (chown/chmod, whatever the umask); folders that exist are left as
 * they are. Giving files away needs the right to: run the node with CAP_CHOWN, or as the mail
 * user itself (then owner = that user needs no privilege). Without it the delivery is
 * deferred with a reply that says so.
 *
 * What can go wrong: every file system error defers (a full disk or a quota must never bounce):
 * ENOSPC/EDQUOT/EIO/EACCES/EPERM/EROFS, and a path that is not a directory (ENOTDIR/EEXIST) —
 * the reply says which and why, and a half-written tmp/ file is removed. A message that already
 * carries `Delivered-To: <this address>` fails 5.4.6 (a forwarding loop, as Postfix' local(8)).
 * Errors without an errno code are bugs and are thrown.
 * Config read: none (the hostname for file names is an option, default os.hostname()).
 */
import { chmod, chown, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import type { Channel, DeliveryJob, RecipientResult } from './types.ts';
import { fsyncDirectory } from '../util/fsync-dir.ts';
import { headerBlock } from '../util/message-headers.ts';
import { folderMode, type MaildirOwnership, type OwnerLookup } from './maildir-owner.ts';
import type { MessageSource } from '../message/source.ts';

export interface MaildirChannelOptions {
  /** Host name in file names (default os.hostname()); '/' and ':' are escaped per the spec. */
  hostname?: string;
  /** Owner, group and mode per mailbox (config local.maildir_owners; see maildir-owner.ts). */
  owners?: OwnerLookup;
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
  private readonly owners?: OwnerLookup;

  constructor(opts: MaildirChannelOptions = {}) {
    this.hostname = opts.hostname ?? os.hostname();
    this.owners = opts.owners;
  }

  async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
    if (job.route.type !== 'maildir') throw new Error(`bug: maildir channel given a ${job.route.type} route for ${job.queueId}`);
    const dir = job.route.path;
    const via = `maildir:${dir}`;
    // one mailbox per route: the first recipient's address names it
    const owner = this.owners?.(job.recipients[0]?.address ?? '', job.route.owner)
      ?? (job.route.owner ? { ...job.route.owner } : undefined);
    try {
      await ensureMaildir(dir, owner);
    } catch (err) {
      const reply = describeFsError(err, dir, PREPARING);
      return job.recipients.map((r) => ({ index: r.index, outcome: 'deferred', reply, via }));
    }
    // a small message is converted once for all recipients; a large one is streamed for each
    const body = job.message.whole ? toLf(job.message.whole) : job.message;
    const alreadyDeliveredTo = deliveredToHeaders(job.message.head);
    const results: RecipientResult[] = [];
    for (const r of job.recipients) {
      if (alreadyDeliveredTo.has(r.address.toLowerCase())) {
        results.push({ index: r.index, outcome: 'failed', reply: `5.4.6 Mail forwarding loop for ${r.address}: the message was already delivered to it`, via });
        continue;
      }
      const header = Buffer.from(`Return-Path: <${job.sender}>\nDelivered-To: ${r.address}\n`, 'utf8');
      try {
        const name = await writeMaildirFile(dir, this.hostname, header, body, owner);
        results.push({ index: r.index, outcome: 'delivered', reply: `2.0.0 Delivered to maildir as new/${name}`, via });
      } catch (err) {
        results.push({ index: r.index, outcome: 'deferred', reply: describeFsError(err, dir, 'writing the message'), via });
      }
    }
    return results;
  }
}

/**
 * mkdir -p path/{tmp,new,cur}; the folders created get the owner and mode; fsync the maildir and
 * its parent when something was created.
 */
async function ensureMaildir(dir: string, owner: MaildirOwnership | undefined): Promise<void> {
  const mode = owner?.mode !== undefined ? folderMode(owner.mode) : DIR_MODE;
  const created: string[] = [];
  const top = await mkdir(dir, { recursive: true, mode });
  if (top !== undefined) {
    // every folder from the first one created down to the maildir is new
    for (let d = dir; ; d = path.dirname(d)) {
      created.unshift(d);
      if (d === top || path.dirname(d) === d) break;
    }
  }
  for (const sub of ['tmp', 'new', 'cur']) {
    if ((await mkdir(path.join(dir, sub), { recursive: true, mode })) !== undefined) created.push(path.join(dir, sub));
  }
  if (created.length === 0) return;
  if (owner) {
    for (const d of created) await applyOwner(d, owner, mode);
  }
  await fsyncDirectory(dir);
  await fsyncDirectory(path.dirname(dir));
}

/** chown (where an owner or group is set) and chmod (the umask narrowed the mode at creation). */
async function applyOwner(file: string, owner: MaildirOwnership, mode: number): Promise<void> {
  if (owner.uid !== undefined || owner.gid !== undefined) await chown(file, owner.uid ?? -1, owner.gid ?? -1);
  await chmod(file, mode);
}

/**
 * tmp/ → fsync → new/ → fsync new/. `body`: the message with LF line ends, or the message as
 * stored (CRLF), converted as it is streamed. Returns the file name; removes the tmp file on failure.
 */
async function writeMaildirFile(dir: string, hostname: string, header: Buffer, body: Buffer | MessageSource, owner: MaildirOwnership | undefined): Promise<string> {
  const name = maildirFileName(hostname);
  const tmpPath = path.join(dir, 'tmp', name);
  const file = await open(tmpPath, 'wx', owner?.mode ?? FILE_MODE);
  try {
    try {
      if (owner) {
        if (owner.uid !== undefined || owner.gid !== undefined) await file.chown(owner.uid ?? -1, owner.gid ?? -1);
        if (owner.mode !== undefined) await file.chmod(owner.mode);
      }
      if (Buffer.isBuffer(body)) await file.writeFile(Buffer.concat([header, body]));
      else {
        await file.writeFile(header);
        await writeLf(file, body.stream());
      }
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

/** Append a CRLF stream to a file with LF line ends (a CRLF split between chunks included). */
async function writeLf(file: FileHandle, stream: Readable): Promise<void> {
  let heldCr = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let buf: Buffer = heldCr ? Buffer.concat([CR, chunk]) : chunk;
      heldCr = buf.length > 0 && buf[buf.length - 1] === 0x0d;
      if (heldCr) buf = buf.subarray(0, buf.length - 1);
      await file.writeFile(toLf(buf));
    }
    if (heldCr) await file.writeFile(CR);
  } finally {
    stream.destroy();
  }
}

const CR = Buffer.from('\r', 'latin1');

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
      return `4.3.0 Permission denied on ${dir} while ${doing}; fix ownership or modes (${detail})`;
    case 'EPERM':
      return `4.3.0 Operation not permitted on ${dir} while ${doing}: giving files to the mailbox owner needs CAP_CHOWN, or run Tandem as the mail user (${detail})`;
    case 'EROFS':
      return `4.3.0 File system of ${dir} is read-only while ${doing} (${detail})`;
    default:
      return `4.3.0 ${code} on ${dir} while ${doing}; will retry (${detail})`;
  }
}
