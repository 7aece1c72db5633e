/**
 * qmgr/active-queue.ts — the bounded active queue: which queued messages the queue manager
 * holds in memory (an Entry each, at most queue.active_message_limit) and which wait on disk
 * only, and the walks of the spool that read them in as room frees up (the start-up scan is
 * the first walk; afterwards a walk runs when memory falls to half the limit, when the earliest
 * message on disk is due — at most once per queue.min_backoff — and when new mail finds memory
 * full of messages that wait). A walk first puts back on disk the messages in memory that wait
 * (deferred and not due, held: their files say so), then reads in incoming/ and active/ oldest
 * first and the due messages of deferred/ earliest due first. After the start-up scan, the
 * envelopes of the messages left on disk are read into the envelope index (fillIndex).
 *
 * Only envelopes and status records are read, never a message body. A damaged file goes to
 * corrupt/ (a `corrupt` tracking line); one that cannot be read (EACCES, EIO) is logged and left
 * where it is. Scheduling is the queue manager's: a message read in is handed to it (adopt), and
 * it says what is under way (working) and cancels a retry timer when a message leaves memory.
 *
 * Exports ActiveQueue, Entry and WalkResult. Reads config keys: queue.active_message_limit,
 * queue.min_backoff.
 */
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import { CorruptQueueFileError, type Spool, type SelectedFile } from '../spool/index.ts';
import type { QueueState, Envelope } from '../spool/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { isErrno } from '../util/errno.ts';
import { NoSuchMessageError } from '../util/errors.ts';
import { indexedFromFile, type EnvelopeIndex } from './envelope-index.ts';

/** Queue files read at once when messages on disk are brought into memory. */
const READ_CONCURRENCY = 8;

/** Let the event loop poll for I/O before going on. */
const yieldToIo = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Queue files whose envelope is read at once while the index is filled at start-up. */
const INDEX_CONCURRENCY = 16;

/** In-memory view of one queued message. */
export interface Entry {
  state: QueueState;
  /** Queue file size, for the memory bound on messages being worked on. */
  size: number;
  /** Envelope and message as just committed by the receiver: the first attempt needs no read. */
  fresh?: { envelope: Envelope; message: Buffer };
  busy: boolean;
  /** When it is due again (its time in the retry schedule, while it has one). */
  nextAttemptAt?: number;
  /** Operator action requested while an attempt was running. */
  after?: 'hold' | 'delete' | 'flush' | 'requeue';
  /** In the ready queue (so that it is not put there twice). */
  queued?: boolean;
  /** Flushed by the operator: the next attempt tries destinations that were unreachable a moment ago. */
  flushed?: boolean;
  /** Waiting (queued) in this destination's backlog rather than in the ready queue. */
  waitingFor?: string;
}

/** What a walk of the spool found (the start-up scan is the first walk). */
export interface WalkResult {
  queued: number;
  quarantined: number;
  unreadable: number;
}

export interface ActiveQueueDeps {
  config: { queue: Pick<TandemConfig['queue'], 'active_message_limit' | 'min_backoff'> };
  spool: Spool;
  /** The queue manager's envelope index: the walks index what they read, fillIndex the rest. */
  index: EnvelopeIndex;
  tracking: TrackingLog;
  logger: Logger;
  now: () => number;
  /** The queue manager's side. */
  host: {
    stopping(): boolean;
    /** Messages in memory being worked on or waiting for an attempt (the others wait for their time, or are held). */
    working(): number;
    /** A message a walk read in (not in memory): ready now, or at `nextAttemptAt`. */
    adopt(queueId: string, state: QueueState, size: number, nextAttemptAt?: number): void;
    /** A message leaves memory: its retry timer goes (its file keeps its due time). */
    cancelRetry(queueId: string): void;
  };
}

export class ActiveQueue {
  private readonly entries = new Map<string, Entry>();
  /** Removed while the index is being filled (so that a file read just before is not indexed). */
  private unindexed?: Set<string>;
  /** The start-up scan (settles when it ends, however it ends). */
  private scanning: Promise<void> = Promise.resolve();
  /**
   * At most this many messages in `entries` (queue.active_message_limit); the others stay on
   * disk (`onDisk`) and a walk of the spool brings them in as room frees up.
   */
  private readonly memoryLimit: number;
  /** Queued messages are on disk and not in `entries` (the memory bound was reached). */
  private onDisk = false;
  /** Those messages by state, as the last walk counted them (for counts()). */
  private diskOnly: Partial<Record<QueueState, number>> = {};
  /** Held messages on disk only (not read in at start-up, or put back on disk by a walk). */
  private heldOnDisk = 0;
  /** The earliest due time among them, as the last walk saw it. */
  private diskDue?: number;
  private walking?: Promise<WalkResult>;
  private walkAgain = false;
  /** A message was left on disk (or put back) since the walk under way began. */
  private leftSinceWalk = false;
  private walkTimer?: NodeJS.Timeout;
  private lastWalkAt = 0;
  private started = false;
  private readonly now: () => number;
  private readonly host: ActiveQueueDeps['host'];

  constructor(private readonly deps: ActiveQueueDeps) {
    this.now = deps.now;
    this.host = deps.host;
    this.memoryLimit = deps.config.queue.active_message_limit;
  }

  /** The message's entry, if it is in memory. */
  get(queueId: string): Entry | undefined {
    return this.entries.get(queueId);
  }

  has(queueId: string): boolean {
    return this.entries.has(queueId);
  }

  /** A message comes into memory (received, requeued, or read in for an operator's action). */
  add(queueId: string, e: Entry): void {
    this.entries.set(queueId, e);
  }

  /** The messages in memory. */
  all(): IterableIterator<[string, Entry]> {
    return this.entries.entries();
  }

  /** Queued messages wait on disk only (memory was full). */
  get someOnDisk(): boolean {
    return this.onDisk;
  }

  /**
   * The start-up scan (QueueManager.start): the first walk, then, with `fill`, the envelopes of
   * the messages it left on disk into the index (`indexed`: how many it holds then).
   */
  scan(fill: boolean): Promise<WalkResult & { indexed: number }> {
    this.started = true;
    this.unindexed = fill ? new Set() : undefined;
    const scanned = this.runWalk(true).then(async (r) => ({ ...r, indexed: fill ? await this.fillIndex() : this.deps.index.size }));
    this.scanning = scanned.then(() => undefined, () => undefined);
    return scanned;
  }

  /** Walk the spool for a message nobody announced (QueueManager.rescan); before scan(), the scan finds it. */
  rescan(): void {
    if (!this.started) return;
    this.onDisk = true;
    this.requestWalk();
  }

  /** No more walks; wait for the scan and the walk under way to end. */
  async stop(): Promise<void> {
    clearTimeout(this.walkTimer);
    await this.scanning;
    await this.walking?.catch(() => undefined);
  }

  /** Messages by state: exact from the index once it is complete, else memory + the last walk's count of those on disk. */
  counts(): Record<string, number> {
    if (this.deps.index.complete) return this.deps.index.counts();
    const c: Record<string, number> = { incoming: 0, active: 0, deferred: 0, hold: 0 };
    for (const e of this.entries.values()) c[e.state] = (c[e.state] ?? 0) + 1;
    // messages on disk only (memory full), as the last walk of the spool counted them
    if (this.onDisk) for (const [state, n] of Object.entries(this.diskOnly)) c[state] = (c[state] ?? 0) + n;
    c.hold += this.heldOnDisk;
    return c;
  }

  /**
   * The message's entry; a message on disk only (memory full) is read in for the operator's
   * action, beyond the memory bound (it leaves memory again when done with, or at the next walk),
   * and handed to the queue manager as a walk's would be (adopt). NoSuchMessageError when it is
   * not queued.
   */
  async requireEntry(queueId: string): Promise<Entry> {
    const known = this.entries.get(queueId);
    if (known) return known;
    const state = await this.deps.spool.find(queueId);
    if (!state || state === 'corrupt') throw new NoSuchMessageError(queueId);
    const info = await this.deps.spool.readInfo(queueId, state).catch((err) => {
      if (isErrno(err, 'ENOENT')) throw new NoSuchMessageError(queueId);
      throw err;
    });
    const again = this.entries.get(queueId); // brought in meanwhile
    if (again) return again;
    this.deps.index.set(queueId, indexedFromFile(info, state));
    // one fewer on disk
    if (state === 'hold') this.heldOnDisk = Math.max(0, this.heldOnDisk - 1);
    else if (this.diskOnly[state]) this.diskOnly[state]!--;
    this.host.adopt(queueId, state, info.size, state === 'deferred' ? info.deferral?.nextAttemptAt : undefined);
    return this.entries.get(queueId)!;
  }

  /**
   * A flush of everything: the deferred messages on disk become due now (their files' times)
   * and walks bring them in as room frees up. Returns how many, as the last walk counted them.
   */
  flushDisk(): number {
    if (!this.onDisk) return 0;
    const n = this.diskOnly.deferred ?? 0;
    const known = (id: string): boolean => this.entries.has(id);
    this.deps.spool.makeDue(this.now(), known).then(() => {
      this.diskDue = this.now();
      this.requestWalk();
    }, (err) => this.deps.logger.error({ err: String(err) }, 'flush of the messages on disk failed'));
    return n;
  }

  /** Room for one more message in memory. */
  hasRoom(): boolean {
    return this.entries.size < this.memoryLimit;
  }

  /** A message stays on disk for want of room: walk once some is free. */
  leftOnDisk(state: QueueState): void {
    this.onDisk = true;
    this.leftSinceWalk = true;
    this.diskDue = Math.min(this.diskDue ?? Infinity, this.now()); // due now
    this.diskOnly[state] = (this.diskOnly[state] ?? 0) + 1;
    // messages waiting in memory (deferred, held) can make room: a walk puts them back on disk
    if (this.entries.size - this.host.working() > 0) this.requestWalk();
  }

  /**
   * A message left memory: if messages due now wait on disk and enough room is free, walk (those
   * due later are walked in by the timer, so that a large deferred backlog on disk is not listed
   * again at every delivery).
   */
  forget(id: string): void {
    this.entries.delete(id);
    if (this.onDisk && this.entries.size <= this.memoryLimit / 2 && (this.diskDue ?? 0) <= this.now()) this.requestWalk();
  }

  /**
   * While messages wait on disk, a deferred message that waits for its retry time need not stay
   * in memory: its file says when it is due (Spool.setDueTime), and a walk reads it back then.
   * Nor does a held one: an operator's action reads it in again.
   */
  private evictable(id: string, e: Entry): boolean {
    if (this.entries.get(id) !== e || e.busy || e.queued || e.after || e.flushed) return false;
    return e.state === 'hold' || (e.state === 'deferred' && e.nextAttemptAt !== undefined && e.nextAttemptAt > this.now());
  }

  /** Put a message back on disk (evictable() said it may go). */
  private evict(id: string, e: Entry): void {
    this.host.cancelRetry(id);
    this.entries.delete(id);
    if (e.state === 'hold') this.heldOnDisk++;
  }

  /** An attempt ended with nothing asked of the message: back on disk if messages wait there and it may go (evictable()). */
  maybeEvict(id: string, e: Entry): void {
    if (!this.onDisk || !this.evictable(id, e)) return;
    this.evict(id, e);
    if (e.state === 'deferred') {
      this.leftSinceWalk = true;
      this.diskOnly.deferred = (this.diskOnly.deferred ?? 0) + 1;
      if (this.diskDue === undefined || e.nextAttemptAt! < this.diskDue) this.diskDue = e.nextAttemptAt;
    }
    this.forget(id);
    this.armWalkTimer();
  }

  /** Walk the spool now, or again when the walk under way ends. */
  private requestWalk(): void {
    if (this.host.stopping()) return;
    if (this.walking) {
      this.walkAgain = true;
      return;
    }
    this.runWalk(false).catch((err) => {
      this.deps.logger.error({ err: String(err?.stack ?? err) }, 'walk of the spool failed; will try again');
      this.onDisk = true;
      this.armWalkTimer();
    });
  }

  private runWalk(startup: boolean): Promise<WalkResult> {
    clearTimeout(this.walkTimer);
    this.walkTimer = undefined;
    const p = this.walk(startup).finally(() => {
      this.walking = undefined;
      if (this.walkAgain && this.onDisk) {
        this.walkAgain = false;
        this.requestWalk();
      } else this.armWalkTimer();
    });
    this.walking = p;
    return p;
  }

  /**
   * While messages wait on disk, walk again when the earliest of them is due, at most once per
   * queue.min_backoff (as Postfix's queue_run_delay): a deferred message on disk is tried up to
   * that much after its retry time.
   */
  private armWalkTimer(): void {
    if (this.host.stopping() || !this.onDisk || this.walking || this.walkTimer) return;
    const at = Math.max(this.diskDue ?? 0, this.lastWalkAt + this.deps.config.queue.min_backoff);
    this.walkTimer = setTimeout(() => {
      this.walkTimer = undefined;
      this.requestWalk();
    }, Math.min(Math.max(0, at - this.now()), 2 ** 31 - 1));
    this.walkTimer.unref?.();
  }

  /**
   * Bring messages on disk into memory, up to queue.active_message_limit: incoming/ and active/
   * first (by arrival), then deferred/ (by due time), then (at start-up) hold/. At start-up every
   * deferred message that fits comes in with its retry time; afterwards only those due (a walk
   * first puts back on disk the deferred messages in memory that are not due yet). Each is
   * read envelope only and checked; a damaged one goes to corrupt/.
   */
  private async walk(startup: boolean): Promise<WalkResult> {
    const spool = this.deps.spool;
    const result: WalkResult = { queued: 0, quarantined: 0, unreadable: 0 };
    const now = this.now();
    this.lastWalkAt = now;
    if (!startup) for (const [id, e] of this.entries) if (this.evictable(id, e)) this.evict(id, e);
    this.leftSinceWalk = false;
    let leftOver = false;
    let diskDue: number | undefined;
    const diskOnly: Partial<Record<QueueState, number>> = {};
    const phases: QueueState[][] = startup ? [['incoming', 'active'], ['deferred'], ['hold']] : [['incoming', 'active'], ['deferred']];
    for (const states of phases) {
      if (this.host.stopping()) break;
      // at start-up the files are read in as they are listed (a takeover delivers while it scans)
      const { chosen, leftOut, nextDue } = await spool.select({
        states, room: this.memoryLimit - this.entries.size, known: (id) => this.entries.has(id),
        ...(startup ? { warnStrays: true, found: (files) => this.readIn(files, startup, result) } : { dueBy: now }), stop: () => this.host.stopping(),
      });
      for (const [state, n] of Object.entries(leftOut) as Array<[QueueState, number]>) {
        if (state === 'hold') this.heldOnDisk += n;
        else {
          diskOnly[state] = (diskOnly[state] ?? 0) + n;
          leftOver = true;
        }
      }
      if (nextDue !== undefined && (diskDue === undefined || nextDue < diskDue)) diskDue = nextDue;
      await this.readIn(chosen, startup, result);
    }
    // still on disk: what this walk left there, and what was left there while it ran
    this.onDisk = leftOver || this.leftSinceWalk || this.host.stopping();
    if (!this.leftSinceWalk) this.diskDue = diskDue;
    else if (diskDue !== undefined && (this.diskDue === undefined || diskDue < this.diskDue)) this.diskDue = diskDue;
    this.diskOnly = diskOnly;
    return result;
  }

  /** Read the envelopes of chosen files and adopt them (a damaged one goes to corrupt/). */
  private async readIn(chosen: SelectedFile[], startup: boolean, result: WalkResult): Promise<void> {
    const spool = this.deps.spool;
    for (let i = 0; i < chosen.length && !this.host.stopping(); i += READ_CONCURRENCY) {
      // READ_CONCURRENCY files at a time, the event loop polled between batches: the deliveries
      // a walk starts (a takeover's first ones) get their turns instead of waiting behind the
      // reading and parsing of 64 files at a time (bench/failover.ts, fast profile, medians of
      // 6: first delivery 102 ms after the secondary is ready, against 140 ms)
      if (i > 0) await yieldToIo();
      const batch = chosen.slice(i, i + READ_CONCURRENCY);
      const infos = await Promise.all(batch.map(async (f) => {
        try {
          return await spool.readInfo(f.queueId, f.state);
        } catch (err) {
          return err as Error;
        }
      }));
      for (let j = 0; j < batch.length; j++) {
        const { queueId, state } = batch[j];
        const info = infos[j];
        if (!(info instanceof Error)) {
          if (!this.entries.has(queueId)) {
            // indexed first: an attempt started at once predicts its destination from the index
            this.deps.index.set(queueId, indexedFromFile(info, state));
            this.host.adopt(queueId, state, info.size, startup ? info.deferral?.nextAttemptAt : undefined);
            result.queued++;
          }
        } else if (isErrno(info, 'ENOENT')) {
          // moved or delivered meanwhile
        } else if (info instanceof CorruptQueueFileError && !this.entries.has(queueId)) {
          try {
            await spool.quarantine(queueId, state, info.reason);
            this.unindex(queueId);
            this.deps.tracking.record({ event: 'corrupt', queueId, reply: info.reason });
            result.quarantined++;
          } catch (err) {
            this.unreadable(queueId, state, err, result);
          }
        } else this.unreadable(queueId, state, info, result);
      }
    }
  }

  /**
   * Read into the index the envelope of every queued file it does not hold yet (those the
   * start-up walk left on disk), folder by folder, names streamed; then it is complete.
   * Returns how many messages it holds.
   */
  private async fillIndex(): Promise<number> {
    const spool = this.deps.spool;
    for (const state of ['incoming', 'active', 'deferred', 'hold'] as const) {
      let batch: string[] = [];
      const read = async (): Promise<void> => {
        const ids = batch;
        batch = [];
        let i = 0;
        await Promise.all(Array.from({ length: INDEX_CONCURRENCY }, async () => {
          while (i < ids.length && !this.host.stopping()) {
            const id = ids[i++];
            try {
              const info = await spool.readInfo(id, state);
              // changed meanwhile: what the manager recorded is newer than what was read
              if (!this.deps.index.has(id) && !this.unindexed?.has(id)) this.deps.index.set(id, indexedFromFile(info, state));
            } catch {
              // moved or removed meanwhile (the manager indexed it), or damaged (a walk quarantines it)
            }
          }
        }));
      };
      for await (const id of spool.names(state)) {
        if (this.host.stopping()) return this.deps.index.size;
        if (this.deps.index.has(id)) continue;
        batch.push(id);
        if (batch.length >= 1024) await read();
      }
      await read();
    }
    if (this.host.stopping()) return this.deps.index.size;
    this.unindexed = undefined;
    this.deps.index.complete = true;
    return this.deps.index.size;
  }

  /** A message left the queue (delivered, deleted, quarantined, requeued under a new id). */
  unindex(queueId: string): void {
    this.deps.index.delete(queueId);
    this.unindexed?.add(queueId);
  }

  /** One file that cannot be read (EACCES, EIO) must not hide the rest of the queue. */
  private unreadable(queueId: string, state: QueueState, err: unknown, result: WalkResult): void {
    this.deps.logger.warn({ queueId, state, err: String(err) }, 'queue file cannot be read; left where it is until the next start');
    result.unreadable++;
  }
}
