/**
 * receiver/protocol-checks.ts — the SMTP and message checks that smtp-server leaves to the
 * application, as Postfix does them: MAIL/RCPT parameters, DSN field lengths, untrusted
 * routing in addresses, header size limits, hop count; and the spool's free-space floor.
 *
 * Every check throws the SmtpReplyError to send, or returns; nothing is changed silently:
 *  - MAIL parameters other than SIZE, BODY, RET, ENVID, SMTPUTF8, REQUIRETLS and AUTH, and RCPT
 *    parameters other than NOTIFY and ORCPT → 555 5.5.4 (RFC 5321 §4.1.1.11; Postfix too).
 *  - ENVID over 100 characters, ORCPT over 500 (RFC 3461 §4.4, §4.2) → 501 5.5.4, so that
 *    every DSN field built from them fits a line.
 *  - a local part with "%", "!" or "@" (the percent hack, bang paths) sent to a domain we relay
 *    for, from a client that may not relay → 554 5.7.1 (Postfix allow_untrusted_routing = no).
 *  - one header field (with its continuation lines) over `maxHeaderSize` bytes → 552 5.6.0
 *    (Postfix header_size_limit, which drops the excess; we refuse instead of changing the
 *    message); more than `maxHeaders` fields, or a header section that does not end within
 *    HEADER_SCAN_LIMIT → 552 5.6.0; more than `maxHops` Received: fields → 554 5.4.6
 *    (Postfix hopcount_limit 50).
 *  - SpoolSpace: free space in the spool's file system (statfs, cached for 2 s) below the
 *    floor, or below the floor plus a declared SIZE → 452 4.3.1 at MAIL (Postfix queue_minfree;
 *    Postfix's smtpd also wants 1.5 × message_size_limit free, our default floor).
 */
import { statfs } from 'node:fs/promises';
import { SmtpReplyError } from '../util/errors.ts';
import { HEADER_SCAN_LIMIT } from '../util/message-headers.ts';

const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'RET', 'ENVID', 'SMTPUTF8', 'REQUIRETLS', 'AUTH']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);
export const MAX_ENVID = 100;
export const MAX_ORCPT = 500;

type Args = Record<string, string | boolean> | false | undefined;

function unknownParam(args: Args, known: Set<string>): string | undefined {
  return args ? Object.keys(args).find((k) => !known.has(k.toUpperCase())) : undefined;
}

export function checkMailParams(args: Args): void {
  const unknown = unknownParam(args, MAIL_PARAMS);
  if (unknown) throw new SmtpReplyError(555, '5.5.4', `Unsupported option: ${unknown}`);
  const envid = args ? args.ENVID : undefined;
  if (typeof envid === 'string' && envid.length > MAX_ENVID) {
    throw new SmtpReplyError(501, '5.5.4', `Error: ENVID is longer than ${MAX_ENVID} characters`);
  }
}

export function checkRcptParams(args: Args): void {
  const unknown = unknownParam(args, RCPT_PARAMS);
  if (unknown) throw new SmtpReplyError(555, '5.5.4', `Unsupported option: ${unknown}`);
  const orcpt = args ? args.ORCPT : undefined;
  if (typeof orcpt === 'string' && orcpt.length > MAX_ORCPT) {
    throw new SmtpReplyError(501, '5.5.4', `Error: ORCPT is longer than ${MAX_ORCPT} characters`);
  }
}

/** "user%host@relay", "host!user@relay", "@a:user@relay": routing the sender chose. */
export function isUntrustedRouting(address: string): boolean {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  return /[%!@]/.test(local);
}

export interface HeaderLimits {
  maxHeaderSize: number;
  maxHeaders: number;
  maxHops: number;
}

/**
 * Check a message's header section (latin1 text, up to its empty line, or the whole collected
 * start when `complete` is false: then the section did not end within HEADER_SCAN_LIMIT).
 */
export function checkHeaderSection(headers: string, complete: boolean, limits: HeaderLimits): void {
  let fields = 0;
  let received = 0;
  let fieldSize = 0;
  let looksLikeHeaders = true;
  for (const line of headers.split('\n')) {
    const len = line.length + 1;
    if (line[0] === ' ' || line[0] === '\t') {
      fieldSize += len;
    } else if (/^[!-9;-~]+:/.test(line)) {
      fields++;
      fieldSize = len;
      if (/^received:/i.test(line)) received++;
    } else {
      if (line.replace(/\r$/, '') !== '') looksLikeHeaders = false; // not a header: the body starts here (lenient)
      break;
    }
    if (fieldSize > limits.maxHeaderSize) {
      throw new SmtpReplyError(552, '5.6.0', `Error: message header field larger than ${limits.maxHeaderSize} bytes`);
    }
    if (fields > limits.maxHeaders) {
      throw new SmtpReplyError(552, '5.6.0', `Error: more than ${limits.maxHeaders} message header fields`);
    }
  }
  if (received > limits.maxHops) {
    throw new SmtpReplyError(554, '5.4.6', `Error: too many hops (more than ${limits.maxHops} Received: headers); mail loop?`);
  }
  if (!complete && looksLikeHeaders && headers.length >= HEADER_SCAN_LIMIT) {
    throw new SmtpReplyError(552, '5.6.0', `Error: message header section larger than ${HEADER_SCAN_LIMIT} bytes`);
  }
}

/** Free space of the spool's file system, against a floor. */
export class SpoolSpace {
  private cached?: { at: number; free: number };

  constructor(private readonly dir: string, private readonly floor: number, private readonly statFree: (dir: string) => Promise<number> = defaultFree) {}

  /** Throws 452 4.3.1 when accepting `declared` more bytes would go below the floor. */
  async check(declared = 0): Promise<void> {
    if (this.floor <= 0 && declared <= 0) return;
    const now = Date.now();
    if (!this.cached || now - this.cached.at > 2000) {
      try {
        this.cached = { at: now, free: await this.statFree(this.dir) };
      } catch {
        return; // cannot tell: the write itself will fail with 451 if it must
      }
    }
    if (this.cached.free < this.floor + declared) {
      throw new SmtpReplyError(452, '4.3.1', 'Error: insufficient system storage; try again later');
    }
  }
}

async function defaultFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}
