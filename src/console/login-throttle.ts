/**
 * console/login-throttle.ts — how many console passwords one client or one user name may try.
 *
 * Failed logins are counted per client address and per user name (lower-cased), each on its
 * own: the first `freeFailures` cost nothing (typing mistakes); after that, each further
 * failure blocks the key for `baseDelay` × 2^(failures − freeFailures − 1) — 1 s, 2 s, 4 s, … —
 * and at `lockoutAfter` failures for `lockout` (a temporary lockout). A blocked login is
 * refused before its password is checked (no scrypt for a flood) and does not count again.
 * A key's failures are forgotten `lockout` after its last failure, and a successful login
 * forgets those of its address and of its user.
 * The per-user count stops guessing spread over many addresses, at a price: anyone can lock a
 * user out of the console for `lockout` (the admin API with the token is not affected).
 * At most MAX_KEYS keys are remembered (the oldest forgotten first): an attacker with many
 * addresses cannot make the node hold unbounded memory.
 */

export interface LoginThrottleOptions {
  /** Failures of one key without any delay. */
  freeFailures: number;
  /** Failures of one key that lock it for `lockout`. */
  lockoutAfter: number;
  /** First delay (ms) once the free failures are used; doubled by each further failure. */
  baseDelay: number;
  /** Lockout length (ms); also how long failures are remembered. */
  lockout: number;
  now?: () => number;
}

export interface LoginBlock {
  /** Which count blocks: the client's address or the user name. */
  by: 'address' | 'user';
  /** Milliseconds until a login may be tried again. */
  retryAfterMs: number;
  /** A lockout (lockoutAfter reached) rather than a growing delay. */
  lockout: boolean;
}

interface Entry { failures: number; last: number; until: number }

const MAX_KEYS = 10_000;

export class LoginThrottle {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;

  constructor(private readonly o: LoginThrottleOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Whether a login from `address` as `user` must be refused now, and for how long. */
  blocked(address: string, user: string): LoginBlock | undefined {
    const t = this.now();
    for (const [by, key] of this.keys(address, user)) {
      const e = this.current(key, t);
      if (e && e.until > t) return { by, retryAfterMs: e.until - t, lockout: e.failures >= this.o.lockoutAfter };
    }
    return undefined;
  }

  /**
   * Count a wrong password: returns the longest block it starts (undefined while failures are
   * still free).
   */
  failed(address: string, user: string): LoginBlock | undefined {
    const t = this.now();
    let worst: LoginBlock | undefined;
    for (const [by, key] of this.keys(address, user)) {
      const e = this.current(key, t) ?? { failures: 0, last: t, until: 0 };
      e.failures++;
      e.last = t;
      const over = e.failures - this.o.freeFailures;
      const lockout = e.failures >= this.o.lockoutAfter;
      const wait = lockout ? this.o.lockout : over > 0 ? Math.min(this.o.lockout, this.o.baseDelay * 2 ** (over - 1)) : 0;
      e.until = Math.max(e.until, t + wait);
      this.entries.delete(key); // re-inserted last: the Map's order is the order of last use
      this.entries.set(key, e);
      if (wait > 0 && (!worst || wait > worst.retryAfterMs)) worst = { by, retryAfterMs: wait, lockout };
    }
    while (this.entries.size > MAX_KEYS) this.entries.delete(this.entries.keys().next().value as string);
    return worst;
  }

  succeeded(address: string, user: string): void {
    for (const [, key] of this.keys(address, user)) this.entries.delete(key);
  }

  /** Keys remembered (for tests and the bound). */
  get size(): number {
    return this.entries.size;
  }

  private keys(address: string, user: string): Array<['address' | 'user', string]> {
    return [['address', `a:${address}`], ['user', `u:${user.trim().toLowerCase()}`]];
  }

  /** The key's entry unless its failures are old enough to be forgotten. */
  private current(key: string, t: number): Entry | undefined {
    const e = this.entries.get(key);
    if (e && t - e.last >= this.o.lockout && e.until <= t) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }
}
