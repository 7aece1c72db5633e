/**
 * admin/queue-listing.ts — what `tandem queue list` and `show` print, read from a spool folder.
 * Used by the admin API (running node) and by the CLI on a stopped node's spool, so both print
 * the same thing.
 *
 * Exports: listQueue, showQueued, QueueListingRow.
 * list reads every queue file's envelope and status records, not its message (bounded by
 * `limit`); fine for operator use, not for scraping a queue of millions.
 */
import type { Spool } from '../spool/index.ts';
import type { QueueState } from '../spool/types.ts';
import { headerBlock } from '../util/message-headers.ts';

export interface QueueListingRow {
  queueId: string;
  state: QueueState;
  size: number;
  arrivedAt?: number;
  sender?: string;
  recipients?: number;
  pending?: number;
  nextAttemptAt?: number;
  lastReply?: string;
  error?: string;
}

export async function listQueue(spool: Spool, limit = 1000): Promise<{ rows: QueueListingRow[]; total: number }> {
  const entries = await spool.list();
  const rows: QueueListingRow[] = [];
  for (const e of entries.slice(0, limit)) {
    if (e.state === 'corrupt') {
      rows.push({ queueId: e.queueId, state: e.state, size: e.size, error: 'damaged queue file (kept in corrupt/)' });
      continue;
    }
    try {
      const qf = await spool.readInfo(e.queueId, e.state);
      rows.push({
        queueId: e.queueId, state: e.state, size: qf.size, arrivedAt: qf.envelope.arrivedAt, sender: qf.envelope.sender,
        recipients: qf.envelope.recipients.length, pending: qf.pending.length,
        ...(qf.deferral ? { nextAttemptAt: qf.deferral.nextAttemptAt, lastReply: qf.deferral.lastReply } : {}),
      });
    } catch (err) {
      // moved or delivered while we looked, or damaged: say so, do not fail the listing
      rows.push({ queueId: e.queueId, state: e.state, size: e.size, error: (err as Error).message });
    }
  }
  return { rows, total: entries.length };
}

/** The envelope, per-recipient status and headers of one message, or undefined. */
export async function showQueued(spool: Spool, queueId: string) {
  const state = await spool.find(queueId);
  if (!state) return undefined;
  const qf = await spool.read(queueId, state);
  const { message, ...rest } = qf;
  return { ...rest, headers: headerBlock(message, 'utf8') };
}
