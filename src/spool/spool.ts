/**
 * spool.ts — one node's spool: state folders, the commit protocol, status appends, recovery.
 *
 * Layout: `<dir>/{tmp,incoming,active,deferred,hold,corrupt}/<queueId>` plus `<dir>/lock`
 * (lock.ts). Everything a process needs is in the files, so another process (a cluster survivor)
 * can open a dead node's spool given only its folder.
 *
 * Commit protocol (qmail style) — the receiver may answer 250 only after commit() resolves:
 *   1. write the whole queue file (magic, M, E, Z) to tmp/<id>, opened O_CREAT|O_EXCL|O_WRONLY
 *      (a large message is written as it arrives: incoming.ts, beginMessage());
 *   2. fsync the file, close it;
 *   3. rename tmp/<id> → incoming/<id> (atomic: the file appears whole or not at all);
 *   4. fsync incoming/ (grouped with concurrent commits, dirsync.ts);
 *   5. resolve. On any error the temp file (or the renamed file) is removed and commit throws:
 *      the caller answers 451 and the client retries.
 * Files in tmp/ were never acknowledged; recover() deletes them. Files in state folders are
 * complete and self-checking (queuefile.ts); a damaged one is moved to corrupt/, never deleted.
 *
 * Delivery is AT-LEAST-ONCE: a recipient's outcome is appended (S record, fdatasync) after the
 * next hop accepted it; a crash in between means that recipient is delivered again. At worst a
 * message may be delivered twice; it is never lost once commit() resolved. remove() resolves
 * only when the unlink is durable, so a finished message does not come back after a crash.
 *
 * What can go wrong: I/O errors (ENOSPC, EIO, EACCES) are thrown as they are — an environment
 * failure; read() throws CorruptQueueFileError for a damaged file and the ENOENT error for a
 * missing one; an unsafe queue id (path separators, leading dot) throws a plain Error (a bug).
 * Mutating calls for one queue id (appendStatus, move, remove, quarantine) are serialised in
 * this process; one process per spool is enforced by lock.ts, not here.
 */
import { constants as fsConstants, createReadStream } from 'node:fs';
import { crc32 } from 'node:zlib';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { DirSyncer } from './dirsync.ts';
import type { FsyncDir } from '../util/fsync-dir.ts';
import { decodeQueueFile, encodeStatusRecords, findAppendOffset, readMetadata, type ReadAt, type StatusRecord } from './queuefile.ts';
import { IncomingMessage } from './incoming.ts';
import { isSafeQueueId, makeQueueIdGenerator, parseQueueId } from './queueid.ts';
import { QUEUE_STATES, type DeferralRecord, type Envelope, type QueueState, type RecipientStatus, type SpoolIo } from './types.ts';
import { isErrno } from '../util/errno.ts';
import { bodyStart, HEADER_SCAN_LIMIT } from '../util/message-headers.ts';
import { bufferSource, type MessageSource } from '../message/source.ts';
import { TandemError } from '../util/errors.ts';

/** A queue file that failed its self-check; it belongs in corrupt/. */
export class CorruptQueueFileError extends TandemError {
  readonly code = 'SPOOL_CORRUPT_QUEUE_FILE';
  readonly queueId: string;
  readonly path: string;
  readonly reason: string;
  constructor(queueId: string, path: string, reason: string) {
    super(`queue file ${path} is damaged: ${reason}`);
    this.name = 'CorruptQueueFileError';
    this.queueId = queueId;
    this.path = path;
    this.reason = reason;
  }
}

export interface QueueFile {
  queueId: string;
  state: QueueState;
  envelope: Envelope;
  message: Buffer;
  statuses: RecipientStatus[];
  deferral?: DeferralRecord;
  /** indices of recipients not yet done */
  pending: number[];
  /** File size in bytes. */
  size: number;
}

/** A queue file as read for delivery: the message in memory when small, else streamed from the file. */
export type DeliveryFile = Omit<QueueFile, 'message'> & { message: MessageSource };

export interface QueueEntry {
  queueId: string;
  state: QueueState;
  mtimeMs: number;
  size: number;
}

/** A queue file found good at recovery, with its retry time if it was deferred. */
export interface RecoveredEntry {
  queueId: string;
  state: QueueState;
  /** Queue file size in bytes. */
  size: number;
  nextAttemptAt?: number;
}

/** A queue file chosen by Spool.select(), not yet read. */
export interface SelectedFile {
  queueId: string;
  state: QueueState;
  /** When it is due: its arrival (incoming/, active/) or its file's modification time (deferred/, see setDueTime). */
  due: number;
}

export interface SpoolOptions {
  /** This node's id (util/names.ts NODE_ID); embedded in every new queue id. */
  nodeId: string;
  warn?: (msg: string, fields: object) => void;
  /** Folder fsync (tests count or fail it); default: the real one. */
  fsyncDir?: FsyncDir;
  /** File operations (tests inject failures); default: node:fs/promises. */
  io?: Partial<SpoolIo>;
  /** Told of every commit, status record and removal (replicated storage: the shadow copy). */
  replica?: SpoolReplica;
}

/**
 * A second copy of the spool kept elsewhere (cluster/replication/replica.ts). `committed` makes
 * the copy of a message being committed (beside the local fsyncs when its bytes are in memory,
 * else after them: incoming.ts); the commit resolves only when both are done. It throws to
 * refuse the message (only when `refusable`: a message received over SMTP, whose client can try
 * again), which takes the commit back. `statuses` and `removed` are told after the change is
 * durable (`removed` also when a commit failed after its copy began); they must not throw.
 */
export interface SpoolReplica {
  committed(queueId: string, path: string, bytes: Buffer | undefined, refusable: boolean): Promise<void>;
  statuses(queueId: string, records: RecipientStatus[]): void;
  removed(queueId: string): void;
  /** Put on hold (true) or released (false) by an operator or a policy. */
  held(queueId: string, held: boolean): void;
}

const REAL_IO: SpoolIo = {
  open: (path, flags, mode) => fsp.open(path, flags, mode),
  rename: fsp.rename,
  unlink: fsp.unlink,
  readFile: (path) => fsp.readFile(path),
  readdir: (path) => fsp.readdir(path),
  stat: fsp.stat,
};

const FOLDERS = ['tmp', ...QUEUE_STATES] as const;
/** States recover() verifies; corrupt/ is left as it is. */
const LIVE_STATES: readonly QueueState[] = QUEUE_STATES.filter((s) => s !== 'corrupt');
/** Files read at once by recover() (whole messages are held in memory). */
const RECOVER_CONCURRENCY = 8;
const STAT_CONCURRENCY = 64;
/** Queue files up to this size are read whole for delivery; the message of a larger one is streamed. */
export const READ_WHOLE_LIMIT = 256 * 1024;
/** Bytes read at once by the header-only walks of a queue file (a small file in one read). */
const READ_AHEAD = 16 * 1024;
/** Names listed before select() hands them to its `found` callback (small: the first are delivered soon). */
const FOUND_BATCH = 64;
/** Chunk of a streamed message's checksum pass. */
const CHECK_CHUNK = 256 * 1024;


/**
 * Positional reads on an open file of `size` bytes, for the header-only walks of queuefile.ts:
 * served from a window of READ_AHEAD bytes read at once, so that a small queue file costs one
 * read(2), not one per record header and payload (a takeover's scan reads thousands). The
 * buffers returned share the window: callers copy what they keep.
 */
function positionalReader(handle: FileHandle, size: number): ReadAt {
  let window = Buffer.alloc(0);
  let start = 0;
  return async (position, length) => {
    if (position >= start && position + length <= start + window.length) return window.subarray(position - start, position - start + length);
    const buf = Buffer.allocUnsafe(Math.max(length, Math.min(READ_AHEAD, size - position)));
    const bytesRead = await readFully(handle, buf, position);
    window = buf.subarray(0, bytesRead);
    start = position;
    return window.subarray(0, Math.min(length, bytesRead));
  };
}

/** Fill `buf` from `position` on (less at the end of the file); returns the bytes read. */
async function readFully(handle: FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await handle.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Run fn over items with at most `limit` in flight; results in input order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** A queue file's bytes decoded and checked (envelope, message checksum, statuses). */
function decodeOrThrow(queueId: string, state: QueueState, path: string, bytes: Buffer): QueueFile {
  const result = decodeQueueFile(bytes);
  if (!result.ok) throw new CorruptQueueFileError(queueId, path, result.reason);
  if (result.envelope.queueId !== queueId) {
    throw new CorruptQueueFileError(queueId, path, `envelope says queue id ${JSON.stringify(result.envelope.queueId)}, not the file name`);
  }
  return {
    queueId,
    state,
    envelope: result.envelope,
    message: result.message,
    statuses: result.statuses,
    deferral: result.deferral,
    pending: result.pending,
    size: bytes.length,
  };
}

export class Spool {
  readonly dir: string;
  readonly nodeId: string;
  readonly #io: SpoolIo;
  readonly #dirSyncer: DirSyncer;
  readonly #warn: (msg: string, fields: object) => void;
  readonly #nextId: () => string;
  readonly #replica: SpoolReplica | undefined;
  /** Tail of the chain of mutating operations per queue id. */
  readonly #busy = new Map<string, Promise<unknown>>();

  private constructor(dir: string, opts: SpoolOptions) {
    this.dir = dir;
    this.nodeId = opts.nodeId;
    this.#io = { ...REAL_IO, ...opts.io };
    this.#dirSyncer = new DirSyncer(opts.fsyncDir);
    this.#warn = opts.warn ?? (() => undefined);
    this.#nextId = makeQueueIdGenerator(opts.nodeId);
    this.#replica = opts.replica;
  }

  /** Open (creating if needed) the spool in `dir`. Throws for an invalid node id. */
  static async open(dir: string, opts: SpoolOptions): Promise<Spool> {
    const spool = new Spool(dir, opts);
    for (const folder of FOLDERS) await fsp.mkdir(join(dir, folder), { recursive: true, mode: 0o700 });
    return spool;
  }

  /** A fresh queue id; format in queueid.ts (`TTTTTTTTT.CCCCRRRR.<nodeId>`). */
  newQueueId(): string {
    return this.#nextId();
  }

  #folder(state: QueueState | 'tmp'): string {
    return join(this.dir, state);
  }

  #path(queueId: string, state: QueueState | 'tmp'): string {
    if (!isSafeQueueId(queueId)) throw new Error(`${JSON.stringify(queueId)} is not a valid queue id`);
    return join(this.dir, state, queueId);
  }

  /**
   * Start receiving a message: its bytes go to tmp/<id> as they come (incoming.ts). `refusable`:
   * the replica may refuse it at commit (a message an SMTP client can send again).
   */
  beginMessage(queueId: string, opts: { refusable?: boolean } = {}): IncomingMessage {
    const replica = this.#replica;
    const copy = replica && {
      copy: (path: string, bytes: Buffer | undefined) => replica.committed(queueId, path, bytes, opts.refusable ?? false),
      abandon: () => replica.removed(queueId),
    };
    return new IncomingMessage(this.#path(queueId, 'tmp'), this.#path(queueId, 'incoming'), this.#io, this.#dirSyncer, this.#folder('incoming'), copy);
  }

  /** Store a whole message durably in incoming/ (protocol in the header). */
  async commit(env: Envelope, message: Buffer): Promise<void> {
    const incoming = this.beginMessage(env.queueId);
    await incoming.write(message).catch(async (err) => {
      await incoming.abort();
      throw err;
    });
    await incoming.commit(env);
  }

  /** Read and verify a queue file. */
  async read(queueId: string, state: QueueState): Promise<QueueFile> {
    const path = this.#path(queueId, state);
    return decodeOrThrow(queueId, state, path, await this.#io.readFile(path));
  }

  /**
   * Read a queue file for a delivery attempt: as read() for a small file; for a larger one the
   * envelope, the statuses and the message's header section, with the message's checksum
   * verified in a pass over the file in chunks — the message itself is then read from the file
   * as a stream by the channel (MessageSource.stream()), never held whole. The message record
   * is never changed once committed, so the stream reads what was checked.
   */
  async readForDelivery(queueId: string, state: QueueState): Promise<DeliveryFile> {
    const path = this.#path(queueId, state);
    const handle = await this.#io.open(path, fsConstants.O_RDONLY);
    let frame: { message: { offset: number; length: number }; head: Buffer; rest: Omit<QueueFile, 'message'> } | undefined;
    let whole: Buffer | undefined;
    try {
      const { size } = await handle.stat();
      if (size <= READ_WHOLE_LIMIT) {
        // read through the descriptor already open (not opened again by name)
        const bytes = Buffer.allocUnsafe(size);
        whole = bytes.subarray(0, await readFully(handle, bytes, 0));
      } else {
        const read = positionalReader(handle, size);
        const meta = await readMetadata(read, size);
        if ('reason' in meta) throw new CorruptQueueFileError(queueId, path, meta.reason);
        if (meta.envelope.queueId !== queueId) {
          throw new CorruptQueueFileError(queueId, path, `envelope says queue id ${JSON.stringify(meta.envelope.queueId)}, not the file name`);
        }
        const m = meta.message;
        const chunk = Buffer.allocUnsafe(Math.min(CHECK_CHUNK, m.length));
        let crc = 0;
        for (let pos = 0; pos < m.length;) {
          const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, m.length - pos), m.offset + pos);
          if (bytesRead === 0) throw new CorruptQueueFileError(queueId, path, 'record M is cut short');
          crc = crc32(chunk.subarray(0, bytesRead), crc);
          pos += bytesRead;
        }
        if (crc !== m.crc) throw new CorruptQueueFileError(queueId, path, 'record M has a bad checksum');
        const start = await read(m.offset, Math.min(m.length, HEADER_SCAN_LIMIT));
        frame = {
          message: m, head: Buffer.from(start.subarray(0, bodyStart(start))),
          rest: { queueId, state, envelope: meta.envelope, statuses: meta.statuses, deferral: meta.deferral, pending: meta.pending, size },
        };
      }
    } finally {
      await handle.close();
    }
    if (!frame) {
      const qf = decodeOrThrow(queueId, state, path, whole!);
      return { ...qf, message: bufferSource(qf.message) };
    }
    const { message: m, head } = frame;
    return {
      ...frame.rest,
      message: { size: m.length, head, stream: () => createReadStream(path, { start: m.offset, end: m.offset + m.length - 1, highWaterMark: 64 * 1024 }) },
    };
  }

  /**
   * The envelope and per-recipient status of a queue file without reading the message (for
   * queue listings). The message's checksum is not verified here; read() does that.
   */
  async readInfo(queueId: string, state: QueueState): Promise<Omit<QueueFile, 'message'>> {
    const path = this.#path(queueId, state);
    const handle = await this.#io.open(path, fsConstants.O_RDONLY);
    try {
      const { size } = await handle.stat();
      const meta = await readMetadata(positionalReader(handle, size), size);
      if ('reason' in meta) throw new CorruptQueueFileError(queueId, path, meta.reason);
      return { queueId, state, envelope: meta.envelope, statuses: meta.statuses, deferral: meta.deferral, pending: meta.pending, size };
    } finally {
      await handle.close();
    }
  }

  /** Run fn after every earlier mutating call for this queue id has settled. */
  async #exclusive<T>(queueId: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#busy.get(queueId) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#busy.set(queueId, tail);
    try {
      return await run;
    } finally {
      if (this.#busy.get(queueId) === tail) this.#busy.delete(queueId);
    }
  }

  /**
   * The queue file's bytes as they are now, wherever it is (corrupt/ excepted), or undefined when
   * the message is gone. Under the message's own lock: a message that moves between folders
   * meanwhile (deferred → active for a retry) is never missed, as a scan of the folders could.
   */
  readRaw(queueId: string): Promise<Buffer | undefined> {
    return this.#exclusive(queueId, async () => {
      for (const state of LIVE_STATES) {
        try {
          return await this.#io.readFile(this.#path(queueId, state));
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
        }
      }
      return undefined;
    });
  }

  /**
   * Append status records durably (fdatasync), after truncating a torn tail left by a crash
   * (`durable: false`: no fdatasync — for records whose loss in a crash only repeats a delivery).
   */
  async appendStatus(queueId: string, state: QueueState, records: Array<RecipientStatus | DeferralRecord>, opts: { durable?: boolean } = {}): Promise<void> {
    const path = this.#path(queueId, state);
    for (const r of records) assertStatusRecord(r);
    const bytes = encodeStatusRecords(records);
    return this.#exclusive(queueId, async () => {
      const handle = await this.#io.open(path, fsConstants.O_RDWR | fsConstants.O_APPEND);
      try {
        const { size } = await handle.stat();
        const found = await findAppendOffset(positionalReader(handle, size), size);
        if ('reason' in found) throw new CorruptQueueFileError(queueId, path, found.reason);
        if (found.offset < size) {
          this.#warn('torn status record after END ignored and truncated (crash during an append)', {
            queueId, path, bytes: size - found.offset,
          });
          await handle.truncate(found.offset);
        }
        let written = 0;
        while (written < bytes.length) {
          const { bytesWritten } = await handle.write(bytes, written, bytes.length - written);
          written += bytesWritten;
        }
        if (opts.durable ?? true) await handle.datasync();
      } finally {
        await handle.close();
      }
      const outcomes = records.filter((r): r is RecipientStatus => r.type !== 'deferral');
      if (outcomes.length) this.#replica?.statuses(queueId, outcomes);
    });
  }

  /**
   * Rename between state folders, then fsync both folders (grouped); resolves when durable.
   * `durable: false` skips the folder fsyncs, for a move whose loss in a crash is harmless
   * (incoming → active: recovery picks the file up from either folder).
   */
  move(queueId: string, from: QueueState, to: QueueState, opts: { durable?: boolean } = {}): Promise<void> {
    return this.#exclusive(queueId, async () => {
      await this.#move(queueId, from, to, opts.durable ?? true);
      // on hold or released: the copy follows, so that a takeover does not deliver a held message
      if ((to === 'hold') !== (from === 'hold')) this.#replica?.held(queueId, to === 'hold');
    });
  }

  async #move(queueId: string, from: QueueState, to: QueueState, durable = true): Promise<void> {
    if (from === to) return;
    await this.#io.rename(this.#path(queueId, from), this.#path(queueId, to));
    if (durable) await Promise.all([this.#dirSyncer.sync(this.#folder(to)), this.#dirSyncer.sync(this.#folder(from))]);
  }

  /**
   * Delete a finished message; resolves when the unlink is durable (`durable: false`: not
   * waited for — for a removal whose loss in a crash only brings the message back).
   */
  remove(queueId: string, state: QueueState, opts: { durable?: boolean } = {}): Promise<void> {
    return this.#exclusive(queueId, async () => {
      await this.#io.unlink(this.#path(queueId, state));
      if (opts.durable ?? true) await this.#dirSyncer.sync(this.#folder(state));
      this.#replica?.removed(queueId);
    });
  }

  /** Move a damaged file to corrupt/ and warn; never deletes. */
  quarantine(queueId: string, state: QueueState, reason: string): Promise<void> {
    return this.#exclusive(queueId, async () => {
      // XXX: a file of the same name already in corrupt/ would be replaced; ids are unique, so
      // this needs the same message quarantined twice, which recover() never does.
      await this.#move(queueId, state, 'corrupt');
      this.#warn('damaged queue file moved to corrupt/', { queueId, from: state, reason, path: this.#path(queueId, 'corrupt') });
    });
  }

  /**
   * Record a deferred message's next attempt time as its file's modification time (as Postfix
   * does), so that select() can tell whether it is due without reading it. Not made durable: a
   * time lost in a crash only makes the message due earlier (its file says when it really is).
   */
  setDueTime(queueId: string, at: number): Promise<void> {
    return this.#exclusive(queueId, async () => {
      const t = new Date(at);
      await fsp.utimes(this.#path(queueId, 'deferred'), t, t);
    });
  }

  /** setDueTime(at) for every message in deferred/ that `known` does not know (a flush); returns how many. */
  async makeDue(at: number, known: (queueId: string) => boolean): Promise<number> {
    let n = 0;
    for await (const d of await fsp.opendir(this.#folder('deferred'), { bufferSize: 256 })) {
      if (!isSafeQueueId(d.name) || known(d.name)) continue;
      try {
        await this.setDueTime(d.name, at);
        n++;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err; // moved or removed since it was listed
      }
    }
    return n;
  }

  /**
   * Choose, without reading them, at most `room` queue files of `states` that `known` does not
   * know, earliest due first (ties by queue id, i.e. arrival): a file in incoming/ or active/ is
   * due at its arrival, one in deferred/ at its modification time (setDueTime), one in hold/
   * never (after all others). Files due later than `dueBy` are left out. Only the chosen ones and
   * the names of one folder are held in memory. Returns how many were left out per state and the
   * earliest due time among those left out (hold/ excepted).
   * `found`: files are handed to it in small batches as they are listed, for as long as all the
   * files seen so far fit in `room` (a takeover's secondary starts delivering while the scan
   * goes on); only once a folder turns out to hold more does the choice by due time apply, to
   * the rest, and `chosen` holds what that choice kept (not what was handed over).
   */
  async select(opts: { states: readonly QueueState[]; room: number; known: (queueId: string) => boolean; dueBy?: number; warnStrays?: boolean; stop?: () => boolean; found?: (files: SelectedFile[]) => Promise<void> }): Promise<{ chosen: SelectedFile[]; leftOut: Partial<Record<QueueState, number>>; nextDue?: number }> {
    const dueBy = opts.dueBy ?? Infinity;
    let room = Math.max(0, opts.room);
    /** Files seen so far; while they all fit in the room, each batch goes to `found` at once. */
    let seen = 0;
    const leftOut: Partial<Record<QueueState, number>> = {};
    let nextDue: number | undefined;
    let chosen: SelectedFile[] = [];
    const order = (a: SelectedFile, b: SelectedFile): number => a.due - b.due || (a.queueId < b.queueId ? -1 : a.queueId > b.queueId ? 1 : 0);
    const drop = (f: SelectedFile): void => {
      leftOut[f.state] = (leftOut[f.state] ?? 0) + 1;
      if (f.state !== 'hold' && (nextDue === undefined || f.due < nextDue)) nextDue = f.due;
    };
    const offer = (f: SelectedFile): void => {
      if (f.due > dueBy) return drop(f);
      chosen.push(f);
      // keep the `room` earliest; sorting in batches keeps this O(n log room)
      if (chosen.length >= 2 * room + 1024) {
        chosen.sort(order);
        for (const f2 of chosen.splice(room)) drop(f2);
      }
    };
    const take = async (state: QueueState, names: string[]): Promise<void> => {
      const files: SelectedFile[] = [];
      if (state !== 'deferred') {
        for (const queueId of names) files.push({ queueId, state, due: state === 'hold' ? Infinity : parseQueueId(queueId)?.arrivedAt ?? 0 });
      } else {
        const times = await mapLimit(names, STAT_CONCURRENCY, async (queueId) => {
          try {
            return (await this.#io.stat(this.#path(queueId, state))).mtimeMs;
          } catch (err) {
            if (isErrno(err, 'ENOENT')) return undefined; // moved or removed since it was listed
            throw err;
          }
        });
        // rounded: a time set in ms comes back from the file system as, say, …279.9999
        times.forEach((t, j) => { if (t !== undefined) files.push({ queueId: names[j], state, due: Math.round(t) }); });
      }
      seen += files.length;
      if (opts.found && seen <= opts.room) {
        const now = files.filter((f) => f.due <= dueBy);
        for (const f of files) if (f.due > dueBy) drop(f);
        room -= now.length;
        if (now.length > 0) await opts.found(now.sort(order));
      } else for (const f of files) offer(f);
    };
    for (const state of opts.states) {
      // streamed (opendir), not readdir: a folder of a million names is never one array
      let batch: string[] = [];
      for await (const d of await fsp.opendir(this.#folder(state), { bufferSize: 256 })) {
        if (opts.stop?.()) break;
        if (!isSafeQueueId(d.name)) {
          if (opts.warnStrays && !d.name.startsWith('.')) this.#warn('unexpected file in a spool folder, left alone', { path: join(this.#folder(state), d.name) });
          continue;
        }
        if (opts.known(d.name)) continue;
        batch.push(d.name);
        if (batch.length >= (opts.found && seen < opts.room ? FOUND_BATCH : 1024)) {
          await take(state, batch);
          batch = [];
        }
      }
      await take(state, batch);
    }
    chosen.sort(order);
    if (chosen.length > room) {
      for (const f of chosen.slice(room)) drop(f);
      chosen = chosen.slice(0, room);
    }
    return { chosen, leftOut, ...(nextDue !== undefined ? { nextDue } : {}) };
  }

  /** The queue ids in a state folder, streamed (opendir: a folder of a million names is never one array). */
  async *names(state: QueueState): AsyncGenerator<string> {
    for await (const d of await fsp.opendir(this.#folder(state), { bufferSize: 256 })) {
      if (isSafeQueueId(d.name)) yield d.name;
    }
  }

  /** Names in a state folder that can be queue ids, and the others (strays). */
  async #names(state: QueueState): Promise<{ ids: string[]; strays: string[] }> {
    const names = (await this.#io.readdir(this.#folder(state))).sort();
    const ids: string[] = [];
    const strays: string[] = [];
    for (const name of names) {
      if (isSafeQueueId(name)) ids.push(name);
      else if (!name.startsWith('.')) strays.push(name);
    }
    return { ids, strays };
  }

  /** Entries of one state (or all states), sorted by queue id within a state. */
  async list(state?: QueueState): Promise<QueueEntry[]> {
    const states = state ? [state] : QUEUE_STATES;
    const out: QueueEntry[] = [];
    for (const s of states) {
      const { ids } = await this.#names(s);
      const entries = await mapLimit(ids, STAT_CONCURRENCY, async (queueId) => {
        try {
          const st = await this.#io.stat(this.#path(queueId, s));
          return { queueId, state: s, mtimeMs: st.mtimeMs, size: st.size };
        } catch (err) {
          if (isErrno(err, 'ENOENT')) return undefined; // moved or removed since readdir
          throw err;
        }
      });
      for (const e of entries) if (e) out.push(e);
    }
    return out;
  }

  /** The state folder holding this queue id, if any. */
  async find(queueId: string): Promise<QueueState | undefined> {
    for (const state of QUEUE_STATES) {
      try {
        await this.#io.stat(this.#path(queueId, state));
        return state;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    return undefined;
  }

  /**
   * Startup, first step: delete embryonic tmp/ files (never acknowledged). Must run before the
   * node accepts mail again (a new message's temporary file would be deleted too).
   */
  async cleanTmp(): Promise<number> {
    let removed = 0;
    for (const name of await this.#io.readdir(this.#folder('tmp'))) {
      try {
        await this.#io.unlink(join(this.#folder('tmp'), name));
        removed++;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    return removed;
  }

  /**
   * Startup, second step: verify every file in incoming/, active/, deferred/ and hold/, move
   * damaged ones to corrupt/, and hand each good one to `onEntry` as soon as it is checked, so
   * that delivery can start while a large queue is still being scanned. Stops early when
   * `stop()` returns true. A file may be reported twice if it moves between folders during the
   * scan (the caller ignores ids it knows); files that vanish during the scan are skipped, and
   * files that cannot be read are reported in `unreadable` and left alone.
   * XXX: every message is read whole to check its checksums.
   */
  async scan(onEntry: (entry: RecoveredEntry) => void, stop: () => boolean = () => false): Promise<{ found: number; quarantined: string[]; unreadable: string[] }> {
    const quarantined: string[] = [];
    const unreadable: string[] = [];
    let found = 0;
    for (const state of LIVE_STATES) {
      if (stop()) break;
      const { ids, strays } = await this.#names(state);
      for (const name of strays) {
        this.#warn('unexpected file in a spool folder, left alone', { path: join(this.#folder(state), name) });
      }
      await mapLimit(ids, RECOVER_CONCURRENCY, async (queueId) => {
        if (stop()) return;
        try {
          const qf = await this.read(queueId, state);
          found++;
          onEntry({ queueId, state, size: qf.size, ...(qf.deferral ? { nextAttemptAt: qf.deferral.nextAttemptAt } : {}) });
        } catch (err) {
          if (isErrno(err, 'ENOENT')) return; // moved or delivered meanwhile
          try {
            if (!(err instanceof CorruptQueueFileError)) throw err;
            await this.quarantine(queueId, state, err.reason);
            quarantined.push(queueId);
          } catch (e) {
            // one file that cannot be read (EACCES, EIO) must not hide the rest of the queue
            this.#warn('queue file cannot be read; left where it is until the next start', { queueId, state, err: String(e) });
            unreadable.push(queueId);
          }
        }
      });
    }
    return { found, quarantined, unreadable };
  }

  /** Both steps at once, for a spool nobody else uses: the good entries, the damaged ids. */
  async recover(): Promise<{ entries: RecoveredEntry[]; quarantined: string[]; removedTmp: number }> {
    const removedTmp = await this.cleanTmp();
    const entries: RecoveredEntry[] = [];
    const { quarantined } = await this.scan((e) => entries.push(e));
    return { entries, quarantined, removedTmp };
  }

  /** Number of files in each state folder. */
  async counts(): Promise<Record<QueueState, number>> {
    const counts = {} as Record<QueueState, number>;
    for (const state of QUEUE_STATES) counts[state] = (await this.#names(state)).ids.length;
    return counts;
  }
}

/** Reject a malformed status record before it is made durable (a bug in the caller). */
function assertStatusRecord(record: StatusRecord): void {
  const ok = record.type === 'deferral'
    || ((record.type === 'delivered' || record.type === 'failed' || record.type === 'expired') && Number.isInteger(record.index) && record.index >= 0);
  if (!ok) throw new Error(`not a status record: ${JSON.stringify(record)}`);
}
