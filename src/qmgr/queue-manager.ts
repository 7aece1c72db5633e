/**
 * qmgr/queue-manager.ts — schedules deliveries from one spool.
 *
 * Life of a message: the receiver commits it to incoming/ and calls enqueue(); the manager
 * moves it to active/, reads it, routes each pending recipient, groups them by next hop and
 * hands each group to a channel under two limits (queue.destination_concurrency per next hop,
 * queue.total_concurrency overall). Results are appended to the queue file (fdatasync) before
 * anything else happens, so a restart — or a takeover by another node — re-sends only to
 * recipients not yet done (at-least-once: a crash between the next hop's 250 and that append
 * re-sends those recipients). Failed recipients get a DSN (RFC 3464) to the sender, never to
 * the null sender; the DSN is committed to the spool before the failure is recorded. When
 * recipients remain, the message goes to deferred/ with exponential backoff; past
 * queue.max_lifetime the rest expire with a DSN. A message with nothing pending is removed
 * (unlink + folder fsync). Operator actions (hold, delete, flush) on a message whose attempt
 * is in progress take effect when it ends (the call answers "pending").
 *
 * The manager needs only a Spool: a secondary process over a dead node's spool runs the same
 * class with no receiver.
 * Reads config keys: queue.*, node.id, node.hostname (QueueManagerConfig).
 */
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import { CorruptQueueFileError, READ_WHOLE_LIMIT, type Spool, type QueueFile, type DeliveryFile, type SelectedFile } from '../spool/index.ts';
import { bufferSource } from '../message/source.ts';
import type { QueueState, Envelope } from '../spool/types.ts';
import { routeKey, type Router, type Route } from '../router/types.ts';
import type { Channel, DeliveryRecipient } from '../channels/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { NoSuchMessageError, TempLookupError } from '../util/errors.ts';
import { isErrno } from '../util/errno.ts';
import { Semaphore } from '../util/semaphore.ts';
import { Fifo } from '../util/fifo.ts';
import { RetrySchedule } from './retry-schedule.ts';
import { Destinations } from './destinations.ts';
import { OutcomeRecorder, type Outcome } from './outcomes.ts';
import { applyQueueAction } from './queue-actions.ts';
import { requeueMessage } from './requeue.ts';
import { EnvelopeIndex, type IndexedMessage } from './envelope-index.ts';

/** The part of the configuration the queue manager reads. */
export interface QueueManagerConfig {
  queue: TandemConfig['queue'];
  node: Pick<TandemConfig['node'], 'id' | 'hostname'>;
}

export interface QueueManagerDeps {
  config: QueueManagerConfig;
  spool: Spool;
  router: Router;
  channelFor(route: Route): Channel;
  tracking: TrackingLog;
  logger: Logger;
  metrics?: QueueMetrics;
  now?: () => number;
  random?: () => number;
  /**
   * Checked before every delivery starts (cluster fencing: false while this process must not
   * deliver from the spool). Deliveries not started stay ready and start when it is true again
   * (looked at every GATE_POLL_MS; resume() makes it at once).
   */
  mayDeliver?: () => boolean;
}

export interface QueueMetrics {
  delivery(outcome: 'delivered' | 'deferred' | 'failed' | 'expired', channel: string): void;
  transaction(channel: string, seconds: number): void;
  dsn(kind: string): void;
}

/** The groups of one attempt waiting for a slot (the attempt is parked while any waits). */
interface Parking {
  parked: number;
}

/**
 * A slot of a message's destination taken before its file is read (QueueManager.reserve): the
 * group for that next hop delivers in it (`used`); otherwise the attempt gives it back.
 */
interface Reservation {
  key: string;
  sem: Semaphore;
  used: boolean;
}

/** In-memory view of one queued message. */
interface Entry {
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

export interface MessageSummary {
  queueId: string;
  state: QueueState;
  busy: boolean;
  nextAttemptAt?: number;
}

/** `via` of the outcomes of groups not started because the node stops or may not deliver. */
const NOT_STARTED_VIA = 'not-started';

/** While mayDeliver() is false, how often the manager looks whether it is true again. */
const GATE_POLL_MS = 250;

/** A message whose file was not where expected is tried again this soon. */
const RETRY_AFTER_ERROR_MS = 1000;

/** Ready messages beyond this many are not kept in memory (bounds memory under a backlog). */
const FRESH_BACKLOG_LIMIT = 1000;

/** Queue files read at once when messages on disk are brought into memory. */
const READ_CONCURRENCY = 8;

/** Queue files whose envelope is read at once while the index is filled at start-up. */
const INDEX_CONCURRENCY = 16;

/** What the envelope index holds of a queue file (its pending recipients, its retry time). */
function indexed(info: Omit<QueueFile, 'message'>, state: QueueState): Omit<IndexedMessage, 'queueId'> {
  const env = info.envelope;
  return {
    state, sender: env.sender, recipients: info.pending.map((i) => env.recipients[i].address), arrivedAt: env.arrivedAt, size: info.size,
    ...(info.deferral ? { nextAttemptAt: info.deferral.nextAttemptAt, lastReply: info.deferral.lastReply } : {}),
  };
}

/** What a walk of the spool found (the start-up scan is the first walk). */
interface WalkResult {
  queued: number;
  quarantined: number;
  unreadable: number;
}

export class QueueManager {
  /**
   * Every queued message's envelope (in memory and on disk alike), for the operator's filters,
   * lists and counts: filled by the start-up scan (complete once it is through), kept current
   * by every change the manager makes.
   */
  readonly index = new EnvelopeIndex();
  /** Removed while the index is being filled (so that a file read just before is not indexed). */
  private unindexed?: Set<string>;
  private entries = new Map<string, Entry>();
  private ready = new Fifo<string>();
  /** Per next hop: delivery slots, the backlog of messages waiting unread (see reserve()), the dead-destination memory. */
  private readonly destinations: Destinations;
  /** Writes an attempt's outcomes: status records, tracking lines, DSNs. */
  private readonly outcomes: OutcomeRecorder;
  /** Bytes of the messages being worked on (bounded by queue.max_active_bytes). */
  private activeBytes = 0;
  /** Attempts counted against the active limit (not those parked waiting for a slot). */
  private running = 0;
  /** Attempts started and not finished, parked or not (stop() waits for them). */
  private inProgress = 0;
  private stopping = false;
  private gatePoll?: NodeJS.Timeout;
  /** The start-up scan (settles when it ends, however it ends). */
  private scanning: Promise<void> = Promise.resolve();
  private idleWaiters: Array<() => void> = [];
  private readonly total: Semaphore;
  private readonly now: () => number;
  /** How many messages may be read into memory and worked on at once. */
  private readonly activeLimit: number;
  /** Retry times of deferred messages, on one timer (not one per message). */
  private readonly retries: RetrySchedule<string>;
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

  constructor(private readonly deps: QueueManagerDeps) {
    this.total = new Semaphore(deps.config.queue.total_concurrency);
    this.now = deps.now ?? Date.now;
    this.destinations = new Destinations(deps.config.queue, this.now);
    this.outcomes = new OutcomeRecorder({ ...deps, now: this.now, enqueue: (queueId, size, fresh) => this.enqueue(queueId, size, fresh) });
    this.retries = new RetrySchedule(this.now, (id) => this.retryDue(id));
    this.activeLimit = Math.max(deps.config.queue.total_concurrency * 2, 50);
    this.memoryLimit = deps.config.queue.active_message_limit;
  }

  /**
   * Take over the spool: clean tmp/ (resolves then; the receiver may accept mail from here on;
   * `cleanTmp: false` when a receiver is already writing into tmp/),
   * and scan the queue in the background (`scanned` resolves at the end): the envelopes of
   * incoming/ and active/ (by arrival), then deferred/ (by due time), then hold/, up to
   * queue.active_message_limit messages in memory; the rest stays on disk and is read in as
   * room frees up (walk()). Only envelopes and status records are read, never a message body.
   * hold/ stays held; a deferred message keeps the retry time in its file. Then the envelopes
   * of the messages left on disk are read into the index (`indexed`: how many it holds then).
   * `fillIndex: false` (a takeover's secondary: nothing lists or selects its queue, and it must
   * not read a large spool twice while it delivers) leaves the index with what the walks
   * adopted; it never becomes complete, so counts stay the walks' estimate.
   */
  async start(opts: { cleanTmp?: boolean; fillIndex?: boolean } = {}): Promise<{ removedTmp: number; scanned: Promise<WalkResult & { indexed: number }> }> {
    const removedTmp = opts.cleanTmp === false ? 0 : await this.deps.spool.cleanTmp();
    this.started = true;
    const fill = opts.fillIndex !== false;
    this.unindexed = fill ? new Set() : undefined;
    const scanned = this.runWalk(true).then(async (r) => ({ ...r, indexed: fill ? await this.fillIndex() : this.index.size }));
    this.scanning = scanned.then(() => undefined, () => undefined);
    return { removedTmp, scanned };
  }

  /**
   * A message may sit in incoming/ that nobody announced: an SMTP worker died between its commit
   * and its `queued` (node/smtp-workers.ts). Walk the spool for it (after the walk under way,
   * if any). Before start() the start-up scan will find it.
   */
  rescan(): void {
    if (!this.started) return;
    this.onDisk = true;
    this.requestWalk();
  }

  /** Room for one more message in memory. */
  private hasRoom(): boolean {
    return this.entries.size < this.memoryLimit;
  }

  /** A message stays on disk for want of room: walk once some is free. */
  private leftOnDisk(state: QueueState): void {
    this.onDisk = true;
    this.leftSinceWalk = true;
    this.diskDue = Math.min(this.diskDue ?? Infinity, this.now()); // due now
    this.diskOnly[state] = (this.diskOnly[state] ?? 0) + 1;
    // messages waiting in memory (deferred, held) can make room: a walk puts them back on disk
    if (this.entries.size - this.inProgress - this.ready.length - this.destinations.backlogged > 0) this.requestWalk();
  }

  /**
   * A message left memory: if messages due now wait on disk and enough room is free, walk (those
   * due later are walked in by the timer, so that a large deferred backlog on disk is not listed
   * again at every delivery).
   */
  private forget(id: string): void {
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
    this.retries.delete(id);
    this.entries.delete(id);
    if (e.state === 'hold') this.heldOnDisk++;
  }

  private maybeEvict(id: string, e: Entry): void {
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
    if (this.stopping) return;
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
    if (this.stopping || !this.onDisk || this.walking || this.walkTimer) return;
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
      if (this.stopping) break;
      // at start-up the files are read in as they are listed (a takeover delivers while it scans)
      const { chosen, leftOut, nextDue } = await spool.select({
        states, room: this.memoryLimit - this.entries.size, known: (id) => this.entries.has(id),
        ...(startup ? { warnStrays: true, found: (files) => this.readIn(files, startup, result) } : { dueBy: now }), stop: () => this.stopping,
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
    this.onDisk = leftOver || this.leftSinceWalk || this.stopping;
    if (!this.leftSinceWalk) this.diskDue = diskDue;
    else if (diskDue !== undefined && (this.diskDue === undefined || diskDue < this.diskDue)) this.diskDue = diskDue;
    this.diskOnly = diskOnly;
    return result;
  }

  /** Read the envelopes of chosen files and adopt them (a damaged one goes to corrupt/). */
  private async readIn(chosen: SelectedFile[], startup: boolean, result: WalkResult): Promise<void> {
    const spool = this.deps.spool;
    // the first few alone when nothing is queued yet: a takeover's first delivery starts sooner
    for (let i = 0, n = result.queued === 0 ? READ_CONCURRENCY : READ_CONCURRENCY * 8; i < chosen.length && !this.stopping; i += n, n = READ_CONCURRENCY * 8) {
      const batch = chosen.slice(i, i + n);
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
            this.index.set(queueId, indexed(info, state));
            this.adopt(queueId, state, info.size, startup ? info.deferral?.nextAttemptAt : undefined);
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
          while (i < ids.length && !this.stopping) {
            const id = ids[i++];
            try {
              const info = await spool.readInfo(id, state);
              // changed meanwhile: what the manager recorded is newer than what was read
              if (!this.index.has(id) && !this.unindexed?.has(id)) this.index.set(id, indexed(info, state));
            } catch {
              // moved or removed meanwhile (the manager indexed it), or damaged (a walk quarantines it)
            }
          }
        }));
      };
      for await (const id of spool.names(state)) {
        if (this.stopping) return this.index.size;
        if (this.index.has(id)) continue;
        batch.push(id);
        if (batch.length >= 1024) await read();
      }
      await read();
    }
    if (this.stopping) return this.index.size;
    this.unindexed = undefined;
    this.index.complete = true;
    return this.index.size;
  }

  /** A message left the queue (delivered, deleted, quarantined, requeued under a new id). */
  private unindex(queueId: string): void {
    this.index.delete(queueId);
    this.unindexed?.add(queueId);
  }

  /** One file that cannot be read (EACCES, EIO) must not hide the rest of the queue. */
  private unreadable(queueId: string, state: QueueState, err: unknown, result: WalkResult): void {
    this.deps.logger.warn({ queueId, state, err: String(err) }, 'queue file cannot be read; left where it is until the next start');
    result.unreadable++;
  }

  /**
   * A message read in by a walk (unless the receiver or an operator action brought it in
   * meanwhile): ready now, or at `nextAttemptAt` (start-up: the time in its file).
   */
  private adopt(queueId: string, state: QueueState, size: number, nextAttemptAt?: number): boolean {
    if (this.entries.has(queueId)) return false;
    const entry: Entry = { state, size, busy: false };
    this.entries.set(queueId, entry);
    if (state === 'deferred' && nextAttemptAt !== undefined && nextAttemptAt > this.now()) this.schedule(queueId, entry, nextAttemptAt);
    else if (state !== 'hold') {
      this.makeReady(queueId, entry);
      this.pump();
    }
    return true;
  }

  /**
   * A message just committed to incoming/, of `size` bytes; `fresh` is what was written when
   * the committer still has it in memory (then the first attempt need not read the file).
   */
  enqueue(queueId: string, size: number, fresh?: { envelope: Envelope; message: Buffer }, envelope = fresh?.envelope): void {
    if (this.stopping) return; // picked up from incoming/ at the next start
    if (this.entries.has(queueId)) return; // the start-up scan found it first
    this.indexNew(queueId, 'incoming', size, envelope);
    if (!this.hasRoom()) return this.leftOnDisk('incoming'); // read in from incoming/ by a walk
    // keep the bytes in memory only while the backlog is short; otherwise read them back later
    const keep = fresh && this.ready.length + this.destinations.backlogged < FRESH_BACKLOG_LIMIT;
    const entry: Entry = { state: 'incoming', size, busy: false, ...(keep ? { fresh } : {}) };
    this.entries.set(queueId, entry);
    this.makeReady(queueId, entry);
    this.pump();
  }

  /**
   * A new message to be held from the start (quarantined by the receiver's sender
   * authentication): moved to hold/ before any delivery can pick it up. If the move fails it is
   * retried as any failed operation is, after queue.min_backoff.
   */
  async enqueueHeld(queueId: string, size: number, envelope?: Envelope): Promise<void> {
    if (this.stopping || this.entries.has(queueId)) return;
    this.indexNew(queueId, 'incoming', size, envelope);
    const entry: Entry = { state: 'incoming', size, busy: false };
    this.entries.set(queueId, entry);
    await this.operate(queueId, entry, () => this.moveToHold(queueId, entry));
  }

  /** Index a message just committed (its file is read when the committer did not pass its envelope). */
  private indexNew(queueId: string, state: QueueState, size: number, envelope?: Envelope): void {
    if (envelope) {
      this.index.set(queueId, { state, sender: envelope.sender, recipients: envelope.recipients.map((r) => r.address), arrivedAt: envelope.arrivedAt, size });
      return;
    }
    const read = async (): Promise<void> => {
      // an attempt may move the file between the look and the read: look again
      for (let tries = 0; tries < 3; tries++) {
        const where = await this.deps.spool.find(queueId);
        if (!where || where === 'corrupt' || this.index.has(queueId)) return;
        try {
          const info = await this.deps.spool.readInfo(queueId, where);
          if (!this.index.has(queueId)) this.index.set(queueId, indexed(info, where));
          return;
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) return;
        }
      }
    };
    read().catch(() => { /* gone meanwhile */ });
  }

  /**
   * Deliveries may start again (mayDeliver() is true again): start what is ready now rather than
   * at the next look at the gate. (Work held back by the gate is kept ready, see attempt().)
   */
  resume(): void {
    this.pump();
  }

  private delivering(): boolean {
    return !this.stopping && (this.deps.mayDeliver?.() ?? true);
  }

  /**
   * The delivery gate is shut with messages ready: look again soon, so that work held back is
   * picked up when it opens even if nobody calls resume() (a gate may reopen on its own).
   */
  private pollGate(): void {
    if (this.gatePoll) return;
    this.gatePoll = setTimeout(() => {
      this.gatePoll = undefined;
      this.pump();
    }, GATE_POLL_MS);
    this.gatePoll.unref?.();
  }

  /** Stop starting attempts; wait for those under way to be recorded. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.gatePoll);
    clearTimeout(this.walkTimer);
    this.retries.clear();
    await this.scanning;
    await this.walking?.catch(() => undefined);
    if (this.inProgress > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** An attempt or an operator's action on this message is under way. */
  isBusy(queueId: string): boolean {
    return this.entries.get(queueId)?.busy ?? false;
  }

  list(): MessageSummary[] {
    return [...this.entries].map(([queueId, e]) => ({ queueId, state: e.state, busy: e.busy, ...(e.nextAttemptAt ? { nextAttemptAt: e.nextAttemptAt } : {}) }));
  }

  /** Messages by state: exact from the index once it is complete, else memory + the last walk's count of those on disk. */
  counts(): Record<string, number> {
    if (this.index.complete) return this.index.counts();
    const c: Record<string, number> = { incoming: 0, active: 0, deferred: 0, hold: 0 };
    for (const e of this.entries.values()) c[e.state] = (c[e.state] ?? 0) + 1;
    // messages on disk only (memory full), as the last walk of the spool counted them
    if (this.onDisk) for (const [state, n] of Object.entries(this.diskOnly)) c[state] = (c[state] ?? 0) + n;
    c.hold += this.heldOnDisk;
    return c;
  }

  /**
   * Try deferred messages now (`tandem queue flush`, Postfix's `postqueue -f` / `-i ID`): every
   * one, or those of `ids`. What is flushed also forgets the dead-destination memory (a
   * destination unreachable a moment ago is tried again): all of it for a flush of everything,
   * for the flushed messages' next attempt otherwise. Held messages stay held. Returns how many.
   */
  flush(ids?: string[]): number {
    let n = 0;
    if (!ids) this.destinations.forgetDead();
    const which = ids ? ids.map((id) => [id, this.entries.get(id)] as const) : [...this.entries];
    for (const [id, e] of which) {
      if (!e && this.onDisk) {
        // on disk only (memory full): read in and tried now
        n++;
        this.requireEntry(id).then((e2) => {
          if (e2.state === 'hold') return;
          e2.flushed = true;
          if (e2.busy) e2.after ??= 'flush';
          else this.makeReady(id, e2);
          this.pump();
        }, (err) => this.deps.logger.warn({ queueId: id, err: String(err) }, 'flush: message not found'));
        continue;
      }
      if (!e || e.state === 'hold') continue;
      e.flushed = true;
      if (e.busy) {
        e.after ??= 'flush'; // try again as soon as the attempt under way ends
        n++;
      } else if (e.state === 'deferred' || ids) {
        this.makeReady(id, e);
        n++;
      }
    }
    if (!ids && this.onDisk) {
      // deferred messages on disk: due now (their files' times), then walked in as room frees up
      n += this.diskOnly.deferred ?? 0;
      const known = (id: string): boolean => this.entries.has(id);
      this.deps.spool.makeDue(this.now(), known).then(() => {
        this.diskDue = this.now();
        this.requestWalk();
      }, (err) => this.deps.logger.error({ err: String(err) }, 'flush of the messages on disk failed'));
    }
    this.pump();
    return n;
  }

  /** Put a message in the ready queue now (once), cancelling its retry timer. */
  private makeReady(id: string, e: Entry): void {
    this.retries.delete(id);
    e.nextAttemptAt = undefined;
    if (e.queued) return;
    e.queued = true;
    this.ready.push(id);
  }

  /** Take a message out of the ready queue or its destination's backlog, wherever it waits. */
  private unqueue(id: string, e: Entry): void {
    if (!e.queued) return;
    e.queued = false;
    const key = e.waitingFor;
    if (key === undefined) return this.ready.remove((x) => x === id);
    e.waitingFor = undefined;
    this.destinations.leaveBacklog(key, id);
  }

  /** Put a message on hold: it stays queued, nothing is delivered until released. */
  async hold(queueId: string): Promise<'held' | 'pending' | 'already'> {
    const e = await this.requireEntry(queueId);
    if (e.state === 'hold') return 'already';
    if (e.busy) { e.after = 'hold'; return 'pending'; }
    await this.operate(queueId, e, () => this.moveToHold(queueId, e));
    return 'held';
  }

  async release(queueId: string): Promise<'released' | 'not-held'> {
    const e = await this.requireEntry(queueId);
    if (e.state !== 'hold' || e.busy) return 'not-held';
    await this.operate(queueId, e, async () => {
      await applyQueueAction(this.deps.spool, this.deps.tracking, 'release', queueId, 'hold', 'admin-api');
      e.state = 'deferred';
      this.index.update(queueId, { state: 'deferred', nextAttemptAt: null });
    });
    this.makeReady(queueId, e);
    this.pump();
    return 'released';
  }

  /**
   * Route a message again now, alias and list expansion included (`tandem queue requeue`,
   * Postfix's `postsuper -r`; see requeue.ts): when the expansion changed, the message is
   * rewritten under a new queue id (`requeued as ID`); either way it is tried at once, past the
   * dead-destination memory, as a flush. A held message is rewritten and stays held. During an
   * attempt: done when it ends ("pending"). A lookup that fails now throws TempLookupError and
   * leaves the message as it was.
   */
  async requeue(queueId: string, by = 'admin-api'): Promise<string> {
    const e = await this.requireEntry(queueId);
    if (e.busy) { e.after = 'requeue'; return 'pending'; }
    let result = '';
    await this.operate(queueId, e, async () => { result = await this.requeueNow(queueId, e, by); });
    return result;
  }

  private async requeueNow(id: string, e: Entry, by: string): Promise<string> {
    const spool = this.deps.spool;
    const qf = e.fresh ? freshQueueFile(id, e.fresh.envelope, e.fresh.message) : await spool.read(id, e.state);
    this.retries.delete(id);
    this.unqueue(id, e);
    const { changed, newQueueId, result } = await requeueMessage({ spool, router: this.deps.router, tracking: this.deps.tracking }, { ...qf, state: e.state }, by, this.now());
    let next: { id: string; entry: Entry } | undefined = changed ? undefined : { id, entry: e };
    if (changed) {
      this.forget(id);
      this.unindex(id);
    }
    if (newQueueId) {
      const state = e.state === 'hold' ? 'hold' : 'incoming';
      const info = await spool.readInfo(newQueueId, state);
      next = { id: newQueueId, entry: { state, size: info.size, busy: false } };
      this.entries.set(newQueueId, next.entry);
      this.index.set(newQueueId, indexed(info, state));
    }
    // tried now, past the dead-destination memory (as a flush); a held message stays held
    if (next && next.entry.state !== 'hold') {
      next.entry.flushed = true;
      this.makeReady(next.id, next.entry);
      this.pump();
    }
    if (!next) return result;
    return `${result}${next.entry.state === 'hold' ? ' (held)' : changed ? '' : '; tried now'}`;
  }

  /** Delete a message; pending recipients are not delivered and get no DSN (operator's choice). */
  async remove(queueId: string): Promise<'deleted' | 'pending'> {
    const e = await this.requireEntry(queueId);
    if (e.busy) { e.after = 'delete'; return 'pending'; }
    await this.operate(queueId, e, () => this.deleteNow(queueId, e));
    return 'deleted';
  }

  /**
   * Run an operator's file move with the message marked busy, so no attempt starts meanwhile;
   * then whatever was asked of it in the meantime. If the move fails, the message is tried
   * again later (an attempt finds the file wherever it is).
   */
  private async operate(id: string, e: Entry, fn: () => Promise<void>): Promise<void> {
    e.busy = true;
    try {
      await fn();
    } catch (err) {
      if (this.entries.get(id) === e && e.state !== 'hold') this.schedule(id, e, this.now() + this.deps.config.queue.min_backoff);
      throw err;
    } finally {
      e.busy = false;
      void this.applyAfter(id, e);
    }
  }

  /**
   * The message's entry; a message on disk only (memory full) is read in for the operator's
   * action, beyond the memory bound (it leaves memory again when done with, or at the next walk).
   */
  private async requireEntry(queueId: string): Promise<Entry> {
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
    const e: Entry = { state, size: info.size, busy: false };
    this.entries.set(queueId, e);
    this.index.set(queueId, indexed(info, state));
    if (state === 'hold') this.heldOnDisk = Math.max(0, this.heldOnDisk - 1);
    else if (this.diskOnly[state]) this.diskOnly[state]!--;
    if (state === 'deferred' && info.deferral && info.deferral.nextAttemptAt > this.now()) this.schedule(queueId, e, info.deferral.nextAttemptAt);
    else if (state !== 'hold') {
      this.makeReady(queueId, e);
      this.pump();
    }
    return e;
  }

  private async moveToHold(queueId: string, e: Entry): Promise<void> {
    this.retries.delete(queueId);
    this.unqueue(queueId, e);
    await applyQueueAction(this.deps.spool, this.deps.tracking, 'hold', queueId, e.state, 'admin-api');
    e.state = 'hold';
    this.index.update(queueId, { state: 'hold' });
  }

  private async deleteNow(queueId: string, e: Entry): Promise<void> {
    this.retries.delete(queueId);
    this.unqueue(queueId, e);
    await applyQueueAction(this.deps.spool, this.deps.tracking, 'delete', queueId, e.state, 'admin-api');
    this.forget(queueId);
    this.unindex(queueId);
  }

  /**
   * Start attempts for ready messages, up to the active limit and queue.max_active_bytes of
   * messages in memory (one message is always allowed, however large, when nothing else is).
   */
  private pump(): void {
    while (this.running < this.activeLimit && this.ready.length) {
      if (!this.delivering()) {
        if (!this.stopping) this.pollGate();
        break;
      }
      const id = this.ready.shift()!;
      const e = this.entries.get(id);
      if (!e) continue;
      e.queued = false;
      if (e.busy || e.state === 'hold') continue;
      // XXX: attempts parked on a slow destination keep their bytes, so enough of them can use
      // up max_active_bytes and hold up other destinations (the byte bound wins over fairness)
      // a large message is streamed from its file: what it holds in memory is bounded by the chunks
      const cost = Math.min(e.size, READ_WHOLE_LIMIT);
      if (this.inProgress > 0 && this.activeBytes + cost > this.deps.config.queue.max_active_bytes) {
        this.ready.unshift(id);
        e.queued = true;
        break;
      }
      e.busy = true;
      this.running++;
      this.inProgress++;
      this.activeBytes += cost;
      this.attempt(id, e)
        .catch((err) => {
          // an environment failure (spool I/O): keep the message, try again later
          this.deps.logger.error({ queueId: id, err: String(err?.stack ?? err) }, 'delivery attempt failed; will retry');
          if (this.entries.get(id) === e) this.schedule(id, e, this.now() + this.deps.config.queue.min_backoff);
        })
        .finally(() => {
          e.busy = false;
          this.running--;
          this.inProgress--;
          this.activeBytes -= cost;
          const asked = e.after !== undefined;
          void this.applyAfter(id, e);
          if (!asked) this.maybeEvict(id, e);
          if (this.inProgress === 0 && this.stopping) for (const w of this.idleWaiters.splice(0)) w();
          this.pump();
        });
    }
  }

  private async applyAfter(id: string, e: Entry): Promise<void> {
    const action = e.after;
    e.after = undefined;
    if (!action || this.entries.get(id) !== e) return;
    try {
      if (action === 'hold') await this.operate(id, e, () => this.moveToHold(id, e));
      else if (action === 'delete') await this.operate(id, e, () => this.deleteNow(id, e));
      else if (action === 'requeue') await this.requeue(id);
      else if (e.state === 'deferred') {
        this.makeReady(id, e);
        this.pump();
      }
    } catch (err) {
      this.deps.logger.error({ queueId: id, action, err: String(err) }, 'operator action failed');
    }
  }

  private schedule(id: string, e: Entry, at: number): void {
    if (this.stopping) return;
    e.nextAttemptAt = at;
    this.retries.set(id, at);
  }

  /** A retry time has come (retries: one timer for every deferred message). */
  private retryDue(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.makeReady(id, e);
    this.pump();
  }

  /**
   * One delivery attempt of one message. Its destination's slot is taken before its file is
   * read (reserve()), so that a large queue for one next hop is read as fast as that next hop
   * takes it, not all at once while the first deliveries wait for the CPU and the disk.
   */
  private async attempt(id: string, e: Entry): Promise<void> {
    const parking: Parking = { parked: 0 };
    const held = await this.reserve(id, e, parking);
    if (held === 'backlog') return;
    try {
      if (held && !this.delivering()) {
        // stopping, or the gate shut while it waited: no attempt; the file is left as it is
        if (!this.stopping) this.makeReady(id, e);
        return;
      }
      await this.attemptRead(id, e, parking, held);
    } finally {
      if (held && !held.used) this.releaseDestination(held.key, held.sem);
    }
  }

  /**
   * Wait for a slot of the message's destination, as its envelope predicts it (the recipients
   * kept in memory: a fresh message's, or the index's pending ones; the first recipient's next
   * hop). While it waits the attempt is parked (slot()). When as many attempts already wait for
   * that destination as it delivers at once, the message goes to the destination's backlog
   * instead ('backlog'), unread, holding nothing, until a delivery there ends (releaseDestination).
   * No reservation (undefined) when the destination cannot be predicted now (no envelope in
   * memory, a routing lookup that fails, the message is past its lifetime) or is known dead:
   * the attempt then reads the file first, as the groups after the first always do.
   */
  private async reserve(id: string, e: Entry, parking: Parking): Promise<Reservation | 'backlog' | undefined> {
    const known = e.fresh?.envelope ?? this.index.get(id);
    const first = known?.recipients[0];
    if (!known || first === undefined || this.now() - known.arrivedAt > this.deps.config.queue.max_lifetime) return undefined;
    let key: string;
    try {
      key = routeKey(await this.deps.router.routeAddress(typeof first === 'string' ? first : first.address));
    } catch {
      return undefined; // the delivery routes again and records a failed lookup
    }
    if (!e.flushed && this.destinations.deadness(key)) return undefined;
    const sem = this.destinations.semaphore(key);
    if (this.destinations.saturated(sem) && !this.stopping) {
      this.destinations.enterBacklog(key, id);
      e.queued = true;
      e.waitingFor = key;
      if (this.destinations.backlogged > FRESH_BACKLOG_LIMIT) e.fresh = undefined; // read back from its file when its turn comes
      return 'backlog';
    }
    await this.slot(sem, parking);
    return { key, sem, used: false };
  }

  /**
   * A delivery to this destination ended: its slot goes to the next attempt waiting, and a
   * message from the destination's backlog to the front of the ready queue to wait in its place.
   * Once nothing is under way there, the whole backlog goes back (nothing else would call it).
   */
  private releaseDestination(key: string, sem: Semaphore): void {
    const back = this.destinations.release(key, sem, (id) => this.entries.get(id)?.waitingFor === key);
    if (!back) return;
    for (const id of back) {
      this.entries.get(id)!.waitingFor = undefined;
      this.ready.unshift(id);
    }
    this.pump();
  }

  /** The attempt proper: read the message, deliver, record (the reservation, if any, is `held`). */
  private async attemptRead(id: string, e: Entry, parking: Parking, held: Reservation | undefined): Promise<void> {
    const spool = this.deps.spool;
    let qf: DeliveryFile;
    try {
      if (e.state === 'incoming') {
        await spool.move(id, 'incoming', 'active', { durable: false });
        e.state = 'active';
        this.index.update(id, { state: 'active' });
      }
      qf = e.fresh ? { ...freshQueueFile(id, e.fresh.envelope, e.fresh.message), message: bufferSource(e.fresh.message) } : await spool.readForDelivery(id, e.state);
      e.fresh = undefined;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        // not where we thought: finished and removed since the start-up scan saw it, or moved
        // by a rename whose folder fsync then failed — look for it before forgetting it
        const where = await spool.find(id);
        if (!where) {
          this.forget(id);
          this.unindex(id);
          return;
        }
        e.state = where;
        this.index.update(id, { state: where });
        if (where !== 'hold') this.schedule(id, e, this.now() + RETRY_AFTER_ERROR_MS);
        return;
      }
      if (err instanceof CorruptQueueFileError) {
        await spool.quarantine(id, e.state, err.message);
        this.deps.tracking.record({ event: 'corrupt', queueId: id, reply: err.message });
        this.forget(id);
        this.unindex(id);
        return;
      }
      throw err;
    }
    const env = qf.envelope;
    const pending = qf.pending;
    if (pending.length === 0) return this.finish(id, e);

    const now = this.now();
    if (now - env.arrivedAt > this.deps.config.queue.max_lifetime) {
      await this.outcomes.expire(qf);
      return this.finish(id, e);
    }

    const flushed = e.flushed ?? false;
    e.flushed = undefined;
    const outcomes = await this.deliverPending(qf, pending, flushed, parking, held);

    // a stop (or a shut delivery gate) before any delivery started is no attempt: the file is
    // left as it is (the next start, or the gate opening, picks it up)
    if (outcomes.length > 0 && outcomes.every((o) => o.via === NOT_STARTED_VIA)) {
      if (!this.stopping) this.makeReady(id, e); // the gate closed: tried again when it opens
      return;
    }
    const records = await this.outcomes.record(qf, outcomes);
    const stillPending = outcomes.filter((o) => !records.some((r) => r.index === o.index));
    // With nothing left pending, the durable unlink in finish() is the record; otherwise the
    // outcomes and the retry schedule are appended together (one fdatasync).
    if (stillPending.length === 0) return this.finish(id, e);
    const { nextAttemptAt, lastReply } = await this.outcomes.defer(qf, e, stillPending, records);
    this.schedule(env.queueId, e, nextAttemptAt);
    this.index.update(env.queueId, { state: 'deferred', recipients: stillPending.map((o) => env.recipients[o.index].address), nextAttemptAt, lastReply });
  }

  /** Route pending recipients, group by next hop, deliver the groups in parallel. */
  private async deliverPending(qf: DeliveryFile, pending: number[], flushed: boolean, parking: Parking, held: Reservation | undefined): Promise<Outcome[]> {
    const env = qf.envelope;
    const groups = new Map<string, { key: string; route: Route; rcpts: DeliveryRecipient[] }>();
    const outcomes: Outcome[] = [];
    for (const index of pending) {
      const r = env.recipients[index];
      let route: Route;
      try {
        route = await this.deps.router.routeAddress(r.address);
      } catch (err) {
        if (!(err instanceof TempLookupError)) throw err;
        outcomes.push({ index, outcome: 'deferred', reply: `4.3.0 routing lookup failed: ${err.message}`, via: 'router' });
        continue;
      }
      // one transaction per next hop (each recipient's NOTIFY/ORCPT go on its own RCPT)
      const key = routeKey(route);
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { key, route, rcpts: [] }));
      g.rcpts.push({ index, address: r.address, original: r.original, ...(r.orcpt ? { orcpt: r.orcpt } : {}), ...(r.notify ? { notify: r.notify } : {}) });
    }
    // a slot taken for a next hop the message no longer goes to is given back before any group
    // waits for another (holding one slot while waiting for a second could deadlock)
    if (held && !held.used && !groups.has(held.key)) {
      held.used = true;
      this.releaseDestination(held.key, held.sem);
    }
    const limit = this.deps.config.queue.destination_recipient_limit;
    const jobs: Array<{ rcpts: DeliveryRecipient[]; promise: Promise<Outcome[]> }> = [];
    for (const { key, ...g } of groups.values()) {
      this.deps.tracking.record({ event: 'routed', queueId: env.queueId, messageId: env.messageId, sender: env.sender, recipients: g.rcpts.map((r) => r.address), nexthop: key });
      for (let i = 0; i < g.rcpts.length; i += limit) {
        const rcpts = g.rcpts.slice(i, i + limit);
        jobs.push({ rcpts, promise: this.deliverGroup(qf, key, g.route, rcpts, parking, flushed, held) });
      }
    }
    // one failing group (a bug in a channel) must not abandon the others while they deliver
    const settled = await Promise.allSettled(jobs.map((j) => j.promise));
    settled.forEach((r, i) => {
      if (r.status === 'fulfilled') outcomes.push(...r.value);
      else {
        this.deps.logger.error({ queueId: env.queueId, err: String((r.reason as Error)?.stack ?? r.reason) }, 'delivery failed with an internal error; deferred');
        for (const rc of jobs[i].rcpts) outcomes.push({ index: rc.index, outcome: 'deferred', reply: `4.3.0 internal error: ${(r.reason as Error)?.message ?? r.reason}`, via: 'qmgr' });
      }
    });
    return outcomes;
  }

  /**
   * Deliver one group under the destination's and the total concurrency limits. While it waits
   * for a slot the attempt is "parked": it does not count against the active limit, so mail for
   * other destinations keeps moving past a slow one. A destination whose last transaction could
   * not even reach a server is dead for a while (as in Postfix): its mail is deferred without a
   * try until then, instead of each message waiting out the connect timeouts again (unless the
   * operator flushed the message: `flushed`).
   */
  private async deliverGroup(qf: DeliveryFile, key: string, route: Route, rcpts: DeliveryRecipient[], parking: Parking, flushed: boolean, held: Reservation | undefined): Promise<Outcome[]> {
    const env = qf.envelope;
    const deadFor = (): Outcome[] | undefined => {
      const dead = flushed ? undefined : this.destinations.deadness(key);
      if (!dead) return undefined;
      return rcpts.map((r) => ({ index: r.index, outcome: 'deferred', reply: `4.4.1 ${key} was unreachable a moment ago (${dead.reason}); not tried again before ${new Date(dead.until).toISOString()}`, via: key, route }));
    };
    // the slot taken before the read (attempt()) is this group's
    const reserved = held !== undefined && !held.used && held.key === key;
    if (reserved) held.used = true;
    const early = deadFor();
    if (early) {
      if (reserved) this.releaseDestination(key, held.sem);
      return early;
    }
    const sem = reserved ? held.sem : this.destinations.semaphore(key);
    if (!reserved) await this.slot(sem, parking);
    await this.slot(this.total, parking);
    try {
      const dead = deadFor();
      if (dead || !this.delivering()) return dead ?? rcpts.map((r) => ({ index: r.index, outcome: 'deferred', reply: `4.3.2 ${this.stopping ? 'node stopping' : 'node may not deliver now (fenced)'}; delivery not started`, via: NOT_STARTED_VIA, route }));
      const started = this.now();
      const results = await this.deps.channelFor(route).deliver({
        queueId: env.queueId,
        sender: env.sender,
        recipients: rcpts,
        route,
        message: qf.message,
        ...(env.body8bit ? { body8bit: true } : {}),
        ...(env.smtputf8 ? { smtputf8: true } : {}),
        ...(env.dsn ? { dsn: env.dsn } : {}),
      });
      this.deps.metrics?.transaction(route.type, (this.now() - started) / 1000);
      for (const r of results) this.deps.metrics?.delivery(r.outcome, route.type);
      this.destinations.noteResults(key, results);
      return results.map((r) => ({ ...r, route }));
    } finally {
      this.total.release();
      this.releaseDestination(key, sem);
    }
  }

  /**
   * Take a slot of `sem`; if that means waiting, the attempt is parked meanwhile: it stops
   * counting against the active limit (once per attempt, however many of its groups wait).
   */
  private async slot(sem: Semaphore, parking: Parking): Promise<void> {
    if (sem.tryAcquire()) return;
    if (parking.parked++ === 0) {
      this.running--;
      this.pump();
    }
    try {
      await sem.acquire();
    } finally {
      if (--parking.parked === 0) this.running++;
    }
  }


  private async finish(id: string, e: Entry): Promise<void> {
    await this.deps.spool.remove(id, e.state);
    this.forget(id);
    this.unindex(id);
  }
}

/** The QueueFile of a message just committed: nothing delivered yet. */
function freshQueueFile(queueId: string, envelope: Envelope, message: Buffer): QueueFile {
  return { queueId, state: 'active', envelope, message, statuses: [], pending: envelope.recipients.map((_, i) => i), size: message.length };
}
