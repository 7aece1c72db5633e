/**
 * qmgr/index.ts — the queue manager package's public surface: the scheduler that delivers a
 * node's spool (queue-manager.ts; its parts active-queue.ts, destinations.ts and outcomes.ts
 * are internal), the operator actions every path shares (queue-actions.ts,
 * requeue.ts), and the queue listing read by the CLI, the admin API and the console.
 */
export { QueueManager } from './queue-manager.ts';
export type { QueueManagerConfig, QueueManagerDeps, QueueMetrics, MessageSummary } from './queue-manager.ts';
export { applyQueueAction } from './queue-actions.ts';
export type { QueueAction, QueueActionResult } from './queue-actions.ts';
export { requeueMessage, NOT_REQUEUED } from './requeue.ts';
export {
  listQueue, showQueued, queueShape, selectQueued, countQueued, selectionFromJson, selectionToJson, isEmptySelection,
  hasFilter, deleteNeedsConfirmation, SHAPE_BUCKETS_MIN,
} from './queue-listing.ts';
export type { QueueListingRow, QueueSelection } from './queue-listing.ts';
export { EnvelopeIndex } from './envelope-index.ts';
export type { IndexedMessage, IndexFilter, IndexShape } from './envelope-index.ts';
