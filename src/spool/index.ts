/**
 * spool/index.ts — the spool package's public surface: queue files in state folders, the
 * commit protocol (spool.ts header), the single-writer lock, and the shared queue types.
 */
export { Spool, CorruptQueueFileError, READ_WHOLE_LIMIT } from './spool.ts';
export { IncomingMessage } from './incoming.ts';
export type { DeliveryFile, QueueFile, QueueEntry, RecoveredEntry, SelectedFile, SpoolOptions } from './spool.ts';
export { acquireSpoolLock, readSpoolLock, SpoolLockedError } from './lock.ts';
export type { SpoolLock, SpoolLockInfo } from './lock.ts';
export { DirSyncer } from './dirsync.ts';
export type { FsyncDir } from '../util/fsync-dir.ts';
export { parseQueueId, isSafeQueueId } from './queueid.ts';
export { QUEUE_STATES } from './types.ts';
export type {
  DeferralRecord, DsnNotify, Envelope, EnvelopeRecipient, QueueState, RecipientStatus, SpoolIo,
} from './types.ts';
