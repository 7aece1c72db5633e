/**
 * cluster/secondary.ts — the surviving node's handle on one secondary switch process
 * (secondary-main.ts) delivering a dead node's spool.
 *
 * The child is forked in this node's process group (a crash of the machine, or a kill of the
 * node's group, takes it down too — which is what the peers' dead_after assumes), running the
 * same code as the node (compiled dist/ in production, the .ts sources when the node itself runs
 * under tsx), with a shared stdout/stderr for its JSON log lines.
 * start() resolves when the child reports ready; it rejects if the fork fails, if the child
 * exits first, or after START_TIMEOUT_MS (the child is then killed: a spool on a hanging
 * storage must not keep the takeover pending for ever). stop() asks it to finish the deliveries
 * in flight and exit (SIGTERM while it is still starting: it has delivered nothing yet), and
 * resolves when it has exited (SIGKILL after STOP_TIMEOUT_MS, below the node's own 60 s stop
 * limit: a delivery that then never got recorded is sent again by whoever delivers the spool
 * next — at least once). IPC send errors (the child just exited) are not fatal to the node.
 * `onUnexpectedExit` tells the owner about an exit it did not ask for, so that it can start the
 * secondary again while the claim is still its own.
 *
 * StandbySecondary (cluster.standby_secondary): one secondary process forked ahead of need, its
 * modules loaded, waiting for its start message — it holds no spool, no lock and no claim, and
 * does nothing else. A SecondaryProcess given the standby takes it instead of forking, so a
 * takeover skips the fork and the module load (the biggest part of a secondary's start); from
 * the start message on it is an ordinary secondary, checking and forcing exactly what a fresh
 * one does. A new standby is forked once the one taken is ready (not before: the fork would take
 * CPU from the first deliveries), and one that exits on its own is replaced after
 * STANDBY_RETRY_MS. It is forked like any secondary (in the node's process group: a kill of the
 * group takes it too), unreferenced (it never holds up the node's exit), and exits as soon as
 * its IPC channel closes or it gets SIGTERM.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TandemConfig } from '../config/schema.ts';
import type { SecondaryReport, SecondaryStart } from './secondary-main.ts';

// secondary-main.js beside the compiled secondary.js (dist/), secondary-main.ts under tsx (tests)
const MAIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './secondary-main.ts' : './secondary-main.js', import.meta.url));
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 45_000;
/** A standby that exited on its own is forked again after this long (no fork loop on a broken install). */
const STANDBY_RETRY_MS = 1000;

const forkSecondary = (): ChildProcess => fork(MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });

export interface StandbyView {
  pid?: number;
  /** Its modules are loaded: a takeover now starts delivering without a fork. */
  ready: boolean;
  since?: string;
}

/** The pre-forked standby secondary process of one node (see the header). */
export class StandbySecondary {
  private child?: ChildProcess;
  private readySince?: number;
  private closed = true;
  private retry?: NodeJS.Timeout;

  constructor(private readonly log: (level: 'info' | 'warn', msg: string, fields: object) => void) {}

  /** Fork the first standby (at join). */
  start(): void {
    this.closed = false;
    this.refill();
  }

  /** Fork a standby if there is none (after one was taken). */
  refill(): void {
    if (this.closed || this.child || this.retry) return;
    const child = forkSecondary();
    this.child = child;
    this.readySince = undefined;
    child.unref();
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    // a fork that failed has no pid and sends no 'exit': treat it as one
    child.on('error', () => { if (child.pid === undefined && this.child === child) this.onExit(null, null); });
    child.on('message', this.onMessage);
    child.once('exit', this.onExit);
  }

  private readonly onMessage = (msg: SecondaryReport): void => {
    if (msg?.type !== 'standby' || !this.child) return;
    this.readySince = Date.now(); // the real clock: part of the production io (a fake io has no standby)
    this.log('info', `standby secondary process ready (pid ${this.child.pid}): a takeover starts delivering without a fork`, { event: 'standby-ready', pid: this.child.pid });
  };

  private readonly onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
    const pid = this.child?.pid;
    this.child = undefined;
    this.readySince = undefined;
    if (this.closed || this.retry) return;
    this.log('warn', `standby secondary process (pid ${pid}) exited (${signal ? `killed by ${signal}` : `exit code ${code}`}); forking another in ${STANDBY_RETRY_MS / 1000} s`, { event: 'standby-exited', pid, code, signal });
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.refill();
    }, STANDBY_RETRY_MS);
    this.retry.unref();
  };

  /** The standby for a secondary about to start (it is no longer watched here), or undefined when there is none alive. */
  take(): ChildProcess | undefined {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null || !child.connected) return undefined;
    child.off('message', this.onMessage);
    child.off('exit', this.onExit);
    this.child = undefined;
    this.readySince = undefined;
    child.ref();
    (child.channel as { ref?: () => void } | undefined)?.ref?.();
    return child;
  }

  view(): StandbyView {
    const child = this.child;
    return { ...(child?.pid !== undefined ? { pid: child.pid } : {}), ready: this.readySince !== undefined, ...(this.readySince !== undefined ? { since: new Date(this.readySince).toISOString() } : {}) };
  }

  /** Node stopping: no new standby; the one there is exits (it holds nothing). */
  async stop(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    this.retry = undefined;
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

export class SecondaryProcess {
  private child?: ChildProcess;
  private exit?: Promise<string>;
  private stopRequested = false;
  counts: Record<string, number> = {};
  /** It has started its queue manager and delivers. */
  ready = false;
  readonly startedAt = Date.now(); // the real clock: the production io's handle (a fake io makes its own)

  constructor(
    readonly spool: string,
    readonly epoch: number,
    private readonly owner: string,
    private readonly ownerBoot: number,
    /** The spool's node's disk heartbeat slot as the parent read it before the start (null: none). */
    private readonly spoolNodeSlot: string | null,
    private readonly config: TandemConfig,
    private readonly onUnexpectedExit: (how: string) => void,
    /** Replicated storage: the copy folder to deliver (resolved right before the fork). */
    private readonly replicated?: () => Promise<NonNullable<SecondaryStart['replicated']>>,
    /** cluster.standby_secondary: the pre-forked process to take instead of forking one. */
    private readonly standby?: StandbySecondary,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    try {
      await this.startChild();
    } finally {
      this.standby?.refill(); // the next takeover's standby, once this one delivers (or failed)
    }
  }

  private async startChild(): Promise<void> {
    const replicated = await this.replicated?.();
    const standby = this.standby?.take();
    const child = standby ?? forkSecondary();
    this.child = child;
    // settles on exit, or on a fork that failed (then no exit comes)
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit code ${code}`));
      child.once('error', (err) => { if (child.pid === undefined) resolve(`could not be started: ${err.message}`); });
    });
    child.on('error', () => undefined); // IPC errors: the exit (or the start timeout) tells the rest
    const start: SecondaryStart = { type: 'start', config: this.config, spool: this.spool, epoch: this.epoch, owner: this.owner, ownerBoot: this.ownerBoot, spoolNodeSlot: this.spoolNodeSlot, standby: standby !== undefined, ...(replicated ? { replicated } : {}) };
    this.send(start);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`secondary process for ${this.spool} not ready after ${START_TIMEOUT_MS / 1000} s (killed); see its log lines`));
      }, START_TIMEOUT_MS);
      child.on('message', (msg: SecondaryReport) => {
        if (msg.type === 'ready') {
          this.ready = true;
          clearTimeout(timer);
          resolve();
        } else if (msg.type === 'counts') this.counts = msg.counts;
      });
      void this.exit!.then((how) => {
        clearTimeout(timer);
        if (!this.ready) reject(new Error(`secondary process for ${this.spool} did not start (${how}); see its log lines above`));
        else if (!this.stopRequested) this.onUnexpectedExit(how);
      });
    });
  }

  /** Finish deliveries in flight, record them, exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.exit) return;
    this.stopRequested = true;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      if (this.ready && child.connected) this.send({ type: 'stop' });
      else child.kill('SIGTERM');
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.exit;
    clearTimeout(timer);
  }

  private send(msg: object): void {
    // with a callback, a failed send (EPIPE: the child is exiting) is reported there, not thrown
    this.child?.send(msg, (err) => { if (err) this.child?.kill('SIGTERM'); });
  }
}
