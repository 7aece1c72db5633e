/**
 * message/source.ts — a message on its way to a next hop: in memory when small, otherwise read
 * from its queue file as a stream, so that a large message is never held whole (queue manager →
 * channels, and the DSN's returned headers).
 */
import { Readable } from 'node:stream';
import { bodyStart } from '../util/message-headers.ts';

export interface MessageSource {
  /** Bytes of the message. */
  readonly size: number;
  /** The header section with the empty line that ends it (at most HEADER_SCAN_LIMIT bytes). */
  readonly head: Buffer;
  /** The whole message, when it is in memory (small messages). */
  readonly whole?: Buffer;
  /** The whole message, read afresh at each call (a stream the caller reads or destroys). */
  stream(): Readable;
}

/** A message held in memory. */
export function bufferSource(message: Buffer): MessageSource {
  return {
    size: message.length,
    head: message.subarray(0, bodyStart(message)),
    whole: message,
    stream: () => Readable.from([message]),
  };
}
