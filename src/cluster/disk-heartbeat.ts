/**
 * cluster/disk-heartbeat.ts — the disk heartbeat: each node's slot on the shared storage
 * (`<spool.root>/.cluster/heartbeat/<node>`), a sealed {node, boot, counter, state} record that
 * the node rewrites every cluster.heartbeat_interval and its peers read.
 *
 * A renewal writes a temp file, fdatasyncs it and renames it over the slot, opening everything
 * by name each time: a storage that has gone away (unmounted, a stale NFS handle, a cut SAN
 * path) fails the renewal or hangs it, and either way the node notices that its last good
 * renewal is getting old (the cluster manager fences it after cluster.fence_after). A peer's
 * slot that cannot be read is no beat; one that does not open with the secret is no beat
 * either, but its raw text is returned: if it keeps changing, a live node we cannot
 * authenticate writes it (membership.ts never calls such a node dead).
 * After the first renewal (renew(), at join) a node renews in a worker thread of its own
 * (renewer(): DiskHeartbeatThread here, the loop in disk-heartbeat-worker.ts), out of the reach of
 * the main thread's event loop and of libuv's thread pool (docs/ha.md "The renewer thread").
 * Reads config keys: spool.root, cluster.secret and cluster.accept_secrets (the Sealer, and the
 * thread's own).
 */
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Sealer } from './sealed.ts';
import { UnsealError } from './sealed.ts';
import { clusterPaths } from './paths.ts';
import { isErrno } from '../util/errno.ts';
import type { AnnouncedState } from './membership.ts';
import { workerEntry } from '../util/worker-entry.ts';

export interface DiskBeat {
  node: string;
  boot: number;
  counter: number;
  state: AnnouncedState;
}

/** A renewal's five operations, each timed from when the previous one completed (ms). */
export interface RenewalSteps { open: number; write: number; sync: number; close: number; rename: number }

/** The states a beat can carry, by their index in the shared memory of DiskHeartbeatThread. */
export const STATES: readonly AnnouncedState[] = ['starting', 'ready', 'draining', 'fenced', 'returning', 'stopping'];

/** DiskHeartbeatThread's shared memory: BigInt64Array slots (times in process.hrtime nanoseconds). */
export const SLOT = {
  /** Start of the last renewal that completed (0: none yet). Written by the worker. */
  renewedAt: 0,
  /** Start of the renewal under way (0: none). Written by the worker. */
  busySince: 1,
  /** The main thread's last check-in. */
  checkIn: 2,
  /** The state to write (index in STATES). Written by the main thread. */
  state: 3,
  /** Non-zero: write nothing (an operator fence). Written by the main thread. */
  paused: 4,
  /** The last counter written (or tried). Written by the worker. */
  counter: 5,
  /** Renewals completed. Written by the worker. */
  renewals: 6,
} as const;

export interface DiskHeartbeatWorkerData {
  shared: SharedArrayBuffer;
  slot: string;
  tmpDir: string;
  self: string;
  boot: number;
  counter: number;
  secret?: string;
  acceptSecrets?: readonly string[];
  intervalMs: number;
  maxSilenceMs: number;
}

export type DiskHeartbeatThreadEvent =
  | { type: 'failed'; err: string }
  | { type: 'renewed' }
  | { type: 'timed'; ms: number; steps: RenewalSteps }
  | { type: 'silent'; ms: number };

/** What the cluster manager uses of DiskHeartbeatThread (its unit tests' fakes have none). */
export interface DiskRenewer {
  /** The main thread is alive; write `state` from now on, or nothing while `renew` is false. Called every interval. */
  checkIn(state: AnnouncedState, renew: boolean): void;
  /** Milliseconds since the last completed renewal began (Infinity: none yet), current at once. */
  renewedAgoMs(): number;
  /** Renewals completed so far. */
  renewals(): number;
  /** How long the renewal under way has been running (0: none). */
  busyMs(): number;
  /** The last counter written or tried (a replacement thread goes on from there). */
  counter(): number;
  /** The thread ended on its own (an error it could not handle). */
  exited(): boolean;
  /** End the thread (not waited for: a thread stuck in a hung call ends when the call returns). */
  stop(): void;
}

const nowNs = () => process.hrtime.bigint(); // the real clock: shared with the renewer thread (the production io's disk)
/**
 * The disk heartbeat renewed by a worker thread with synchronous I/O on its own timer
 * (disk-heartbeat-worker.ts has the why): the node's renewals no longer wait for the main
 * thread's event loop or for libuv's thread pool.
 */
export class DiskHeartbeatThread implements DiskRenewer {
  private readonly shared = new BigInt64Array(new SharedArrayBuffer(8 * 8));
  private readonly worker: Worker;
  private ended = false;
  private stopping = false;

  constructor(opts: Omit<DiskHeartbeatWorkerData, 'shared'> & { state: AnnouncedState }, onEvent: (e: DiskHeartbeatThreadEvent) => void) {
    const { state, ...data } = opts;
    this.checkIn(state, true);
    const [entry, options] = workerEntry(import.meta.url, 'disk-heartbeat-worker');
    this.worker = new Worker(entry, { ...options, workerData: { ...data, shared: this.shared.buffer } satisfies DiskHeartbeatWorkerData, name: 'disk-heartbeat' });
    this.worker.on('message', onEvent);
    this.worker.on('error', (err) => onEvent({ type: 'failed', err: `disk heartbeat thread: ${err.message}` }));
    this.worker.on('exit', () => { this.ended = !this.stopping; });
    this.worker.unref();
  }

  checkIn(state: AnnouncedState, renew: boolean): void {
    Atomics.store(this.shared, SLOT.state, BigInt(STATES.indexOf(state)));
    Atomics.store(this.shared, SLOT.paused, renew ? 0n : 1n);
    Atomics.store(this.shared, SLOT.checkIn, nowNs());
  }

  renewedAgoMs(): number {
    const at = Atomics.load(this.shared, SLOT.renewedAt);
    return at === 0n ? Infinity : Number(nowNs() - at) / 1e6;
  }

  renewals(): number {
    return Number(Atomics.load(this.shared, SLOT.renewals));
  }

  busyMs(): number {
    const since = Atomics.load(this.shared, SLOT.busySince);
    return since === 0n ? 0 : Number(nowNs() - since) / 1e6;
  }

  counter(): number {
    return Number(Atomics.load(this.shared, SLOT.counter));
  }

  exited(): boolean {
    return this.ended;
  }

  stop(): void {
    this.stopping = true;
    void this.worker.terminate();
  }
}

export class DiskHeartbeat {
  private readonly paths: ReturnType<typeof clusterPaths>;
  private counter = 0;
  /** Peer slots that did not open with the secret. */
  rejected = 0;
  /** The last completed renewal's steps, in milliseconds (where a slow renewal's time went). */
  lastSteps: RenewalSteps = { open: 0, write: 0, sync: 0, close: 0, rename: 0 };

  constructor(spoolRoot: string, private readonly self: string, private readonly boot: number, private readonly sealer: Sealer,
    private readonly secrets?: { secret?: string; accept_secrets?: readonly string[] }) {
    this.paths = clusterPaths(spoolRoot);
  }

  /**
   * Renew from now on in a worker thread (after the first renewal, made with renew()), every
   * `intervalMs` while the main thread checks in at least every `maxSilenceMs`. `after`: go on
   * from another thread's counter (one given up as hung).
   */
  renewer(opts: { intervalMs: number; maxSilenceMs: number; state: AnnouncedState; after?: number }, onEvent: (e: DiskHeartbeatThreadEvent) => void): DiskRenewer {
    // counters (and temp file names) apart from those of the renewals made here while the thread
    // starts, and from those a thread given up as hung may still write when its call returns
    this.counter = Math.max(this.counter, opts.after ?? 0) + 1000;
    return new DiskHeartbeatThread({
      slot: this.paths.heartbeat(this.self), tmpDir: this.paths.tmp, self: this.self, boot: this.boot, counter: this.counter,
      secret: this.secrets?.secret, acceptSecrets: this.secrets?.accept_secrets,
      intervalMs: opts.intervalMs, maxSilenceMs: opts.maxSilenceMs, state: opts.state,
    }, onEvent);
  }

  /**
   * Write the next beat durably; rejects (or hangs) when the storage is not there. Each call
   * has its own temp file, so a renewal can be tried again while an earlier one hangs.
   */
  async renew(state: AnnouncedState): Promise<void> {
    const slot = this.paths.heartbeat(this.self);
    const counter = ++this.counter;
    const tmp = path.join(this.paths.tmp, `heartbeat.${this.self}.${counter}`);
    const beat: DiskBeat = { node: this.self, boot: this.boot, counter, state };
    const steps: RenewalSteps = { open: 0, write: 0, sync: 0, close: 0, rename: 0 };
    let t = performance.now(); // the real clock: how long each step of a real renewal takes
    const lap = (step: keyof RenewalSteps) => { const now = performance.now(); steps[step] = now - t; t = now; };
    const fh = await open(tmp, 'w');
    lap('open');
    try {
      await fh.writeFile(this.sealer.seal(beat) + '\n');
      lap('write');
      await fh.datasync();
      lap('sync');
    } finally {
      await fh.close();
      lap('close');
    }
    await rename(tmp, slot);
    lap('rename');
    this.lastSteps = steps;
  }

  /**
   * Create the folders (at start-up, while the storage is known to be there), and remove temp
   * files of our earlier renewals that never completed (a crash, or a renewal given up as hung).
   */
  async prepare(): Promise<void> {
    await mkdir(this.paths.heartbeats, { recursive: true });
    await mkdir(this.paths.tmp, { recursive: true });
    const mine = `heartbeat.${this.self}.`;
    for (const name of await readdir(this.paths.tmp)) {
      if (name.startsWith(mine)) await unlink(path.join(this.paths.tmp, name)).catch(() => undefined);
    }
  }

  /**
   * A slot's current beat: `beat` undefined when the slot does not exist (the node never
   * started) or does not open with our secret(s); `raw` is the slot's text whenever it exists,
   * so that a slot that keeps changing without opening — a live node we cannot authenticate,
   * e.g. one with another cluster.secret — can be told from a silent one. Rejects when the
   * slot cannot be read (I/O error): then nothing is known about the node, which is not the
   * same as silence.
   */
  async read(node: string): Promise<{ beat?: DiskBeat; raw?: string; unverified?: UnsealError['reason'] }> {
    let text: string;
    try {
      text = await readFile(this.paths.heartbeat(node), 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return {};
      throw err;
    }
    try {
      const beat = this.sealer.open<DiskBeat>(text);
      return beat.node === node && typeof beat.counter === 'number' && typeof beat.boot === 'number' ? { beat, raw: text } : { raw: text, unverified: 'malformed' };
    } catch (err) {
      if (!(err instanceof UnsealError)) throw err;
      this.rejected++;
      return { raw: text, unverified: err.reason };
    }
  }

  slotPath(node: string): string {
    return this.paths.heartbeat(node);
  }

  /** Node ids with a slot on the shared storage (cluster.nodes of every node should list them all). */
  async slots(): Promise<string[]> {
    return (await readdir(this.paths.heartbeats)).filter((n) => !n.startsWith('.') && !n.includes('.'));
  }
}
