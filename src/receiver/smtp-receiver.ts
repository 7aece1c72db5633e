/**
 * receiver/smtp-receiver.ts — the ESMTP listener: smtp-server behind our own typed adapter.
 *
 * One SmtpReceiver per listener (listeners.ts: address, TLS mode, AUTH policy, sender
 * authentication policy); the per-client limits and the AUTH throttle are shared by the node's
 * listeners. Defenses live in their own modules: client-limits.ts (per-client counts and rates),
 * session-guard.ts (command and DATA deadlines, error and junk command limits),
 * auth-throttle.ts, protocol-checks.ts, sender-auth.ts (SPF/DKIM/DMARC/ARC, DKIM signing),
 * content-filter.ts (Rspamd); docs/security.md describes them all.
 *
 * Policy, in the order a client meets it:
 *  - PROXY header (v1 or v2) from the balancers in smtp.proxy_protocol: proxy-front.ts.
 *  - connect: refused with 421 while the node is not ready (starting, draining, stopping);
 *    connection limit; per-client limits (421 4.7.0).
 *  - AUTH (inside TLS only): auth-throttle.ts. A listener with auth: required refuses MAIL
 *    before AUTH (530 5.7.0).
 *  - MAIL/RCPT: unknown parameters 555 5.5.4, ENVID/ORCPT length 501 5.5.4, spool free space
 *    452 4.3.1, message and recipient rates 450 4.7.1, untrusted routing 554 5.7.1.
 *  - MAIL: sender syntax is checked by smtp-server; SIZE= above the limit → 552 5.3.4.
 *  - RCPT: at most smtp.max_recipients (then 452 4.5.3); the router resolves the address:
 *    unknown local user → 550 5.1.1; relaying to a domain not ours only from relay networks or
 *    authenticated clients (else 554 5.7.1); a lookup that fails → 451 4.3.0, never 5xx.
 *  - DATA: the header section is collected (up to 256 KiB), then a Received: header (and a
 *    Message-ID when missing) is put in front and the message streams into the spool's
 *    temporary file as it arrives (spool/incoming.ts): memory per connection stays small.
 *    Over smtp.max_message_size → 552 5.3.4 after the whole body; header limits 552 5.6.0;
 *    more than smtp.max_hops Received: headers → 554 5.4.6 (mail loop). With sender
 *    authentication, a content filter or DKIM signing in play, the whole message is collected
 *    first, checked, and written with the results on top (writeChecked). Then the spool commit — file and folder fsynced — and
 *    the tracking log's `received` line fsynced; only then `250 2.0.0 Ok: queued as ID`.
 *    A failing write or commit (disk full, I/O error) gives 451 4.3.0 and the client keeps
 *    the message. The input is always read to its end before the reply.
 *
 * Errors are SmtpReplyError everywhere and become an SMTP reply in exactly one place, toReply().
 * Reads config keys (ReceiverConfig): smtp.*, node.hostname and node.id, content_filter, sender_auth;
 * relay.networks and tables.relay_networks through deps (isRelayClient).
 */
import { readFileSync } from 'node:fs';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession, type SMTPServerDataStream } from 'smtp-server';
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import type { Envelope, EnvelopeRecipient, DsnNotify } from '../spool/types.ts';
import type { Router } from '../router/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { SmtpReplyError, TempLookupError } from '../util/errors.ts';
import { receivedHeader, receivedProtocol } from './received-header.ts';
import { parseOrcpt } from '../util/dsn-address.ts';
import { installProxyFront } from './proxy-front.ts';
import { CONNECTION_SLOTS_OPTION, GREETING_DELAY_OPTION } from './greeting-delay.ts';
import { ConnectionSlots } from './connection-slots.ts';
import { applySmtpServerPatches } from './smtp-server-patches.ts';
import { headerEnd, bodyStart, findHeader, HeaderCollector } from '../util/message-headers.ts';
import { fromDomain, withoutOurAuthResults, type SenderAuth } from './sender-auth.ts';
import type { SigningKey } from './dkim-keys.ts';
import type { RspamdFilter } from './content-filter.ts';
import { SessionGuard } from './session-guard.ts';
import type { ClientLimitsApi, LimitRefusal } from './client-limits.ts';
import type { AuthThrottle } from './auth-throttle.ts';
import { checkMailParams, checkRcptParams, checkHeaderSection, isUntrustedRouting, type SpoolSpace } from './protocol-checks.ts';
import { resolveListeners, createClientLimits, createAuthThrottle, type ListenerSpec } from './listeners.ts';

/** What the node's state allows the listener to do. */
export type AcceptState =
  | { type: 'accepting' }
  /** no new sessions or transactions; a transaction already under way is finished */
  | { type: 'draining' }
  | { type: 'refusing'; reason: string };

/** The slice of the config a receiver reads. */
export type ReceiverConfig = Pick<TandemConfig, 'node' | 'smtp' | 'content_filter' | 'sender_auth'>;

export interface ReceiverDeps {
  /** What the receiver reads of the config (and the listener, limits and AUTH throttle it makes when not given them). */
  config: ReceiverConfig;
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
   * Asked once more just before a message is committed (default: acceptState()): an SMTP worker
   * asks the node's main process here, so that no 250 follows a fence or a drain (smtp-workers.ts).
   */
  mayCommit?(): Promise<AcceptState>;
  /**
   * Called after the 250: the queue manager picks the message up. `message` is there when the
   * spool still had it in memory (small messages), so it need not be read back.
   */
  onQueued(queueId: string, envelope: Envelope, size: number, message?: Buffer, opts?: { hold?: boolean }): void;
  metrics?: { received(bytes: number): void; rejected(stage: string, code: number): void; limitRefused?(limit: string): void };
  /** This listener's address and policy; default: the one listener of smtp.* (listeners.ts). */
  listener?: ListenerSpec;
  /** Per-client limits shared by the node's listeners; default: one of this receiver's own. */
  limits?: ClientLimitsApi;
  /** AUTH with throttling, shared by the node's listeners; default: built on verifyPassword. */
  auth?: AuthThrottle;
  /** Free space floor of the spool (452 4.3.1 at MAIL below it). */
  spoolSpace?: SpoolSpace;
  /** SPF/DKIM/DMARC/ARC verification and DKIM signing (sender-auth.ts). */
  senderAuth?: SenderAuth;
  /** Spam/virus scanning before the 250 (content-filter.ts). */
  contentFilter?: RspamdFilter;
}

/** A message on its way into the spool (spool/incoming.ts IncomingMessage). */
export interface MessageWriter {
  /** Bytes written so far. */
  readonly size: number;
  write(chunk: Buffer): Promise<void>;
  /**
   * Durable in incoming/ when it resolves; with the bytes if they were held in memory.
   * `beside` runs once the file is fsynced and named, beside the folder's fsync (IncomingMessage).
   */
  commit(envelope: Envelope, beside?: () => Promise<void>): Promise<Buffer | undefined>;
  abort(): Promise<void>;
}

interface Transaction {
  recipients: EnvelopeRecipient[];
  seen: Set<string>;
}

/** The version warning is logged once per process (one receiver per listener). */
let versionWarned = false;

export class SmtpReceiver {
  private server: SMTPServer;
  private transactions = new WeakMap<SMTPServerSession, Transaction>();
  private inFlight = new Set<Promise<unknown>>();
  /** Commands refused before STARTTLS (AUTH among them). */
  private readonly plaintextDisabled: string[];
  readonly listener: ListenerSpec;
  private readonly limits: ClientLimitsApi;
  private readonly ownLimits: boolean;
  private readonly auth?: AuthThrottle;
  private readonly guard: SessionGuard;
  /** Sessions counted in the per-client limits (released at close). */
  private readonly counted = new WeakSet<SMTPServerSession>();
  /** Sessions closed before they were counted (the limits answer asynchronously in an SMTP worker). */
  private readonly closedEarly = new WeakSet<SMTPServerSession>();

  constructor(private readonly deps: ReceiverDeps) {
    const patches = applySmtpServerPatches();
    if (!patches.versionMatches && !versionWarned) {
      versionWarned = true;
      deps.logger.warn({ smtpServer: patches.version }, `smtp-server ${patches.version} is not the release Tandem's patches were checked for (receiver/smtp-server-patches.ts); run the receiver tests before using it`);
    }
    const c = deps.config.smtp;
    const listener = this.listener = deps.listener ?? resolveListeners(deps.config)[0];
    const useTls = listener.tls !== 'none' && c.tls;
    const tls = useTls ? { key: readFileSync(c.tls!.key), cert: readFileSync(c.tls!.cert), secure: listener.tls === 'implicit' } : {};
    this.ownLimits = !deps.limits;
    this.limits = deps.limits ?? createClientLimits(deps.config, deps.isRelayClient);
    this.auth = deps.auth ?? (deps.verifyPassword ? createAuthThrottle(deps.config, this.limits, deps.verifyPassword, (r) => this.limitRefused(r)) : undefined);
    const disabled: string[] = [];
    if (listener.tls !== 'starttls' || !useTls) disabled.push('STARTTLS');
    if (!useTls || !this.auth || listener.auth === 'none') disabled.push('AUTH');
    this.plaintextDisabled = disabled.includes('AUTH') ? disabled : [...disabled, 'AUTH'];
    const l = c.limits;
    this.guard = new SessionGuard({
      commandTimeout: c.socket_timeout,
      stressTimeout: l.stress_timeout,
      stressConnections: Math.ceil((listener.maxConnections * l.stress_percent) / 100),
      minDataRate: l.min_data_rate,
      softErrorLimit: l.soft_error_limit,
      errorSleep: l.error_sleep_time,
      hardErrorLimit: l.hard_error_limit,
      junkCommandLimit: l.junk_command_limit,
      onRefusal: (reason) => this.limitRefused(reason),
    });
    this.server = new SMTPServer({
      name: deps.config.node.hostname,
      banner: c.banner,
      size: c.max_message_size,
      maxClients: listener.maxConnections,
      maxCommandLength: c.max_line_length,
      socketTimeout: c.socket_timeout,
      closeTimeout: 5000,
      useProxy: listener.proxyProtocol,
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
      onClose: (session) => {
        if (this.counted.delete(session)) this.limits.release(session.remoteAddress);
        else this.closedEarly.add(session);
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
    Object.assign(this.server.options, { tandem: true, tandemGuard: this.guard });
    // smtp.greeting_delay: smtp-server's fixed 100 ms early-talker pause, made a setting; and
    // smtp.connection_wait: a connection beyond max_connections waits for a slot (connection-slots.ts)
    if (patches.greetingDelay) {
      Object.assign(this.server.options, {
        [GREETING_DELAY_OPTION]: c.greeting_delay,
        [CONNECTION_SLOTS_OPTION]: new ConnectionSlots({
          max: listener.maxConnections,
          waitMs: c.connection_wait,
          maxWaiting: 10 * listener.maxConnections,
          onRefused: () => this.limitRefused('max_connections'),
        }),
      });
    } else {
      deps.logger.warn('smtp.greeting_delay and smtp.connection_wait have no effect with this smtp-server version (it keeps its own 100 ms pause and refuses at once beyond max_connections)');
    }
    installProxyFront(this.server.server, listener.proxyProtocol, c.socket_timeout, deps.logger);
    this.server.on('error', (err) => deps.logger.warn({ err: String(err) }, 'smtp connection error'));
  }

  /** Listen on the configured address; resolves with the bound address (port 0 → real port). */
  listen(): Promise<{ host: string; port: number }> {
    const { host, port } = this.listener.listen;
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`cannot listen for SMTP (listener ${this.listener.name}) on ${host}:${port}: ${err.message}`));
      this.server.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.server.off('error', onError);
        const a = this.server.server.address() as { address: string; port: number };
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stop accepting connections; wait for commits already under way; close idle sessions. */
  /** Use a renewed certificate and key for new TLS sessions (SIGHUP, POST /reload); throws if they do not load. */
  updateTls(tls: { key: Buffer; cert: Buffer }): void {
    this.server.updateSecureContext(tls);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.allSettled([...this.inFlight]);
    if (this.ownLimits) this.limits.close();
  }

  private limitRefused(limit: string): void {
    this.deps.metrics?.limitRefused?.(limit);
  }

  /** A per-client limit refused: count it, log it, and answer 421 (connect) or 450 (MAIL, RCPT). */
  private overLimit(refusal: LimitRefusal, session: SMTPServerSession, code: 421 | 450): SmtpReplyError {
    this.limitRefused(refusal.limit);
    this.deps.logger.info({ event: 'client-limit', limit: refusal.limit, client: session.remoteAddress, listener: this.listener.name }, refusal.message);
    return new SmtpReplyError(code, code === 421 ? '4.7.0' : '4.7.1', refusal.message);
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

  private async onConnect(session: SMTPServerSession): Promise<void> {
    if (!session.secure) session.disabledCommands = this.plaintextDisabled;
    const state = this.deps.acceptState();
    if (state.type !== 'accepting') {
      const reason = state.type === 'draining' ? 'node is draining' : state.reason;
      throw new SmtpReplyError(421, '4.3.2', `${this.deps.config.node.hostname} ${reason}; try another server or later`);
    }
    const refusal = await this.limits.connect(session.remoteAddress);
    if (refusal) throw this.overLimit(refusal, session, 421);
    // gone while the limits answered: counted, so released now (not left counted for ever)
    if (this.closedEarly.has(session)) this.limits.release(session.remoteAddress);
    else this.counted.add(session);
  }

  private async onAuth(user: string, password: string, session: SMTPServerSession): Promise<string> {
    if (!this.auth) throw new SmtpReplyError(535, '5.7.8', 'Error: authentication failed');
    try {
      return await this.auth.authenticate(session, user, password);
    } catch (err) {
      this.deps.logger.warn({ user, client: session.remoteAddress, listener: this.listener.name }, 'authentication failed');
      throw err;
    }
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    this.transactions.set(session, { recipients: [], seen: new Set() });
    if (this.listener.auth === 'required' && !session.user) {
      throw new SmtpReplyError(530, '5.7.0', `Error: authentication required on this port (listener ${this.listener.name})`);
    }
    checkMailParams(address.args);
    const declared = address.args && typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
    if (declared > this.deps.config.smtp.max_message_size) {
      throw new SmtpReplyError(552, '5.3.4', `Message size exceeds fixed limit of ${this.deps.config.smtp.max_message_size} bytes`);
    }
    const state = this.deps.acceptState().type;
    if (state === 'draining') throw new SmtpReplyError(421, '4.3.2', 'Node is draining; try another server');
    if (state === 'refusing') throw new SmtpReplyError(421, '4.3.2', 'Service shutting down; try again later');
    await this.deps.spoolSpace?.check(declared);
    const refusal = await this.limits.message(session.remoteAddress);
    if (refusal) throw this.overLimit(refusal, session, 450);
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const tx = this.transactions.get(session) ?? { recipients: [], seen: new Set<string>() };
    this.transactions.set(session, tx);
    const rcpt = address.address;
    checkRcptParams(address.args);
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
      case 'relay': {
        const trusted = Boolean(session.user) || this.deps.isRelayClient(session.remoteAddress);
        if (res.authorizedOnly && !trusted) {
          // a refusal is permanent: never on an answer the directory could not confirm
          if (res.uncertain) throw new SmtpReplyError(451, '4.3.0', `<${rcpt}>: Temporary lookup failure (directory unreachable); try again later`);
          throw new SmtpReplyError(554, '5.7.1', `<${rcpt}>: Relay access denied`);
        }
        // user%elsewhere@relay-domain: the next hop could route it anywhere (Postfix allow_untrusted_routing)
        if (!trusted && !this.deps.config.smtp.allow_untrusted_routing && isUntrustedRouting(rcpt)) {
          throw new SmtpReplyError(554, '5.7.1', `<${rcpt}>: Relay access denied (sender-specified routing)`);
        }
        break;
      }
      case 'local':
        break;
    }
    const refusal = await this.limits.recipient(session.remoteAddress);
    if (refusal) throw this.overLimit(refusal, session, 450);
    const notify = address.dsn?.notify?.length ? (address.dsn.notify as DsnNotify[]) : undefined;
    // ORCPT is kept as given (type and address) and passed on as such (RFC 3461 §5.2.1)
    const orcpt = address.dsn?.orcpt ? parseOrcpt(address.dsn.orcpt) : undefined;
    if (address.dsn?.orcpt && !orcpt) throw new SmtpReplyError(501, '5.5.4', `Bad ORCPT parameter: ${JSON.stringify(address.dsn.orcpt)}`);
    for (const a of res.addresses) {
      const key = a.toLowerCase();
      if (tx.seen.has(key)) continue;
      tx.seen.add(key);
      tx.recipients.push({ address: a, original: rcpt, ...(orcpt ? { orcpt } : {}), ...(notify ? { notify } : {}) });
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
    let hold = false;
    const trusted = Boolean(session.user) || this.deps.isRelayClient(session.remoteAddress);
    const sa = this.deps.senderAuth;
    const verify = sa && this.listener.senderAuth !== 'off' && !session.user ? this.listener.senderAuth : undefined;
    const scan = this.deps.contentFilter && (!session.user || this.deps.config.content_filter?.scan_authenticated);
    // sender authentication, scanning and signing need the whole message before its first byte is written
    const whole: Buffer[] | undefined = verify || scan || (sa?.signs && trusted) ? [] : undefined;
    try {
      // read to the end whatever happens, so that the reply follows the client's final "."
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.length;
        this.guard.dataProgress(session, size);
        if (failure || size > limit || !tx?.recipients.length) continue;
        if (whole) {
          whole.push(chunk);
          continue;
        }
        try {
          if (head) {
            if (!head.push(chunk)) continue;
            messageId = await this.writeHead(out, head.bytes(), queueId, session);
            head = undefined;
          } else {
            await out.write(chunk);
          }
        } catch (err) {
          failure = err;
        }
      }
      this.guard.dataProgress(session, size, true);
      if (stream.sizeExceeded || size > limit) {
        throw new SmtpReplyError(552, '5.3.4', `Error: message exceeds fixed maximum message size of ${limit} bytes`);
      }
      if (!tx || tx.recipients.length === 0) throw new SmtpReplyError(554, '5.5.1', 'Error: no valid recipients');
      if (whole) {
        ({ messageId, hold } = await this.writeChecked(out, Buffer.concat(whole), queueId, session, tx, { verify, scan: Boolean(scan), trusted }));
      } else if (!failure && head) {
        messageId = await this.writeHead(out, head.bytes(), queueId, session).catch((err) => { failure = err; return ''; });
      }
      if (failure instanceof SmtpReplyError) throw failure;
      const state = this.deps.mayCommit ? await this.deps.mayCommit() : this.deps.acceptState();
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
      // The received line is written once the fsynced file has its name in incoming/, and
      // fdatasynced beside the folder's fsync (two syncs in a row before the 250, not three);
      // the 250 waits for both. Should the folder fsync then fail, the message is taken back and
      // a `deleted` line follows, so the log never shows a refused message as only "received".
      let recorded = false;
      const received = (): Promise<void> => {
        recorded = true;
        return this.deps.tracking.recordDurable({
          event: 'received', queueId, messageId, sender: envelope.sender, size: stored,
          client: session.remoteAddress, recipients: tx.recipients.length,
        });
      };
      try {
        held = await out.commit(envelope, received);
      } catch (err) {
        if (recorded) this.deps.tracking.record({ event: 'deleted', queueId, messageId, by: 'receiver', reply: `not acknowledged: the commit failed (${(err as Error)?.message ?? err})` });
        throw this.commitFailed(queueId, err);
      }
      if (!recorded) await received(); // a writer that does not run `beside`
      this.deps.metrics?.received(stored);
      this.deps.onQueued(queueId, envelope, stored, held, hold ? { hold } : undefined);
      return queueId;
    } finally {
      await out.abort(); // nothing left behind unless committed (a no-op after commit)
    }
  }

  /**
   * The whole message is in: verify the sender (listener policy `verify`), scan it (content
   * filter), sign it (trusted client, From: domain with a key), then write it with the results
   * on top. Throws the reply when a policy refuses it.
   */
  private async writeChecked(
    out: MessageWriter, message: Buffer, queueId: string, session: SMTPServerSession, tx: Transaction,
    o: { verify: 'record' | 'enforce' | undefined; scan: boolean; trusted: boolean },
  ): Promise<{ messageId: string; hold: boolean }> {
    const sa = this.deps.senderAuth;
    const mailFrom = session.envelope.mailFrom;
    const sender = mailFrom ? mailFrom.address : '';
    const split = headerEnd(message) < 0 ? message.length : bodyStart(message);
    const head = withoutOurAuthResults(message.subarray(0, split), this.deps.config.node.hostname);
    const body = message.subarray(split);
    const { added, messageId } = this.composeHead(head, queueId, session);
    let top = '';
    let hold = false;
    const ctx = { ip: session.remoteAddress, helo: session.hostNameAppearsAs || '', sender };
    if (o.verify && sa) {
      const verdict = await sa.verify(Buffer.concat([head, body]), ctx, o.verify);
      this.deps.logger.info({ event: 'sender-auth', queueId, client: session.remoteAddress, result: verdict.summary, hold: verdict.hold }, `sender authentication: ${verdict.summary}`);
      top += verdict.headers;
      hold ||= verdict.hold;
    }
    if (o.scan) {
      const verdict = await this.deps.contentFilter!.scan(Buffer.concat([Buffer.from(top, 'latin1'), head, body]), {
        ...ctx, recipients: tx.recipients.map((r) => r.address), queueId, ...(session.user ? { user: String(session.user) } : {}),
      });
      this.deps.logger.info({ event: 'content-filter', queueId, client: session.remoteAddress, result: verdict.summary, hold: verdict.hold }, `content filter: ${verdict.summary}`);
      top += verdict.headers;
      hold ||= verdict.hold;
    }
    // our headers: the verdicts are ASCII; the Received: line may carry UTF-8 addresses (SMTPUTF8, RFC 6531)
    let final = Buffer.concat([Buffer.from(top, 'latin1'), Buffer.from(added, 'utf8'), head, body]);
    const domain = o.trusted && sa?.signs ? fromDomain(head.toString('latin1')) : undefined;
    const key = domain && (await this.signingKey(domain, queueId));
    if (key) final = Buffer.concat([Buffer.from(await sa!.sign(final, domain, key), 'latin1'), final]);
    try {
      await out.write(final);
    } catch (err) {
      throw this.commitFailed(queueId, err);
    }
    return { messageId, hold };
  }

  /** The DKIM key of a From: domain; a key that cannot be had now (directory down, bad entry) is a 451. */
  private async signingKey(domain: string, queueId: string): Promise<SigningKey | undefined> {
    try {
      return await this.deps.senderAuth!.signingKey(domain);
    } catch (err) {
      if (!(err instanceof TempLookupError)) throw err;
      this.deps.logger.warn({ event: 'dkim-key-unavailable', queueId, domain, err: err.message }, `no DKIM key for ${domain} now: ${err.message}; answering 451`);
      throw new SmtpReplyError(451, '4.3.0', `Error: the DKIM signing key of ${domain} is not available now; try again later`);
    }
  }

  /**
   * Write our trace header, a Message-ID if the message has none, and the collected header
   * section; check the header limits and the hop count. Returns the Message-ID.
   */
  private async writeHead(out: MessageWriter, head: Buffer, queueId: string, session: SMTPServerSession): Promise<string> {
    const { added, messageId } = this.composeHead(head, queueId, session);
    await out.write(Buffer.from(added, 'utf8')); // UTF-8 addresses in Received: (SMTPUTF8)
    await out.write(head);
    return messageId;
  }

  /** Check the header section; our Received: header (and Message-ID: when missing) to put on top. */
  private composeHead(head: Buffer, queueId: string, session: SMTPServerSession): { added: string; messageId: string } {
    const end = headerEnd(head);
    const headers = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
    const c = this.deps.config.smtp;
    checkHeaderSection(headers, end >= 0, { maxHeaderSize: c.max_header_size, maxHeaders: c.max_headers, maxHops: c.max_hops });
    const hostname = this.deps.config.node.hostname;
    let messageId = findHeader(headers, 'Message-ID');
    let added = receivedHeader({
      helo: session.hostNameAppearsAs,
      clientAddress: session.remoteAddress,
      clientHostname: session.clientHostname && session.clientHostname !== `[${session.remoteAddress}]` ? session.clientHostname : undefined,
      byHostname: hostname,
      queueId,
      protocol: receivedProtocol(session.transmissionType ?? 'ESMTP', session.envelope.smtpUtf8 === true),
      // the address the client gave, not an alias's targets (Postfix does the same)
      forRecipient: session.envelope.rcptTo.length === 1 ? session.envelope.rcptTo[0].address : undefined,
      date: new Date(),
    });
    if (!messageId) {
      messageId = `<${queueId}@${hostname}>`;
      added += `Message-ID: ${messageId}\r\n`;
    }
    return { added, messageId };
  }

  private commitFailed(queueId: string, err: unknown): SmtpReplyError {
    if (err instanceof SmtpReplyError) {
      // refused at commit (replicated storage, no shadow copy under the refuse policy): taken back
      this.deps.logger.warn({ queueId, reply: `${err.replyCode} ${err.enhanced} ${err.message}` }, 'message refused at commit');
      return err;
    }
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

