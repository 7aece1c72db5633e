/**
 * replication/holder.ts — the shadow holder's server: HTTP/2 over TLS 1.3, client certificate
 * required (cluster CA), requests stored by a ShadowStore and acknowledged only once durable.
 *
 * Who may talk: the TLS layer refuses a peer without a certificate signed by the cluster CA
 * before any byte of HTTP/2 is read (counted by reason from the handshake error). The node id
 * is the certificate's CN; it must be one of `origins`, and every request must name that same
 * node (header and envelope) — but for discard notices from a co-holder of that node's copies
 * (`coHolders`: its secondary delivered them). Each request carries a per-connection sequence that must rise;
 * a request whose number is not above the last one on its connection is `replayed`.
 *
 * What can go wrong: refusals are answered (4xx + reason), counted, and nothing is stored;
 * store I/O errors are answered 503 and counted in `counts.storeErrors`; a broken connection
 * or session only ends that session. Nothing a peer sends can throw out of this module.
 */
import http2, { type Http2Session, type Http2SecureServer, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { ShadowRefusal, type ShadowStore } from './shadow-store.ts';
import {
  DEFAULT_MAX_COPY_BYTES, HEADERS, MAX_DISCARD_BYTES, PATHS, REFUSAL_REASONS, parseDiscardBody, parseReconcileBody, type RefusalReason,
} from './protocol.ts';

export interface ShadowHolderOptions {
  store: ShadowStore;
  /** PEM: the cluster CA, this node's certificate (CN = node id) and key. */
  tls: { ca: string | Buffer; cert: string | Buffer; key: string | Buffer };
  /** Node ids whose copies this node keeps. */
  origins: readonly string[];
  /**
   * The other holders of an origin's copies (cluster.replication.remote_copy): a secondary of
   * theirs delivering the origin's queue sends discard notices in the origin's name, and only
   * discard notices (placement.ts).
   */
  coHolders?: (origin: string) => readonly string[];
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  maxCopyBytes?: number;
  /** Streams one connection may have open at once (HTTP/2 SETTINGS). */
  maxConcurrentStreams?: number;
  /** Called for each refusal (for logs). */
  onRefusal?: (reason: RefusalReason, detail: string, peer: string | undefined) => void;
}

interface SessionState { origin: string | undefined; lastSeq: number }

/** Map a TLS handshake error to a refusal reason. */
function tlsReason(err: Error & { code?: string }, socket: TLSSocket): RefusalReason {
  // A certificate that does not verify: node ends the handshake itself (no TLS error of its
  // own, only a hang-up), leaving the verification error on the socket.
  if (socket.authorizationError) return 'tls-untrusted-certificate';
  if (/no application protocol/i.test(err.message)) return 'not-http2';
  const text = `${err.code ?? ''} ${err.message}`;
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|did not return a certificate/i.test(text)) return 'tls-no-client-certificate';
  if (/CERTIFICATE|UNKNOWN_CA|unable to get|self.signed|verify/i.test(text)) return 'tls-untrusted-certificate';
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|UNSUPPORTED_PROTOCOL|PACKET_LENGTH_TOO_LONG|RECORD_LAYER|wrong version|http request|not a tls/i.test(text)) return 'tls-not-tls';
  return 'tls-other';
}

export class ShadowHolder {
  readonly refusals = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>;
  readonly counts = { stored: 0, duplicates: 0, discardBatches: 0, removed: 0, storeErrors: 0, reconciles: 0 };
  readonly #server: Http2SecureServer;
  readonly #opts: ShadowHolderOptions;
  readonly #sessions = new Map<Http2Session, SessionState>();
  #port = 0;

  private constructor(opts: ShadowHolderOptions) {
    this.#opts = opts;
    this.#server = http2.createSecureServer({
      ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key,
      requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3',
      allowHTTP1: false,
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams ?? 256 },
    });
    this.#server.on('tlsClientError', (err, socket) => {
      const detail = socket.authorizationError ? `${socket.authorizationError}` : err.message;
      this.#refuse(tlsReason(err, socket), detail, socket.remoteAddress);
    });
    this.#server.on('unknownProtocol', (socket: TLSSocket) => {
      this.#refuse('not-http2', `ALPN ${JSON.stringify(socket.alpnProtocol)}`, socket.remoteAddress);
      socket.destroy();
    });
    this.#server.on('session', (session) => this.#onSession(session));
    this.#server.on('stream', (stream, headers) => {
      this.#onStream(stream, headers).catch((err) => {
        // Not expected (every path answers); never let a peer crash the process.
        this.counts.storeErrors++;
        if (!stream.destroyed) stream.destroy(err as Error);
      });
    });
  }

  static async start(opts: ShadowHolderOptions): Promise<ShadowHolder> {
    const holder = new ShadowHolder(opts);
    await new Promise<void>((resolve, reject) => {
      holder.#server.once('error', reject);
      holder.#server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
        holder.#server.off('error', reject);
        resolve();
      });
    });
    holder.#port = (holder.#server.address() as AddressInfo).port;
    return holder;
  }

  get port(): number {
    return this.#port;
  }

  #refuse(reason: RefusalReason, detail: string, peer: string | undefined): void {
    this.refusals[reason]++;
    this.#opts.onRefusal?.(reason, detail, peer);
  }

  #onSession(session: Http2Session): void {
    const socket = session.socket as TLSSocket;
    const cn = socket.getPeerCertificate?.()?.subject?.CN;
    this.#sessions.set(session, { origin: typeof cn === 'string' ? cn : undefined, lastSeq: 0 });
    session.on('error', (err: Error & { code?: string }) => {
      // A peer that vanished (killed, network cut) is not bad input; a protocol error is.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'ETIMEDOUT') return;
      this.#refuse('bad-frame', err.message, socket.remoteAddress);
    });
    session.on('frameError', () => undefined);
    session.on('close', () => this.#sessions.delete(session));
  }

  #answer(stream: ServerHttp2Stream, status: number, body: object): void {
    if (stream.destroyed || stream.closed) return;
    try {
      stream.respond({ ':status': status, 'content-type': 'application/json' });
      stream.end(JSON.stringify(body));
    } catch {
      // the peer reset the stream meanwhile
    }
  }

  #refuseStream(stream: ServerHttp2Stream, reason: RefusalReason, detail: string, peer: string | undefined): void {
    this.#refuse(reason, detail, peer);
    const status = reason === 'oversized' ? 413 : reason === 'conflict' ? 409 : reason === 'unknown-origin' || reason === 'origin-mismatch' || reason === 'retired-identity' ? 403 : 400;
    this.#answer(stream, status, { error: reason, detail });
    // Stop reading whatever else the peer sends on this stream.
    stream.on('data', () => undefined);
  }

  /** Read a body up to `limit` bytes; undefined (and the stream answered) when over. */
  async #body(stream: ServerHttp2Stream, limit: number): Promise<Buffer | undefined> {
    const chunks: Buffer[] = [];
    let size = 0;
    return new Promise((resolve) => {
      const over = (): void => {
        stream.removeAllListeners('data');
        resolve(undefined);
      };
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) over();
        else chunks.push(chunk);
      });
      stream.once('end', () => resolve(size > limit ? undefined : Buffer.concat(chunks)));
      stream.once('error', () => resolve(undefined));
      stream.once('close', () => resolve(size > limit ? undefined : Buffer.concat(chunks)));
    });
  }

  async #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    const peer = stream.session?.socket?.remoteAddress;
    const state = stream.session ? this.#sessions.get(stream.session) : undefined;
    stream.on('error', () => undefined);
    if (!state?.origin) return this.#refuseStream(stream, 'unknown-origin', 'the certificate has no CN', peer);
    const one = (name: string): string | undefined => {
      const v = headers[name];
      return typeof v === 'string' ? v : undefined;
    };
    const path = one(':path');
    if (one(':method') !== 'POST' || (path !== PATHS.copy && path !== PATHS.discard && path !== PATHS.reconcile)) {
      return this.#refuseStream(stream, 'bad-request', `${one(':method')} ${path}`, peer);
    }
    const named = one(HEADERS.origin) ?? '';
    // a co-holder of the named origin's copies may send discard notices for it (its secondary delivered them)
    const forOrigin = path === PATHS.discard && named !== state.origin && this.#opts.origins.includes(named) && (this.#opts.coHolders?.(named) ?? []).includes(state.origin);
    const origin = forOrigin ? named : state.origin;
    if (!this.#opts.origins.includes(origin)) return this.#refuseStream(stream, 'unknown-origin', `node ${origin} is not an origin of this holder`, peer);
    if (named !== origin) return this.#refuseStream(stream, 'origin-mismatch', `request names ${JSON.stringify(one(HEADERS.origin))}, certificate ${origin}`, peer);
    const seqText = one(HEADERS.seq) ?? '';
    const seq = /^[1-9][0-9]{0,15}$/.test(seqText) ? Number(seqText) : NaN;
    if (!Number.isSafeInteger(seq)) return this.#refuseStream(stream, 'bad-request', `sequence ${JSON.stringify(seqText)}`, peer);
    if (seq <= state.lastSeq) return this.#refuseStream(stream, 'replayed', `sequence ${seq} after ${state.lastSeq}`, peer);
    state.lastSeq = seq;
    const spoolId = one(HEADERS.spoolId) ?? '';
    const limit = path === PATHS.copy ? this.#opts.maxCopyBytes ?? DEFAULT_MAX_COPY_BYTES : MAX_DISCARD_BYTES;
    const declared = Number(one('content-length') ?? '0');
    if (declared > limit) return this.#refuseStream(stream, 'oversized', `${declared} bytes declared; the limit is ${limit}`, peer);
    const body = await this.#body(stream, limit);
    if (!body) return this.#refuseStream(stream, 'oversized', `body over ${limit} bytes (or cut off)`, peer);
    try {
      if (path === PATHS.copy) {
        const result = await this.#opts.store.store(origin, spoolId, one(HEADERS.queueId) ?? '', body);
        if (result === 'stored') this.counts.stored++;
        else this.counts.duplicates++;
        this.#answer(stream, 200, { result });
      } else if (path === PATHS.reconcile) {
        const parsed = parseReconcileBody(body);
        if ('error' in parsed) return this.#refuseStream(stream, 'bad-request', parsed.error, peer);
        this.counts.reconciles++;
        this.#answer(stream, 200, await this.#opts.store.reconcile(origin, spoolId, parsed.queueIds));
      } else {
        const parsed = parseDiscardBody(body);
        if ('error' in parsed) return this.#refuseStream(stream, 'bad-request', parsed.error, peer);
        const result = await this.#opts.store.applyDiscards(origin, spoolId, parsed.notices);
        this.counts.discardBatches++;
        this.counts.removed += result.removed;
        this.#answer(stream, 200, result);
      }
    } catch (err) {
      if (err instanceof ShadowRefusal) return this.#refuseStream(stream, err.reason, err.message, peer);
      this.counts.storeErrors++;
      this.#answer(stream, 503, { error: 'store-failed', detail: String((err as Error).message) });
    }
  }

  /** Stop listening and end every session. */
  async close(): Promise<void> {
    for (const session of this.#sessions.keys()) session.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
