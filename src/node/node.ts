/**
 * node/node.ts — one Tandem node: wires config, spool, router, receiver, queue manager,
 * channels, tracking log, metrics and admin API together, and owns their life cycle.
 *
 * Start order: spool folders → tracking log → router → relay networks, passwords → channels →
 * (cluster join) → spool lock and queue manager start (tmp/ cleaned; the queue is then scanned
 * in the background) → SMTP listener → admin API → "ready". Stop order (SIGTERM): no new cluster
 * action, refuse new mail (421), close the listener and wait for commits under way, let our
 * deliveries and our secondaries' in flight finish and be recorded (heartbeats go on meanwhile),
 * stop the heartbeats, close channels, release the spool lock. Nothing queued is lost: the next
 * start (or a peer's takeover) picks it up.
 * In a cluster (config `cluster:`) the cluster manager joins before the listener opens; when
 * another node holds a claim on our spool (we are coming back after a takeover) the node
 * accepts mail into its spool at once but takes the lock and starts delivering only once the
 * claim is released (handback). Fenced: mail refused with 4xx, no delivery, health "fenced".
 * With a directory: section the router connects to the directory on its first lookup, so a
 * node starts (and answers 451 for what it cannot look up) while the directory is down; stop
 * closes the directory connections. /health carries the directory state (directoryHealth()).
 */
import path from 'node:path';
import os from 'node:os';
import type { Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { TandemConfig } from '../config/schema.ts';
import { Spool, acquireSpoolLock } from '../spool/index.ts';
import type { NetworkList, PasswordTable } from '../router/index.ts';
import type { Router } from '../router/types.ts';
import { createRouter, loadRelayNetworks, loadPasswords, channelOptions } from './wiring.ts';
import { ChannelSet } from '../channels/index.ts';
import { QueueManager } from '../qmgr/queue-manager.ts';
import { SmtpReceiver } from '../receiver/smtp-receiver.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { Metrics } from '../admin/metrics.ts';
import { startAdminServer } from '../admin/admin-server.ts';
import { ClusterManager } from '../cluster/cluster-manager.ts';
import { registerClusterMetrics } from '../cluster/cluster-metrics.ts';

/** fenced: the cluster keeps this node from its storage (421, /health 503). draining: no new SMTP sessions or transactions (421, /health 503) while deliveries go on. */
export type NodeHealth = 'starting' | 'ready' | 'draining' | 'fenced' | 'stopping';

export class TandemNode {
  private state: NodeHealth = 'starting';
  private receiver!: SmtpReceiver;
  private admin?: FastifyInstance;
  private releaseLock?: () => Promise<void>;
  private relayNetworks!: NetworkList;
  private passwords?: PasswordTable;
  private channels!: ChannelSet;
  readonly metrics: Metrics;
  qmgr!: QueueManager;
  cluster?: ClusterManager;
  /** The old queue manager of a spool lost to a claim, finishing its deliveries in flight. */
  private losing?: Promise<void>;
  spool!: Spool;
  router!: Router;
  tracking!: TrackingLog;
  smtpAddress?: { host: string; port: number };
  adminAddress?: { host: string; port: number };

  private constructor(readonly config: TandemConfig, private readonly logger: Logger) {
    this.metrics = new Metrics(() => this.qmgr?.counts() ?? {});
  }

  static async start(config: TandemConfig, logger: Logger): Promise<TandemNode> {
    const node = new TandemNode(config, logger);
    try {
      await node.init();
    } catch (err) {
      await node.stop().catch(() => undefined);
      throw err;
    }
    return node;
  }

  get spoolDir(): string {
    return path.join(this.config.spool.root, this.config.node.id);
  }

  health(): NodeHealth {
    if ((this.state === 'ready' || this.state === 'draining') && this.cluster?.isFenced()) return 'fenced';
    return this.state;
  }

  /** Directory servers' state, counters and latency, and the cache counters; undefined without a directory. */
  directoryHealth() {
    return this.router.health();
  }

  private async init(): Promise<void> {
    const c = this.config;
    const dir = this.spoolDir;
    const log = this.logger;
    this.spool = await Spool.open(dir, { nodeId: c.node.id, warn: (msg, fields) => log.warn(fields, msg) });
    this.tracking = new TrackingLog(c.tracking.path, c.node.id, (err) => {
      this.metrics.trackingError();
      log.error({ event: 'tracking-write-failed', err: String(err.message ?? err) }, `cannot write the tracking log ${c.tracking.path}: ${err.message}`);
    });
    this.router = await createRouter(c, (msg, fields) => log.warn(fields ?? {}, msg), {
      onRequest: (server, op, seconds, ok) => this.metrics.directoryRequest(server, op, seconds, ok),
      onStateChange: (server, up, error) => (up
        ? log.info({ event: 'directory-server-up', server }, `directory server ${server} is up`)
        : log.warn({ event: 'directory-server-down', server, err: error }, `directory server ${server} is down: ${error}; using the other servers`)),
    });
    const router = this.router;
    if (router.health()) this.metrics.watchDirectory(() => router.health()!.servers, () => router.health()!.cache);
    this.relayNetworks = await loadRelayNetworks(c);
    this.passwords = await loadPasswords(c);
    this.channels = new ChannelSet(channelOptions(c));
    this.qmgr = this.newQueueManager();
    let claimedBy: string | undefined;
    if (c.cluster) {
      this.cluster = new ClusterManager(c, {
        state: () => this.state,
        queueDepth: () => Object.values(this.qmgr.counts()).reduce((a, b) => a + b, 0),
        loseOwnSpool: () => this.loseOwnSpool(),
        regainOwnSpool: () => this.startDelivering(false),
        deliveriesResumed: () => this.qmgr.resume(),
      }, log, this.tracking);
      registerClusterMetrics(this.metrics.registry, () => this.cluster!.status());
      claimedBy = (await this.cluster.start()).ownSpoolClaimedBy;
    }
    if (claimedBy) {
      log.warn({ event: 'own-spool-claimed', by: claimedBy }, `our spool is held by ${claimedBy} since a takeover: accepting mail, delivering once it is handed back`);
    } else {
      await this.startDelivering(true);
    }

    this.receiver = new SmtpReceiver({
      config: c,
      router: this.router,
      beginMessage: (queueId) => this.spool.beginMessage(queueId),
      newQueueId: () => this.spool.newQueueId(),
      tracking: this.tracking,
      logger: log,
      isRelayClient: (ip) => this.relayNetworks.contains(ip),
      ...(this.passwords ? { verifyPassword: (u: string, p: string) => this.passwords!.verify(u, p) } : {}),
      acceptState: () => {
        const health = this.health();
        return health === 'ready' ? { type: 'accepting' } : health === 'draining' ? { type: 'draining' } : { type: 'refusing', reason: `node is ${health}` };
      },
      onQueued: (id, envelope, size, message) => this.qmgr.enqueue(id, size, message ? { envelope, message } : undefined),
      metrics: this.metrics,
    });
    this.smtpAddress = await this.receiver.listen();
    if (c.smtp.proxy_protocol === true && !/^(127\.|::1$|localhost$)/.test(c.smtp.listen.host)) {
      log.warn({ event: 'proxy-protocol-untrusted' }, 'smtp.proxy_protocol: true takes a PROXY header from any client, which can then claim any address (and relay); list the balancer addresses instead');
    }
    if (c.admin.listen) {
      const { server, address } = await startAdminServer(this, c.admin.listen.host, c.admin.listen.port, c.admin.token);
      this.admin = server;
      this.adminAddress = address;
    }
    this.state = 'ready';
    log.info({
      event: 'ready', pid: process.pid, host: os.hostname(),
      smtp: fmt(this.smtpAddress), ...(this.adminAddress ? { admin: fmt(this.adminAddress) } : {}),
      spool: dir, tracking: c.tracking.path || undefined,
    }, `Tandem node ${c.node.id} ready: SMTP on ${fmt(this.smtpAddress)}`);
  }

  private newQueueManager(): QueueManager {
    return new QueueManager({
      config: this.config, spool: this.spool, router: this.router, tracking: this.tracking, logger: this.logger, metrics: this.metrics,
      channelFor: (route) => this.channels.channelFor(route),
      ...(this.config.cluster ? { mayDeliver: () => this.cluster?.mayDeliverOwnSpool() ?? false } : {}),
    });
  }

  /**
   * Lock our spool and deliver from it: at start-up (tmp/ cleaned first), or at a handback
   * while the receiver is already writing into it (tmp/ left alone; the lock is forced, since
   * the claim protocol has just given the spool back to us).
   */
  private async startDelivering(atStartup: boolean): Promise<void> {
    await this.losing;
    const dir = this.spoolDir;
    const lock = await acquireSpoolLock(dir, { force: !atStartup });
    this.releaseLock = () => lock.release();
    const { removedTmp, scanned } = await this.qmgr.start({ cleanTmp: atStartup });
    scanned.then(
      (r) => this.logger.info({ event: 'spool-recovered', spool: dir, ...r, removedTmp }, `spool ${dir}: ${r.queued} queued message(s) picked up`),
      (err) => this.logger.error({ event: 'spool-scan-failed', spool: dir, err: String(err) }, `scan of the spool ${dir} failed: ${err}; restart the node to pick up what it missed`),
    );
  }

  /**
   * Another node claimed our spool: stop delivering from it (new mail still comes in, into a
   * queue manager not started until the handback). The old manager's deliveries in flight
   * finish in the background (the gate is already shut); a regain waits for them.
   */
  private loseOwnSpool(): void {
    const old = this.qmgr;
    this.qmgr = this.newQueueManager();
    const release = this.releaseLock;
    this.releaseLock = undefined;
    this.losing = old.stop().then(() => release?.()).catch((err) => {
      this.logger.error({ event: 'own-spool-release-failed', err: String(err) }, `stopping delivery from our claimed spool failed: ${err}`);
    });
  }

  /**
   * SIGHUP: reload tables, relay networks and passwords (keeping the old ones if any new one
   * fails), and reopen the tracking log (log rotation).
   */
  async reload(): Promise<void> {
    const networks = await loadRelayNetworks(this.config);
    const passwords = await loadPasswords(this.config);
    await this.router.reload();
    this.relayNetworks = networks;
    this.passwords = passwords;
    try {
      this.tracking.reopen();
    } catch (err) {
      // the tables are in; the tracking log goes on in the file it had open
      this.logger.error({ event: 'tracking-reopen-failed', err: String(err) }, `cannot reopen the tracking log ${this.config.tracking.path}: ${err}`);
    }
    this.logger.info({ event: 'reloaded' }, 'tables reloaded');
  }

  /**
   * Take the node out of the balancer: /health answers 503 "draining", new sessions and new
   * transactions get 421; a transaction under way finishes; the queue goes on delivering.
   * Returns the state after the call (only a ready node starts draining).
   */
  drain(): NodeHealth {
    if (this.state === 'ready') {
      this.state = 'draining';
      this.logger.info({ event: 'draining' }, 'draining: new mail refused (421), health 503, deliveries go on');
    }
    return this.state;
  }

  /** Undo drain(): accept mail again. Returns the state after the call. */
  resume(): NodeHealth {
    if (this.state === 'draining') {
      this.state = 'ready';
      this.logger.info({ event: 'resumed' }, 'resumed: accepting mail again');
    }
    return this.state;
  }

  /** Graceful stop: refuse new mail, finish in-flight work, release the spool. */
  async stop(): Promise<void> {
    if (this.state === 'stopping') return;
    this.state = 'stopping';
    this.logger.info({ event: 'stopping' }, 'stopping: no new mail accepted, finishing deliveries in flight');
    this.cluster?.beginStop();
    await this.receiver?.close();
    // our own deliveries and our secondaries' finish together; heartbeats ("stopping") go on
    // meanwhile, so that no peer takes our spool while we still deliver from it
    await Promise.all([this.qmgr?.stop(), this.losing, this.cluster?.stopSecondaries()]);
    await this.cluster?.stop();
    await this.channels?.close();
    await this.admin?.close();
    this.tracking?.close();
    await this.router?.close();
    await this.releaseLock?.();
    this.logger.info({ event: 'stopped' }, 'stopped');
  }
}

function fmt(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
