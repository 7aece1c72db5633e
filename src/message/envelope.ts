/**
 * message/envelope.ts — what is known about a message besides its bytes: the envelope (sender,
 * recipients with their DSN requests, client, arrival) as the receiver builds it. Shared by the
 * receiver, the spool, the queue manager and the channels, none of which owns it.
 */
import type { OriginalRecipient } from '../util/dsn-address.ts';

/** RFC 3461 NOTIFY values for one recipient. */
export type DsnNotify = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface EnvelopeRecipient {
  /** Final address after alias/list expansion (what is delivered to). */
  address: string;
  /**
   * The address the client gave at RCPT TO. (Queue files written before `orcpt` existed may
   * hold the ORCPT address here.)
   */
  original: string;
  /** RFC 3461 ORCPT as the client gave it (type and decoded address); absent when none was given. */
  orcpt?: OriginalRecipient;
  /** DSN NOTIFY; absent means the default (FAILURE, and DELAY if warnings are on). */
  notify?: DsnNotify[];
}

/** Everything known about a message at the time it is committed to the spool. */
export interface Envelope {
  /** Queue id, unique across a cluster: it carries the node id. */
  queueId: string;
  /** Node whose spool received it. */
  nodeId: string;
  /** Envelope sender; "" is the null sender (bounces); DSNs are never sent to it. */
  sender: string;
  recipients: EnvelopeRecipient[];
  /** Arrival time, ms since the epoch. */
  arrivedAt: number;
  /** Message-ID header value, for the tracking log ("" if none). */
  messageId: string;
  /** Client that sent it: address, HELO name, authenticated user. */
  client: { address: string; helo: string; user?: string };
  /** DSN: RET=FULL|HDRS and ENVID from MAIL FROM. */
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  /** BODY=8BITMIME / SMTPUTF8 flags from MAIL FROM, passed on to the next hop. */
  body8bit?: boolean;
  smtputf8?: boolean;
}
