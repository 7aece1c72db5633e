/**
 * smtp-cache.ts — the SMTP/LMTP connection cache: idle sessions kept per next hop (address:port)
 * and handed out again, as Postfix' scache does. One TCP connect + greeting + EHLO (+ TLS) per
 * message would cap a relay far below the ~1000 messages/s it must reach.
 *
 * Rules: a session is used by one delivery at a time (take removes it from the idle list). At
 * most `maxIdlePerHop` idle sessions per next hop; more are closed with QUIT. An idle session is
 * closed after `idleTimeout` ms. A session whose connection ends (the server closed it, a
 * timeout) leaves the cache by itself. The newest idle session is handed out first, so surplus
 * sessions age out. close() sends QUIT on idle sessions and waits (bounded) for them to end;
 * sessions busy at that moment are closed when released.
 *
 * What can go wrong: a server may close an idle session just as it is taken; the channel then
 * retries once on a fresh connection.
 * Config read: none (the channel passes maxIdlePerHop and idleTimeout).
 */
import { quitSession, type SmtpSession } from './smtp-session.ts';

/** How long close() waits for QUIT replies before dropping connections. */
const CLOSE_GRACE_MS = 2000;

export class SessionCache {
  private readonly idle = new Map<string, SmtpSession[]>();
  private readonly idleTimers = new Map<SmtpSession, NodeJS.Timeout>();
  private closing = false;

  constructor(private readonly opts: { maxIdlePerHop: number; idleTimeout: number }) {}

  /** An idle, live session to this next hop, now owned by the caller; undefined if none. */
  take(key: string): SmtpSession | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const session = list.pop()!;
      this.clearIdleTimer(session);
      if (session.alive) return session;
    }
    return undefined;
  }

  /** Follow a newly opened session: it leaves the idle list by itself when its connection ends. */
  track(session: SmtpSession): void {
    session.conn.once('end', () => this.forgetIdle(session));
  }

  /** Give a session back after a transaction: kept idle for reuse, or closed. */
  release(session: SmtpSession): void {
    if (!session.alive) return;
    const list = this.idle.get(session.key) ?? [];
    if (this.closing || list.length >= this.opts.maxIdlePerHop) {
      quitSession(session);
      return;
    }
    list.push(session);
    this.idle.set(session.key, list);
    const timer = setTimeout(() => {
      this.forgetIdle(session);
      quitSession(session);
    }, this.opts.idleTimeout);
    timer.unref();
    this.idleTimers.set(session, timer);
  }

  /** Number of idle sessions (all next hops), for tests and metrics. */
  get idleCount(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** QUIT every idle session and wait for them to end (at most CLOSE_GRACE_MS). */
  async close(): Promise<void> {
    this.closing = true;
    const idle = [...this.idle.values()].flat();
    this.idle.clear();
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();
    const ended = idle.filter((s) => s.alive).map((s) => new Promise<void>((resolve) => {
      s.conn.once('end', () => resolve());
      quitSession(s);
    }));
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(ended),
      new Promise<void>((resolve) => { grace = setTimeout(resolve, CLOSE_GRACE_MS); }),
    ]);
    clearTimeout(grace);
    for (const s of idle) if (s.alive) s.conn.close();
  }

  private forgetIdle(session: SmtpSession): void {
    this.clearIdleTimer(session);
    const list = this.idle.get(session.key);
    if (!list) return;
    const i = list.indexOf(session);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.idle.delete(session.key);
  }

  private clearIdleTimer(session: SmtpSession): void {
    const timer = this.idleTimers.get(session);
    if (timer) clearTimeout(timer);
    this.idleTimers.delete(session);
  }
}
