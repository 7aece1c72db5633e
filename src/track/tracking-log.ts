/**
 * track/tracking-log.ts — the message tracking log: one JSON line per event per message.
 *
 * Events: received, routed, delivered, deferred, bounced, expired, deleted, held, released,
 * dsn, corrupt — each with queue id, Message-ID, sender, recipient, next hop and reply where known;
 * and the cluster's takeover, handback, claim-broken, fenced, unfenced (with spool and epoch).
 * Lines written by a secondary process carry "secondary": the spool it delivers from.
 *
 * Crash safety: every line is written with one write(2) on an O_APPEND descriptor before the
 * caller goes on, so a killed process loses nothing (the kernel has the bytes). For a machine
 * crash, `recordDurable` waits for an fdatasync — the receiver uses it so the `received` line is
 * on disk before the `250` — and concurrent callers share one. Lines recorded with `record()`
 * are fdatasynced in the background at most `syncDelayMs` later (tracking.sync_delay), together
 * with whatever came meanwhile, or sooner by the next `recordDurable`: so a message relayed at
 * a time costs one fdatasync (its `received` line's, which carries the previous message's
 * `routed` and `delivered` lines along), not three. A machine crash can lose the history of
 * that last moment, never a message: the spool is the record. close() fdatasyncs what is left.
 * The log never throws: a failing write (disk full, I/O error) is counted and reported through
 * `onError` (the node logs it and counts it in a metric); mail flow does not depend on it — the
 * spool is the record of a message, the tracking log its history. reopen() (SIGHUP) lets
 * logrotate move the file away.
 * Reads config key: tracking.path ("" disables the log).
 */
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, writeSync, fdatasync, fdatasyncSync } from 'node:fs';
import path from 'node:path';

export type TrackingEventType =
  | 'received' | 'routed' | 'delivered' | 'deferred' | 'bounced' | 'expired'
  | 'deleted' | 'held' | 'released' | 'dsn' | 'corrupt'
  /** `tandem queue requeue` rewrote the message under `newQueueId` (none: nothing was left to deliver). */
  | 'requeued';

/** Cluster events: a spool claimed and a secondary started, a spool handed back, fencing. */
export interface ClusterTrackingEvent {
  event: 'takeover' | 'handback' | 'claim-broken' | 'fenced' | 'unfenced';
  spool?: string;
  epoch?: number;
  reason?: string;
  [extra: string]: unknown;
}

export interface TrackingEvent {
  event: TrackingEventType;
  queueId: string;
  messageId?: string;
  sender?: string;
  recipient?: string;
  /** Original recipient when it differs (alias/list expansion). */
  original?: string;
  /** `routed`: every recipient of the group sent to one next hop. */
  recipients?: string[] | number;
  nexthop?: string;
  reply?: string;
  size?: number;
  client?: string;
  node?: string;
  [extra: string]: unknown;
}

export class TrackingLog {
  private fd: number | undefined;
  private syncing = false;
  /** The background sync due for lines written by record() (syncDelayMs > 0). */
  private delayed: NodeJS.Timeout | undefined;
  private dirty = false;
  private waiters: Array<() => void> = [];
  private nextWaiters: Array<() => void> = [];

  /** Lines that could not be written. */
  errors = 0;
  /** The last write may have left part of a line: the next starts with a newline. */
  private torn = false;

  /**
   * Open (creating folders) or, with path "", a log that records nothing. `fields` go into every
   * line (a secondary process adds the spool it delivers from). `syncDelayMs`: how long a line
   * from record() may wait for its fdatasync (0: one is started at once).
   */
  constructor(
    readonly file: string,
    private readonly nodeId: string,
    private readonly onError: (err: Error) => void = () => {},
    private readonly fields: Record<string, string> = {},
    private readonly syncDelayMs = 0,
  ) {
    if (file) {
      mkdirSync(path.dirname(file), { recursive: true });
      this.fd = openLog(file);
    }
  }

  /** Open the file again by name (after logrotate moved it). Throws if it cannot be opened. */
  reopen(): void {
    if (!this.file) return;
    const fd = openLog(this.file);
    const old = this.fd;
    if (old !== undefined) {
      // lines written to the old file must be on disk before waiters are answered by syncs of
      // the new one
      try { fdatasyncSync(old); } catch (err) { this.failed(err as Error); }
    }
    this.fd = fd;
    if (old !== undefined && !this.syncing) closeSync(old);
    // XXX: with a sync running on the old descriptor it is left open (one descriptor per
    // rotation at most, released at exit) rather than closed under the sync.
  }

  /** Append one event; returns once the line is in the kernel (survives a process kill). */
  record(ev: TrackingEvent | ClusterTrackingEvent): void {
    if (this.write(ev)) this.syncSoon();
  }

  /** Append and wait until the line is fsynced (grouped with other callers). */
  recordDurable(ev: TrackingEvent): Promise<void> {
    if (!this.write(ev)) return Promise.resolve();
    return new Promise((resolve) => {
      // a sync already running may have started before our write: wait for the next one
      (this.syncing ? this.nextWaiters : this.waiters).push(resolve);
      this.scheduleSync();
    });
  }

  /** Wait until every line written so far is fsynced (before close() in a short-lived process). */
  sync(): Promise<void> {
    if (this.fd === undefined || (!this.dirty && !this.syncing)) return Promise.resolve();
    return new Promise((resolve) => {
      (this.syncing ? this.nextWaiters : this.waiters).push(resolve);
      this.scheduleSync();
    });
  }

  private write(ev: TrackingEvent | ClusterTrackingEvent): boolean {
    if (this.fd === undefined) return false;
    try {
      // after a short write, start on a fresh line so the next event stays readable
      const line = `${this.torn ? '\n' : ''}${JSON.stringify({ t: new Date().toISOString(), node: this.nodeId, ...this.fields, ...ev })}\n`;
      const bytes = Buffer.from(line, 'utf8');
      const written = writeSync(this.fd, bytes);
      this.torn = written < bytes.length;
      if (this.torn) throw Object.assign(new Error(`short write to the tracking log (${written} of ${bytes.length} bytes)`), { code: 'ENOSPC' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== undefined) this.torn = true;
      this.failed(err as Error);
      return false;
    }
    this.dirty = true;
    return true;
  }

  private failed(err: Error): void {
    this.errors++;
    this.onError(err);
  }

  /** A background sync for lines nobody waits for: within syncDelayMs (or at once with 0). */
  private syncSoon(): void {
    if (this.syncDelayMs <= 0) return this.scheduleSync();
    // a sync under way re-arms this when it ends (dirty); one already due covers this line too
    if (this.syncing || this.delayed || this.fd === undefined) return;
    this.delayed = setTimeout(() => {
      this.delayed = undefined;
      this.scheduleSync();
    }, this.syncDelayMs).unref();
  }

  private scheduleSync(): void {
    if (this.syncing || this.fd === undefined) return;
    // this sync covers every line written so far, the ones a delayed sync was due for included
    clearTimeout(this.delayed);
    this.delayed = undefined;
    this.syncing = true;
    this.dirty = false;
    const batch = this.waiters;
    this.waiters = [];
    fdatasync(this.fd, (err) => {
      // the line is in the kernel; a later sync retries. The caller is not failed for it.
      if (err) this.failed(err);
      this.syncing = false;
      for (const w of batch) w();
      this.waiters.push(...this.nextWaiters);
      this.nextWaiters = [];
      if (this.waiters.length) this.scheduleSync();
      else if (this.dirty) this.syncSoon();
    });
  }

  /** Close the file, after an fdatasync of lines not yet synced (a clean stop loses none). */
  close(): void {
    clearTimeout(this.delayed);
    this.delayed = undefined;
    if (this.fd !== undefined) {
      if (this.dirty) {
        try { fdatasyncSync(this.fd); } catch (err) { this.failed(err as Error); }
      }
      closeSync(this.fd);
    }
    this.fd = undefined;
  }
}

/**
 * Open for appending. A file whose last byte is not a newline ends in a line torn by a crash:
 * a newline is added first, so the next event starts a line of its own and stays readable.
 */
function openLog(file: string): number {
  const fd = openSync(file, 'a+', 0o640);
  const { size } = fstatSync(fd);
  if (size > 0) {
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, size - 1);
    if (last[0] !== 0x0a) writeSync(fd, '\n');
  }
  return fd;
}

/** Parse a tracking log (for `tandem queue show` and tests); skips a torn last line. */
export function readTrackingLog(file: string): TrackingEvent[] {
  const out: TrackingEvent[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    try { out.push(JSON.parse(line)); } catch { /* torn final line after a crash */ }
  }
  return out;
}
