/**
 * cluster/disk-lease.ts — this node's disk-heartbeat lease as the main thread keeps it: the
 * renewals (on shared storage by the renewer thread, disk-heartbeat-worker.ts; on this thread
 * without one, or until its first renewal), how old the last one is, the storage fence once it
 * is older than cluster.fence_after, and where the time goes (renewal times and steps, the beat
 * timer's lateness, the event loop's delay; `disk-heartbeat-slow` in the log).
 * The lease counts from when a renewal *began* (a renewal completing after a stall proves
 * nothing newer); the renewer thread's is read from its shared memory, current at once.
 * Exports DiskLease (one per ClusterManager, beat() on its heartbeat timer) and RenewalStats
 * (`renewals` in GET /cluster).
 * What can go wrong: a failing renewal is logged once per outage (disk-heartbeat-failed, then
 * disk-heartbeat-renewed); a renewal hung for 2 × fence_after, or a renewer thread that ended,
 * is replaced by a new thread that goes on from its counter; a main thread silent for
 * fence_after pauses the thread's renewals (disk-heartbeat-paused), and the first beat after it
 * fences the node.
 * Reads config keys: cluster.heartbeat_interval, cluster.fence_after.
 */
import type { Logger } from 'pino';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { ClusterConfig } from '../config/schema.ts';
import type { AnnouncedState } from './membership.ts';
import type { DiskHeartbeatThreadEvent, DiskRenewer, RenewalSteps } from './disk-heartbeat.ts';
import type { ClusterIo } from './cluster-io.ts';

export interface RenewalStats {
  count: number;
  /** Renewals that took longer than two heartbeat intervals. */
  slow: number;
  slowestMs: number;
  slowestSteps?: RenewalSteps;
  /** The beat timer firing later than its interval, largest seen (main-thread lag). */
  beatLateMaxMs: number;
  /** perf_hooks.monitorEventLoopDelay: largest delay seen, and the 99th percentile. */
  loopDelayMaxMs: number;
  loopDelayP99Ms: number;
}

/** Good renewals needed, after a storage fence, before the node delivers again. */
const UNFENCE_AFTER_RENEWALS = 3;

/** What the lease needs of the cluster manager. */
export interface DiskLeaseDeps {
  c: Pick<ClusterConfig, 'heartbeat_interval' | 'fence_after'>;
  disk: ClusterIo['disk'];
  mono(): number;
  wall(): number;
  logger: Logger;
  /** The state the node announces (written in each renewal). */
  announced(): AnnouncedState;
  /** Fenced now, for any reason (renewals then count towards the end of a storage fence). */
  fenced(): boolean;
  /** Fenced by the operator (renewals then pause: the peers see the node stop renewing). */
  fencedByOperator(): boolean;
  /** The renewals are overdue (the storage is unreachable or hanging): fence the node, in force since `since` (wall clock). */
  fenceForStorage(since: number, why: string): void;
}

export class DiskLease {
  private lastRenewOk: number;
  /** The renewal in flight on this thread, if any, and when it began (a hung one is given up after 2 × fence_after). */
  private renewingSince?: number;
  private renewFailing = false;
  /** Shared storage in production: the thread that renews the disk heartbeat (disk-heartbeat-worker.ts). */
  private renewer?: DiskRenewer;
  /** The renewer's completed renewals as of the last beat. */
  private renewalsSeen = 0;
  private readonly renewalStats: Omit<RenewalStats, 'loopDelayMaxMs' | 'loopDelayP99Ms'> = { count: 0, slow: 0, slowestMs: 0, beatLateMaxMs: 0 };
  private lastBeatAt?: number;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private goodRenewalsSinceFence = 0;
  /** When the count above was last reset: a renewal that began before it does not count. */
  private fenceBeganAt = -Infinity;

  constructor(private readonly d: DiskLeaseDeps) {
    this.lastRenewOk = d.mono();
  }

  /** At join: the first renewal, on this thread (a storage that fails it fails the start), then the renewer thread if the storage has one. */
  async start(state: AnnouncedState): Promise<void> {
    await this.d.disk.renew(state);
    this.lastRenewOk = this.d.mono();
    this.startRenewer();
  }

  /** How old the lease is: since the start of the last completed renewal (ms). */
  ageMs(): number {
    return this.d.mono() - this.renewedAt();
  }

  /** The last renewal is cluster.fence_after old or older: nothing may be delivered on it. */
  overdue(): boolean {
    return this.ageMs() >= this.d.c.fence_after;
  }

  /** A fence began, or the operator asked to end one: count good renewals from zero (storageBack). */
  fenceBegan(): void {
    this.goodRenewalsSinceFence = 0;
    this.fenceBeganAt = this.d.mono();
  }

  /** The storage is back: a few good renewals in a row since the fence (time for the peers to see them), the last one fresh. */
  storageBack(): boolean {
    return this.goodRenewalsSinceFence >= UNFENCE_AFTER_RENEWALS && !this.overdue();
  }

  stats(): RenewalStats {
    return { ...this.renewalStats, ...(this.renewer ? { count: this.renewer.renewals() } : {}), loopDelayMaxMs: this.loopDelay.max / 1e6, loopDelayP99Ms: this.loopDelay.percentile(99) / 1e6 };
  }

  /** The node stops: no more renewals (the peers take its spool after dead_after). */
  stop(): void {
    this.renewer?.stop();
    this.renewer = undefined;
    this.loopDelay.disable();
  }

  /** Heartbeat timer: renew (or have the thread renew), fence if renewals are late. The event loop is watched from the first beat on. */
  beat(): void {
    const firedAt = this.d.mono();
    if (this.lastBeatAt === undefined) this.loopDelay.enable();
    else this.renewalStats.beatLateMaxMs = Math.max(this.renewalStats.beatLateMaxMs, firedAt - this.lastBeatAt - this.d.c.heartbeat_interval);
    this.lastBeatAt = firedAt;
    if (this.renewer && this.renewer.renewals() > 0) this.beatThread(this.renewer);
    else {
      // no renewer thread, or one still starting (a thread takes 50 ms to 1 s to load): renew here meanwhile
      this.renewer?.checkIn(this.d.announced(), !this.d.fencedByOperator());
      this.beatAsync();
    }
  }

  /** The start of the last completed renewal (monotonic); the renewer thread's is read from shared memory, current at once. */
  private renewedAt(): number {
    const ago = this.renewer?.renewedAgoMs() ?? Infinity;
    if (ago !== Infinity) this.lastRenewOk = Math.max(this.lastRenewOk, this.d.mono() - ago);
    return this.lastRenewOk;
  }

  /** Shared storage in production: from now on the disk heartbeat is renewed by a thread of its own. */
  private startRenewer(after?: number): void {
    // a main thread silent for fence_after is taken for wedged: renewals pause, so that its
    // peers can take over a node that no longer runs (and it fences itself if it wakes up)
    this.renewer = this.d.disk.renewer?.({ intervalMs: this.d.c.heartbeat_interval, maxSilenceMs: this.d.c.fence_after, state: this.d.announced(), after }, (e) => this.onRenewerEvent(e));
    this.renewalsSeen = 0;
  }

  private onRenewerEvent(e: DiskHeartbeatThreadEvent): void {
    if (e.type === 'failed') this.noteRenewFailed(e.err);
    else if (e.type === 'renewed') this.noteRenewedAgain();
    else if (e.type === 'timed') this.noteRenewal(e.ms, e.steps);
    else this.d.logger.warn({ event: 'disk-heartbeat-paused', silentMs: e.ms }, `the main thread has been silent for ${e.ms} ms: disk heartbeat renewals paused until it checks in again`);
  }

  private noteRenewFailed(err: string): void {
    // once per outage, not four times a second
    if (!this.renewFailing) this.d.logger.warn({ event: 'disk-heartbeat-failed', err }, `cannot renew the disk heartbeat: ${err}`);
    this.renewFailing = true;
  }

  private noteRenewedAgain(): void {
    if (this.renewFailing) this.d.logger.warn({ event: 'disk-heartbeat-renewed' }, 'disk heartbeat renewed again');
    this.renewFailing = false;
  }

  /**
   * The renewer thread, every interval: count its renewals, fence if they are late — before
   * checking in, so that a main thread waking from a stall longer than fence_after is fenced
   * before its thread renews again — replace a thread hung in a call (or ended), and check in.
   */
  private beatThread(r: DiskRenewer): void {
    const n = r.renewals();
    if (this.d.fenced()) this.goodRenewalsSinceFence += n - this.renewalsSeen;
    this.renewalsSeen = n;
    this.fenceIfOverdue();
    if (r.exited() || r.busyMs() > 2 * this.d.c.fence_after) {
      if (r.exited()) this.d.logger.error({ event: 'disk-heartbeat-thread-exited' }, 'the disk heartbeat thread ended: starting another');
      else this.d.logger.warn({ event: 'disk-heartbeat-hung', busyMs: Math.round(r.busyMs()) }, `a disk heartbeat renewal has hung for ${Math.round(r.busyMs())} ms: starting another renewer thread`);
      r.stop();
      this.startRenewer(r.counter());
      return;
    }
    r.checkIn(this.d.announced(), !this.d.fencedByOperator());
  }

  private fenceIfOverdue(): void {
    const overdue = this.ageMs();
    if (!this.d.fenced() && overdue >= this.d.c.fence_after) {
      // in force since the renewal became overdue (the gates check the age themselves)
      const since = this.d.wall() - (overdue - this.d.c.fence_after);
      this.d.fenceForStorage(since, `no disk heartbeat renewal for ${Math.round(overdue)} ms (cluster.fence_after): the shared storage is unreachable or hanging`);
    }
  }

  /** Without a renewer thread (replicated storage, the unit tests' fakes): renew on the main thread. */
  private beatAsync(): void {
    const hung = this.renewingSince !== undefined && this.d.mono() - this.renewingSince > 2 * this.d.c.fence_after;
    if (!this.d.fencedByOperator() && (this.renewingSince === undefined || hung)) {
      const started = this.d.mono();
      this.renewingSince = started;
      this.d.disk.renew(this.d.announced()).then(
        () => {
          // the lease counts from when this renewal began: the peers cannot have seen it earlier
          this.lastRenewOk = Math.max(this.lastRenewOk, started);
          this.noteRenewal(this.d.mono() - started, this.d.disk.lastSteps);
          // one that hung past the fence and ended late says nothing about the storage now
          if (this.d.fenced() && started >= this.fenceBeganAt) this.goodRenewalsSinceFence++;
          this.noteRenewedAgain();
        },
        (err) => this.noteRenewFailed(String(err?.message ?? err)),
      ).finally(() => { if (this.renewingSince === started) this.renewingSince = undefined; });
    }
    this.fenceIfOverdue();
  }

  /** A completed renewal's time (the renewer thread reports only those over two intervals or slower than any before; it counts the rest). */
  private noteRenewal(ms: number, stepsMs?: RenewalSteps): void {
    const r = this.renewalStats;
    r.count++;
    if (ms > r.slowestMs) {
      r.slowestMs = ms;
      r.slowestSteps = stepsMs;
    }
    if (ms > 2 * this.d.c.heartbeat_interval) {
      r.slow++;
      const steps = Object.fromEntries(Object.entries(stepsMs ?? {}).map(([k, v]) => [k, Math.round(v)]));
      this.d.logger.warn({ event: 'disk-heartbeat-slow', ms: Math.round(ms), steps, loopDelayMaxMs: Math.round(this.loopDelay.max / 1e6) },
        `disk heartbeat renewal took ${Math.round(ms)} ms (${JSON.stringify(steps)})`);
    }
  }
}
