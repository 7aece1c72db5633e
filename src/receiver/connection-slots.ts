/**
 * receiver/connection-slots.ts — smtp.max_connections as a queue with a bounded wait, not a
 * refusal at the first connection too many.
 *
 * smtp-server answers a connection beyond `maxClients` with `421 Too many connected clients` at
 * once, and a sending MTA that gets a 421 retries minutes later (Postfix: 300 s at the least).
 * Postfix makes such a client wait instead: with every smtpd process busy, new connections sit in
 * the listen queue until a process is free. ConnectionSlots does the same in user space: a
 * listener has `max` slots; a connection that finds none free waits, not greeted, first come
 * first served, for at most `waitMs`; at most `maxWaiting` wait. Only a connection that finds the
 * queue full, or waits `waitMs` in vain, gets the 421. waitMs 0 is smtp-server's behaviour.
 *
 * The replacement SMTPConnection.init (greeting-delay.ts) calls request() for every new
 * connection of a Tandem server and the returned function when the socket closes. Pure
 * bookkeeping with one timer per waiting connection; no I/O.
 */

export interface ConnectionSlotsOptions {
  /** Connections served at once (the listener's max_connections). */
  max: number;
  /** How long a connection may wait for a slot (ms); 0 = refuse at once. */
  waitMs: number;
  /** Connections that may wait at once; beyond it, refuse at once. */
  maxWaiting: number;
  /** A connection was refused: the queue was full, or it waited waitMs without a slot. */
  onRefused?(how: 'queue_full' | 'wait_timeout'): void;
}

interface Waiter {
  admit(): void;
  timer: NodeJS.Timeout;
}

export class ConnectionSlots {
  #busy = 0;
  readonly #waiting: Waiter[] = [];

  constructor(private readonly o: ConnectionSlotsOptions) {}

  /** Connections holding a slot. */
  get busy(): number {
    return this.#busy;
  }

  /** Connections waiting for one. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * A new connection: `admit` is called once it holds a slot (at once, or when one frees up),
   * `refuse` if it gets none. Returns what to call when the connection closes, whatever
   * happened: it frees the slot or leaves the queue (calling it again does nothing).
   */
  request(admit: () => void, refuse: () => void): () => void {
    if (this.#busy < this.o.max) {
      this.#busy++;
      admit();
      return this.#release();
    }
    if (this.o.waitMs <= 0 || this.#waiting.length >= this.o.maxWaiting) {
      this.o.onRefused?.('queue_full');
      refuse();
      return () => undefined;
    }
    let holds = false;
    let gone = false;
    const release = this.#release();
    const waiter: Waiter = {
      admit: () => {
        holds = true;
        admit();
      },
      timer: setTimeout(() => {
        this.#leave(waiter);
        gone = true;
        this.o.onRefused?.('wait_timeout');
        refuse();
      }, this.o.waitMs),
    };
    this.#waiting.push(waiter);
    return () => {
      if (holds) return release();
      if (gone) return;
      gone = true;
      this.#leave(waiter);
    };
  }

  /** The closer of a held slot: frees it once and hands it to the first waiter. */
  #release(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#busy--;
      const next = this.#waiting.shift();
      if (!next) return;
      clearTimeout(next.timer);
      this.#busy++;
      next.admit();
    };
  }

  #leave(waiter: Waiter): void {
    clearTimeout(waiter.timer);
    const i = this.#waiting.indexOf(waiter);
    if (i >= 0) this.#waiting.splice(i, 1);
  }
}
