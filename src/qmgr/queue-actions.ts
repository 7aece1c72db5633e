/**
 * qmgr/queue-actions.ts — the operator actions on one queued message (hold, release, delete),
 * as file moves in the spool and a tracking-log line each: the one place they are done, by the
 * queue manager of a running node (admin API, `tandem queue … --admin`) and by the CLI on a
 * stopped node's spool (`tandem queue … --spool`), so both leave the same record.
 *
 * The caller makes sure nothing else moves the message meanwhile: the queue manager marks it
 * busy, the CLI holds the spool lock. Flush is not here: it changes no file, only what a running
 * queue manager tries next (QueueManager.flush).
 */
import type { Spool } from '../spool/index.ts';
import type { QueueState } from '../spool/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';

export type QueueAction = 'hold' | 'release' | 'delete';
export type QueueActionResult = 'held' | 'already' | 'released' | 'not-held' | 'deleted';

/**
 * Apply `action` to the message `queueId`, now in `state`. Returns what was done and the state
 * after it (undefined once deleted). Records `held`, `released` or `deleted` in the tracking
 * log, with `by` (who asked: "admin-api", "cli").
 */
export async function applyQueueAction(
  spool: Spool, tracking: TrackingLog, action: QueueAction, queueId: string, state: QueueState, by: string,
): Promise<{ result: QueueActionResult; state: QueueState | undefined }> {
  if (action === 'hold') {
    if (state === 'hold') return { result: 'already', state };
    await spool.move(queueId, state, 'hold');
    tracking.record({ event: 'held', queueId, by });
    return { result: 'held', state: 'hold' };
  }
  if (action === 'release') {
    if (state !== 'hold') return { result: 'not-held', state };
    await spool.move(queueId, 'hold', 'deferred');
    tracking.record({ event: 'released', queueId, by });
    return { result: 'released', state: 'deferred' };
  }
  await spool.remove(queueId, state);
  tracking.record({ event: 'deleted', queueId, by });
  return { result: 'deleted', state: undefined };
}
