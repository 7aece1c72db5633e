/**
 * channels/types.ts — the contract between the queue manager and a delivery channel.
 *
 * A channel delivers one message to a group of recipients sharing one route, and reports one
 * result per recipient. It never throws for delivery problems: connection failures, timeouts
 * and 4xx replies become `deferred`, 5xx become `failed`. It throws only for bugs.
 */
import type { Route } from '../router/types.ts';
import type { DsnNotify } from '../message/envelope.ts';
import type { OriginalRecipient } from '../util/dsn-address.ts';
import type { MessageSource } from '../message/source.ts';

export interface DeliveryRecipient {
  /** Index of the recipient in the envelope (stable key for durable status). */
  index: number;
  address: string;
  /** The address the client gave at RCPT TO (before alias or list expansion). */
  original: string;
  /** ORCPT as the client gave it, passed on as given (RFC 3461 §5.2.1). */
  orcpt?: OriginalRecipient;
  /** DSN NOTIFY from the client, passed on to the next hop (RFC 3461 §5.2). */
  notify?: DsnNotify[];
}

export interface DeliveryJob {
  queueId: string;
  sender: string;
  recipients: DeliveryRecipient[];
  route: Route;
  /**
   * The message as received (with our Received: header): in memory when small, otherwise read
   * from the queue file as a stream (`stream()`), never held whole.
   */
  message: MessageSource;
  body8bit?: boolean;
  smtputf8?: boolean;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
}

export type RecipientOutcome = 'delivered' | 'deferred' | 'failed';

export interface RecipientResult {
  index: number;
  outcome: RecipientOutcome;
  /** The reply as a mail administrator wants to read it: "250 2.0.0 Ok queued as X", "connect ECONNREFUSED 127.0.0.1:25". */
  reply: string;
  /** Next hop that gave the reply: "mx.example.net[192.0.2.1]:25", "maildir:/var/mail/x". */
  via: string;
}

export interface Channel {
  deliver(job: DeliveryJob): Promise<RecipientResult[]>;
  /** Close cached connections (shutdown). */
  close?(): Promise<void>;
}
