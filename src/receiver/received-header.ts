/**
 * receiver/received-header.ts — the Received: trace header (RFC 5321 §4.4) and the small
 * header inspections the receiver needs (Message-ID, hop count), without parsing MIME.
 *
 * Exports: receivedHeader, headerEnd, headerBlock, findHeader, countHeader, HEADER_SCAN_LIMIT,
 * HeaderCollector.
 */

export interface ReceivedInfo {
  helo: string;
  clientAddress: string;
  clientHostname?: string;
  byHostname: string;
  queueId: string;
  /** ESMTP, ESMTPS (TLS), ESMTPA (auth), ESMTPSA, or SMTP for HELO */
  protocol: string;
  /** Single recipient: named in the `for` clause (as Postfix does); none for several. */
  forRecipient?: string;
  date: Date;
}

/** Build the header, folded over three lines, ending in CRLF. */
export function receivedHeader(info: ReceivedInfo): string {
  const from = `from ${info.helo || 'unknown'} (${info.clientHostname ?? 'unknown'} [${info.clientAddress}])`;
  const by = `by ${info.byHostname} (Tandem) with ${info.protocol} id ${info.queueId}`;
  const forPart = info.forRecipient ? `\r\n\tfor <${info.forRecipient}>` : '';
  return `Received: ${from}\r\n\t${by}${forPart};\r\n\t${rfc2822Date(info.date)}\r\n`;
}

/** RFC 5322 date with numeric zone, e.g. "Thu, 26 Nov 2026 04:14:35 +0000". */
export function rfc2822Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const zone = `${off >= 0 ? '+' : '-'}${p(Math.floor(Math.abs(off) / 60))}${p(Math.abs(off) % 60)}`;
  return `${days[d.getDay()]}, ${d.getDate()} ${months[d.getMonth()]} ${d.getFullYear()} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${zone}`;
}

/** How much of a message is searched for its header section. */
export const HEADER_SCAN_LIMIT = 256 * 1024;

/** Where the header section ends (at its empty line), or -1 if not within `buf`. */
export function headerEnd(buf: Buffer): number {
  if (buf[0] === 0x0a || (buf[0] === 0x0d && buf[1] === 0x0a)) return 0; // no headers at all
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf < 0) return lf;
  return lf < 0 ? crlf : Math.min(crlf, lf);
}

/**
 * Collects the start of a message until its header section is complete (or HEADER_SCAN_LIMIT
 * is reached), looking only at each new chunk and the last bytes before it: linear in the
 * input however small the chunks (smtp-server emits one per dot-stuffed line).
 */
export class HeaderCollector {
  private chunks: Buffer[] = [];
  private length = 0;
  private tail: Buffer = Buffer.alloc(0);

  /** Add a chunk; true once the header section is complete or the scan limit is reached. */
  push(chunk: Buffer): boolean {
    const first = this.length === 0;
    this.chunks.push(chunk);
    this.length += chunk.length;
    const probe = this.tail.length ? Buffer.concat([this.tail, chunk]) : chunk;
    const found = first ? headerEnd(probe) >= 0 : probe.indexOf('\r\n\r\n') >= 0 || probe.indexOf('\n\n') >= 0;
    this.tail = probe.subarray(Math.max(0, probe.length - 3));
    return found || this.length >= HEADER_SCAN_LIMIT;
  }

  /** Everything collected so far. */
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

/** The header section of a message (up to the first empty line, at most HEADER_SCAN_LIMIT), as latin1 text. */
export function headerBlock(message: Buffer): string {
  const end = headerEnd(message);
  return message.subarray(0, Math.min(end < 0 ? message.length : end, HEADER_SCAN_LIMIT)).toString('latin1');
}

/** First value of a header (unfolded), or undefined. */
export function findHeader(headers: string, name: string): string | undefined {
  const re = new RegExp(`^${name}:[ \\t]*((?:.*)(?:\\r?\\n[ \\t].*)*)`, 'im');
  const m = re.exec(headers);
  return m ? m[1].replace(/\r?\n[ \t]+/g, ' ').trim() : undefined;
}

/** Number of occurrences of a header field (e.g. Received, for loop detection). */
export function countHeader(headers: string, name: string): number {
  const re = new RegExp(`^${name}:`, 'gim');
  return headers.match(re)?.length ?? 0;
}
