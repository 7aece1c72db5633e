/**
 * receiver/session-guard.ts — what smtp-server does not bound by itself in one SMTP session:
 * a deadline per command, a deadline for the DATA phase (a minimum transfer rate), shorter
 * timeouts and lower error limits when the listener is near its connection limit, and
 * Postfix's soft and hard error limits and junk command limit.
 *
 * How it hooks in: smtp-server has no events for "a command arrived" or "a reply was sent",
 * so installSessionGuardHooks wraps three methods of its SMTPConnection prototype once per
 * process (_onCommand, send, _onClose); each wrapper only acts for a server whose options
 * carry a `tandemGuard` (this module's SessionGuard), and otherwise calls the original.
 *
 * The rules, as a Postfix administrator knows them:
 *  - Command deadline (smtpd_timeout, with Postfix's per-record deadline): after each reply
 *    that waits for the client, the client has `commandTimeout` ms to send the next complete
 *    command line — bytes trickled in do not extend it (smtp-server's own idle timeout does).
 *    Not counted while our own handler is still working. Expired: 421 4.4.2 and close.
 *  - DATA deadline (smtpd_min_data_rate): after the 354, the message must arrive within
 *    `commandTimeout` + received bytes / `minDataRate` seconds; else 421 4.4.2 and close (the
 *    partial message is dropped, nothing is queued).
 *  - Stress (Postfix's overload mode): with at least `stressConnections` connections open on
 *    this listener, the deadline is `stressTimeout`, and the hard error and junk command limits
 *    are 1, so idle and misbehaving clients give their slots back quickly. When stress begins,
 *    the sessions already waiting get the short deadline too, counted from their last reply
 *    (Postfix picks the timeout per read): an idle session does not keep its 300 s.
 *  - Soft error limit (smtpd_soft_error_limit, smtpd_error_sleep_time): once a session has
 *    made `softErrorLimit` errors, each further command is answered only after `errorSleep` ms
 *    (a timer: nothing waits on a thread). Postfix sleeps before writing the reply; we wait
 *    before running the command, which the client sees the same way.
 *  - Hard error limit (smtpd_hard_error_limit): each 4xx/5xx reply (other than 421) counts;
 *    at the limit the reply is followed by 421 4.7.0 and close. Errors count over the whole
 *    session, as in Postfix's smtpd.
 *  - Junk command limit (smtpd_junk_command_limit): NOOP, RSET, VRFY and ETRN beyond it
 *    each count as an error.
 * Each disconnection is reported to `onRefusal` (metrics).
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { SMTPServerSession } from 'smtp-server';

export interface SessionGuardOptions {
  commandTimeout: number;
  stressTimeout: number;
  /** At this many open connections on the listener the stress rules apply; 0 = never. */
  stressConnections: number;
  /** Bytes per second a DATA transfer must average (after the first commandTimeout). */
  minDataRate: number;
  /** Errors after which every command is answered `errorSleep` ms late; 0 = never. */
  softErrorLimit: number;
  errorSleep: number;
  hardErrorLimit: number;
  junkCommandLimit: number;
  /** A session was closed by a rule: 'command_timeout', 'data_timeout', 'hard_errors'. */
  onRefusal(reason: string): void;
}

/** smtp-server's connection, as far as the guard touches it. */
interface Connection {
  session: SMTPServerSession;
  send(code: number, data?: string | string[], context?: unknown): void;
  close(): void;
  _server: { options: { tandemGuard?: SessionGuard }; connections: Set<unknown> };
  _closing: boolean;
  _closed: boolean;
  _handlerPending?: boolean;
  _nextHandler?: unknown;
}

interface State {
  errors: number;
  junk: number;
  timer?: NodeJS.Timeout;
  /** When the command deadline now running was armed (stress shortens it from there). */
  armedAt?: number;
  data?: { start: number; bytes: number };
  /** We are sending our own 421: its reply is not counted. */
  closing?: boolean;
}

const JUNK = new Set(['NOOP', 'RSET', 'VRFY', 'ETRN']);

export class SessionGuard {
  private readonly states = new WeakMap<Connection, State>();
  private readonly bySession = new WeakMap<SMTPServerSession, Connection>();
  /** Open sessions with a state, to shorten their deadlines when stress begins. */
  private readonly open = new Set<Connection>();
  private underStress = false;

  constructor(private readonly o: SessionGuardOptions) {}

  private stressed(conn: Connection): boolean {
    return this.o.stressConnections > 0 && conn._server.connections.size >= this.o.stressConnections;
  }

  /** The command deadline now (shorter under stress). */
  timeout(conn: Connection): number {
    return this.stressed(conn) ? Math.min(this.o.stressTimeout, this.o.commandTimeout) : this.o.commandTimeout;
  }

  private state(conn: Connection): State {
    let s = this.states.get(conn);
    if (!s) {
      s = { errors: 0, junk: 0 };
      this.states.set(conn, s);
      this.bySession.set(conn.session, conn);
      this.open.add(conn);
    }
    return s;
  }

  /**
   * A complete command line arrived: 'closed' when the session was closed for it, else the
   * milliseconds to wait before running it (the soft error limit's sleep; 0 = at once).
   */
  onCommand(conn: Connection, name: string): 'closed' | number {
    const s = this.state(conn);
    clearTimeout(s.timer);
    s.timer = undefined;
    s.armedAt = undefined;
    // errors made before this command (Postfix: error_count >= soft limit when replying)
    const sleep = this.o.softErrorLimit > 0 && s.errors >= this.o.softErrorLimit ? this.o.errorSleep : 0;
    if (!conn._nextHandler && JUNK.has(name)) {
      s.junk++;
      const limit = this.stressed(conn) ? 1 : this.o.junkCommandLimit;
      if (s.junk > limit && !this.countError(conn, s)) return 'closed';
    }
    return sleep;
  }

  /** A reply went out. */
  onReply(conn: Connection, code: number): void {
    this.checkStress(conn);
    const s = this.state(conn);
    if (s.closing || conn._closing || conn._closed || code === 421) return;
    if (code >= 400 && !this.countError(conn, s)) return;
    if (code === 354) {
      s.data = { start: Date.now(), bytes: 0 };
      this.armData(conn, s);
    } else {
      this.armCommand(conn, s);
    }
  }

  /** The DATA stream delivered `bytes` so far; `done` once the final "." is in. */
  dataProgress(session: SMTPServerSession, bytes: number, done = false): void {
    const conn = this.bySession.get(session);
    const s = conn && this.states.get(conn);
    if (!s?.data) return;
    s.data.bytes = bytes;
    if (done) {
      s.data = undefined;
      clearTimeout(s.timer);
      s.timer = undefined;
    }
  }

  onClose(conn: Connection): void {
    const s = this.states.get(conn);
    if (s) clearTimeout(s.timer);
    this.open.delete(conn);
  }

  /**
   * Stress begins (a reply, the greeting of a new connection among them, finds the listener at
   * its stress threshold): every waiting session gets the short deadline from when its own
   * began; one idle for longer than that is closed now.
   */
  private checkStress(conn: Connection): void {
    const stressed = this.stressed(conn);
    if (stressed === this.underStress) return;
    this.underStress = stressed;
    if (!stressed) return;
    for (const other of this.open) {
      const s = this.states.get(other)!;
      if (!s.timer || s.closing) continue;
      if (s.data) this.armData(other, s);
      else if (s.armedAt !== undefined) this.armCommand(other, s, Math.max(0, s.armedAt + Math.min(this.o.stressTimeout, this.o.commandTimeout) - Date.now()), s.armedAt);
    }
  }

  /** One more error; at the limit the session ends with 421. Returns false when closed. */
  private countError(conn: Connection, s: State): boolean {
    s.errors++;
    const limit = this.stressed(conn) ? 1 : this.o.hardErrorLimit;
    if (s.errors < limit) return true;
    // after the reply that reached the limit, as Postfix does
    setImmediate(() => this.end(conn, s, 'hard_errors', '4.7.0 Error: too many errors'));
    return false;
  }

  private end(conn: Connection, s: State, reason: string, text: string): void {
    clearTimeout(s.timer);
    s.timer = undefined;
    if (conn._closing || conn._closed) return;
    s.closing = true;
    this.o.onRefusal(reason);
    conn.send(421, text); // smtp-server closes the connection after a 421
  }

  private armCommand(conn: Connection, s: State, ms = this.timeout(conn), armedAt = Date.now()): void {
    clearTimeout(s.timer);
    s.armedAt = armedAt;
    s.timer = setTimeout(() => {
      s.timer = undefined;
      s.armedAt = undefined;
      // our own work (a lookup, a commit) is not the client's delay
      if (conn._handlerPending) return this.armCommand(conn, s);
      this.end(conn, s, 'command_timeout', '4.4.2 Error: timeout exceeded');
    }, ms);
    s.timer.unref();
  }

  private armData(conn: Connection, s: State): void {
    clearTimeout(s.timer);
    const d = s.data!;
    const deadline = d.start + this.timeout(conn) + (this.o.minDataRate > 0 ? (d.bytes / this.o.minDataRate) * 1000 : Infinity);
    const left = deadline - Date.now();
    if (left <= 0) {
      this.end(conn, s, 'data_timeout', `4.4.2 Error: timeout exceeded while receiving the message (slower than ${this.o.minDataRate} bytes/s)`);
      return;
    }
    s.timer = setTimeout(() => this.armData(conn, s), Math.min(left, 2 ** 31 - 1));
    s.timer.unref();
  }
}

type Proto = Record<string, (...args: any[]) => any> & { tandemGuardHooks?: boolean };

/** Wrap smtp-server's connection methods once per process (see the header). */
export function installSessionGuardHooks(): void {
  const proto = SMTPConnection.prototype as unknown as Proto;
  if (proto.tandemGuardHooks) return;
  proto.tandemGuardHooks = true;
  const guardOf = (conn: Connection) => conn._server?.options?.tandemGuard;

  const onCommand = proto._onCommand;
  proto._onCommand = function (this: Connection, command: Buffer | string, callback?: () => void) {
    const guard = guardOf(this);
    if (guard) {
      const name = (command || '').toString().split(' ').shift()!.toUpperCase();
      const verdict = guard.onCommand(this, name);
      if (verdict === 'closed') {
        // closed for it: the command is not run; let the parser go on (it discards the rest)
        callback?.();
        return;
      }
      if (verdict > 0) {
        // the parser reads the next command only after this one's callback: nothing overtakes it
        setTimeout(() => {
          if (this._closing || this._closed) return;
          onCommand.call(this, command, callback);
        }, verdict);
        return;
      }
    }
    return onCommand.call(this, command, callback);
  };

  const send = proto.send;
  proto.send = function (this: Connection, code: number, ...rest: unknown[]) {
    const r = send.call(this, code, ...rest);
    guardOf(this)?.onReply(this, code);
    return r;
  };

  const onClose = proto._onClose;
  proto._onClose = function (this: Connection, ...args: unknown[]) {
    guardOf(this)?.onClose(this);
    return onClose.apply(this, args);
  };
}
