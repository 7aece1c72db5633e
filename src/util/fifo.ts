/**
 * util/fifo.ts — a first-in first-out queue with O(1) push and shift (an array's shift() is
 * O(n), which matters for a queue manager starting on a spool of 100,000 messages).
 */
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** Put an item back at the front (it was taken but could not be started). */
  unshift(item: T): void {
    if (this.head > 0) this.items[--this.head] = item;
    else this.items.unshift(item);
  }

  /** Put items back at the front as a block, in their order (the first of them is shifted next). */
  unshiftAll(items: readonly T[]): void {
    if (items.length <= this.head) {
      this.head -= items.length;
      for (let i = 0; i < items.length; i++) this.items[this.head + i] = items[i];
    } else {
      this.items = [...items, ...this.items.slice(this.head)];
      this.head = 0;
    }
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    // compact once the consumed part dominates, so memory follows the live length
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Drop every item for which `drop` is true (operator actions; O(n)). */
  remove(drop: (item: T) => boolean): void {
    this.items = this.items.slice(this.head).filter((i) => !drop(i as T));
    this.head = 0;
  }
}
