/**
 * replication/client.ts — the origin's side: one persistent HTTP/2 connection (TLS 1.3,
 * client certificate) to its shadow holder, copies pipelined on it, discard notices batched.
 *
 * copy(queueId, bytes) is called after the local commit and before the 250; it resolves with
 *   { protected: true }  the holder has the copy fsynced, or
 *   { protected: false, action, reason }  no copy was made; `action` is the configured policy
 *     (issue 9 item 3), as data for the caller: `refuse` → answer SHADOW_REFUSE_REPLY (451
 *     4.4.0) and remove the message (a `finished` discard is queued for it, in case the holder
 *     stored it but its ack was lost); `accept-unprotected` → answer 250; the queue id is kept
 *     in `unprotected` until reprotect() copies it or a `finished` discard says it is done.
 * It never rejects. At most `maxInFlight` copies are on the wire at once; others wait in order.
 *
 * Holder unreachable: while the connection is down (refused, reset, ack timeout) copies fail at
 * once rather than wait; the client reconnects with exponential backoff (minMs … maxMs, with
 * jitter) and emits 'state' ('connecting' | 'up' | 'down'). When it is 'up' again the caller
 * runs reprotect(read), `read` giving the queue file's current bytes (undefined if gone).
 *
 * discard(notices) queues per-recipient outcomes; every `discardIntervalMs` (100 ms) one batch
 * is sent while up; a batch that fails is queued again. `stats.discardLagMs` keeps, for recent
 * batches, the time from the oldest notice's discard() call to the holder's answer: the window
 * in which a takeover would deliver again a recipient the origin had already done.
 */
import { EventEmitter } from 'node:events';
import http2, { type ClientHttp2Session } from 'node:http2';
import { HEADERS, PATHS, SHADOW_REFUSE_REPLY, type DiscardNotice, type ReconcileAnswer } from './protocol.ts';

export type ShadowPolicy = 'refuse' | 'accept-unprotected';
export type ClientState = 'connecting' | 'up' | 'down' | 'closed';
export type CopyOutcome =
  | { protected: true; result: 'stored' | 'duplicate' }
  | { protected: false; action: ShadowPolicy; reason: string; reply?: string };

export interface ShadowClientOptions {
  /** This node's id (the CN of its certificate). */
  origin: string;
  /** This node's spool identity (identity.ts). */
  spoolId: string;
  holder: { nodeId: string; host: string; port: number };
  tls: { ca: string | Buffer; cert: string | Buffer; key: string | Buffer };
  policy: ShadowPolicy;
  maxInFlight?: number;
  ackTimeoutMs?: number;
  discardIntervalMs?: number;
  backoff?: { minMs?: number; maxMs?: number };
  /** For logs: why the connection went down. */
  onError?: (err: Error) => void;
}

interface Answer { status: number; body: Record<string, unknown> }

/** Keep the last `n` samples. */
const SAMPLES = 1000;

export class ShadowClient extends EventEmitter {
  readonly #opts: Required<Omit<ShadowClientOptions, 'onError' | 'backoff'>> & Pick<ShadowClientOptions, 'onError'> & { backoff: { minMs: number; maxMs: number } };
  #state: ClientState = 'connecting';
  #session: ClientHttp2Session | undefined;
  #seq = 0;
  #lastError = 'not connected yet';
  #backoffMs: number;
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** The connection was lost and is being made again: copies fail at once meanwhile (only the first connection is waited for). */
  #reconnecting = false;
  #discardTimer: NodeJS.Timeout;
  #inFlight = 0;
  readonly #waiting: Array<() => void> = [];
  readonly #unprotected = new Set<string>();
  /** Queue ids with a copy on the wire, and those of them finished meanwhile. */
  readonly #copying = new Set<string>();
  readonly #finishedWhileCopying = new Set<string>();
  /** Pending discard notices by queue id, with when the first of them was queued. */
  readonly #discards = new Map<string, DiscardNotice & { since: number }>();
  /** The batch being sent, if any. */
  #discardSending: Promise<void> | undefined;
  readonly stats = { copied: 0, failed: 0, maxInFlight: 0, discardsSent: 0, discardLagMs: [] as number[], connects: 0 };

  constructor(opts: ShadowClientOptions) {
    super();
    this.setMaxListeners(0); // every copy waiting for the connection listens for 'state'
    this.#opts = {
      maxInFlight: 64, ackTimeoutMs: 5000, discardIntervalMs: 100, ...opts,
      backoff: { minMs: opts.backoff?.minMs ?? 100, maxMs: opts.backoff?.maxMs ?? 5000 },
    };
    this.#backoffMs = this.#opts.backoff.minMs;
    this.#discardTimer = setInterval(() => void this.#flushDiscards(), this.#opts.discardIntervalMs);
    this.#discardTimer.unref();
    this.#connect();
  }

  get state(): ClientState {
    return this.#state;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Queue ids accepted with one copy only (policy accept-unprotected), oldest first. */
  unprotectedIds(): string[] {
    return [...this.#unprotected];
  }

  get unprotectedCount(): number {
    return this.#unprotected.size;
  }

  /** Notices queued and not yet acknowledged by the holder. */
  get pendingDiscards(): number {
    return this.#discards.size;
  }

  #setState(state: ClientState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.emit('state', state);
  }

  #connect(): void {
    if (this.#state === 'closed') return;
    this.#setState('connecting');
    const { holder, tls } = this.#opts;
    const session = http2.connect(`https://${holder.host}:${holder.port}`, {
      ca: tls.ca, cert: tls.cert, key: tls.key, servername: holder.nodeId, minVersion: 'TLSv1.3',
    });
    this.#session = session;
    this.#seq = 0;
    // a holder cut off by a firewall never answers the SYN: give up after the ack timeout, so
    // that copies fail at once (and the policy applies) instead of waiting on each attempt
    const connectTimer = setTimeout(() => {
      this.#lastError = `no connection within ${this.#opts.ackTimeoutMs} ms`;
      session.destroy();
    }, this.#opts.ackTimeoutMs);
    connectTimer.unref();
    session.on('close', () => clearTimeout(connectTimer));
    session.on('connect', () => {
      clearTimeout(connectTimer);
      if (this.#session !== session) return;
      this.#reconnecting = false;
      this.#backoffMs = this.#opts.backoff.minMs;
      this.stats.connects++;
      this.#setState('up');
    });
    session.on('error', (err) => {
      this.#lastError = err.message;
      this.#opts.onError?.(err);
    });
    session.on('goaway', () => session.close());
    session.on('close', () => {
      if (this.#session !== session) return;
      this.#session = undefined;
      if (this.#state === 'closed') return;
      this.#reconnecting = true;
      this.#setState('down');
      const delay = this.#backoffMs * (0.5 + Math.random() / 2);
      this.#backoffMs = Math.min(this.#backoffMs * 2, this.#opts.backoff.maxMs);
      this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
      this.#reconnectTimer.unref();
    });
  }

  /** Wait while the connection is being set up; true when up. */
  async #whenUsable(): Promise<boolean> {
    if (this.#state === 'connecting' && !this.#reconnecting) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.off('state', onState);
          resolve();
        };
        const onState = (s: ClientState): void => {
          if (s !== 'connecting') done();
        };
        const timer = setTimeout(done, this.#opts.ackTimeoutMs);
        this.on('state', onState);
      });
    }
    return this.#state === 'up' && this.#session !== undefined;
  }

  /** One request on the current session; rejects on timeout, reset or a lost connection. */
  async #request(path: string, headers: Record<string, string>, body: Buffer): Promise<Answer> {
    if (!(await this.#whenUsable())) throw new Error(`holder unreachable: ${this.#lastError}`);
    const session = this.#session!;
    const req = session.request({
      ':method': 'POST', ':path': path, 'content-length': String(body.length),
      [HEADERS.origin]: this.#opts.origin, [HEADERS.spoolId]: this.#opts.spoolId, [HEADERS.seq]: String(++this.#seq), ...headers,
    });
    return new Promise<Answer>((resolve, reject) => {
      let status = 0;
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => {
        reject(new Error(`no answer from the holder within ${this.#opts.ackTimeoutMs} ms`));
        this.#lastError = 'ack timeout';
        // A holder that does not answer is treated as gone: a new connection is made.
        session.destroy();
      }, this.#opts.ackTimeoutMs);
      req.on('response', (h) => {
        status = Number(h[':status']);
      });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        clearTimeout(timer);
        let parsed: Record<string, unknown> = {};
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch {
          // an empty or non-JSON body: the status says enough
        }
        resolve({ status, body: parsed });
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.on('close', () => {
        clearTimeout(timer);
        reject(new Error(`stream closed before an answer (code ${req.rstCode})`));
      });
      req.end(body);
    });
  }

  async #slot(): Promise<void> {
    if (this.#inFlight >= this.#opts.maxInFlight) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#inFlight++;
    if (this.#inFlight > this.stats.maxInFlight) this.stats.maxInFlight = this.#inFlight;
  }

  #release(): void {
    this.#inFlight--;
    this.#waiting.shift()?.();
  }

  /** Send one copy; `protected: true` only when the holder acknowledged it durable. */
  async #send(queueId: string, bytes: Buffer): Promise<{ ok: true; result: 'stored' | 'duplicate' } | { ok: false; reason: string }> {
    if (this.#state === 'down' || this.#state === 'closed' || (this.#state === 'connecting' && this.#reconnecting)) return { ok: false, reason: `holder unreachable: ${this.#lastError}` };
    await this.#slot();
    this.#copying.add(queueId);
    try {
      const answer = await this.#request(PATHS.copy, { [HEADERS.queueId]: queueId }, bytes);
      if (answer.status === 200 && (answer.body.result === 'stored' || answer.body.result === 'duplicate')) {
        // finished while its copy was on the way (a re-protection racing a delivery): the notice
        // may have reached the holder before the copy did; say it again, after the copy
        if (this.#finishedWhileCopying.delete(queueId)) this.discard([{ queueId, finished: true }]);
        return { ok: true, result: answer.body.result };
      }
      return { ok: false, reason: `holder answered ${answer.status} ${String(answer.body.error ?? '')} ${String(answer.body.detail ?? '')}`.trim() };
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    } finally {
      this.#copying.delete(queueId);
      this.#finishedWhileCopying.delete(queueId);
      this.#release();
    }
  }

  /** Make the shadow copy of a committed queue file (see the header for the outcome). */
  async copy(queueId: string, bytes: Buffer): Promise<CopyOutcome> {
    const sent = await this.#send(queueId, bytes);
    if (sent.ok) {
      this.stats.copied++;
      return { protected: true, result: sent.result };
    }
    this.stats.failed++;
    const action = this.#opts.policy;
    if (action === 'refuse') {
      // The holder may have stored it and lost only the ack: tell it the message is gone.
      this.discard([{ queueId, finished: true }]);
      return { protected: false, action, reason: sent.reason, reply: SHADOW_REFUSE_REPLY };
    }
    this.#unprotected.add(queueId);
    this.emit('unprotected', this.#unprotected.size);
    return { protected: false, action, reason: sent.reason };
  }

  /**
   * Copy every unprotected message again. `read` gives its current queue file bytes, or
   * undefined if the message is gone (then it is dropped from the list). Resolves with counts.
   */
  async reprotect(read: (queueId: string) => Promise<Buffer | undefined>): Promise<{ protected: number; gone: number; failed: number }> {
    const counts = { protected: 0, gone: 0, failed: 0 };
    await Promise.all(this.unprotectedIds().map(async (queueId) => {
      const bytes = await read(queueId);
      if (!bytes) {
        this.#unprotected.delete(queueId);
        counts.gone++;
        return;
      }
      const sent = await this.#send(queueId, bytes);
      if (sent.ok) {
        this.#unprotected.delete(queueId);
        counts.protected++;
      } else {
        counts.failed++;
      }
    }));
    this.emit('unprotected', this.#unprotected.size);
    return counts;
  }

  /** Queue per-recipient outcomes / finished messages for the holder (sent in batches). */
  discard(notices: readonly DiscardNotice[]): void {
    const now = Date.now();
    for (const n of notices) {
      if (n.finished) this.#unprotected.delete(n.queueId);
      if (n.finished && this.#copying.has(n.queueId)) this.#finishedWhileCopying.add(n.queueId);
      const queued = this.#discards.get(n.queueId);
      if (!queued) {
        this.#discards.set(n.queueId, { ...n, statuses: n.statuses ? [...n.statuses] : undefined, since: now });
      } else {
        if (n.statuses?.length) queued.statuses = [...(queued.statuses ?? []), ...n.statuses];
        if (n.finished) queued.finished = true;
        if (n.hold !== undefined) queued.hold = n.hold; // the last word counts
      }
    }
  }

  #flushDiscards(): Promise<void> {
    if (this.#discardSending || this.#discards.size === 0 || this.#state !== 'up') return this.#discardSending ?? Promise.resolve();
    this.#discardSending = this.#sendDiscards().finally(() => {
      this.#discardSending = undefined;
    });
    return this.#discardSending;
  }

  async #sendDiscards(): Promise<void> {
    const batch = [...this.#discards.values()].slice(0, 10_000);
    for (const n of batch) this.#discards.delete(n.queueId);
    try {
      const notices: DiscardNotice[] = batch.map(({ since: _since, ...n }) => ({
        queueId: n.queueId,
        ...(n.statuses !== undefined ? { statuses: n.statuses } : {}),
        ...(n.finished !== undefined ? { finished: n.finished } : {}),
        ...(n.hold !== undefined ? { hold: n.hold } : {}),
      }));
      const answer = await this.#request(PATHS.discard, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ notices })));
      if (answer.status !== 200) throw new Error(`holder answered ${answer.status} ${String(answer.body.error ?? '')}`);
      this.stats.discardsSent += batch.length;
      const lag = Date.now() - Math.min(...batch.map((n) => n.since));
      this.stats.discardLagMs.push(lag);
      if (this.stats.discardLagMs.length > SAMPLES) this.stats.discardLagMs.shift();
      this.emit('discarded', batch.length);
    } catch (err) {
      this.#lastError = (err as Error).message;
      // Put them back, merged with anything queued meanwhile (older statuses first).
      for (const n of batch) {
        const newer = this.#discards.get(n.queueId);
        if (newer) {
          newer.statuses = [...(n.statuses ?? []), ...(newer.statuses ?? [])];
          newer.finished = newer.finished || n.finished;
          newer.hold ??= n.hold;
          newer.since = n.since;
        } else {
          this.#discards.set(n.queueId, n);
        }
      }
    }
  }

  /**
   * Ask the holder what it knows of these queued messages (protocol.ts ReconcileAnswer), after
   * sending the discard notices still queued. Rejects when the holder cannot be reached.
   */
  async reconcile(queueIds: readonly string[]): Promise<ReconcileAnswer> {
    await this.flush();
    const answer = await this.#request(PATHS.reconcile, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ queueIds })));
    if (answer.status !== 200) throw new Error(`holder answered ${answer.status} ${String(answer.body.error ?? '')} ${String(answer.body.detail ?? '')}`.trim());
    return answer.body as unknown as ReconcileAnswer;
  }

  /** Send what is queued now (for a clean shutdown, and tests); resolves when answered. */
  async flush(): Promise<void> {
    await this.#discardSending;
    await this.#flushDiscards();
  }

  async close(): Promise<void> {
    this.#setState('closed');
    clearInterval(this.#discardTimer);
    clearTimeout(this.#reconnectTimer);
    const session = this.#session;
    this.#session = undefined;
    if (session && !session.closed) await new Promise<void>((resolve) => session.close(() => resolve()));
  }
}
