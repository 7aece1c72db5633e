/**
 * qmgr/dsn.ts — builds delivery status notifications (RFC 3464): bounces, delay warnings and
 * success reports, ready to be committed to the spool from the null sender.
 *
 * The message is multipart/report; report-type=delivery-status with three parts:
 *   1. text/plain for people: what happened, to whom, why, the queue id; a delay warning says
 *      until when we keep trying and that nothing needs to be done;
 *   2. message/delivery-status: Reporting-MTA, Arrival-Date, Original-Envelope-Id, then one block
 *      per recipient (Original-Recipient — only when the client gave ORCPT, RFC 3464 §2.3.1 —,
 *      Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
 *      Will-Retry-Until);
 *   3. the original: message/rfc822 for a failure DSN with RET=FULL (the default), otherwise
 *      text/rfc822-headers (RET=HDRS, delay and success reports — RFC 3461 §4.3 — and a message
 *      over returnSizeLimit, as Postfix' bounce_size_limit).
 * Where a UTF-8 address is involved (the sender, a reported recipient or its ORCPT) the report is
 * an RFC 6533 global one, as Postfix writes it: message/global-delivery-status with `utf-8`
 * address types in raw UTF-8, message/global or message/global-headers for the original, and
 * `smtputf8` set so that it is sent with SMTPUTF8. Otherwise the plain RFC 3464 form, with
 * `rfc822` addresses.
 * The multipart structure is written by hand: it is fixed, three parts and a random boundary, and
 * nodemailer's composer cannot produce message/delivery-status parts. The text part is
 * quoted-printable (nodemailer's qp) when it is not ASCII. All lines end in CRLF and are at most
 * 998 octets: longer lines of the returned original are split (such a message broke RFC 5322
 * already).
 *
 * What can go wrong: a DSN must never go to the null sender (it could loop between two MTAs):
 * the caller checks, and buildDsn returns null as a second guard.
 * XXX: the returned message is 8-bit when the original is: `body8bit` says so, and the DSN must
 *  then be sent with BODY=8BITMIME.
 * Config read: none (reportingMta and limits come from the caller).
 */
import { randomBytes } from 'node:crypto';
import * as qp from 'nodemailer/lib/qp/index.js';
import type { Envelope, EnvelopeRecipient } from '../spool/types.ts';
import { bodyStart } from '../util/message-headers.ts';
import { dsnAddressField, needsUtf8Type } from '../util/dsn-address.ts';

export type DsnKind = 'failure' | 'delay' | 'success';

export interface DsnRecipient {
  recipient: EnvelopeRecipient;
  /** RFC 3463 status, "5.1.1". */
  status: string;
  /** The remote reply or local reason, "550 5.1.1 <x@y>: Recipient address rejected". */
  diagnostic: string;
  /** Host name, or a channel `via` such as "mx.example[192.0.2.1]:25" (reduced to the name). */
  remoteMta?: string;
  lastAttemptAt?: number;
  willRetryUntil?: number;
}

export interface DsnOptions {
  /** Our host name: Reporting-MTA and the From: MAILER-DAEMON@ address. */
  reportingMta: string;
  envelope: Envelope;
  /** The original message, or (when `originalSize` says it is larger) at least its header section. */
  original: Buffer;
  /** Size of the original when `original` holds only its start (a large message is never read whole). */
  originalSize?: number;
  kind: DsnKind;
  recipients: DsnRecipient[];
  now?: Date;
  boundary?: string;
  /** Larger originals are returned as headers only (default DEFAULT_RETURN_SIZE_LIMIT). */
  returnSizeLimit?: number;
}

export interface BuiltDsn {
  sender: '';
  recipient: string;
  message: Buffer;
  /** True when the returned original has 8-bit content: send with BODY=8BITMIME. */
  body8bit: boolean;
  /** True for a global (RFC 6533) report: UTF-8 addresses, to be sent with SMTPUTF8. */
  smtputf8: boolean;
}

/** Postfix' bounce_size_limit default. */
const DEFAULT_RETURN_SIZE_LIMIT = 50_000;

const MAX_LINE = 998;
/** Longest unbroken run in a folded field line (well under MAX_LINE, in characters). */
const MAX_WORD = 900;
const CRLF = '\r\n';

const SUBJECTS: Record<DsnKind, string> = {
  failure: 'Undelivered Mail Returned to Sender',
  delay: 'Delayed Mail (still being retried)',
  success: 'Successful Mail Delivery Report',
};
const ACTIONS: Record<DsnKind, string> = { failure: 'failed', delay: 'delayed', success: 'delivered' };

/** Build the DSN message; null when the envelope sender is the null sender. */
export function buildDsn(opts: DsnOptions): BuiltDsn | null {
  const { envelope, kind, reportingMta } = opts;
  if (envelope.sender === '') return null;
  const now = opts.now ?? new Date();
  const boundary = opts.boundary ?? `${envelope.queueId}.${randomBytes(8).toString('hex')}/${reportingMta}`;

  const global = isGlobal(opts);
  const limit = opts.returnSizeLimit ?? DEFAULT_RETURN_SIZE_LIMIT;
  const tooLarge = (opts.originalSize ?? opts.original.length) > limit;
  const full = kind === 'failure' && envelope.dsn?.ret !== 'HDRS' && !tooLarge;
  const returned = full ? opts.original : opts.original.subarray(0, bodyStart(opts.original));
  const body8bit = global || returned.some((b) => b > 0x7f);

  const text = humanText(opts, now, kind === 'failure' && envelope.dsn?.ret !== 'HDRS' && tooLarge);
  const textAscii = !/[^\x00-\x7f]/.test(text);

  const head = [
    `From: MAILER-DAEMON@${reportingMta} (Mail Delivery System)`,
    `To: <${envelope.sender}>`,
    `Subject: ${SUBJECTS[kind]}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${now.getTime()}.${randomBytes(6).toString('hex')}@${reportingMta}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF} boundary="${boundary}"`,
    `Content-Transfer-Encoding: ${body8bit ? '8bit' : '7bit'}`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Transfer-Encoding: ${textAscii ? '7bit' : 'quoted-printable'}`,
    '',
    textAscii ? text : qp.wrap(qp.encode(Buffer.from(text.replace(/\r?\n/g, CRLF), 'utf8')), 76),
    '',
    `--${boundary}`,
    'Content-Description: Delivery report',
    `Content-Type: message/${global ? 'global-delivery-status' : 'delivery-status'}`,
    ...(global ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    deliveryStatus(opts, now, global),
    `--${boundary}`,
    `Content-Description: ${full ? 'Undelivered Message' : 'Message Headers'}`,
    `Content-Type: ${full ? (global ? 'message/global' : 'message/rfc822') : (global ? 'message/global-headers' : 'text/rfc822-headers')}`,
    ...(body8bit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    '',
  ].join(CRLF);
  const tail = `${CRLF}--${boundary}--${CRLF}`;
  const message = Buffer.concat([
    Buffer.from(limitLines(head), 'utf8'),
    limitLineBuffer(withoutFinalNewline(returned)),
    Buffer.from(tail, 'utf8'),
  ]);
  return { sender: '', recipient: envelope.sender, message, body8bit, smtputf8: global };
}

/** A global report (RFC 6533) when a UTF-8 address is involved: sender, recipient or ORCPT. */
function isGlobal(opts: DsnOptions): boolean {
  return needsUtf8Type(opts.envelope.sender) || opts.recipients.some(({ recipient: r }) =>
    needsUtf8Type(r.address) || (r.orcpt !== undefined && (r.orcpt.type === 'utf-8' || needsUtf8Type(r.orcpt.address))));
}

/** The human-readable part (LF line ends; converted when joined). */
function humanText(opts: DsnOptions, now: Date, truncatedReturn: boolean): string {
  const { envelope, kind, reportingMta } = opts;
  const lines: string[] = [`This is the mail system at host ${reportingMta}.`, ''];
  if (kind === 'failure') {
    lines.push(
      "I'm sorry to have to inform you that your message could not be delivered to one or more",
      'recipients. The reasons are below. The message was not delivered to them and will not be',
      'retried; check the addresses or contact the postmaster of the receiving domain.',
    );
  } else if (kind === 'delay') {
    const until = Math.max(...opts.recipients.map((r) => r.willRetryUntil ?? 0));
    lines.push(
      '####################################################################',
      '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
      '####################################################################',
      '',
      'Your message could not be delivered yet to the recipients below. The mail system is still',
      until > 0 ? `trying and will keep trying until ${rfc5322Date(new Date(until))}. No action is needed;`
        : 'trying. No action is needed;',
      'you will be told if it finally fails.',
    );
  } else {
    lines.push('Your message was successfully delivered to the recipients below, as you asked.');
  }
  lines.push('', `Queue id: ${envelope.queueId}`, `Arrived:  ${rfc5322Date(new Date(envelope.arrivedAt))}`, '');
  for (const r of opts.recipients) {
    const shown = r.recipient.original && r.recipient.original !== r.recipient.address
      ? `<${r.recipient.address}> (expanded from <${r.recipient.original}>)` : `<${r.recipient.address}>`;
    const host = remoteHost(r.remoteMta);
    lines.push(`${shown}: ${host ? `host ${r.remoteMta} said: ` : ''}${r.diagnostic}`);
  }
  if (truncatedReturn) lines.push('', `The message was larger than ${opts.returnSizeLimit ?? DEFAULT_RETURN_SIZE_LIMIT} bytes; only its headers are returned.`);
  lines.push('', `For further assistance, please contact <postmaster@${reportingMta}>.`, `This report was generated at ${rfc5322Date(now)}.`);
  return lines.join(CRLF);
}

/** The message/delivery-status body (RFC 3464 §2.2, §2.3), ending with an empty line. */
function deliveryStatus(opts: DsnOptions, now: Date, global: boolean): string {
  const { envelope, kind, reportingMta } = opts;
  const fields: string[] = [
    `Reporting-MTA: dns; ${reportingMta}`,
    `X-Tandem-Queue-ID: ${envelope.queueId}`,
    ...(envelope.dsn?.envid ? [fold(`Original-Envelope-Id: ${envelope.dsn.envid}`)] : []),
    `Arrival-Date: ${rfc5322Date(new Date(envelope.arrivedAt))}`,
    '',
  ];
  for (const r of opts.recipients) {
    const host = remoteHost(r.remoteMta);
    const diagnosticType = /^\d{3}[ -]/.test(r.diagnostic) ? 'smtp' : 'X-Tandem';
    fields.push(
      ...(r.recipient.orcpt ? [fold(`Original-Recipient: ${dsnAddressField(r.recipient.orcpt, global)}`)] : []),
      fold(`Final-Recipient: ${dsnAddressField({ type: 'rfc822', address: r.recipient.address }, global)}`),
      `Action: ${ACTIONS[kind]}`,
      `Status: ${r.status}`,
      ...(host ? [`Remote-MTA: dns; ${host}`] : []),
      fold(`Diagnostic-Code: ${diagnosticType}; ${r.diagnostic.replace(/[\r\n]+/g, ' ')}`),
      `Last-Attempt-Date: ${rfc5322Date(new Date(r.lastAttemptAt ?? now.getTime()))}`,
      ...(kind === 'delay' && r.willRetryUntil ? [`Will-Retry-Until: ${rfc5322Date(new Date(r.willRetryUntil))}`] : []),
      '',
    );
  }
  return fields.join(CRLF);
}

/** "mx.example[192.0.2.1]:25" → "mx.example"; "maildir:/x", "error" and bare domains → undefined. */
function remoteHost(remoteMta: string | undefined): string | undefined {
  if (!remoteMta) return undefined;
  const m = /^([^\s[\]]+)\[[^\]]+\](?::\d+)?$/.exec(remoteMta);
  return m ? m[1] : undefined;
}

/**
 * Fold a header-style field at spaces so lines stay short (RFC 5322 §2.2.3). A word too long
 * for a line (only a remote server's diagnostic can have one: ENVID and ORCPT are capped at
 * receipt) is broken with a continuation line too: every line after the first starts with a
 * space, so no part of a value can ever start a field of its own.
 */
function fold(field: string): string {
  if (field.length <= 78) return field;
  const words = field.split(' ').flatMap((w) => (w.length <= MAX_WORD ? [w] : w.match(new RegExp(`.{1,${MAX_WORD}}`, 'gs'))!));
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    if (line && line.length + 1 + word.length > 78) {
      lines.push(line);
      line = ` ${word}`;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines.join(CRLF);
}

/**
 * "Tue, 02 Jan 2024 03:04:05 +0000": reports are dated in UTC with a two-digit day (the trace
 * header uses local time, util/message-headers.ts rfc5322Date; both are RFC 5322).
 */
function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

function withoutFinalNewline(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0x0a || b[end - 1] === 0x0d)) end -= 1;
  return b.subarray(0, end);
}

/** Split over-long lines of our own text (it is ASCII or QP, so octets = characters there). */
function limitLines(text: string): string {
  return text.split(CRLF).map((l) => (Buffer.byteLength(l) <= MAX_LINE ? l : hardWrap(l))).join(CRLF);
}

function hardWrap(line: string): string {
  const parts: string[] = [];
  let rest = Buffer.from(line, 'utf8');
  while (rest.length > MAX_LINE) {
    let cut = MAX_LINE;
    while (cut > 0 && (rest[cut] & 0xc0) === 0x80) cut -= 1; // do not split a UTF-8 sequence
    parts.push(rest.subarray(0, cut).toString('utf8'));
    rest = rest.subarray(cut);
  }
  parts.push(rest.toString('utf8'));
  return parts.join(CRLF);
}

/** Normalise line ends of the returned original to CRLF and split lines over 998 octets. */
function limitLineBuffer(b: Buffer): Buffer {
  const out: Buffer[] = [];
  const crlf = Buffer.from(CRLF);
  let start = 0;
  while (start <= b.length) {
    let nl = b.indexOf(0x0a, start);
    if (nl < 0) nl = b.length;
    let end = nl;
    if (end > start && b[end - 1] === 0x0d) end -= 1;
    for (let pos = start; ; pos += MAX_LINE) {
      out.push(b.subarray(pos, Math.min(end, pos + MAX_LINE)));
      if (pos + MAX_LINE >= end) break;
      out.push(crlf);
    }
    if (nl >= b.length) break;
    out.push(crlf);
    start = nl + 1;
  }
  return Buffer.concat(out);
}
