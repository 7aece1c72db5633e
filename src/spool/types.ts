/**
 * spool/types.ts — what a queue file holds, shared by receiver, spool, qmgr and channels.
 */

import type { OriginalRecipient } from '../util/dsn-address.ts';

/** The queue's state folders (Postfix-style); names are used as folder names. */
export const QUEUE_STATES = ['incoming', 'active', 'deferred', 'hold', 'corrupt'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

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

/** Durable per-recipient outcome, appended to the queue file as it happens. */
export type RecipientStatus =
  | { index: number; type: 'delivered'; at: number; reply: string; via: string }
  | { index: number; type: 'failed'; at: number; reply: string; via: string; dsnSent: boolean }
  | { index: number; type: 'expired'; at: number; reply: string; dsnSent: boolean };

/** Retry schedule, appended after each attempt that left recipients pending. */
export interface DeferralRecord {
  type: 'deferral';
  at: number;
  attempts: number;
  nextAttemptAt: number;
  lastReply: string;
  /** Delay warning already sent (once per message). */
  warned?: boolean;
}
