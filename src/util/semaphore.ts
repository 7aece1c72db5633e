/**
 * util/semaphore.ts — a counting semaphore with FIFO waiters.
 *
 * Used by the queue manager for per-destination and total delivery
 * concurrency.
 */
export class Semaphore {
  private waiters: Array<() => void> = [];
  private used = 0;

  constructor(private readonly limit: number) {}

  get inUse(): number {
    return this.used;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Take a slot if one is free now, without waiting. */
  tryAcquire(): boolean {
    if (this.used >= this.limit) return false;
    this.used++;
    return true;
  }

  async acquire(): Promise<void> {
    if (this.used < this.limit) {
      this.used++;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Hand the slot to the next waiter, or free it. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.used--;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
