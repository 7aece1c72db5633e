/**
 * smtp.ts — the SMTP delivery channel (and, with `lmtp: true`, the LMTP one: see lmtp.ts).
 *
 * deliver(job): next hops from smtp-nexthop.ts (MX or fixed host), then for each address in
 * order: a cached idle session (smtp-cache.ts) or a new one, and one transaction
 * (smtp-session.ts). Anything that fails before MAIL FROM (refused, timeout, 421 or any non-220
 * greeting, TLS failure) moves on to the next address; when all fail, every recipient is deferred
 * with the last error. Once a server has answered MAIL FROM, its replies decide: 2xx delivered,
 * 4xx deferred, 5xx failed; a connection lost mid-transaction defers the unanswered recipients.
 * A cached session that turns out dead before any reply is retried once on a fresh connection.
 *
 * TLS: STARTTLS whenever offered (Postfix' "may"); certificates are not verified unless
 * tlsRejectUnauthorized. If the TLS handshake fails, the same address is retried once in
 * plaintext (as Postfix does for "may"). With requireTls, no plaintext: TLS failure → next address.
 *
 * What can go wrong: see the headers of smtp-nexthop.ts and smtp-session.ts. deliver() never
 * throws for delivery problems, only for bugs (a route of the wrong type).
 * Config read: none directly; the caller maps config keys to SmtpChannelOptions.
 */
import type { Channel, DeliveryJob, RecipientResult } from './types.ts';
import {
  defaultResolveHost, defaultResolveMx, resolveNextHop, type HopTarget, type ResolveHost, type ResolveMx,
} from './smtp-nexthop.ts';
import {
  describeError, formatVia, openSession, sessionKey, runTransaction, type SessionOptions, type SmtpSession,
} from './smtp-session.ts';
import { SessionCache } from './smtp-cache.ts';

export interface SmtpChannelOptions {
  /** Name sent in EHLO/LHLO. */
  heloName: string;
  /** TCP connect timeout, ms. */
  connectTimeout: number;
  /** Time to wait for each reply (greeting included) and longest silence while sending, ms. */
  commandTimeout: number;
  /** Refuse to deliver without STARTTLS (Postfix "encrypt"). Default false ("may"). */
  requireTls?: boolean;
  /** Verify the server certificate. Default false: opportunistic TLS encrypts but does not authenticate. */
  tlsRejectUnauthorized?: boolean;
  resolveMx?: ResolveMx;
  resolveHost?: ResolveHost;
  /** Idle connections kept per next hop (address:port). Default 20. */
  maxIdleConnections?: number;
  /** Idle connections are closed after this many ms. Default 10000. */
  idleTimeout?: number;
  /** Speak LMTP (LHLO, one reply per recipient after DATA) to {type:'lmtp'} routes. */
  lmtp?: boolean;
}

type HopAttempt =
  | { type: 'results'; results: RecipientResult[] }
  | { type: 'unreachable'; reply: string; via: string };

export class SmtpChannel implements Channel {
  private readonly session: SessionOptions;
  private readonly resolvers: { resolveMx: ResolveMx; resolveHost: ResolveHost };
  private readonly cache: SessionCache;
  private readonly routeType: 'smtp' | 'lmtp';

  constructor(opts: SmtpChannelOptions) {
    this.session = {
      heloName: opts.heloName,
      connectTimeout: opts.connectTimeout,
      commandTimeout: opts.commandTimeout,
      requireTls: opts.requireTls ?? false,
      tlsRejectUnauthorized: opts.tlsRejectUnauthorized ?? false,
      lmtp: opts.lmtp ?? false,
    };
    this.routeType = this.session.lmtp ? 'lmtp' : 'smtp';
    this.resolvers = { resolveMx: opts.resolveMx ?? defaultResolveMx, resolveHost: opts.resolveHost ?? defaultResolveHost };
    this.cache = new SessionCache({ maxIdlePerHop: opts.maxIdleConnections ?? 20, idleTimeout: opts.idleTimeout ?? 10_000 });
  }

  async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
    if (job.route.type !== this.routeType) {
      throw new Error(`bug: ${this.routeType} channel given a ${job.route.type} route for ${job.queueId}`);
    }
    if (job.recipients.length === 0) return [];
    const plan = await resolveNextHop(job.route, this.resolvers);
    if (plan.type !== 'targets') return allRecipients(job, plan.type, plan.reply, plan.via);
    let last: { reply: string; via: string } = { reply: '4.4.1 no address to try', via: '' };
    for (const target of plan.targets) {
      const attempt = await this.deliverTo(target, job);
      if (attempt.type === 'results') return attempt.results;
      last = attempt;
    }
    return allRecipients(job, 'deferred', last.reply, last.via);
  }

  /** Idle sessions currently cached (all next hops). */
  get idleConnections(): number {
    return this.cache.idleCount;
  }

  async close(): Promise<void> {
    await this.cache.close();
  }

  /** One address: a cached session (retried once fresh if it proves dead) or a new one. */
  private async deliverTo(target: HopTarget, job: DeliveryJob): Promise<HopAttempt> {
    const via = formatVia(target);
    let session = this.cache.take(sessionKey(target));
    let reused = session !== undefined;
    for (;;) {
      if (!session) {
        try {
          session = await this.connect(target);
        } catch (err) {
          return { type: 'unreachable', reply: describeError(err, `while connecting to ${via}`), via };
        }
      }
      const tx = await runTransaction(session, job);
      if (tx.type === 'completed') {
        this.recycle(session, tx.clean);
        return { type: 'results', results: tx.results };
      }
      if (reused && tx.answered.length === 0) {
        session = undefined;
        reused = false;
        continue;
      }
      const answered = new Set(tx.answered.map((r) => r.index));
      const rest = job.recipients.filter((r) => !answered.has(r.index));
      return { type: 'results', results: [...tx.answered, ...rest.map((r) => ({ index: r.index, outcome: 'deferred' as const, reply: tx.reason, via }))] };
    }
  }

  /** Open a session; an opportunistic TLS handshake failure is retried once in plaintext. */
  private async connect(target: HopTarget): Promise<SmtpSession> {
    let session: SmtpSession;
    try {
      session = await openSession(target, this.session);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ETLS' || this.session.requireTls) throw err;
      session = await openSession(target, { ...this.session, ignoreTls: true });
    }
    this.cache.track(session);
    return session;
  }

  /** Back to the cache; a transaction left open is RSET first, a session that fails RSET is closed. */
  private recycle(session: SmtpSession, clean: boolean): void {
    if (!session.alive) return;
    if (clean) {
      this.cache.release(session);
      return;
    }
    session.conn.reset((err) => {
      if (err) session.conn.close();
      else this.cache.release(session);
    });
  }
}

function allRecipients(job: DeliveryJob, outcome: RecipientResult['outcome'], reply: string, via: string): RecipientResult[] {
  return job.recipients.map((r) => ({ index: r.index, outcome, reply, via }));
}
