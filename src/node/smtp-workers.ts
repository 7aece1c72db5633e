/**
 * node/smtp-workers.ts — SMTP sessions spread over worker processes (config smtp.workers:
 * auto = one per CPU, N; 1 = no workers, sessions in the node's own process). docs/queue.md
 * ("SMTP workers") says how the work is split and why it is safe; in short:
 *
 *  - node:cluster forks the workers (smtp-worker-main.ts) in the node's process group; they
 *    share each listening socket (created by the main process) and each accepts its own
 *    connections (SCHED_NONE: the kernel gives each connection to one waiting worker; a busy
 *    worker waits less often, so the load evens out). A listener on port 0 gets a port picked
 *    here first, so that every worker and every replacement listens on the same one.
 *  - A worker writes into the node's one spool and tracking log; the queue manager, the cluster
 *    manager, the admin API and the client limits stay here. A worker's `queued` message after
 *    each commit hands the message to the queue manager (`onQueued`).
 *  - The node's accept state (ready, draining, fenced, stopping) is pushed to the workers at
 *    each change (pushState, checked every STATE_POLL_MS; syncState, awaited, on an operator's
 *    drain, resume, fence and unfence, and on stop), for new sessions and MAIL; and each commit
 *    asks here first (mayCommit), so no 250 follows a fence or a stop of the node, as in one
 *    process.
 *  - A worker that exits is replaced (after RESPAWN_DELAY_MS if it lived less than that, no fork
 *    loop); its sessions' messages that were not committed are lost to nobody (no 250 was
 *    sent), and `workerExited` lets the queue manager walk incoming/ for a message it
 *    committed without living to say so.
 *  - Metrics: each worker's prom-client registry, asked over IPC and summed with the main
 *    process's (prom-client AggregatorRegistry.aggregate).
 */
import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { TandemConfig } from '../config/schema.ts';
import type { Envelope } from '../spool/types.ts';
import type { ClientLimits, AcceptState, ListenerSpec } from '../receiver/index.ts';
import { freePort } from '../util/free-port.ts';
import { Rpc, answer, type FromWorker, type ToWorker, type HostPort, type Response } from './worker-ipc.ts';

// smtp-worker-main.js beside the compiled smtp-workers.js (dist/), the .ts under tsx (tests)
const MAIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './smtp-worker-main.ts' : './smtp-worker-main.js', import.meta.url));
const STATE_POLL_MS = 50;
const RESPAWN_DELAY_MS = 1000;
const READY_TIMEOUT_MS = 60_000;

/** smtp.workers as a number of processes (auto: the CPUs this process may use). */
export function workerCount(c: TandemConfig): number {
  const w = c.smtp.workers;
  if (w !== 'auto') return w;
  if (c.cluster?.storage === 'replicated') return 1; // the shadow copy is made by the main process
  return Math.max(1, os.availableParallelism());
}

export interface SmtpWorkersOptions {
  count: number;
  config: TandemConfig;
  listeners: ListenerSpec[];
  logger: Logger;
  /** The node's one ClientLimits. */
  limits: ClientLimits;
  acceptState(): AcceptState;
  /** A worker committed a message (its `received` line is fsynced, the 250 is on its way). */
  onQueued(queueId: string, size: number, hold: boolean, fresh?: { envelope: Envelope; message: Buffer }): void;
  /** A worker exited (crash or kill): messages it committed may not have been announced. */
  workerExited(): void;
}

interface Running {
  worker: Worker;
  number: number;
  rpc: Rpc;
  startedAt: number;
  ready: boolean;
}

export class SmtpWorkers {
  private readonly running = new Map<number, Running>();
  private stopping = false;
  private lastState = '';
  private poll?: NodeJS.Timeout;
  private listeners: ListenerSpec[];
  private readonly respawns = new Set<NodeJS.Timeout>();

  constructor(private readonly o: SmtpWorkersOptions) {
    this.listeners = o.listeners;
  }

  /** Fork the workers; resolves with the listeners' addresses once every worker listens. */
  async start(): Promise<Record<string, HostPort>> {
    // the workers accept for themselves (the kernel hands each connection to one): measured 20 % less
    // CPU per message than node:cluster's round robin, where the main process accepts and passes each on
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: MAIN, serialization: 'advanced' });
    // port 0: a port picked here, the same for every worker (a taken one is picked again)
    let addresses: Record<string, HostPort> | undefined;
    for (let attempt = 1; !addresses; attempt++) {
      this.listeners = await Promise.all(this.o.listeners.map(async (l) => ({
        ...l,
        // each worker its share of the listener's connections: the node's total stays the same
        maxConnections: Math.ceil(l.maxConnections / this.o.count),
        listen: l.listen.port === 0 ? { ...l.listen, port: await freePort(l.listen.host) } : l.listen,
      })));
      try {
        addresses = await this.spawn(1);
      } catch (err) {
        if (attempt >= 5 || !(err as { code?: string }).code?.includes('EADDRINUSE') || !this.o.listeners.some((l) => l.listen.port === 0)) throw err;
      }
    }
    await Promise.all(Array.from({ length: this.o.count - 1 }, (_, i) => this.spawn(i + 2)));
    this.poll = setInterval(() => this.pushState(), STATE_POLL_MS).unref();
    return addresses;
  }

  /** The pids of the workers now running (tests, logs). */
  pids(): number[] {
    return [...this.running.values()].map((r) => r.worker.process.pid!).filter(Boolean);
  }

  private spawn(number: number): Promise<Record<string, HostPort>> {
    const worker = cluster.fork({ TANDEM_SMTP_WORKER: String(number) });
    const rpc = new Rpc((msg, done) => {
      if (!worker.isConnected()) return done(new Error('worker gone'));
      worker.send(msg, undefined, (err) => done(err ?? null));
    });
    const r: Running = { worker, number, rpc, startedAt: Date.now(), ready: false };
    this.running.set(worker.id, r);
    const log = this.o.logger;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`SMTP worker ${number} (pid ${worker.process.pid}) not ready in ${READY_TIMEOUT_MS / 1000} s`));
        worker.process.kill('SIGKILL');
      }, READY_TIMEOUT_MS);
      worker.on('message', (msg: FromWorker) => {
        switch (msg.t) {
          case 'hello': // its message handler is in place ('online' comes before: a message then would be lost)
            this.send(worker, { t: 'init', config: this.o.config, listeners: this.listeners, worker: number, state: this.o.acceptState() });
            break;
          case 'ready':
            r.ready = true;
            clearTimeout(timer);
            log.info({ event: 'smtp-worker-ready', worker: number, pid: worker.process.pid }, `SMTP worker ${number} ready (pid ${worker.process.pid})`);
            resolve(msg.addresses);
            // a state change while it started
            this.send(worker, { t: 'state', state: this.o.acceptState() });
            break;
          case 'listen-failed':
            clearTimeout(timer);
            reject(Object.assign(new Error(`SMTP worker ${number}: ${msg.message}`), { code: msg.code }));
            worker.process.kill('SIGKILL');
            break;
          case 'queued':
            // structured clone hands a Buffer over as a Uint8Array: the same bytes, no copy
            this.o.onQueued(msg.queueId, msg.size, msg.hold, msg.envelope && msg.message ? { envelope: msg.envelope, message: Buffer.from(msg.message.buffer, msg.message.byteOffset, msg.message.byteLength) } : undefined);
            break;
          case 'note':
            this.note(msg.op, msg.address);
            break;
          case 'req':
            void answer(msg, () => this.request(msg.op, msg.arg), (res: Response) => this.send(worker, res));
            break;
          case 'res':
            rpc.settle(msg);
            break;
        }
      });
      worker.on('exit', (code, signal) => {
        clearTimeout(timer);
        this.running.delete(worker.id);
        rpc.failAll(`SMTP worker ${number} exited`);
        if (!r.ready) reject(new Error(`SMTP worker ${number} exited before it was ready (${signal ?? `exit code ${code}`})`));
        if (this.stopping) return;
        this.o.workerExited();
        if (!r.ready) return; // a start-up failure: start() reports it
        const delay = Date.now() - r.startedAt < RESPAWN_DELAY_MS ? RESPAWN_DELAY_MS : 0;
        log.error({ event: 'smtp-worker-exited', worker: number, pid: worker.process.pid, code, signal }, `SMTP worker ${number} (pid ${worker.process.pid}) exited (${signal ? `killed by ${signal}` : `exit code ${code}`}): its sessions were cut, messages without a 250 are the clients' to send again; starting another${delay ? ` in ${delay / 1000} s` : ''}`);
        const t = setTimeout(() => {
          this.respawns.delete(t);
          if (this.stopping) return;
          this.spawn(number).catch((err) => log.error({ event: 'smtp-worker-start-failed', worker: number, err: String(err) }, `cannot start SMTP worker ${number}: ${err}`));
        }, delay);
        this.respawns.add(t);
      });
    });
  }

  private send(worker: Worker, msg: ToWorker): void {
    if (worker.isConnected()) worker.send(msg, undefined, () => undefined);
  }

  private note(op: string, address: string): void {
    const l = this.o.limits;
    if (op === 'connect') l.connect(address); // an exempt client: counted, never refused
    else if (op === 'release') l.release(address);
    else if (op === 'authFailed') l.authFailed(address);
  }

  private request(op: string, arg: unknown): unknown {
    const l = this.o.limits;
    const address = String(arg);
    switch (op) {
      case 'mayCommit': return this.o.acceptState();
      case 'connect': return l.connect(address);
      case 'message': return l.message(address);
      case 'recipient': return l.recipient(address);
      case 'authBlocked': return l.authBlocked(address);
      default: throw new Error(`unknown request ${op}`);
    }
  }

  /** Tell the workers the node's accept state if it changed (now, not at the next poll). */
  pushState(): void {
    const state = this.o.acceptState();
    const key = JSON.stringify(state);
    if (key === this.lastState) return;
    this.lastState = key;
    for (const r of this.running.values()) this.send(r.worker, { t: 'state', state });
  }

  /**
   * Push the accept state and wait until every worker has it (an operator's drain, resume, fence
   * or unfence answers after this: a connection made after the answer meets the new state).
   */
  async syncState(): Promise<void> {
    const state = this.o.acceptState();
    this.lastState = JSON.stringify(state);
    await Promise.allSettled([...this.running.values()].filter((r) => r.ready).map((r) => r.rpc.ask('state', state, 5_000)));
  }

  /** A reload checked by the main process: every worker applies its live parts. */
  async reload(next: TandemConfig): Promise<void> {
    const results = await Promise.allSettled([...this.running.values()].filter((r) => r.ready).map((r) => r.rpc.ask('reload', next, 30_000)));
    const failed = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed.length) throw new Error(`${failed.length} SMTP worker(s) could not apply the reload: ${failed.map((f) => String(f.reason?.message ?? f.reason)).join('; ')}`);
  }

  /** The workers' metrics with ours (`own`), summed where several processes count. */
  async metrics(own: client.Registry): Promise<string> {
    const theirs = await Promise.allSettled([...this.running.values()].filter((r) => r.ready).map((r) => r.rpc.ask<client.MetricObjectWithValues<client.MetricValue<string>>[]>('metrics', undefined, 5_000)));
    const lists = [await own.getMetricsAsJSON(), ...theirs.flatMap((x) => (x.status === 'fulfilled' ? [x.value] : []))];
    return client.AggregatorRegistry.aggregate(lists as Parameters<typeof client.AggregatorRegistry.aggregate>[0]).metrics();
  }

  /** Graceful stop: every worker stops accepting, finishes its commits (announced) and exits. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.poll);
    for (const t of this.respawns) clearTimeout(t);
    const exits = [...this.running.values()].map((r) => new Promise<void>((resolve) => {
      if (r.worker.isDead()) return resolve();
      r.worker.once('exit', () => resolve());
      this.send(r.worker, { t: 'stop' });
    }));
    await Promise.all(exits);
  }
}
