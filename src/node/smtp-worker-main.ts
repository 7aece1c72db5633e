/**
 * node/smtp-worker-main.ts — an SMTP worker process (smtp.workers > 1), forked by the node's
 * main process with node:cluster (smtp-workers.ts). It runs the node's listeners on the
 * listening sockets it shares with the other workers, and writes the messages it accepts into
 * the node's one spool (incoming/, commit protocol of spool/spool.ts) and their `received`
 * line into the node's tracking log (O_APPEND, one write per line). It delivers nothing: the
 * queue manager is in the main process, told of each commit by a `queued` message.
 *
 * What it asks the main process (worker-ipc.ts): the client limits (one count for the node),
 * and, just before each commit, whether the node still accepts mail (fenced, draining, stopping:
 * 451, nothing committed). Signals to the process group (Ctrl-C, SIGTERM, SIGHUP) are the main
 * process's to act on: a worker ignores them and does what the main process tells it. When the
 * main process is gone (IPC channel closed) the worker stops accepting at once, finishes the
 * commits under way and exits; those messages are in incoming/, found by the next start's scan.
 */
import { pino, type Logger } from 'pino';
import client from 'prom-client';
import { Spool } from '../spool/index.ts';
import type { TandemConfig } from '../config/schema.ts';
import type { NetworkList, PasswordTable } from '../router/index.ts';
import type { Router } from '../router/types.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { Metrics } from '../admin/metrics.ts';
import type { AcceptState, SmtpReceiver, ClientLimitsApi, LimitRefusal } from '../receiver/index.ts';
import { createRouter, loadRelayNetworks, loadPasswords } from './wiring.ts';
import { buildReceivers, liveTls } from './receivers.ts';
import { Rpc, answer, type ToWorker, type FromWorker, type Request, type Response } from './worker-ipc.ts';

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => undefined);

function send(msg: FromWorker, done?: (err: Error | null) => void): void {
  if (!process.connected) {
    done?.(new Error('the node main process is gone'));
    return;
  }
  process.send!(msg, undefined, {}, (err) => done?.(err ?? null));
}

const rpc = new Rpc((msg: Request, done) => send(msg, done));

/**
 * The node's client limits, kept by the main process (one count whichever worker a client
 * reaches). A rate that is off (0, the default; the limits are not reloaded) is not asked about:
 * the main process would answer "within it" and count nothing, after a round trip per MAIL or
 * RCPT.
 */
class RemoteLimits implements ClientLimitsApi {
  constructor(private readonly exempt: (address: string) => boolean, private readonly rates: { message: number; recipient: number }) {}
  connect(address: string): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    // a client exempt from the limits (relay networks) is not counted at all: no message per connection
    return this.exempt(address) ? undefined : rpc.ask<LimitRefusal | undefined>('connect', address);
  }
  release(address: string): void {
    if (!this.exempt(address)) send({ t: 'note', op: 'release', address });
  }
  message(address: string): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    return !this.rates.message || this.exempt(address) ? undefined : rpc.ask<LimitRefusal | undefined>('message', address);
  }
  recipient(address: string): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    return !this.rates.recipient || this.exempt(address) ? undefined : rpc.ask<LimitRefusal | undefined>('recipient', address);
  }
  authBlocked(address: string): Promise<LimitRefusal | undefined> {
    return rpc.ask<LimitRefusal | undefined>('authBlocked', address);
  }
  authFailed(address: string): void {
    send({ t: 'note', op: 'authFailed', address });
  }
  close(): void {}
}

class Worker {
  private receivers: SmtpReceiver[] = [];
  private state: AcceptState;
  private relayNetworks!: NetworkList;
  private passwords?: PasswordTable;
  private router!: Router;
  private tracking!: TrackingLog;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private stopping?: Promise<void>;

  constructor(private config: TandemConfig, private readonly id: number, state: AcceptState) {
    this.state = state;
    this.logger = pino({ level: config.log.level, base: { node: config.node.id, worker: id, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
    // the queue gauges are the main process's; a worker's registry has its receiver counters
    this.metrics = new Metrics(() => ({}));
  }

  async start(listeners: Extract<ToWorker, { t: 'init' }>['listeners']): Promise<void> {
    const c = this.config;
    const log = this.logger;
    const spool = await Spool.open(`${c.spool.root}/${c.node.id}`, { nodeId: c.node.id, warn: (msg, fields) => log.warn(fields, msg) });
    this.tracking = new TrackingLog(c.tracking.path, c.node.id, (err) => {
      this.metrics.trackingError();
      log.error({ event: 'tracking-write-failed', err: String(err.message ?? err) }, `cannot write the tracking log ${c.tracking.path}: ${err.message}`);
    }, { worker: String(this.id) }, c.tracking.sync_delay);
    this.router = await createRouter(c, (msg, fields) => log.warn(fields ?? {}, msg), {
      onRequest: (server, op, seconds, ok) => this.metrics.directoryRequest(server, op, seconds, ok),
    });
    this.relayNetworks = await loadRelayNetworks(c);
    this.passwords = await loadPasswords(c);
    const isRelayClient = (ip: string) => this.relayNetworks.contains(ip);
    const perWorker = new client.Counter({ name: 'tandem_smtp_worker_messages_received_total', help: 'Messages accepted (250 after DATA) by each SMTP worker process (smtp.workers)', labelNames: ['worker'], registers: [this.metrics.registry] });
    const worker = String(this.id);
    perWorker.inc({ worker }, 0);
    const metrics = this.metrics;
    this.receivers = buildReceivers({
      config: c, router: this.router, spool, tracking: this.tracking, logger: log, listeners,
      // tandem_messages_received_total is counted by the main process as each `queued` comes in
      metrics: { received: () => perWorker.inc({ worker }), rejected: (s, code) => metrics.rejected(s, code), limitRefused: (l) => metrics.limitRefused(l), contentFilterFailed: () => metrics.contentFilterFailed() },
      limits: new RemoteLimits((ip) => c.smtp.limits.exempt_relay_networks && isRelayClient(ip), { message: c.smtp.limits.message_rate, recipient: c.smtp.limits.recipient_rate }),
      isRelayClient,
      ...(this.passwords ? { verifyPassword: (u: string, p: string) => this.passwords!.verify(u, p) } : {}),
      acceptState: () => this.state,
      mayCommit: () => rpc.ask<AcceptState>('mayCommit'),
      // a small message goes with it (as in one process: the first attempt need not read the file back)
      onQueued: (queueId, envelope, size, message, opts) => send({ t: 'queued', queueId, size, hold: opts?.hold === true, ...(message ? { envelope, message } : {}) }),
    });
    const addresses: Record<string, { host: string; port: number }> = {};
    for (const r of this.receivers) {
      try {
        addresses[r.listener.name] = await r.listen();
      } catch (err) {
        const cause = (err as Error & { cause?: NodeJS.ErrnoException }).cause;
        send({ t: 'listen-failed', listener: r.listener.name, code: cause?.code ?? (/EADDRINUSE/.test(String(err)) ? 'EADDRINUSE' : undefined), message: String((err as Error).message) });
        return;
      }
    }
    send({ t: 'ready', addresses });
  }

  setState(state: AcceptState): void {
    this.state = state;
  }

  /** The live parts of a reload (node.ts reload() checked the new config first). */
  async reload(next: TandemConfig): Promise<void> {
    const networks = await loadRelayNetworks(next);
    const passwords = this.config.smtp.auth_passwords && next.smtp.auth_passwords ? await loadPasswords(next) : this.passwords;
    const tls = await liveTls(this.config, next);
    await this.router.reload();
    this.relayNetworks = networks;
    this.passwords = passwords;
    if (tls) for (const r of this.receivers) r.updateTls(tls);
    this.config.relay.networks = next.relay.networks;
    if (tls) this.config.smtp.tls = next.smtp.tls;
    this.config.log.level = next.log.level;
    this.logger.level = next.log.level;
    this.tracking.reopen();
    this.logger.info({ event: 'worker-reloaded' }, `SMTP worker ${this.id}: reload applied`);
  }

  metricsJson(): Promise<client.MetricObjectWithValues<client.MetricValue<string>>[]> {
    return this.metrics.registry.getMetricsAsJSON();
  }

  /** Stop accepting, wait for the commits under way (their `queued` goes out first), close. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.state = { type: 'refusing', reason: 'node is stopping' };
      await Promise.all(this.receivers.map((r) => r.close()));
      await this.tracking?.sync();
      this.tracking?.close();
      await this.router?.close();
    })();
    return this.stopping;
  }
}

let worker: Worker | undefined;

function reply(res: Response): void {
  send(res);
}

process.on('message', (msg: ToWorker) => {
  switch (msg.t) {
    case 'init':
      worker = new Worker(msg.config, msg.worker, msg.state);
      worker.start(msg.listeners).catch((err) => {
        send({ t: 'listen-failed', listener: '', code: undefined, message: String((err as Error)?.message ?? err) }, () => process.exit(1));
      });
      break;
    case 'state':
      worker?.setState(msg.state);
      break;
    case 'res':
      rpc.settle(msg);
      break;
    case 'req':
      void answer(msg, () => {
        if (!worker) throw new Error('worker not started');
        if (msg.op === 'metrics') return worker.metricsJson();
        if (msg.op === 'state') return worker.setState(msg.arg as AcceptState);
        if (msg.op === 'reload') return worker.reload(msg.arg as TandemConfig);
        throw new Error(`unknown request ${msg.op}`);
      }, reply);
      break;
    case 'stop':
      // the last message out; its callback comes once every `queued` before it is written
      void (worker?.stop() ?? Promise.resolve()).finally(() => send({ t: 'stopped' }, () => process.exit(0)));
      break;
  }
});

send({ t: 'hello' });

// the main process is gone (killed): accept nothing more, finish the commits under way, exit
process.on('disconnect', () => {
  rpc.failAll('the node main process is gone');
  void (worker?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
});
