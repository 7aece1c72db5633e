/**
 * receiver/auth-throttle.ts — SMTP AUTH that a password-guessing client cannot turn against
 * the node or other clients.
 *
 * What a failed AUTH costs the client, and what it cannot cost anyone else:
 *  - a delay before the 535 (failureDelay × the connection's failures so far, at most 5 s):
 *    a timer, so no thread and no memory beyond the waiting session are held;
 *  - after `maxFailures` failures on one connection, 421 4.7.0 and the connection is closed;
 *  - a client address over its failure rate (ClientLimits.authBlocked) gets 454 4.7.0
 *    without its password being checked at all, so a flood costs no hashing;
 *  - every refusal (535, and the 454s below) gets the delay and counts toward maxFailures:
 *    an answer given at once would only let the client spin faster;
 *  - password hashing (scrypt, ~50 ms of a libuv pool thread each) runs at most
 *    `hashConcurrency` at a time: libuv's pool (4 threads by default) also does the spool's
 *    file writes and fsyncs, so unbounded hashing delays everyone's 250. At most `hashQueue`
 *    attempts wait for a turn; beyond that AUTH answers 454 4.7.0 at once.
 * Refusals other than a plain 535 are reported to `onRefusal` (metrics): 'auth_rate',
 * 'auth_busy', 'auth_failures_closed'.
 */
import type { SMTPServerSession } from 'smtp-server';
import { Semaphore } from '../util/semaphore.ts';
import { SmtpReplyError } from '../util/errors.ts';
import type { ClientLimits } from './client-limits.ts';

export interface AuthThrottleOptions {
  maxFailures: number;
  failureDelay: number;
  hashConcurrency: number;
  hashQueue: number;
  limits: ClientLimits;
  verify(user: string, password: string): Promise<boolean>;
  onRefusal(reason: string): void;
  /** For tests: how to wait (default setTimeout). */
  sleep?(ms: number): Promise<void>;
}

const MAX_DELAY = 5000;

export class AuthThrottle {
  private readonly hashing: Semaphore;
  private readonly failures = new WeakMap<SMTPServerSession, number>();
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly o: AuthThrottleOptions) {
    this.hashing = new Semaphore(o.hashConcurrency);
    this.sleep = o.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms).unref()));
  }

  /** The user name when the password is right; throws the SMTP reply otherwise. */
  async authenticate(session: SMTPServerSession, user: string, password: string): Promise<string> {
    const address = session.remoteAddress;
    const blocked = this.o.limits.authBlocked(address);
    if (blocked) return this.fail(session, 'auth_rate', new SmtpReplyError(454, '4.7.0', blocked.message));
    if (this.hashing.waiting >= this.o.hashQueue) {
      return this.fail(session, 'auth_busy', new SmtpReplyError(454, '4.7.0', 'Temporary authentication failure (server busy); try again later'));
    }
    const ok = user !== '' && (await this.hashing.run(() => this.o.verify(user, password)));
    if (ok) return user;
    this.o.limits.authFailed(address);
    return this.fail(session, undefined, new SmtpReplyError(535, '5.7.8', 'Error: authentication failed'));
  }

  /**
   * Every refusal, checked or not, costs the connection a delay and counts toward its limit:
   * a refusal answered at once would only let a client spin faster.
   */
  private async fail(session: SMTPServerSession, reason: string | undefined, reply: SmtpReplyError): Promise<never> {
    const n = (this.failures.get(session) ?? 0) + 1;
    this.failures.set(session, n);
    if (reason) this.o.onRefusal(reason);
    await this.sleep(Math.min(MAX_DELAY, this.o.failureDelay * n));
    if (n >= this.o.maxFailures) {
      this.o.onRefusal('auth_failures_closed');
      throw new SmtpReplyError(421, '4.7.0', `Error: too many failed authentications (${n}); closing connection`);
    }
    throw reply;
  }
}
