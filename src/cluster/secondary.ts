/**
 * cluster/secondary.ts — the surviving node's handle on one secondary switch process
 * (secondary-main.ts) delivering a dead node's spool.
 *
 * Exports: SecondaryProcess.
 * The child is forked in this node's process group (a crash of the machine, or a kill of the
 * node's group, takes it down too — which is what the peers' dead_after assumes), with this
 * node's loader (tsx) and a shared stdout/stderr for its JSON log lines.
 * start() resolves when the child reports ready, rejects if it exits first. stop() asks it to
 * finish the deliveries in flight and exit, and resolves when it has exited (SIGKILL after
 * STOP_TIMEOUT_MS: a delivery that then never got recorded is sent again by whoever delivers
 * the spool next — at least once). `exited` tells the owner about an unexpected exit, so that it
 * can start the secondary again while the claim is still its own.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TandemConfig } from '../config/schema.ts';
import type { SecondaryReport, SecondaryStart } from './secondary-main.ts';

const MAIN = fileURLToPath(new URL('./secondary-main.ts', import.meta.url));
const STOP_TIMEOUT_MS = 60_000;

export class SecondaryProcess {
  private child?: ChildProcess;
  private exit?: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stopRequested = false;
  counts: Record<string, number> = {};
  /** It has started its queue manager and delivers. */
  ready = false;
  readonly startedAt = Date.now();

  constructor(
    readonly spool: string,
    readonly epoch: number,
    private readonly owner: string,
    private readonly config: TandemConfig,
    private readonly onUnexpectedExit: (how: string) => void,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): Promise<void> {
    const child = fork(MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child = child;
    this.exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const start: SecondaryStart = { type: 'start', config: this.config, spool: this.spool, epoch: this.epoch, owner: this.owner };
    child.send(start);
    return new Promise<void>((resolve, reject) => {
      child.on('message', (msg: SecondaryReport) => {
        if (msg.type === 'ready') {
          this.ready = true;
          resolve();
        } else if (msg.type === 'counts') this.counts = msg.counts;
      });
      void this.exit!.then(({ code, signal }) => {
        const how = signal ? `killed by ${signal}` : `exit code ${code}`;
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
    if (child.exitCode === null && child.signalCode === null) {
      if (child.connected) child.send({ type: 'stop' });
      else child.kill('SIGTERM');
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.exit;
    clearTimeout(timer);
  }
}
