/**
 * receiver/smtp-receiver.ts — the ESMTP listener: smtp-server behind our own typed adapter.
 *
 * Exports: SmtpReceiver, ReceiverDeps, AcceptState.
 *
 * Policy, in the order a client meets it:
 *  - PROXY header (v1 or v2) from the balancers in smtp.proxy_protocol: proxy-front.ts.
 *  - connect: refused with 421 while the node is not ready (starting, draining, stopping);
 *    connection limit.
 *  - MAIL: sender syntax is checked by smtp-server; SIZE= above the limit → 552 5.3.4.
 *  - RCPT: at most smtp.max_recipients (then 452 4.5.3); the router resolves the address:
 *    unknown local user → 550 5.1.1; relaying to a domain not ours only from relay networks or
 *    authenticated clients (else 554 5.7.1); a lookup that fails → 451 4.3.0, never 5xx.
 *  - DATA: the header section is collected (up to 256 KiB), then a Received: header (and a
 *    Message-ID when missing) is put in front and the message streams into the spool's
 *    temporary file as it arrives (spool/incoming.ts): memory per connection stays small.
 *    Over smtp.max_message_size → 552 5.3.4 after the whole body; more than 100 Received:
 *    headers → 554 5.4.6 (mail loop). Then the spool commit — file and folder fsynced — and
 *    the tracking log's `received` line fsynced; only then `250 2.0.0 Ok: queued as ID`.
 *    A failing write or commit (disk full, I/O error) gives 451 4.3.0 and the client keeps
 *    the message. The input is always read to its end before the reply.
 *
 * Errors are SmtpReplyError everywhere and become an SMTP reply in exactly one place, toReply().
 * Reads config keys: smtp.*, relay.networks, tables.relay_networks (via deps), node.hostname.
 */
import { readFileSync } from 'node:fs';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession, type SMTPServerDataStream } from 'smtp-server';
import { SMTPConnection as ServerConnection } from 'smtp-server/lib/smtp-connection.js';
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import type { Envelope, EnvelopeRecipient, DsnNotify } from '../spool/types.ts';
import type { Router } from '../router/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { SmtpReplyError, TempLookupError } from '../util/errors.ts';
import { receivedHeader } from './received-header.ts';
import { installProxyFront } from './proxy-front.ts';
import { headerEnd, findHeader, countHeader, HeaderCollector } from '../util/message-headers.ts';

/** What the node's state allows the listener to do. */
export type AcceptState =
  | { type: 'accepting' }
  /** no new sessions or transactions; a transaction already under way is finished */
  | { type: 'draining' }
  | { type: 'refusing'; reason: string };

export interface ReceiverDeps {
  config: TandemConfig;
  router: Router;
  /** Start writing a message to the spool (Spool.beginMessage). */
  beginMessage(queueId: string): MessageWriter;
  newQueueId(): string;
  tracking: TrackingLog;
  logger: Logger;
  /** Is the client address in the relay networks? */
  isRelayClient(address: string): boolean;
  /** Check a user's password (AUTH); absent = AUTH not offered. */
  verifyPassword?(user: string, password: string): Promise<boolean>;
  acceptState(): AcceptState;
  /**
   * Called after the 250: the queue manager picks the message up. `message` is there when the
   * spool still had it in memory (small messages), so it need not be read back.
   */
  onQueued(queueId: string, envelope: Envelope, size: number, message?: Buffer): void;
  metrics?: { received(bytes: number): void; rejected(stage: string, code: number): void };
}

/** A message on its way into the spool (spool/incoming.ts IncomingMessage). */
export interface MessageWriter {
  /** Bytes written so far. */
  readonly size: number;
  write(chunk: Buffer): Promise<void>;
  /** Durable in incoming/ when it resolves; with the bytes if they were held in memory. */
  commit(envelope: Envelope): Promise<Buffer | undefined>;
  abort(): Promise<void>;
}

interface Transaction {
  recipients: EnvelopeRecipient[];
  seen: Set<string>;
}

const MAX_HOPS = 100;

// XXX: smtp-server picks the enhanced status code from the reply code alone, so a 554 for a
// relay refusal would say 5.6.0. An error message starting with "X.Y.Z " carries our own code:
// this wrapper sends it in place of the automatic one. It changes only replies whose text starts
// with an enhanced code.
const ENHANCED_PREFIX = /^([245]\.\d{1,3}\.\d{1,3}) /;
const originalSend = ServerConnection.prototype.send;
if (!(originalSend as any).tandemPatched) {
  const patched = function (this: any, code: number, data: unknown, context?: unknown) {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data) && this._server?.options?.tandem) {
      return originalSend.call(this, code, data, false);
    }
    return originalSend.call(this, code, data as string, context as string);
  };
  (patched as any).tandemPatched = true;
  ServerConnection.prototype.send = patched;
}

export class SmtpReceiver {
  private server: SMTPServer;
  private transactions = new WeakMap<SMTPServerSession, Transaction>();
  private inFlight = new Set<Promise<unknown>>();
  /** Commands refused before STARTTLS (AUTH among them). */
  private readonly plaintextDisabled: string[];

  constructor(private readonly deps: ReceiverDeps) {
    const c = deps.config.smtp;
    const tls = c.tls ? { key: readFileSync(c.tls.key), cert: readFileSync(c.tls.cert) } : {};
    const disabled: string[] = [];
    if (!c.tls) disabled.push('STARTTLS');
    if (!c.tls || !deps.verifyPassword) disabled.push('AUTH');
    this.plaintextDisabled = disabled.includes('AUTH') ? disabled : [...disabled, 'AUTH'];
    this.server = new SMTPServer({
      name: deps.config.node.hostname,
      banner: c.banner,
      size: c.max_message_size,
      maxClients: c.max_connections,
      maxCommandLength: c.max_line_length,
      socketTimeout: c.socket_timeout,
      closeTimeout: 5000,
      useProxy: c.proxy_protocol,
      authOptional: true,
      allowInsecureAuth: false,
      authMethods: ['PLAIN', 'LOGIN'],
      disabledCommands: disabled,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      disableReverseLookup: true,
      logger: false,
      ...tls,
      onConnect: (session, cb) => this.handle('connect', cb, () => this.onConnect(session)),
      // AUTH only after STARTTLS (Postfix smtpd_tls_auth_only): not even advertised before
      onSecure: (_socket, session, cb) => {
        session.disabledCommands = disabled;
        cb();
      },
      onAuth: (auth, session, cb) => {
        this.onAuth(auth.username ?? '', auth.password ?? '', session).then(
          (user) => cb(null, { user }),
          (err) => cb(this.refuse('auth', err)),
        );
      },
      onMailFrom: (address, session, cb) => this.handle('mail', cb, () => this.onMailFrom(address, session)),
      onRcptTo: (address, session, cb) => this.handle('rcpt', cb, () => this.onRcptTo(address, session)),
      onData: (stream, session, cb) => {
        const p = this.onData(stream, session).then(
          (queueId) => cb(null, `2.0.0 Ok: queued as ${queueId}`),
          (err) => cb(this.refuse('data', err)),
        );
        this.inFlight.add(p);
        p.finally(() => this.inFlight.delete(p));
      },
    });
    (this.server.options as { tandem?: boolean }).tandem = true;
    installProxyFront(this.server.server, c.proxy_protocol, c.socket_timeout, deps.logger);
    this.server.on('error', (err) => deps.logger.warn({ err: String(err) }, 'smtp connection error'));
  }

  /** Listen on the configured address; resolves with the bound address (port 0 → real port). */
  listen(): Promise<{ host: string; port: number }> {
    const { host, port } = this.deps.config.smtp.listen;
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`cannot listen for SMTP on ${host}:${port}: ${err.message}`));
      this.server.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.server.off('error', onError);
        const a = this.server.server.address() as { address: string; port: number };
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stop accepting connections; wait for commits already under way; close idle sessions. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.allSettled([...this.inFlight]);
  }

  private handle(stage: string, cb: (err?: Error | null) => void, fn: () => Promise<void> | void): void {
    Promise.resolve().then(fn).then(() => cb(), (err) => cb(this.refuse(stage, err)));
  }

  /** Count a refusal by stage and code, and turn it into the reply. */
  private refuse(stage: string, err: unknown): Error & { responseCode: number } {
    const reply = toReply(err);
    this.deps.metrics?.rejected(stage, reply.responseCode);
    return reply;
  }

  private onConnect(session: SMTPServerSession): void {
    if (!session.secure) session.disabledCommands = this.plaintextDisabled;
    const state = this.deps.acceptState();
    if (state.type !== 'accepting') {
      const reason = state.type === 'draining' ? 'node is draining' : state.reason;
      throw new SmtpReplyError(421, '4.3.2', `${this.deps.config.node.hostname} ${reason}; try another server or later`);
    }
  }

  private async onAuth(user: string, password: string, _session: SMTPServerSession): Promise<string> {
    const verify = this.deps.verifyPassword;
    if (verify && user && (await verify(user, password))) return user;
    this.deps.logger.warn({ user }, 'authentication failed');
    throw new SmtpReplyError(535, '5.7.8', 'Error: authentication failed');
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): void {
    this.transactions.set(session, { recipients: [], seen: new Set() });
    const declared = address.args && typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
    if (declared > this.deps.config.smtp.max_message_size) {
      throw new SmtpReplyError(552, '5.3.4', `Message size exceeds fixed limit of ${this.deps.config.smtp.max_message_size} bytes`);
    }
    const state = this.deps.acceptState().type;
    if (state === 'draining') throw new SmtpReplyError(421, '4.3.2', 'Node is draining; try another server');
    if (state === 'refusing') throw new SmtpReplyError(421, '4.3.2', 'Service shutting down; try again later');
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const tx = this.transactions.get(session) ?? { recipients: [], seen: new Set<string>() };
    this.transactions.set(session, tx);
    const rcpt = address.address;
    if (session.envelope.rcptTo.length >= this.deps.config.smtp.max_recipients) {
      throw new SmtpReplyError(452, '4.5.3', `Error: too many recipients (limit ${this.deps.config.smtp.max_recipients} per message)`);
    }
    let res;
    try {
      res = await this.deps.router.resolveRecipient(rcpt);
    } catch (err) {
      if (err instanceof TempLookupError) {
        this.deps.logger.warn({ rcpt, err: err.message }, 'recipient lookup failed; answering 451');
        throw new SmtpReplyError(451, '4.3.0', `<${rcpt}>: Temporary lookup failure; try again later`);
      }
      throw err;
    }
    switch (res.type) {
      case 'unknown-user':
        throw new SmtpReplyError(550, '5.1.1', `<${rcpt}>: Recipient address rejected: User unknown`);
      case 'invalid':
        throw new SmtpReplyError(550, '5.4.6', `<${rcpt}>: Recipient address rejected: ${res.reason}`);
      case 'relay':
        if (res.authorizedOnly && !session.user && !this.deps.isRelayClient(session.remoteAddress)) {
          // a refusal is permanent: never on an answer the directory could not confirm
          if (res.uncertain) throw new SmtpReplyError(451, '4.3.0', `<${rcpt}>: Temporary lookup failure (directory unreachable); try again later`);
          throw new SmtpReplyError(554, '5.7.1', `<${rcpt}>: Relay access denied`);
        }
        break;
      case 'local':
        break;
    }
    const notify = address.dsn?.notify?.length ? (address.dsn.notify as DsnNotify[]) : undefined;
    const original = address.dsn?.orcpt ? address.dsn.orcpt.replace(/^rfc822;/i, '') : rcpt;
    for (const a of res.addresses) {
      const key = a.toLowerCase();
      if (tx.seen.has(key)) continue;
      tx.seen.add(key);
      tx.recipients.push({ address: a, original, ...(notify ? { notify } : {}) });
    }
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const tx = this.transactions.get(session);
    this.transactions.delete(session);
    const limit = this.deps.config.smtp.max_message_size;
    const queueId = this.deps.newQueueId();
    const out = this.deps.beginMessage(queueId);
    let head: HeaderCollector | undefined = new HeaderCollector(); // until the headers are written
    let messageId = '';
    let size = 0;
    let failure: unknown;
    try {
      // read to the end whatever happens, so that the reply follows the client's final "."
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (failure || size > limit || !tx?.recipients.length) continue;
        try {
          if (head) {
            if (!head.push(chunk)) continue;
            messageId = await this.writeHead(out, head.bytes(), queueId, session, tx);
            head = undefined;
          } else {
            await out.write(chunk);
          }
        } catch (err) {
          failure = err;
        }
      }
      if (stream.sizeExceeded || size > limit) {
        throw new SmtpReplyError(552, '5.3.4', `Error: message exceeds fixed maximum message size of ${limit} bytes`);
      }
      if (!tx || tx.recipients.length === 0) throw new SmtpReplyError(554, '5.5.1', 'Error: no valid recipients');
      if (!failure && head) messageId = await this.writeHead(out, head.bytes(), queueId, session, tx).catch((err) => { failure = err; return ''; });
      if (failure instanceof SmtpReplyError) throw failure;
      const state = this.deps.acceptState();
      if (state.type === 'refusing') throw new SmtpReplyError(451, '4.3.2', `${state.reason}; try again later`);
      if (failure) throw this.commitFailed(queueId, failure);
      const mailFrom = session.envelope.mailFrom;
      const envelope: Envelope = {
        queueId,
        nodeId: this.deps.config.node.id,
        sender: mailFrom ? mailFrom.address : '',
        recipients: tx.recipients,
        arrivedAt: Date.now(),
        messageId,
        client: { address: session.remoteAddress, helo: session.hostNameAppearsAs, ...(session.user ? { user: String(session.user) } : {}) },
        ...(session.envelope.dsn && (session.envelope.dsn.ret || session.envelope.dsn.envid)
          ? { dsn: { ...(session.envelope.dsn.ret ? { ret: session.envelope.dsn.ret as 'FULL' | 'HDRS' } : {}), ...(session.envelope.dsn.envid ? { envid: session.envelope.dsn.envid } : {}) } }
          : {}),
        ...(session.envelope.bodyType === '8bitmime' ? { body8bit: true } : {}),
        ...(session.envelope.smtpUtf8 ? { smtputf8: true } : {}),
      };
      const stored = out.size;
      let held: Buffer | undefined;
      try {
        held = await out.commit(envelope);
      } catch (err) {
        throw this.commitFailed(queueId, err);
      }
      // only a committed message is "received"; the line is on disk before the 250
      await this.deps.tracking.recordDurable({
        event: 'received', queueId, messageId, sender: envelope.sender, size: stored,
        client: session.remoteAddress, recipients: tx.recipients.length,
      });
      this.deps.metrics?.received(stored);
      this.deps.onQueued(queueId, envelope, stored, held);
      return queueId;
    } finally {
      await out.abort(); // nothing left behind unless committed (a no-op after commit)
    }
  }

  /**
   * Write our trace header, a Message-ID if the message has none, and the collected header
   * section; check the hop count. Returns the Message-ID.
   */
  private async writeHead(out: MessageWriter, head: Buffer, queueId: string, session: SMTPServerSession, tx: Transaction): Promise<string> {
    const end = headerEnd(head);
    const headers = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
    if (countHeader(headers, 'Received') > MAX_HOPS) {
      throw new SmtpReplyError(554, '5.4.6', `Error: too many hops (more than ${MAX_HOPS} Received: headers); mail loop?`);
    }
    const hostname = this.deps.config.node.hostname;
    let messageId = findHeader(headers, 'Message-ID');
    let added = receivedHeader({
      helo: session.hostNameAppearsAs,
      clientAddress: session.remoteAddress,
      clientHostname: session.clientHostname && session.clientHostname !== `[${session.remoteAddress}]` ? session.clientHostname : undefined,
      byHostname: hostname,
      queueId,
      protocol: `${session.transmissionType ?? 'ESMTP'}`,
      // the address the client gave, not an alias's targets (Postfix does the same)
      forRecipient: session.envelope.rcptTo.length === 1 ? session.envelope.rcptTo[0].address : undefined,
      date: new Date(),
    });
    if (!messageId) {
      messageId = `<${queueId}@${hostname}>`;
      added += `Message-ID: ${messageId}\r\n`;
    }
    await out.write(Buffer.from(added, 'latin1'));
    await out.write(head);
    return messageId;
  }

  private commitFailed(queueId: string, err: unknown): SmtpReplyError {
    this.deps.logger.error({ queueId, err: String(err) }, 'spool commit failed; answering 451');
    return new SmtpReplyError(451, '4.3.0', 'Error: queue file write error; try again later');
  }
}

/** The one place where an error becomes an SMTP reply. */
function toReply(err: unknown): Error & { responseCode: number } {
  if (err instanceof SmtpReplyError) {
    return Object.assign(new Error(`${err.enhanced} ${err.message}`), { responseCode: err.replyCode });
  }
  // a bug: never 5xx for our own failure; the client will retry
  return Object.assign(new Error(`4.3.0 Error: internal error (${(err as Error)?.message ?? err}); try again later`), { responseCode: 451 });
}

