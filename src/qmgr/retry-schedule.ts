/**
 * qmgr/retry-schedule.ts — the retry times of deferred messages, on one timer.
 *
 * A timer per queued message costs about 0.6 KB of heap in Node (the Timeout, its closure and,
 * since every message's delay differs, a timer list of its own): 60 MB for 100,000 deferred
 * messages, more than the rest of their bookkeeping. Here every key has one time in a map, a
 * binary min-heap orders the times, and a single unref'd timer is armed for the earliest.
 * set() replaces a key's time, delete() forgets it; the heap keeps stale nodes until they reach
 * the top (a node counts only while the map still holds its time for its key), and is rebuilt
 * from the map when stale nodes outnumber live ones. onDue(key) runs once per key whose time
 * has come, after the key was removed (onDue may set it again). Times past setTimeout's limit
 * (24.8 days) wake the timer early and it is armed again.
 */

const MAX_TIMER_MS = 2 ** 31 - 1;

interface Node<K> {
  at: number;
  key: K;
}

export class RetrySchedule<K> {
  private readonly times = new Map<K, number>();
  private heap: Node<K>[] = [];
  private timer?: NodeJS.Timeout;
  /** When the armed timer fires (its target time); undefined when none is armed. */
  private armedAt?: number;

  constructor(private readonly now: () => number, private readonly onDue: (key: K) => void) {}

  get size(): number {
    return this.times.size;
  }

  /** The time set for key, if any. */
  get(key: K): number | undefined {
    return this.times.get(key);
  }

  /** Due at `at` (replacing an earlier time for key). */
  set(key: K, at: number): void {
    this.times.set(key, at);
    this.push({ at, key });
    if (this.heap.length > 2 * this.times.size + 64) this.rebuild();
    if (this.armedAt === undefined || at < this.armedAt) this.arm();
  }

  delete(key: K): void {
    this.times.delete(key);
    if (this.times.size === 0) this.clear();
  }

  /** Forget every key; no timer stays armed. */
  clear(): void {
    this.times.clear();
    this.heap = [];
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = undefined;
  }

  private live(n: Node<K>): boolean {
    return this.times.get(n.key) === n.at;
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = undefined;
    while (this.heap.length > 0 && !this.live(this.heap[0])) this.pop();
    if (this.heap.length === 0) return;
    const at = this.heap[0].at;
    this.armedAt = at;
    this.timer = setTimeout(() => this.fire(), Math.min(MAX_TIMER_MS, Math.max(0, at - this.now())));
    this.timer.unref?.();
  }

  private fire(): void {
    this.timer = undefined;
    this.armedAt = undefined;
    const now = this.now();
    const due: K[] = [];
    while (this.heap.length > 0 && this.heap[0].at <= now) {
      const n = this.pop();
      if (!this.live(n)) continue;
      this.times.delete(n.key);
      due.push(n.key);
    }
    for (const key of due) this.onDue(key);
    if (this.timer === undefined) this.arm();
  }

  private rebuild(): void {
    this.heap = [...this.times].map(([key, at]) => ({ at, key }));
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private push(n: Node<K>): void {
    const h = this.heap;
    h.push(n);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].at <= h[i].at) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  private pop(): Node<K> {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.down(0);
    }
    return top;
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l].at < h[m].at) m = l;
      if (r < h.length && h[r].at < h[m].at) m = r;
      if (m === i) return;
      [h[m], h[i]] = [h[i], h[m]];
      i = m;
    }
  }
}
