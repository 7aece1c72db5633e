/**
 * util/message-headers.ts — the few looks at a message's header section that Tandem needs
 * without parsing MIME (mailparser is for tests): where the headers end, one field's value,
 * how often a field occurs, an RFC 5322 date; and HeaderCollector, which gathers the header
 * section of a message arriving in chunks. Shared by the receiver, the channels and the DSN
 * builder, so that all of them agree on CRLF and bare-LF messages alike.
 */

/** RFC 5322 date with numeric zone, e.g. "Thu, 26 Nov 2026 04:14:35 +0000". */
export function rfc5322Date(d: Date): string {
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

/** Where the body starts: just after the empty line ending the headers (the length if none). */
export function bodyStart(buf: Buffer): number {
  const end = headerEnd(buf);
  if (end < 0) return buf.length;
  // the last header's line break, then the empty line's (only the latter without headers)
  let i = end;
  for (let n = end === 0 ? 1 : 2; n > 0; n--) i += buf[i] === 0x0d ? 2 : 1;
  return i;
}

/**
 * The header section of a message (up to the first empty line, at most HEADER_SCAN_LIMIT) as
 * text: latin1 (one character per byte, for matching) unless told otherwise.
 */
export function headerBlock(message: Buffer, encoding: BufferEncoding = 'latin1'): string {
  const end = headerEnd(message);
  return message.subarray(0, Math.min(end < 0 ? message.length : end, HEADER_SCAN_LIMIT)).toString(encoding);
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
