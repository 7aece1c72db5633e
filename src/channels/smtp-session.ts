/**
 * smtp-session.ts — one SMTP/LMTP connection (nodemailer's SMTPConnection) and one mail
 * transaction on it, with the replies mapped to one RecipientResult per recipient.
 *
 * Mapping: 2xx delivered, 4xx deferred, 5xx failed (per RCPT reply, then the DATA reply — one per
 * recipient with LMTP). MAIL FROM parameters: SIZE (when offered), BODY=8BITMIME (when the job is
 * 8-bit and the peer offers it), SMTPUTF8 (when an address needs it), RET/ENVID. RCPT TO
 * parameters per recipient when the peer offers DSN: NOTIFY as given, and ORCPT as given
 * (`rfc822` xtext or `utf-8` utf-8-addr-xtext, RFC 6533) or, when the client gave none and alias
 * or list expansion changed the address, ORCPT with the address the client gave (RFC 3461
 * §5.2.1 (c)); none otherwise.
 * Pipelining: nodemailer sends all RCPT commands in one write once MAIL is answered when the
 * peer offers PIPELINING (RFC 2920); MAIL and DATA each wait for their reply.
 *
 * What can go wrong:
 *  - openSession throws for anything before MAIL FROM (refused, timeout, 4xx/5xx greeting, 421 to
 *    EHLO, TLS failure): the caller tries the next address.
 *  - the connection drops or times out mid-transaction → `broken`: recipients without a final
 *    reply are deferred; when the server said 421 (closing) to a RCPT, with that reply. If the
 *    server had accepted DATA but the reply was lost, the message is delivered again later: at
 *    worst a message may be delivered twice, never lost.
 *  - a message needing SMTPUTF8 (an address, or headers when the client sent SMTPUTF8) to a peer
 *    without it → failed 5.6.7; over the peer's SIZE limit → failed 5.3.4.
 *  - an address with CR, LF, < or > → failed 5.1.3 (the receiver should not have let it in).
 *
 * XXX: nodemailer keeps three things we need in private fields, reached in `internals` only:
 *  the RCPT replies of rejected recipients when DATA then fails (`_envelope.rejectedErrors`),
 *  the per-recipient LMTP replies after DATA (`_actionLMTPStream`, wrapped per connection; the
 *  public callback only gives the last one), and the RCPT TO parameters (`_getDsnRcptToArgs`,
 *  replaced per connection: nodemailer takes one NOTIFY/ORCPT for the whole envelope, we send
 *  each recipient's own). Tests cover all three, so a library change shows there.
 * XXX: nodemailer adds SMTPUTF8 to MAIL FROM only for non-ASCII addresses, so a message with
 *  ASCII addresses but UTF-8 headers goes without it to a peer that offers it.
 * Config read: none (SessionOptions come from the channel).
 */
import net from 'node:net';
import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { DeliveryJob, RecipientOutcome, RecipientResult } from './types.ts';
import type { HopTarget } from './smtp-nexthop.ts';
import { headerEnd } from '../util/message-headers.ts';
import type { MessageSource } from '../message/source.ts';
import { encodeXtext, needsUtf8Type, orcptParam, type OriginalRecipient } from '../util/dsn-address.ts';

export interface SessionOptions {
  heloName: string;
  connectTimeout: number;
  commandTimeout: number;
  requireTls: boolean;
  tlsRejectUnauthorized: boolean;
  lmtp: boolean;
  /** Do not try STARTTLS (the retry after a failed opportunistic TLS handshake). */
  ignoreTls?: boolean;
}

export interface SmtpSession {
  conn: SMTPConnection;
  target: HopTarget;
  /** Connection cache key: the address and port connected to. */
  key: string;
  /** "mx.example[192.0.2.1]:25" */
  via: string;
  /** EHLO/LHLO keywords, upper case ("SIZE", "8BITMIME", "SMTPUTF8", …). */
  extensions: Set<string>;
  /** False once the connection has ended or failed. */
  alive: boolean;
  lastError?: Error;
  transactions: number;
  /** LMTP replies after DATA in this transaction, in order. */
  lmtpReplies: Array<{ recipient: string; reply: string }>;
  /** RCPT TO parameters of this transaction's recipients, in RCPT order (consumed as sent). */
  rcptArgs: string[];
  /** This transaction's message is in memory whole: its data and the final dot go in one write. */
  wholeMessage: boolean;
}

export type TransactionResult =
  /** The server answered; `clean` is false when the transaction was left open (RSET before reuse). */
  | { type: 'completed'; results: RecipientResult[]; clean: boolean }
  /** The connection was lost: `answered` holds the recipients that had a final reply. */
  | { type: 'broken'; answered: RecipientResult[]; reason: string };

type SmtpError = SMTPConnection.SMTPError & { recipient?: string; rejectedErrors?: SmtpError[] };

/** The private parts of SMTPConnection we rely on (see XXX in the header). */
interface Internals {
  _envelope?: { rejectedErrors?: SmtpError[] };
  _actionLMTPStream: (recipient: string, final: boolean, str: string, callback: unknown) => unknown;
  _getDsnRcptToArgs: () => string;
  _createSendStream: (callback: unknown) => unknown;
  _socket: net.Socket;
}

/** "mx.example[192.0.2.1]:25", "mx.example[2001:db8::1]:25" */
export function formatVia(target: HopTarget): string {
  return `${target.name}[${target.address}]:${target.port}`;
}

/** Connection cache key: "192.0.2.1:25", "[2001:db8::1]:25". */
export function sessionKey(target: HopTarget): string {
  return net.isIPv6(target.address) ? `[${target.address}]:${target.port}` : `${target.address}:${target.port}`;
}

/** Connect and greet; resolves when ready for MAIL FROM, rejects with the reason otherwise. */
export async function openSession(target: HopTarget, opts: SessionOptions): Promise<SmtpSession> {
  const conn = new SMTPConnection({
    host: target.address,
    port: target.port,
    secure: false,
    name: opts.heloName,
    lmtp: opts.lmtp,
    connectionTimeout: opts.connectTimeout,
    greetingTimeout: opts.commandTimeout,
    socketTimeout: opts.commandTimeout,
    requireTLS: opts.requireTls,
    opportunisticTLS: !opts.requireTls,
    ignoreTLS: opts.ignoreTls === true && !opts.requireTls,
    tls: {
      rejectUnauthorized: opts.tlsRejectUnauthorized,
      ...(net.isIP(target.name) ? {} : { servername: target.name }),
    },
    logger: false,
  });
  const session: SmtpSession = {
    conn,
    target,
    key: sessionKey(target),
    via: formatVia(target),
    extensions: new Set(),
    alive: true,
    transactions: 0,
    lmtpReplies: [],
    rcptArgs: [],
    wholeMessage: false,
  };
  // Listeners for the whole life of the connection: an 'error' without a listener would crash.
  conn.on('error', (err) => { session.alive = false; session.lastError = err; });
  conn.on('end', () => { session.alive = false; });
  if (opts.lmtp) hookLmtpReplies(session);
  hookRcptArgs(session);
  hookSendStream(session);

  await new Promise<void>((resolve, reject) => {
    const onConnect = () => { cleanup(); resolve(); };
    const onError = (err: Error) => { cleanup(); reject(err); };
    const onEnd = () => { cleanup(); reject(session.lastError ?? new Error('connection closed before the greeting')); };
    const cleanup = () => {
      conn.off('connect', onConnect);
      conn.off('error', onError);
      conn.off('end', onEnd);
    };
    conn.once('connect', onConnect);
    conn.once('error', onError);
    conn.once('end', onEnd);
    conn.connect(() => undefined);
  });
  session.extensions = parseExtensions(conn.lastServerResponse || '');
  // Commands and the end of data are small writes: without this, Nagle's algorithm and the
  // peer's delayed ACK add ~40 ms per transaction on a reused connection.
  conn._socket.setNoDelay(true);
  return session;
}

/** Record every per-recipient LMTP reply (nodemailer passes only the last one to the callback). */
function hookLmtpReplies(session: SmtpSession): void {
  const internals = session.conn as unknown as Internals;
  const original = internals._actionLMTPStream;
  if (typeof original !== 'function') {
    throw new Error('bug: nodemailer SMTPConnection has no _actionLMTPStream; the LMTP reply hook in smtp-session.ts must be updated');
  }
  internals._actionLMTPStream = function (this: unknown, recipient, final, str, callback) {
    session.lmtpReplies.push({ recipient, reply: str });
    return original.call(this, recipient, final, str, callback);
  };
}

/** Per-recipient RCPT TO parameters: nodemailer asks once per RCPT, in order. */
function hookRcptArgs(session: SmtpSession): void {
  const internals = session.conn as unknown as Internals;
  if (typeof internals._getDsnRcptToArgs !== 'function') {
    throw new Error('bug: nodemailer SMTPConnection has no _getDsnRcptToArgs; the RCPT parameter hook in smtp-session.ts must be updated');
  }
  internals._getDsnRcptToArgs = () => {
    const args = session.rcptArgs.shift();
    return args && session.extensions.has('DSN') ? ` ${args}` : '';
  };
}

/**
 * A message in memory goes to the socket in one write with its final dot: nodemailer writes the
 * data and the terminating "\r\n.\r\n" separately, each its own system call (and on loopback
 * its own trip through the peer's receive path). The socket is corked when nodemailer creates the
 * data stream (it writes the message into it at once) and uncorked after the stream has flowed,
 * so the kernel gets one writev. A streamed message is not corked (it would be buffered whole).
 */
function hookSendStream(session: SmtpSession): void {
  const internals = session.conn as unknown as Internals;
  const original = internals._createSendStream;
  if (typeof original !== 'function') {
    throw new Error('bug: nodemailer SMTPConnection has no _createSendStream; the send hook in smtp-session.ts must be updated');
  }
  internals._createSendStream = function (this: Internals, callback) {
    const stream = original.call(this, callback);
    const socket = this._socket;
    if (session.wholeMessage && socket) {
      socket.cork();
      setImmediate(() => socket.uncork());
    }
    return stream;
  };
}

/** EHLO reply → its keywords ("250-SIZE 1000" → "SIZE"). */
function parseExtensions(ehloReply: string): Set<string> {
  const lines = ehloReply.split(/\r?\n/).slice(1);
  return new Set(lines.map((l) => l.replace(/^\d{3}[ -]/, '').trim().split(/\s+/)[0].toUpperCase()).filter(Boolean));
}

/** Send QUIT and close; never throws. */
export function quitSession(session: SmtpSession): void {
  if (!session.alive) return;
  session.conn.quit();
}

/** Multi-line reply → one line: "550-5.1.1 a\n550 5.1.1 b" → "550 5.1.1 a b". */
export function formatReply(reply: string): string {
  const lines = reply.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) return '';
  const first = /^(\d{3})[ -](?:(\d\.\d{1,3}\.\d{1,3}) )?/.exec(lines[0]);
  if (!first) return lines.join(' ').trim();
  const strip = (l: string) => l.replace(/^\d{3}[ -]/, '').replace(/^\d\.\d{1,3}\.\d{1,3} /, '').trim();
  return [`${first[1]}${first[2] ? ` ${first[2]}` : ''}`, ...lines.map(strip)].join(' ').trim();
}

/** 2xx (or 2.x.x) delivered, 5xx (or 5.x.x) failed, anything else (4xx, garbage) deferred. */
export function outcomeOfReply(reply: string): RecipientOutcome {
  if (/^2(\d\d|\.\d)/.test(reply)) return 'delivered';
  if (/^5(\d\d|\.\d)/.test(reply)) return 'failed';
  return 'deferred';
}

/** A message "needs SMTPUTF8" as Postfix decides: UTF-8 in an address, or in headers when the client said SMTPUTF8. */
function needsSmtpUtf8(job: DeliveryJob, addresses: string[]): boolean {
  const nonAscii = /[^\x00-\x7f]/;
  if (nonAscii.test(job.sender) || addresses.some((a) => nonAscii.test(a))) return true;
  if (!job.smtputf8) return false;
  const head = job.message.head;
  const end = headerEnd(head);
  return head.subarray(0, end < 0 ? head.length : end).some((byte) => byte > 0x7f);
}

/** Run MAIL/RCPT/DATA for the job's recipients on an open session. Never throws. */
export async function runTransaction(session: SmtpSession, job: DeliveryJob): Promise<TransactionResult> {
  session.transactions += 1;
  session.lmtpReplies = [];
  session.rcptArgs = [];
  const via = session.via;
  const result = (index: number, outcome: RecipientOutcome, reply: string): RecipientResult => ({ index, outcome, reply, via });
  const all = (outcome: RecipientOutcome, reply: string): TransactionResult =>
    ({ type: 'completed', clean: true, results: job.recipients.map((r) => result(r.index, outcome, reply)) });

  const badAddress = /[\r\n<>]/;
  if (badAddress.test(job.sender)) return all('failed', `5.1.7 Bad sender address syntax: ${JSON.stringify(job.sender)}`);
  const invalid = job.recipients.filter((r) => badAddress.test(r.address) || r.address.trim() === '');
  const valid = job.recipients.filter((r) => !invalid.includes(r));
  const invalidResults = invalid.map((r) => result(r.index, 'failed', `5.1.3 Bad recipient address syntax: ${JSON.stringify(r.address)}`));
  if (valid.length === 0) return { type: 'completed', clean: true, results: invalidResults };

  const addresses = valid.map((r) => r.address.trim());
  if (needsSmtpUtf8(job, addresses) && !session.extensions.has('SMTPUTF8')) {
    return all('failed', `5.6.7 SMTPUTF8 is required, but was not offered by host ${via}`);
  }

  session.rcptArgs = valid.map(rcptParameters);
  const outcome = await sendOnce(session, {
    from: job.sender,
    to: addresses,
    size: job.message.size,
    use8BitMime: job.body8bit === true,
    ...dsnOptions(job),
  }, job.message);

  // Final replies per address, consumed in order (an address may appear twice in a job).
  const replies = new Map<string, string[]>();
  const addReply = (address: string, reply: string) => {
    const list = replies.get(address) ?? [];
    list.push(formatReply(reply));
    replies.set(address, list);
  };
  const rejectedErrors = outcome.type === 'sent' ? outcome.info.rejectedErrors ?? []
    : outcome.err.rejectedErrors ?? (session.conn as unknown as Internals)._envelope?.rejectedErrors ?? [];
  for (const e of rejectedErrors) if (e.recipient && e.response && e.command === 'RCPT TO') addReply(e.recipient, e.response);
  // a 421 to a RCPT: the server closes the connection; the others are deferred with its reply
  const closing = rejectedErrors.find((e) => e.command === 'RCPT TO' && /^421[ -]/.test(e.response ?? ''));

  let fallback: { reply: string; clean: boolean } | { broken: string };
  if (outcome.type === 'sent') {
    if (session.conn.options.lmtp) {
      for (const r of session.lmtpReplies) addReply(r.recipient, r.reply);
      fallback = { broken: `no LMTP reply for this recipient; last reply: ${formatReply(outcome.info.response)}` };
    } else {
      fallback = { reply: formatReply(outcome.info.response), clean: true };
    }
  } else if (outcome.type === 'error') {
    const err = outcome.err;
    if (err.response && (err.command === 'MAIL FROM' || err.command === 'RCPT TO' || err.command === 'DATA')) {
      // EENVELOPE leaves the transaction open (rejected MAIL, every RCPT or the DATA command);
      // EMESSAGE is a reply to the end of data, which closes the transaction.
      fallback = { reply: formatReply(err.response), clean: err.code === 'EMESSAGE' };
      if (session.conn.options.lmtp) for (const r of session.lmtpReplies) addReply(r.recipient, r.reply);
    } else if (err.code === 'EMESSAGE' && err.command === 'MAIL FROM') {
      fallback = { reply: `5.3.4 Message size ${job.message.size} exceeds the size limit of host ${via}: ${err.message}`, clean: true };
    } else {
      fallback = { broken: describeError(err, 'during the transaction') };
    }
  } else {
    if (session.conn.options.lmtp) for (const r of session.lmtpReplies) addReply(r.recipient, r.reply);
    fallback = { broken: closing ? formatReply(closing.response!) : describeError(outcome.err, 'during the transaction') };
  }

  const answered: RecipientResult[] = [...invalidResults];
  const unanswered: number[] = [];
  for (const r of valid) {
    const reply = replies.get(r.address.trim())?.shift();
    if (reply !== undefined) answered.push(result(r.index, outcomeOfReply(reply), reply));
    else unanswered.push(r.index);
  }
  if ('broken' in fallback) {
    if (unanswered.length === 0) return { type: 'completed', results: answered, clean: session.alive };
    if (session.alive) {
      // The server answered but not for every recipient (protocol confusion): do not reuse.
      session.conn.close();
      return { type: 'completed', clean: false, results: [...answered, ...unanswered.map((i) => result(i, 'deferred', fallback.broken))] };
    }
    return { type: 'broken', answered, reason: fallback.broken };
  }
  const { reply, clean } = fallback;
  return { type: 'completed', clean, results: [...answered, ...unanswered.map((i) => result(i, outcomeOfReply(reply), reply))] };
}

/** RET/ENVID from the job, for MAIL FROM (the RCPT parameters: rcptParameters). */
function dsnOptions(job: DeliveryJob): { dsn?: SMTPConnection.DSNOptions } {
  const dsn: SMTPConnection.DSNOptions = {};
  if (job.dsn?.ret) dsn.ret = job.dsn.ret as SMTPConnection.DSNOptions['ret'];
  if (job.dsn?.envid) dsn.envid = job.dsn.envid;
  return Object.keys(dsn).length > 0 ? { dsn } : {};
}

/**
 * One recipient's RCPT TO parameters (sent when the peer offers DSN): NOTIFY as given; ORCPT as
 * given, else the address the client gave where expansion changed it (see the header).
 */
function rcptParameters(r: DeliveryJob['recipients'][number]): string {
  const args: string[] = [];
  if (r.notify?.length) args.push(`NOTIFY=${r.notify.join(',')}`);
  const expanded = r.original && r.original.toLowerCase() !== r.address.toLowerCase();
  const orcpt: OriginalRecipient | undefined = r.orcpt
    ?? (expanded ? { type: needsUtf8Type(r.original) ? 'utf-8' : 'rfc822', address: r.original } : undefined);
  if (orcpt) args.push(`ORCPT=${encodeXtext(orcptParam(orcpt))}`);
  return args.join(' ');
}

type SendOutcome =
  | { type: 'sent'; info: SMTPConnection.SentMessageInfo & { rejectedErrors?: SmtpError[] } }
  | { type: 'error'; err: SmtpError }
  /** The connection failed: nodemailer drops the send callback then, so we listen for it. */
  | { type: 'lost'; err: SmtpError };

/** SMTPConnection.send as a promise that also settles when the connection dies. */
function sendOnce(session: SmtpSession, envelope: SMTPConnection.Envelope, source: MessageSource): Promise<SendOutcome> {
  const conn = session.conn;
  return new Promise((resolve) => {
    let settled = false;
    // a large message goes from its queue file as a stream; closed however the send ends
    let stream: Readable | undefined;
    const finish = (outcome: SendOutcome) => {
      if (settled) return;
      settled = true;
      stream?.destroy();
      conn.off('error', onError);
      conn.off('end', onEnd);
      resolve(outcome);
    };
    const onError = (err: SmtpError) => finish({ type: 'lost', err });
    const onEnd = () => finish({ type: 'lost', err: session.lastError ?? new Error('Connection closed') });
    if (!session.alive) return finish({ type: 'lost', err: session.lastError ?? new Error('Connection closed') });
    conn.once('error', onError);
    conn.once('end', onEnd);
    const message = source.whole ?? (stream = source.stream());
    session.wholeMessage = source.whole !== undefined;
    // a read error of the queue file mid-DATA: the connection is dropped (the next hop never
    // sees the final dot, so it keeps nothing) and the recipients are deferred
    stream?.once('error', (err) => {
      session.alive = false;
      finish({ type: 'lost', err: Object.assign(new Error(`reading the queue file: ${err.message}`), { code: 'EQUEUEFILE' }) as SmtpError });
      conn.close();
    });
    conn.send(envelope, message, (err, info) => {
      if (err) {
        const e = err as SmtpError;
        // "Cannot send message - smtp connection is already destroyed": a dead connection.
        finish(e.code === 'ECONNECTION' && !e.response ? { type: 'lost', err: e } : { type: 'error', err: e });
      } else {
        finish({ type: 'sent', info });
      }
    });
  });
}

/** A connection-level error as an administrator reads it. */
export function describeError(err: unknown, when: string): string {
  const e = err as SmtpError;
  if (e?.response) return formatReply(e.response);
  const message = e instanceof Error ? e.message : String(err);
  if (e?.code === 'ETIMEDOUT') return `timeout ${when}: ${message}`;
  if (e?.code === 'ETLS') return `TLS failure ${when}: ${message}`;
  return when === 'during the transaction' ? `lost connection ${when}: ${message}` : message;
}
