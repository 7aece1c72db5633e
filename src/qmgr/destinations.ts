/**
 * qmgr/destinations.ts — what the queue manager keeps per next hop (destination), with no I/O:
 *   - its delivery slots: a semaphore of queue.destination_concurrency, made on first use and
 *     dropped once idle;
 *   - its backlog: messages ready for it that wait unread, holding nothing, while as many
 *     attempts as it delivers at once already wait for a slot; one goes back to the ready queue
 *     per delivery that ends there, all of them once nothing is under way there;
 *   - the dead-destination memory: a next hop that no server answered is not tried again for
 *     min(queue.min_backoff, 60 s) (as in Postfix), unless the operator flushes.
 *
 * Exports Destinations. The queue manager marks which of its messages wait in a backlog (and
 * tells release() which still do); this module only keeps the order and the counts.
 * Reads config keys: queue.destination_concurrency, queue.min_backoff.
 */
import type { TandemConfig } from '../config/schema.ts';
import type { RecipientResult } from '../channels/types.ts';
import { Semaphore } from '../util/semaphore.ts';
import { Fifo } from '../util/fifo.ts';

/** How long at most a destination that could not be reached is not tried (queue.min_backoff if shorter). */
const DEAD_DESTINATION_MS = 60_000;

/** Why and until when a destination is not tried. */
export interface DeadDestination {
  until: number;
  reason: string;
}

export class Destinations {
  private readonly slots = new Map<string, Semaphore>();
  private readonly backlogs = new Map<string, Fifo<string>>();
  private inBacklogs = 0;
  private readonly dead = new Map<string, DeadDestination>();

  constructor(
    private readonly queue: Pick<TandemConfig['queue'], 'destination_concurrency' | 'min_backoff'>,
    private readonly now: () => number,
  ) {}

  /** The semaphore of a destination's concurrency (made on first use, dropped when idle). */
  semaphore(key: string): Semaphore {
    let sem = this.slots.get(key);
    if (!sem) this.slots.set(key, (sem = new Semaphore(this.queue.destination_concurrency)));
    return sem;
  }

  /** Every slot of this destination is in use and as many attempts wait for one: further messages wait in its backlog. */
  saturated(sem: Semaphore): boolean {
    const limit = this.queue.destination_concurrency;
    return sem.inUse >= limit && sem.waiting >= limit;
  }

  /** Messages in the backlogs, all destinations. */
  get backlogged(): number {
    return this.inBacklogs;
  }

  /** A message waits, unread, in this destination's backlog. */
  enterBacklog(key: string, id: string): void {
    let waiting = this.backlogs.get(key);
    if (!waiting) this.backlogs.set(key, (waiting = new Fifo()));
    waiting.push(id);
    this.inBacklogs++;
  }

  /** A message leaves this destination's backlog other than by release() (an operator's action). */
  leaveBacklog(key: string, id: string): void {
    this.inBacklogs--;
    const waiting = this.backlogs.get(key);
    waiting?.remove((x) => x === id);
    if (waiting?.length === 0) this.backlogs.delete(key);
  }

  /**
   * A delivery to this destination ended: its slot goes to the next attempt waiting. Returns the
   * messages that leave its backlog, in backlog order, to wait in the ready queue instead: one,
   * or all of them once nothing is under way there (nothing else would call this); undefined
   * when it has no backlog. `waits(id)` says whether a message is still there (it may have left
   * meanwhile).
   */
  release(key: string, sem: Semaphore, waits: (id: string) => boolean): string[] | undefined {
    sem.release();
    const idle = sem.inUse === 0 && sem.waiting === 0;
    if (idle && this.slots.get(key) === sem) this.slots.delete(key);
    const waiting = this.backlogs.get(key);
    if (!waiting) return undefined;
    const back: string[] = [];
    let n = idle ? waiting.length : 1;
    while (n > 0 && waiting.length > 0) {
      const id = waiting.shift()!;
      if (!waits(id)) continue; // left the backlog meanwhile
      this.inBacklogs--;
      back.push(id);
      n--;
    }
    if (waiting.length === 0) this.backlogs.delete(key);
    return back;
  }

  /** Why and until when this destination is not tried, while it is in its dead time (it could not be reached a moment ago). */
  deadness(key: string): DeadDestination | undefined {
    const dead = this.dead.get(key);
    return dead !== undefined && dead.until > this.now() ? dead : undefined;
  }

  /** Mark a destination dead when no server answered at all; alive again on any answer. */
  noteResults(key: string, results: RecipientResult[]): void {
    const unreachable = results.length > 0 && results.every((r) => r.outcome === 'deferred' && !/^[245]\d\d[ -]/.test(r.reply));
    if (!unreachable) {
      this.dead.delete(key);
      return;
    }
    this.dead.set(key, { until: this.now() + Math.min(this.queue.min_backoff, DEAD_DESTINATION_MS), reason: results[0].reply });
  }

  /** Forget the dead-destination memory (a flush of everything). */
  forgetDead(): void {
    this.dead.clear();
  }
}
