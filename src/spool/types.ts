/**
 * spool/types.ts — what a queue file holds besides the envelope (message/envelope.ts, re-exported
 * here): queue states, per-recipient status and deferral records; and SpoolIo, the file
 * operations the spool uses (spool.ts, incoming.ts).
 */
import type { FileHandle } from 'node:fs/promises';

import type { OriginalRecipient } from '../util/dsn-address.ts';

/** The queue's state folders (Postfix-style); names are used as folder names. */
export const QUEUE_STATES = ['incoming', 'active', 'deferred', 'hold', 'corrupt'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

export type { DsnNotify, Envelope, EnvelopeRecipient } from '../message/envelope.ts';

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

/** The file operations the spool uses; tests replace some to inject failures. */
export interface SpoolIo {
  open(path: string, flags: number, mode?: number): Promise<FileHandle>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
  stat(path: string): Promise<{ size: number; mtimeMs: number }>;
}
