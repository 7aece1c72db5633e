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
 * Here: the ready queue and the retry timers, the attempts (reserve a slot of the next hop, read,
 * route, deliver the groups in parallel) and the operator actions. Beside it: active-queue.ts
 * (which messages are in memory, which on disk; the walks of the spool, the start-up scan),
 * destinations.ts (per next hop: slots, backlog, dead-destination memory), outcomes.ts (status
 * records, tracking lines and DSNs of an attempt's results).
 * Reads config keys: queue.*, node.id, node.hostname (QueueManagerConfig).
 */
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import { CorruptQueueFileError, READ_WHOLE_LIMIT, type Spool, type QueueFile, type DeliveryFile } from '../spool/index.ts';
import { bufferSource } from '../message/source.ts';
import type { QueueState, Envelope } from '../spool/types.ts';
import { routeKey, type Router, type Route } from '../router/types.ts';
import type { Channel, DeliveryRecipient } from '../channels/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { TempLookupError } from '../util/errors.ts';
import { isErrno } from '../util/errno.ts';
import { Semaphore } from '../util/semaphore.ts';
import { Fifo } from '../util/fifo.ts';
import { RetrySchedule } from './retry-schedule.ts';
import { Destinations } from './destinations.ts';
import { OutcomeRecorder, type Outcome } from './outcomes.ts';
import { applyQueueAction } from './queue-actions.ts';
import { requeueMessage } from './requeue.ts';
import { EnvelopeIndex, indexedFromFile } from './envelope-index.ts';
import { ActiveQueue, type Entry, type WalkResult } from './active-queue.ts';

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

export class QueueManager {
  /**
   * Every queued message's envelope (in memory and on disk alike), for the operator's filters,
   * lists and counts: filled by the start-up scan (complete once it is through), kept current
   * by every change the manager makes.
   */
  readonly index = new EnvelopeIndex();
  /** The messages in memory (at most queue.active_message_limit), those on disk, the walks that read them in. */
  private readonly active: ActiveQueue;
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
  private idleWaiters: Array<() => void> = [];
  private readonly total: Semaphore;
  private readonly now: () => number;
  /** How many messages may be read into memory and worked on at once. */
  private readonly activeLimit: number;
  /** Retry times of deferred messages, on one timer (not one per message). */
  private readonly retries: RetrySchedule<string>;

  constructor(private readonly deps: QueueManagerDeps) {
    this.total = new Semaphore(deps.config.queue.total_concurrency);
    this.now = deps.now ?? Date.now;
    this.destinations = new Destinations(deps.config.queue, this.now);
    this.outcomes = new OutcomeRecorder({ ...deps, now: this.now, enqueue: (queueId, size, fresh) => this.enqueue(queueId, size, fresh) });
    this.retries = new RetrySchedule(this.now, (id) => this.retryDue(id));
    this.activeLimit = Math.max(deps.config.queue.total_concurrency * 2, 50);
    this.active = new ActiveQueue({
      ...deps, index: this.index, now: this.now,
      host: {
        stopping: () => this.stopping,
        working: () => this.inProgress + this.ready.length + this.destinations.backlogged,
        adopt: (queueId, state, size, nextAttemptAt) => this.adopt(queueId, state, size, nextAttemptAt),
        cancelRetry: (queueId) => this.retries.delete(queueId),
      },
    });
  }

  /**
   * Take over the spool: clean tmp/ (resolves then; the receiver may accept mail from here on;
   * `cleanTmp: false` when a receiver is already writing into tmp/),
   * and scan the queue in the background (`scanned` resolves at the end): the envelopes of
   * incoming/ and active/ (by arrival), then deferred/ (by due time), then hold/, up to
   * queue.active_message_limit messages in memory; the rest stays on disk and is read in as
   * room frees up (walks, active-queue.ts). Only envelopes and status records are read, never
   * a message body. hold/ stays held; a deferred message keeps the retry time in its file. Then
   * the envelopes of the messages left on disk are read into the index (`indexed`: how many it
   * holds then).
   * `fillIndex: false` (a takeover's secondary: nothing lists or selects its queue, and it must
   * not read a large spool twice while it delivers) leaves the index with what the walks
   * adopted; it never becomes complete, so counts stay the walks' estimate.
   */
  async start(opts: { cleanTmp?: boolean; fillIndex?: boolean } = {}): Promise<{ removedTmp: number; scanned: Promise<WalkResult & { indexed: number }> }> {
    const removedTmp = opts.cleanTmp === false ? 0 : await this.deps.spool.cleanTmp();
    return { removedTmp, scanned: this.active.scan(opts.fillIndex !== false) };
  }

  /**
   * A message may sit in incoming/ that nobody announced: an SMTP worker died between its commit
   * and its `queued` (node/smtp-workers.ts). Walk the spool for it (after the walk under way,
   * if any). Before start() the start-up scan will find it.
   */
  rescan(): void {
    this.active.rescan();
  }

  /**
   * A message read in by a walk or for an operator's action (unless the receiver or another
   * action brought it in meanwhile): ready now, or at `nextAttemptAt` (start-up: the time in its
   * file), or held.
   */
  private adopt(queueId: string, state: QueueState, size: number, nextAttemptAt?: number): void {
    if (this.active.has(queueId)) return;
    const entry: Entry = { state, size, busy: false };
    this.active.add(queueId, entry);
    if (state === 'deferred' && nextAttemptAt !== undefined && nextAttemptAt > this.now()) this.schedule(queueId, entry, nextAttemptAt);
    else if (state !== 'hold') {
      this.makeReady(queueId, entry);
      this.pump();
    }
  }

  /**
   * A message just committed to incoming/, of `size` bytes; `fresh` is what was written when
   * the committer still has it in memory (then the first attempt need not read the file).
   */
  enqueue(queueId: string, size: number, fresh?: { envelope: Envelope; message: Buffer }, envelope = fresh?.envelope): void {
    if (this.stopping) return; // picked up from incoming/ at the next start
    if (this.active.has(queueId)) return; // the start-up scan found it first
    this.indexNew(queueId, 'incoming', size, envelope);
    if (!this.active.hasRoom()) return this.active.leftOnDisk('incoming'); // read in from incoming/ by a walk
    // keep the bytes in memory only while the backlog is short; otherwise read them back later
    const keep = fresh && this.ready.length + this.destinations.backlogged < FRESH_BACKLOG_LIMIT;
    const entry: Entry = { state: 'incoming', size, busy: false, ...(keep ? { fresh } : {}) };
    this.active.add(queueId, entry);
    this.makeReady(queueId, entry);
    this.pump();
  }

  /**
   * A new message to be held from the start (quarantined by the receiver's sender
   * authentication): moved to hold/ before any delivery can pick it up. If the move fails it is
   * retried as any failed operation is, after queue.min_backoff.
   */
  async enqueueHeld(queueId: string, size: number, envelope?: Envelope): Promise<void> {
    if (this.stopping || this.active.has(queueId)) return;
    this.indexNew(queueId, 'incoming', size, envelope);
    const entry: Entry = { state: 'incoming', size, busy: false };
    this.active.add(queueId, entry);
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
          if (!this.index.has(queueId)) this.index.set(queueId, indexedFromFile(info, where));
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
    this.retries.clear();
    await this.active.stop();
    if (this.inProgress > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** An attempt or an operator's action on this message is under way. */
  isBusy(queueId: string): boolean {
    return this.active.get(queueId)?.busy ?? false;
  }

  list(): MessageSummary[] {
    return [...this.active.all()].map(([queueId, e]) => ({ queueId, state: e.state, busy: e.busy, ...(e.nextAttemptAt ? { nextAttemptAt: e.nextAttemptAt } : {}) }));
  }

  /** Messages by state: exact from the index once it is complete, else memory + the last walk's count of those on disk. */
  counts(): Record<string, number> {
    return this.active.counts();
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
    const which = ids ? ids.map((id) => [id, this.active.get(id)] as const) : [...this.active.all()];
    for (const [id, e] of which) {
      if (!e && this.active.someOnDisk) {
        // on disk only (memory full): read in and tried now
        n++;
        this.active.requireEntry(id).then((e2) => {
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
    // deferred messages on disk: due now (their files' times), then walked in as room frees up
    if (!ids) n += this.active.flushDisk();
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
    const e = await this.active.requireEntry(queueId);
    if (e.state === 'hold') return 'already';
    if (e.busy) { e.after = 'hold'; return 'pending'; }
    await this.operate(queueId, e, () => this.moveToHold(queueId, e));
    return 'held';
  }

  async release(queueId: string): Promise<'released' | 'not-held'> {
    const e = await this.active.requireEntry(queueId);
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
    const e = await this.active.requireEntry(queueId);
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
      this.active.forget(id);
      this.active.unindex(id);
    }
    if (newQueueId) {
      const state = e.state === 'hold' ? 'hold' : 'incoming';
      const info = await spool.readInfo(newQueueId, state);
      next = { id: newQueueId, entry: { state, size: info.size, busy: false } };
      this.active.add(newQueueId, next.entry);
      this.index.set(newQueueId, indexedFromFile(info, state));
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
    const e = await this.active.requireEntry(queueId);
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
      if (this.active.get(id) === e && e.state !== 'hold') this.schedule(id, e, this.now() + this.deps.config.queue.min_backoff);
      throw err;
    } finally {
      e.busy = false;
      void this.applyAfter(id, e);
    }
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
    this.active.forget(queueId);
    this.active.unindex(queueId);
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
      const e = this.active.get(id);
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
          if (this.active.get(id) === e) this.schedule(id, e, this.now() + this.deps.config.queue.min_backoff);
        })
        .finally(() => {
          e.busy = false;
          this.running--;
          this.inProgress--;
          this.activeBytes -= cost;
          const asked = e.after !== undefined;
          void this.applyAfter(id, e);
          if (!asked) this.active.maybeEvict(id, e);
          if (this.inProgress === 0 && this.stopping) for (const w of this.idleWaiters.splice(0)) w();
          this.pump();
        });
    }
  }

  private async applyAfter(id: string, e: Entry): Promise<void> {
    const action = e.after;
    e.after = undefined;
    if (!action || this.active.get(id) !== e) return;
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
    const e = this.active.get(id);
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
   * Once nothing is under way there, the whole backlog goes back (nothing else would call it),
   * to the front in its order: oldest first.
   */
  private releaseDestination(key: string, sem: Semaphore): void {
    const back = this.destinations.release(key, sem, (id) => this.active.get(id)?.waitingFor === key);
    if (!back) return;
    for (const id of back) this.active.get(id)!.waitingFor = undefined;
    this.ready.unshiftAll(back);
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
          this.active.forget(id);
          this.active.unindex(id);
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
        this.active.forget(id);
        this.active.unindex(id);
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
    this.active.forget(id);
    this.active.unindex(id);
  }
}

/** The QueueFile of a message just committed: nothing delivered yet. */
function freshQueueFile(queueId: string, envelope: Envelope, message: Buffer): QueueFile {
  return { queueId, state: 'active', envelope, message, statuses: [], pending: envelope.recipients.map((_, i) => i), size: message.length };
}
