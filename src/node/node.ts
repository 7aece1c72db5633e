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
 * With smtp.workers > 1 the listeners run in SMTP worker processes (smtp-workers.ts) instead of
 * here; everything else stays in this process (docs/queue.md, "SMTP workers").
 */
import path from 'node:path';
import os from 'node:os';
import type { Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { TandemConfig } from '../config/schema.ts';
import { Spool, acquireSpoolLock, type SpoolLock } from '../spool/index.ts';
import type { NetworkList, PasswordTable } from '../router/index.ts';
import type { Router } from '../router/types.ts';
import { createRouter, loadRelayNetworks, loadPasswords, channelOptions } from './wiring.ts';
import { ChannelSet } from '../channels/index.ts';
import { QueueManager } from '../qmgr/index.ts';
import { resolveListeners, createClientLimits, type SmtpReceiver, type AcceptState, type ClientLimits } from '../receiver/index.ts';
import type { Envelope } from '../spool/types.ts';
import { buildReceivers, liveTls } from './receivers.ts';
import { SmtpWorkers, workerCount } from './smtp-workers.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { Tracker } from '../track/tracker.ts';
import { Metrics } from '../admin/metrics.ts';
import { startAdminServer } from '../admin/admin-server.ts';
import type { AdminNode, NodeHealth } from '../admin/admin-node.ts';
import { ClusterManager, registerClusterMetrics, Replica } from '../cluster/index.ts';

/**
 * fenced: the cluster keeps this node from its storage (421, /health 503). draining: no new SMTP
 * sessions or transactions (421, /health 503) while deliveries go on. returning: with
 * cluster.auto_handback off, another node holds our spool until the operator hands it back
 * (421, /health 503).
 */
export type { NodeHealth };

export class TandemNode {
  private state: NodeHealth = 'starting';
  private receivers: SmtpReceiver[] = [];
  /** smtp.workers > 1: the worker processes that run the listeners instead of `receivers`. */
  private workers?: SmtpWorkers;
  private clientLimits?: ClientLimits;
  private admin?: FastifyInstance;
  /** Our spool's lock while we deliver from it. */
  private lock?: SpoolLock;
  private relayNetworks!: NetworkList;
  private passwords?: PasswordTable;
  private channels!: ChannelSet;
  readonly metrics: Metrics;
  private qmgr!: QueueManager;
  cluster?: ClusterManager;
  /** cluster.storage: replicated — the copy of our spool at its holder, and the copies we keep. */
  private replica?: Replica;
  /** The old queue manager of a spool lost to a claim, finishing its deliveries in flight. */
  private losing?: Promise<void>;
  private spool!: Spool;
  private router!: Router;
  private tracking!: TrackingLog;
  /** Search over the tracking log (undefined when tracking.path is ""). */
  private tracker?: Tracker;
  /** The first listener's address. */
  smtpAddress?: { host: string; port: number };
  /** Every listener's address by name. */
  listenerAddresses: Record<string, { host: string; port: number }> = {};
  adminAddress?: { host: string; port: number };

  private constructor(readonly config: TandemConfig, readonly logger: Logger, private readonly rereadConfig?: () => Promise<TandemConfig>) {
    this.metrics = new Metrics(() => this.qmgr?.counts() ?? {});
  }

  /** `rereadConfig` loads the config file again (SIGHUP, POST /reload); without it a reload re-reads the tables only. */
  static async start(config: TandemConfig, logger: Logger, rereadConfig?: () => Promise<TandemConfig>): Promise<TandemNode> {
    const node = new TandemNode(config, logger, rereadConfig);
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

  /** What the admin API needs of this node (admin/admin-node.ts); the queue manager and spool read live. */
  adminView(): AdminNode {
    const node = this;
    return {
      config: node.config, logger: node.logger, metrics: node.metrics,
      get qmgr() { return node.qmgr; },
      get spool() { return node.spool; },
      get cluster() { return node.cluster; },
      get tracker() { return node.tracker; },
      health: () => node.health(), drain: () => node.drain(), resume: () => node.resume(), reload: () => node.reload(),
      acceptStateSettled: async () => { await node.workers?.syncState(); },
      replicationHealth: () => node.replicationHealth(), directoryHealth: () => node.directoryHealth(),
    };
  }

  health(): NodeHealth {
    if ((this.state === 'ready' || this.state === 'draining') && this.cluster?.isFenced()) return 'fenced';
    if (this.state === 'ready' && this.cluster?.holdsOutReturning()) return 'returning';
    return this.state;
  }

  /** Replicated storage: our shadow holder's connection and the messages with one copy only. */
  replicationHealth(): { holder: string; connection: string; unprotected: number } | undefined {
    if (!this.replica) return undefined;
    const s = this.replica.status();
    return { holder: s.holder, connection: s.connection, unprotected: s.unprotected };
  }

  /** Directory servers' state, counters and latency, and the cache counters; undefined without a directory. */
  directoryHealth() {
    return this.router.health();
  }

  private async init(): Promise<void> {
    const c = this.config;
    const dir = this.spoolDir;
    const log = this.logger;
    if (c.cluster?.storage === 'replicated') this.replica = await Replica.start(c, dir, log);
    this.spool = await Spool.open(dir, { nodeId: c.node.id, warn: (msg, fields) => log.warn(fields, msg), ...(this.replica ? { replica: this.replica } : {}) });
    this.replica?.attach(this.spool);
    this.tracking = new TrackingLog(c.tracking.path, c.node.id, (err) => {
      this.metrics.trackingError();
      log.error({ event: 'tracking-write-failed', err: String(err.message ?? err) }, `cannot write the tracking log ${c.tracking.path}: ${err.message}`);
    }, {}, c.tracking.sync_delay);
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
        ownLock: async () => (this.lock ? this.lock.held() : undefined),
        retakeOwnSpool: () => this.startDelivering(false, { force: false }),
      }, log, this.tracking, undefined, this.replica);
      registerClusterMetrics(this.metrics.registry, () => this.cluster!.status());
      claimedBy = (await this.cluster.start()).ownSpoolClaimedBy;
    }
    if (claimedBy) {
      log.warn({ event: 'own-spool-claimed', by: claimedBy }, `our spool is held by ${claimedBy} since a takeover: accepting mail, delivering once it is handed back`);
    } else {
      await this.startDelivering(true);
    }

    const isRelayClient = (ip: string) => this.relayNetworks.contains(ip);
    const limits = this.clientLimits = createClientLimits(c, isRelayClient);
    const workers = workerCount(c);
    if (workers > 1) {
      this.workers = new SmtpWorkers({
        count: workers, config: c, listeners: resolveListeners(c), logger: log, limits,
        acceptState: () => this.acceptState(),
        onQueued: (id, size, hold, fresh) => {
          this.metrics.received(size);
          this.queued(id, size, fresh, hold);
        },
        workerExited: () => this.qmgr.rescan(),
      });
      this.metrics.withWorkers = (own) => this.workers!.metrics(own);
      this.listenerAddresses = await this.workers.start();
    } else {
      this.receivers = buildReceivers({
        config: c, router: this.router, spool: this.spool, tracking: this.tracking, logger: log, metrics: this.metrics,
        limits, isRelayClient,
        ...(this.passwords ? { verifyPassword: (u: string, p: string) => this.passwords!.verify(u, p) } : {}),
        acceptState: () => this.acceptState(),
        onQueued: (id, envelope, size, message, opts) => this.queued(id, size, message ? { envelope, message } : undefined, opts?.hold === true, envelope),
      });
      for (const r of this.receivers) this.listenerAddresses[r.listener.name] = await r.listen();
    }
    this.smtpAddress = Object.values(this.listenerAddresses)[0];
    if (c.smtp.proxy_protocol === true && !/^(127\.|::1$|localhost$)/.test(c.smtp.listen.host)) {
      log.warn({ event: 'proxy-protocol-untrusted' }, 'smtp.proxy_protocol: true takes a PROXY header from any client, which can then claim any address (and relay); list the balancer addresses instead');
    }
    if (c.admin.listen) {
      const { server, address } = await startAdminServer(this.adminView(), c.admin.listen.host, c.admin.listen.port, c.admin.token, c.admin.tls);
      this.admin = server;
      this.adminAddress = address;
    }
    this.state = 'ready';
    this.workers?.pushState();
    if (c.tracking.path && c.tracking.search) {
      // the search index is a convenience, opened once the node serves (it is no part of start-up
      // timing); a node whose index cannot be opened runs without it. /track answers 404 meanwhile.
      try {
        this.tracker = new Tracker(c, () => this.tracking.reopen(), (msg) => log.warn({ event: 'tracking-index-failed', err: msg }, `tracking index: ${msg}`));
      } catch (err) {
        log.error({ event: 'tracking-index-failed', err: String(err) }, `cannot open the tracking index (tracking search is off on this node): ${err}`);
      }
    }
    log.info({
      event: 'ready', pid: process.pid, host: os.hostname(),
      smtp: fmt(this.smtpAddress!), listeners: Object.fromEntries(Object.entries(this.listenerAddresses).map(([k, v]) => [k, fmt(v)])),
      ...(this.adminAddress ? { admin: fmt(this.adminAddress) } : {}),
      spool: dir, tracking: c.tracking.path || undefined,
      ...(this.workers ? { smtpWorkers: this.workers.pids() } : {}),
    }, `Tandem node ${c.node.id} ready: SMTP on ${Object.entries(this.listenerAddresses).map(([k, v]) => `${fmt(v)} (${k})`).join(', ')}`);
  }

  /** What the listeners may do now (workers: pushed to them, and asked before each commit). */
  private acceptState(): AcceptState {
    const health = this.health();
    return health === 'ready' ? { type: 'accepting' } : health === 'draining' ? { type: 'draining' } : { type: 'refusing', reason: `node is ${health}` };
  }

  /** A message committed by a listener (here or in a worker): the queue manager takes it. */
  private queued(id: string, size: number, fresh: { envelope: Envelope; message: Buffer } | undefined, hold: boolean, envelope = fresh?.envelope): void {
    if (!hold) return this.qmgr.enqueue(id, size, fresh, envelope);
    this.qmgr.enqueueHeld(id, size, envelope).catch((err) => this.logger.error({ event: 'hold-failed', queueId: id, err: String(err) }, `cannot put the quarantined message ${id} on hold: ${err}`));
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
  private async startDelivering(atStartup: boolean, opts: { force?: boolean } = {}): Promise<void> {
    await this.losing;
    const dir = this.spoolDir;
    this.lock = await acquireSpoolLock(dir, { force: opts.force ?? !atStartup });
    if (this.replica) await this.reconcile();
    const { removedTmp, scanned } = await this.qmgr.start({ cleanTmp: atStartup });
    scanned.then(
      (r) => this.logger.info({ event: 'spool-recovered', spool: dir, ...r, removedTmp }, `spool ${dir}: ${r.queued} queued message(s) picked up`),
      (err) => this.logger.error({ event: 'spool-scan-failed', spool: dir, err: String(err) }, `scan of the spool ${dir} failed: ${err}; restart the node to pick up what it missed`),
    );
  }

  /**
   * Replicated storage, before we deliver from our spool: take in what our holder knows
   * (recipients its secondary delivered while we were away; messages it never got are copied).
   * A holder we cannot reach cannot tell us: we deliver anyway (a secondary of a holder cut
   * off from us may then deliver some messages twice — duplicates, never a loss; docs/ha.md).
   */
  private async reconcile(): Promise<void> {
    for (const { holder, result: r, error } of await this.replica!.reconcile()) {
      if (r) this.logger.info({ event: 'reconciled', holder, ...r }, `reconciled with shadow holder ${holder}: ${r.removed} message(s) delivered meanwhile removed, ${r.updated} updated, ${r.copied} copied, ${r.pruned} stale copies dropped at the holder${r.identity === 'new' ? ' (new spool: the holder delivers the old copies)' : ''}`);
      else this.logger.warn({ event: 'reconcile-failed', holder, err: error }, `cannot reconcile with shadow holder ${holder} (${error}): delivering our spool as it is`);
    }
  }

  /**
   * Another node claimed our spool: stop delivering from it (new mail still comes in, into a
   * queue manager not started until the handback). The old manager's deliveries in flight
   * finish in the background (the gate is already shut); a regain waits for them.
   */
  private loseOwnSpool(): void {
    const old = this.qmgr;
    this.qmgr = this.newQueueManager();
    const lock = this.lock;
    this.lock = undefined;
    this.losing = old.stop().then(() => lock?.release()).catch((err) => {
      this.logger.error({ event: 'own-spool-release-failed', err: String(err) }, `stopping delivery from our claimed spool failed: ${err}`);
    });
  }

  /**
   * SIGHUP, POST /reload: re-read the config file, and apply what can change live — the
   * tables' contents (and the directory's), relay networks, the password table, the TLS
   * certificate and key (renewals need no restart), log.level — keeping everything old if any
   * new part fails to load (then it throws). Reopens the tracking log (log rotation). Other
   * changed keys are reported (`restartNeeded`, logged as a warning), not applied.
   */
  async reload(): Promise<{ applied: string[]; restartNeeded: string[] }> {
    const next = this.rereadConfig ? await this.rereadConfig() : this.config;
    const changed = changedKeys(this.config, next);
    const live = (k: string) => k === 'relay.networks' || k === 'log.level' || k.startsWith('smtp.tls.') ||
      (k === 'smtp.auth_passwords' && !!this.config.smtp.auth_passwords && !!next.smtp.auth_passwords);
    const restartNeeded = changed.filter((k) => !live(k));
    const networks = await loadRelayNetworks(next);
    // the password table is re-read where AUTH is on and stays on (turning it on or off needs a restart)
    const passwords = this.config.smtp.auth_passwords && next.smtp.auth_passwords ? await loadPasswords(next) : this.passwords;
    const tls = await liveTls(this.config, next); // throws here, before anything is changed, if they do not go together
    await this.router.reload();
    this.relayNetworks = networks;
    this.passwords = passwords;
    if (tls) {
      for (const r of this.receivers) r.updateTls(tls); // every listener uses smtp.tls
      this.config.smtp.tls = next.smtp.tls;
    }
    this.config.relay.networks = next.relay.networks;
    this.config.smtp.auth_passwords = live('smtp.auth_passwords') ? next.smtp.auth_passwords : this.config.smtp.auth_passwords;
    this.config.log.level = next.log.level;
    this.logger.level = next.log.level;
    try {
      this.tracking.reopen();
    } catch (err) {
      // the tables are in; the tracking log goes on in the file it had open
      this.logger.error({ event: 'tracking-reopen-failed', err: String(err) }, `cannot reopen the tracking log ${this.config.tracking.path}: ${err}`);
    }
    try {
      await this.workers?.reload(next);
    } catch (err) {
      this.logger.error({ event: 'reload-failed', err: String((err as Error).message ?? err) }, `reload: ${(err as Error).message ?? err}`);
    }
    const applied = ['tables', 'relay networks', ...(this.passwords ? ['passwords'] : []), ...(tls ? ['TLS certificate and key'] : []), ...changed.filter(live)];
    this.logger.info({ event: 'reloaded', applied }, `reloaded: ${applied.join(', ')}`);
    if (restartNeeded.length) {
      this.logger.warn({ event: 'reload-restart-needed', keys: restartNeeded }, `changed in the config file but applied only at a restart: ${restartNeeded.join(', ')}`);
    }
    return { applied, restartNeeded };
  }

  /**
   * Take the node out of the balancer: /health answers 503 "draining", new sessions and new
   * transactions get 421; a transaction under way finishes; the queue goes on delivering.
   * Returns the state after the call (only a ready node starts draining).
   */
  drain(): NodeHealth {
    if (this.state === 'ready') {
      this.state = 'draining';
      this.workers?.pushState();
      this.logger.info({ event: 'draining' }, 'draining: new mail refused (421), health 503, deliveries go on');
    }
    return this.state;
  }

  /** Undo drain(): accept mail again. Returns the state after the call. */
  resume(): NodeHealth {
    if (this.state === 'draining') {
      this.state = 'ready';
      this.workers?.pushState();
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
    this.workers?.pushState();
    await Promise.all([...this.receivers.map((r) => r.close()), this.workers?.stop()]);
    this.clientLimits?.close();
    // our own deliveries and our secondaries' finish together; heartbeats ("stopping") go on
    // meanwhile, so that no peer takes our spool while we still deliver from it
    await Promise.all([this.qmgr?.stop(), this.losing, this.cluster?.stopSecondaries()]);
    await this.cluster?.stop();
    await this.replica?.close();
    await this.channels?.close();
    await this.admin?.close();
    this.tracking?.close();
    await this.tracker?.close();
    await this.router?.close();
    await this.lock?.release();
    this.logger.info({ event: 'stopped' }, 'stopped');
  }
}

/** The dotted keys whose values differ between two configs (lists compared whole). */
function changedKeys(a: unknown, b: unknown, prefix = ''): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
  if (!isObj(a) || !isObj(b)) return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
}

function fmt(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
