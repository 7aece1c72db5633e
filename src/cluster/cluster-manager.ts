/**
 * cluster/cluster-manager.ts — one node's part in the cluster: heartbeats out and in, failure
 * detection, self-fencing, takeover of dead nodes' spools by secondary processes, handback.
 *
 * Every cluster.heartbeat_interval (docs/ha.md has the whole story):
 *   - renew this node's disk heartbeat; if no renewal has succeeded for cluster.fence_after,
 *     fence: refuse mail (4xx), start no delivery, tell the peers "fenced" (SBD-style
 *     self-fencing — it happens before any peer can declare this node dead);
 *   - send a signed network heartbeat to every peer;
 *   - read the peers' disk heartbeats and the claim records of every spool, and act:
 *       · this node's own spool claimed by another node → deliver nothing from it (the node keeps
 *         accepting mail into it) until the claim is released; a claim whose holder is dead is
 *         broken (released) by this node itself;
 *       · a spool whose deliverer (its node, or the node holding its claim) is dead, when this
 *         node is the designated survivor (survivor.ts) → claim it (epoch + 1) and start a
 *         secondary process over it;
 *       · a claimed spool whose node is back → stop the secondary (it finishes and records its
 *         deliveries in flight), then release the claim: handback (cluster.auto_handback).
 * The observe-and-act pass never overlaps itself; the renewal and the fencing check run on their
 * own timer so that a storage that hangs cannot hold the fencing back (disk-lease.ts keeps the
 * lease); on shared storage the renewals themselves run in a thread of their own
 * (disk-heartbeat-worker.ts), which stops when this thread stops checking in for fence_after.
 * The disk-heartbeat lease counts from when a renewal *began* (a renewal completing after a
 * stall proves nothing newer).
 * At join, a node bumps its own spool's epoch (a release record by itself) before delivering,
 * and a survivor reads the dead node's slot once more right before claiming: of a node coming
 * back and a peer taking its spool, exactly one wins the epoch.
 * Takeovers, secondary starts, restarts and handbacks run in the background, one at a time per
 * spool (`busy`); a stop waits for them.
 * What can go wrong: a shared-storage error on one spool is logged (once per outage) and retried
 * next tick, without holding up the other spools; a secondary that exits unexpectedly is started
 * again (after SECONDARY_RETRY_MS) while the claim is still ours.
 * The decisions are pure functions in core.ts (decideSpool, decideOwnSpool, the delivery gate);
 * this class is the I/O shell around them: everything it touches outside its own memory —
 * disk heartbeats, network heartbeats, claims, secondary processes, the clock and timers —
 * comes in one ClusterIo object (cluster-io.ts: realClusterIo() in production; fakes in the unit tests).
 * Replicated storage (cluster.storage: replicated; docs/ha.md "Storage modes"): no disk
 * heartbeat (the network heartbeat alone says dead), claims kept on this node's own disk beside
 * the copies it holds, a peer's queue taken over only by its holder (placement.ts) with a
 * secondary over the copy folder; our own queue is held while a live peer announces (or, with a
 * witness, locks) it (copy-holders.ts has these rules); copies of a retired spool identity are
 * delivered by their holder.
 * With cluster.witness: a takeover also needs the witness's lock (docs/witness.md), released at
 * the handback; a lease in doubt stops the secondaries at once (witness-locks.ts).
 * Configuration faults between the nodes are reported, never acted on (cluster-faults.ts).
 * Reads config keys: cluster.*, spool.root, node.id.
 */
import type { Logger } from 'pino';
import type { TandemConfig, ClusterConfig } from '../config/schema.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import { Membership, diskMarkKey, type AnnouncedState, type PeerView } from './membership.ts';
import type { Heartbeat, HeartbeatRejectReason } from './net-heartbeat.ts';
import { effectiveOwner, type ClaimRecord } from './claims.ts';
import { SpoolLockedError, type SpoolLockInfo } from '../spool/index.ts';
import { chooseSurvivor } from './survivor.ts';
import type { StandbyView } from './secondary.ts';
import { announcedState, decideOwnSpool, decideSpool, mayDeliverOwnSpool, type PeerState } from './core.ts';
import type { ShadowStore } from './replication/shadow-store.ts';
import type { ReplicaStatus } from './replication/replica.ts';
import type { WitnessEvent } from './witness/etcd-witness.ts';
import { WitnessLocks, logWitnessEvent } from './witness-locks.ts';
import { CopyHolders } from './copy-holders.ts';
import { DiskLease, type RenewalStats } from './disk-lease.ts';
import { ClusterFaults, type ClusterFault } from './cluster-faults.ts';
import { realClusterIo, type ClusterIo, type ClusterIoHandlers, type SecondaryHandle, type WitnessView } from './cluster-io.ts';

/** What the cluster manager uses of the node's Replica (replication/replica.ts). */
export interface ClusterReplica {
  store: ShadowStore;
  status(holding: Record<string, number>): ReplicaStatus;
  holding(): Promise<Record<string, number>>;
}

/** What the node gives the cluster manager. */
export interface ClusterNodeHooks {
  /** The node's own state: starting, ready, draining, stopping. */
  state(): AnnouncedState;
  queueDepth(): number;
  /** Another node has claimed our spool: stop the queue manager (the gate is already shut); returns at once. */
  loseOwnSpool(reason: string): void;
  /** Our spool is ours again: lock it and start delivering from it. */
  regainOwnSpool(): Promise<void>;
  /** The delivery gate opened again after a fence (the queue manager may resume). */
  deliveriesResumed(): void;
  /**
   * Whether the node's own spool lock is still its own (undefined: the node holds none now,
   * e.g. while another node holds its spool). Asked every heartbeat interval.
   */
  ownLock(): Promise<{ held: boolean; holder?: SpoolLockInfo } | undefined>;
  /** After a lock fence: take the spool lock again without force and deliver (rejects with SpoolLockedError while another process holds it). */
  retakeOwnSpool(): Promise<void>;
}

/**
 * storage: the disk heartbeat could not be renewed; operator: `tandem cluster fence`; lock:
 * another process took our spool lock while we delivered from it (never by the rules: a
 * misconfigured peer, or a process started by hand) — we stop until the lock is free again.
 */
export type FenceReason = { type: 'storage'; since: number } | { type: 'operator'; since: number } | { type: 'lock'; since: number; holder?: string };

/** Thrown by start() when our node id is in use by another live process. */
export class DuplicateNodeIdError extends Error {
  readonly code = 'TANDEM_DUPLICATE_NODE_ID';
  constructor(node: string, slot: string) {
    super(`node id "${node}" is in use: another process renews its disk heartbeat (${slot}) right now. Two nodes with one id would deliver one spool twice; give this node its own id (node.id / --node-id) or stop the other process first`);
    this.name = 'DuplicateNodeIdError';
  }
}

export interface ClusterStatus {
  node: string;
  site: string;
  state: AnnouncedState;
  fenced?: FenceReason;
  /** Whether this node delivers from its own spool now (false while another node holds it). */
  ownSpool: 'delivering' | 'claimed-by-other' | 'fenced';
  diskHeartbeatAgeMs: number;
  /** Where the disk heartbeat's time goes: the slowest renewal since start (and its steps), the beat timer's largest lateness, the event loop's largest delay. */
  renewals: RenewalStats;
  /** Messages in this node's own queue. */
  queue: number;
  peers: Array<PeerView & { site: string }>;
  claims: Array<ClaimRecord & { deliverer: string }>;
  secondaries: Array<{ spool: string; epoch: number; ready: boolean; pid?: number; since: string; queue: Record<string, number> }>;
  /** cluster.standby_secondary: the pre-forked secondary waiting for the next takeover. */
  standby?: StandbyView;
  rejected: { heartbeats: Record<HeartbeatRejectReason, number>; diskHeartbeats: number; claims: number };
  counters: { takeovers: number; handbacks: number; claimsBroken: number; fences: number };
  /** Configuration faults between the nodes, newest evidence within cluster-faults.ts's FAULT_HOLD_MS. */
  faults: ClusterFault[];
  /** Records opened with one of cluster.accept_secrets (a rotation under way). */
  openedWithAcceptedSecret: number;
  storage: 'shared' | 'replicated';
  /** cluster.witness: the etcd connection, our lease and the takeover locks we hold. */
  witness?: WitnessView;
  /** Replicated storage: this node's copy at its holder, and the copies it holds. */
  replication?: ReplicaStatus;
}

/** A secondary that failed to start, or exited, is not started again sooner than this. */
const SECONDARY_RETRY_MS = 5000;

/** How often the copies kept for others are counted and their retired folders looked for. */
const HOLDING_REFRESH_MS = 1000;

export class ClusterManager {
  private readonly c: ClusterConfig;
  private readonly me: string;
  private readonly io: ClusterIo;
  private readonly membership: Membership;
  private readonly net: ClusterIo['net'];
  private readonly disk: ClusterIo['disk'];
  private readonly claims: ClusterIo['claims'];
  private readonly boot: number;
  private readonly mono: () => number;
  /** The disk-heartbeat lease: renewals, their age, the storage fence. */
  private readonly diskLease: DiskLease;
  private fence?: FenceReason;
  /** True while another node's claim keeps us from delivering our own spool. */
  private ownSpoolTaken = false;
  private readonly records = new Map<string, ClaimRecord>();
  private readonly secondaries = new Map<string, SecondaryHandle>();
  /** Background actions under way (a stop waits for them). */
  private readonly actions = new Set<Promise<void>>();
  private currentPass?: Promise<void>;
  /** Spools whose node was back while we held them (if it dies again, the secondary rescans). */
  private readonly seenBack = new Set<string>();
  /** Spools not taken over because their never-seen deliverer left them empty (logged once). */
  private readonly emptyNeverSeen = new Set<string>();
  /** Spools whose last pass failed (logged once per outage). */
  private readonly failing = new Set<string>();
  /** Spools with a takeover or handback under way (not acted on again meanwhile). */
  private readonly busy = new Set<string>();
  /** Spools whose secondary failed: not started again before this time (monotonic). */
  private readonly retryAt = new Map<string, number>();
  /** Configuration faults between the nodes (GET /cluster's `faults`, /health, metrics). */
  private readonly faults: ClusterFaults;
  private beatTimer?: { cancel(): void };
  private actTimer?: { cancel(): void };
  private stopped = false;
  readonly counters = { takeovers: 0, handbacks: 0, claimsBroken: 0, fences: 0 };
  /** cluster.storage: replicated — no shared disk; we take over only the nodes whose copies we keep. */
  private readonly replicated: boolean;
  /** Replicated: who of the holders of each node's copies delivers them. */
  private readonly holders: CopyHolders;
  /** Replicated: secondaries over copies of retired spool identities (an origin came back with a new disk), by folder. */
  private readonly retiredSecondaries = new Map<string, SecondaryHandle>();
  /** Copies we keep per origin, refreshed every HOLDING_REFRESH_MS (status and metrics). */
  private holding: Record<string, number> = {};
  /** When the retired copies and the counts were last looked at (monotonic). */
  private retiredAt = -Infinity;
  /** cluster.witness: the witness and the takeover locks we hold there. */
  private witness?: WitnessLocks;

  constructor(
    private readonly config: TandemConfig,
    private readonly hooks: ClusterNodeHooks,
    private readonly logger: Logger,
    private readonly tracking: TrackingLog,
    makeIo?: (boot: number, handlers: ClusterIoHandlers) => ClusterIo,
    /** Replicated storage: this node's replica (replication/replica.ts). */
    private readonly replica?: ClusterReplica,
  ) {
    this.c = config.cluster!;
    this.me = config.node.id;
    this.replicated = this.c.storage === 'replicated';
    makeIo ??= (boot, handlers) => realClusterIo(config, boot, handlers, replica?.store);
    this.boot = Date.now(); // the real clock: boot identifies this process to its peers, and the io is made with it
    this.io = makeIo(this.boot, {
      onHeartbeat: (hb) => this.onHeartbeat(hb),
      onReject: (reason, from, info) => this.faults.heartbeatRejected(reason, from, info),
      warn: (msg, fields) => this.logger.warn(fields, msg),
      info: (msg, fields) => this.logger.info(fields, msg),
    });
    this.mono = () => this.io.mono();
    this.net = this.io.net;
    this.disk = this.io.disk;
    this.claims = this.io.claims;
    const peers = this.c.nodes.filter((n) => n.id !== this.me);
    this.membership = new Membership(peers.map((p) => p.id), { heartbeatInterval: this.c.heartbeat_interval, deadAfter: this.c.dead_after }, this.mono, this.replicated);
    this.holders = new CopyHolders({ c: this.c, me: this.me, membership: this.membership, mono: this.mono, wall: () => this.io.wall(), sleep: (ms) => this.io.sleep(ms), logger, witness: () => this.witness?.client });
    this.faults = new ClusterFaults({ me: this.me, nodes: this.c.nodes, deadAfter: this.c.dead_after, mono: this.mono, wall: () => this.io.wall(), logger, disk: this.disk, net: this.net });
    this.diskLease = new DiskLease({
      c: this.c, disk: this.disk, mono: this.mono, wall: () => this.io.wall(), logger,
      announced: () => this.announced(),
      fenced: () => this.fence !== undefined,
      fencedByOperator: () => this.fence?.type === 'operator',
      fenceForStorage: (since, why) => this.enterFence({ type: 'storage', since }, why),
    });
  }

  /**
   * Join the cluster: the shared storage must be writable (first disk heartbeat), the heartbeat
   * address bindable. Returns whether our own spool is claimed by another node right now.
   */
  async start(): Promise<{ ownSpoolClaimedBy?: string }> {
    if (this.io.witness) {
      this.witness = new WitnessLocks(await this.io.witness((e) => this.onWitnessEvent(e)), this.logger);
      await this.witness.client.start();
    }
    await this.disk.prepare();
    await this.checkIdUnused();
    await this.diskLease.start(this.hooks.state());
    await this.net.start();
    if (this.replicated) await this.holders.awaitPeers();
    const own = this.replicated ? await this.holders.ownRecord() : await this.claimOwnSpoolAtJoin();
    this.records.set(this.me, own);
    this.ownSpoolTaken = effectiveOwner(own) !== this.me;
    this.beatTimer = this.io.every(this.c.heartbeat_interval, () => this.beat());
    this.actTimer = this.io.every(this.c.heartbeat_interval, () => void this.act());
    this.beat();
    this.io.standby?.start();
    return this.ownSpoolTaken ? { ownSpoolClaimedBy: own.by } : {};
  }

  /**
   * At join, after the first renewal: our spool is ours only if we can move its epoch on (a
   * release record by ourselves). A peer that judged us dead a moment ago and claims it at the
   * same time takes the same epoch; exactly one of us wins, and the loser sees the winner.
   */
  private async claimOwnSpoolAtJoin(): Promise<ClaimRecord> {
    for (;;) {
      const own = await this.claims.current(this.me);
      if (effectiveOwner(own) !== this.me) return own;
      const mine = await this.claims.join(own, this.me);
      if (mine) return mine;
    }
  }

  /**
   * Before our first beat: if our own slot changes while we watch it for three heartbeat
   * intervals, another live process (a second node given our id, signed with any secret)
   * renews it, and we must not start: one id, one spool, two deliverers.
   */
  private async checkIdUnused(): Promise<void> {
    const first = await this.disk.read(this.me);
    if (first.raw === undefined) return;
    const until = this.mono() + 3 * this.c.heartbeat_interval;
    while (this.mono() < until) {
      await this.io.sleep(this.c.heartbeat_interval / 2);
      const now = await this.disk.read(this.me);
      if (now.raw !== undefined && now.raw !== first.raw) throw new DuplicateNodeIdError(this.me, this.disk.slotPath(this.me));
    }
  }

  /** The delivery gate for our own spool: not fenced (storage, operator, lock), disk heartbeat fresh, spool not claimed. */
  mayDeliverOwnSpool(): boolean {
    return mayDeliverOwnSpool({ fenced: this.fence !== undefined, renewAgeMs: this.diskLease.ageMs(), fenceAfterMs: this.c.fence_after, taken: this.ownSpoolTaken });
  }

  /**
   * With cluster.auto_handback off, a node whose spool another node holds stays out of service
   * (health "returning", mail refused with 4xx) until the operator hands the spool back: mail
   * it took in would otherwise wait in a spool that nobody delivers.
   */
  holdsOutReturning(): boolean {
    return this.ownSpoolTaken && !this.c.auto_handback;
  }

  /** Fenced, or about to be: a renewal overdue counts at once, whenever the timer runs. */
  isFenced(): boolean {
    return this.fence !== undefined || this.diskLease.overdue();
  }

  /** Our announced state, as the peers see it. */
  announced(): AnnouncedState {
    return announcedState({ fenced: this.fence !== undefined, nodeState: this.hooks.state(), taken: this.ownSpoolTaken });
  }

  /** Operator: take this node out (no mail in, no delivery, peers take the spool over). */
  fenceByOperator(): void {
    if (this.fence?.type === 'storage') {
      this.fence = { type: 'operator', since: this.fence.since }; // the storage coming back will not undo it
      this.logger.warn({ event: 'fenced', reason: 'operator' }, 'fenced by the operator (already fenced: the storage was unreachable)');
      return;
    }
    this.enterFence({ type: 'operator', since: this.io.wall() }, 'fenced by the operator');
  }

  /** Operator: undo fenceByOperator (or a storage fence once the storage is back). */
  unfenceByOperator(): void {
    if (this.fence?.type !== 'operator') return;
    this.fence = { type: 'storage', since: this.io.wall() }; // leave through the storage path: fresh renewals first
    this.diskLease.fenceBegan();
    this.logger.info({ event: 'unfence-requested' }, 'unfence requested: resuming once the disk heartbeat has been renewed');
  }

  /** Operator: hand a spool we hold back to its node now. */
  async handBack(spool: string): Promise<ClaimRecord> {
    if (this.busy.has(spool)) throw new Error(`a takeover or handback of spool ${spool} is under way on ${this.me}; try again in a moment`);
    this.busy.add(spool);
    try {
      const record = await this.claims.current(spool);
      if (record.kind !== 'claim' || record.by !== this.me) throw new Error(`spool ${spool} is not held by ${this.me} (epoch ${record.epoch}, ${record.kind} by ${record.by})`);
      if (!this.membership.isBack(spool)) throw new Error(`node ${spool} is not back (${this.membership.status(spool).type}): given back now, its spool would only be taken over again; start ${spool} first`);
      return await this.release(spool, record, 'handed back by the operator');
    } finally {
      this.busy.delete(spool);
    }
  }

  /**
   * Operator (replicated storage): take a dead node's queue over now from the copies we keep,
   * whatever the takeover order says — a lost site's queues without a witness (docs/sites.md).
   * Refused when the node is not dead or fenced as we see it, when a live peer already delivers
   * the copies, or when the witness (if any) does not give us its lock.
   */
  async takeOverByOperator(spool: string): Promise<ClaimRecord> {
    if (!this.replicated) throw new Error('an operator takeover is for cluster.storage: replicated; on shared storage the survivor takes a dead node\'s spool over by itself');
    if (!this.holders.origins.has(spool)) throw new Error(`${this.me} keeps no copies of ${spool}'s queue`);
    if (this.busy.has(spool)) throw new Error(`a takeover or handback of spool ${spool} is under way on ${this.me}; try again in a moment`);
    this.busy.add(spool);
    try {
      const state = this.membership.status(spool).type;
      if (state !== 'dead' && state !== 'fenced') throw new Error(`node ${spool} is ${state}, not dead: it delivers its own queue`);
      const record = await this.claims.current(spool);
      if (record.kind === 'claim' && record.by === this.me) return record;
      const other = this.holders.liveClaimant(spool);
      if (other) throw new Error(`${other} delivers ${spool}'s copies already`);
      const claimed = await this.takeOver(spool, record, spool, 'taken over by the operator');
      if (!claimed) throw new Error(`the takeover of ${spool} was not made: ${this.witness?.refusal(spool) ?? 'the claim changed meanwhile'}`);
      return claimed;
    } finally {
      this.busy.delete(spool);
    }
  }

  /**
   * Node stopping, first step: take no spool over any more and stop the secondaries (they
   * finish and record their deliveries in flight). Heartbeats go on, saying "stopping", so
   * that nobody takes our spool while our own deliveries in flight finish.
   */
  async stopSecondaries(): Promise<void> {
    this.beginStop();
    await this.io.standby?.stop();
    await this.currentPass;
    while (this.actions.size) await Promise.allSettled([...this.actions]);
    await Promise.all([...this.secondaries.values(), ...this.retiredSecondaries.values()].map((s) => s.stop()));
    this.secondaries.clear();
    this.retiredSecondaries.clear();
  }

  /** Wait for the pass under way and the background actions it started (tests; a stop does the same). */
  async settle(): Promise<void> {
    await this.currentPass;
    while (this.actions.size) await Promise.allSettled([...this.actions]);
  }

  /** Node stopping, at once: no new pass, takeover or secondary from here on. */
  beginStop(): void {
    this.stopped = true;
    this.actTimer?.cancel();
  }

  /** Node stopping, last step: no more heartbeats. Peers take our spool after dead_after. */
  async stop(): Promise<void> {
    await this.stopSecondaries();
    this.beatTimer?.cancel();
    this.diskLease.stop();
    this.net.close();
    // revoking the lease frees our node key and our locks at once (a peer then takes over without waiting for the TTL)
    await this.witness?.client.stop();
  }

  status(): ClusterStatus {
    const sites = new Map(this.c.nodes.map((n) => [n.id, n.site]));
    return {
      node: this.me,
      site: sites.get(this.me)!,
      state: this.announced(),
      ...(this.fence ? { fenced: this.fence } : {}),
      ownSpool: this.fence ? 'fenced' : this.ownSpoolTaken ? 'claimed-by-other' : 'delivering',
      diskHeartbeatAgeMs: Math.round(this.diskLease.ageMs()),
      renewals: this.diskLease.stats(),
      queue: this.hooks.queueDepth(),
      peers: this.membership.view().map((p) => ({ ...p, site: sites.get(p.id)! })),
      claims: [...this.records.values()].filter((r) => r.epoch > 0).map((r) => ({ ...r, deliverer: effectiveOwner(r) })),
      secondaries: [...this.secondaries.values()].map((s) => ({ spool: s.spool, epoch: s.epoch, ready: s.ready, ...(s.pid !== undefined ? { pid: s.pid } : {}), since: new Date(s.startedAt).toISOString(), queue: s.counts })),
      ...(this.io.standby ? { standby: this.io.standby.view() } : {}),
      rejected: { heartbeats: { ...this.net.rejected }, diskHeartbeats: this.disk.rejected, claims: this.claims.rejected },
      counters: { ...this.counters },
      faults: this.faults.current(),
      openedWithAcceptedSecret: this.io.openedWithAccepted(),
      storage: this.c.storage,
      ...(this.replica ? { replication: this.replica.status(this.holding) } : {}),
      ...(this.witness ? { witness: this.witness.client.view() } : {}),
    };
  }

  /** The configuration faults in force (each seen within cluster-faults.ts's FAULT_HOLD_MS); the others are cleared and logged so. */
  currentFaults(): ClusterFault[] {
    return this.faults.current();
  }

  private onHeartbeat(hb: Heartbeat): void {
    this.membership.noteNetwork(hb.node, { boot: hb.boot, state: hb.state, queue: hb.queue, claims: hb.claims });
  }

  /** Timer: renew the disk heartbeat, fence if renewals are late, send the network heartbeat. */
  private beat(): void {
    this.diskLease.beat();
    this.net.send({
      boot: this.boot,
      state: this.announced(),
      queue: this.hooks.queueDepth(),
      claims: [...this.secondaries.values()].map((s) => ({ spool: s.spool, epoch: s.epoch })),
    });
  }

  private enterFence(reason: FenceReason, why: string): void {
    if (this.fence) return;
    this.fence = reason;
    this.diskLease.fenceBegan();
    this.counters.fences++;
    this.logger.error({ event: 'fenced', reason: reason.type, why }, `FENCED: ${why}; refusing mail (4xx) and starting no delivery until it recovers`);
    this.tracking.record({ event: 'fenced', reason: why, since: new Date(reason.since).toISOString() });
  }

  /** Observe the peers and the claims, and act on them (never overlapping itself). */
  private act(): void {
    if (this.currentPass || this.stopped) return;
    this.currentPass = this.pass().finally(() => { this.currentPass = undefined; });
  }

  private async pass(): Promise<void> {
    this.faults.prune();
    await this.observeDisk();
    // with a witness: release the locks of the spools we no longer deliver (witness-locks.ts)
    if (this.witness) await this.witness.releaseUnneeded((spool) => this.secondaries.has(spool) || this.busy.has(spool) || this.heldByUs(spool));
    await this.guarded(this.me, async () => {
      const own = this.replicated ? await this.holders.ownRecord() : await this.claims.current(this.me);
      this.records.set(this.me, own);
      if (own.unverifiedAbove !== undefined) this.faults.contestedClaim(own);
      // read after the claim: a takeover by the rules writes its claim before it forces the lock
      if (effectiveOwner(own) === this.me) await this.watchOwnLock();
      else if (this.fence?.type === 'lock') this.lockFenceSuperseded(own);
      await this.maybeUnfence(own);
      await this.watchOwnSpool(this.records.get(this.me)!);
    });
    for (const n of this.c.nodes) {
      if (n.id === this.me || this.stopped) continue;
      if (this.replicated && !this.holders.origins.has(n.id)) continue; // we keep no copies of its spool
      await this.guarded(n.id, () => this.watchSpool(n.id));
    }
    if (this.replicated && this.replica && !this.stopped && this.mono() - this.retiredAt >= HOLDING_REFRESH_MS) {
      this.retiredAt = this.mono();
      await this.guarded('retired copies', () => this.watchRetired());
    }
  }

  private onWitnessEvent(e: WitnessEvent): void {
    logWitnessEvent(this.logger, e);
    // a lease in doubt or lost: stop the secondaries at once, not at the next interval (not before start() is done)
    if ((e.type === 'lease-uncertain' || e.type === 'lease-lost') && this.actTimer) this.act();
  }

  /** A spool whose claim in force, as last read, is ours. */
  private heldByUs(spool: string): boolean {
    const record = this.records.get(spool);
    return record?.kind === 'claim' && record.by === this.me;
  }

  /**
   * Replicated storage: copies of an origin's retired spool identity (it came back with a new
   * disk) are ours alone to deliver: a secondary runs over each such folder until it is empty.
   */
  private async watchRetired(): Promise<void> {
    const store = this.replica!.store;
    const wanted = new Map<string, { origin: string; spoolId: string }>();
    for (const origin of this.holders.origins) {
      // with two holders, one delivers them: the first in the takeover order that can (as for a takeover)
      if (this.holders.remoteCopy && this.holders.survivor(origin, false) !== this.me) continue;
      for (const spoolId of await store.retiredWithCopies(origin)) wanted.set(store.folder(origin, spoolId), { origin, spoolId });
    }
    for (const [dir, running] of this.retiredSecondaries) {
      if (wanted.has(dir)) continue;
      this.retiredSecondaries.delete(dir);
      void running.stop();
    }
    for (const [dir, { origin, spoolId }] of wanted) {
      if (this.retiredSecondaries.has(dir) || this.busy.has(dir) || (this.retryAt.get(dir) ?? 0) > this.mono()) continue;
      this.inBackground(dir, 'delivery of retired copies', async () => {
        const secondary = this.io.launchRetiredSecondary(origin, dir, (how) => {
          if (this.retiredSecondaries.get(dir) === secondary) this.retiredSecondaries.delete(dir);
          if (!this.stopped) this.retryAt.set(dir, this.mono() + SECONDARY_RETRY_MS);
          this.logger.error({ event: 'secondary-exited', spool: origin, dir, how }, `secondary for ${origin}'s retired copies exited unexpectedly (${how})`);
        });
        this.retiredSecondaries.set(dir, secondary);
        try {
          await secondary.start();
        } catch (err) {
          this.retiredSecondaries.delete(dir);
          this.retryAt.set(dir, this.mono() + SECONDARY_RETRY_MS);
          throw err;
        }
        this.logger.warn({ event: 'retired-copies', origin, spoolId, dir }, `${origin} came back with a new spool (disk replaced): delivering the copies of its old spool ${spoolId} here`);
        this.tracking.record({ event: 'takeover', spool: origin, epoch: 0, reason: `copies of ${origin}'s retired spool ${spoolId}` });
      });
    }
    this.holding = await this.replica!.holding();
  }

  /** One spool's part of the pass: an error is logged once per outage and does not stop the others. */
  private async guarded(spool: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
      if (this.failing.delete(spool)) this.logger.info({ event: 'cluster-pass-recovered', spool }, `cluster pass for spool ${spool} works again`);
    } catch (err) {
      if (!this.failing.has(spool)) this.logger.warn({ event: 'cluster-pass-failed', spool, err: String((err as Error)?.message ?? err) }, `cluster pass for spool ${spool} failed, retrying every ${this.c.heartbeat_interval} ms: ${(err as Error)?.message ?? err}`);
      this.failing.add(spool);
    }
  }

  private async observeDisk(): Promise<void> {
    for (const n of this.c.nodes) {
      if (n.id === this.me) continue;
      const readAt = this.mono();
      const read = await this.disk.read(n.id).catch(() => undefined); // unreadable: no judgement
      if (!read) continue;
      this.membership.noteDisk(n.id, read.beat, readAt, read.beat ? undefined : read.raw);
      const status = this.membership.status(n.id);
      if (status.type === 'unauthenticated') {
        this.faults.note('secret-mismatch', n.id, `${n.id} is alive (its disk heartbeat keeps changing) but it does not open with our cluster secret: cluster.secret most likely differs between ${n.id} and ${this.me}. ${n.id}'s spool is not taken over and ${n.id} cannot take ours until the secrets agree (docs/ha.md "Configuration faults")`);
      }
    }
    await this.faults.observeStrangers();
  }

  /**
   * Our spool lock must still be ours while we deliver from it: another process that took it
   * delivers the spool now (never by the rules — a takeover only forces the lock of a dead or
   * fenced node), so we fence ourselves at once and wait until the lock is free again.
   */
  private async watchOwnLock(): Promise<void> {
    if (this.fence?.type === 'lock') {
      try {
        await this.hooks.retakeOwnSpool();
      } catch (err) {
        if (err instanceof SpoolLockedError) return this.faults.note('lock-taken', this.me, `our spool lock is held by pid ${err.pid} on ${err.hostname}: another process delivers our spool; ${this.me} delivers nothing from it and refuses mail until that process stops`);
        throw err;
      }
      const since = this.fence.since;
      this.fence = undefined;
      this.logger.warn({ event: 'unfenced', fencedMs: Math.round(this.io.wall() - since) }, 'unfenced: our spool lock is ours again; delivering');
      this.tracking.record({ event: 'unfenced' });
      this.hooks.deliveriesResumed();
      return;
    }
    const lock = await this.hooks.ownLock();
    if (!lock || lock.held) return;
    const holder = lock.holder ? `pid ${lock.holder.pid} on ${lock.holder.hostname}` : 'nobody (the lock file was removed)';
    this.faults.note('lock-taken', this.me, `our spool lock was taken by ${holder} while ${this.me} delivered from it: another process delivers our spool (a node with another cluster.secret, a duplicate node id, or a process started by hand); ${this.me} stopped delivering and refuses mail until the lock is free`);
    this.ownSpoolLostToLock(holder);
  }

  private ownSpoolLostToLock(holder: string): void {
    if (this.fence) return; // delivering nothing already; the lock is looked at again when the fence ends
    const since = this.io.wall();
    this.fence = { type: 'lock', since, holder };
    this.diskLease.fenceBegan();
    this.counters.fences++;
    this.logger.error({ event: 'fenced', reason: 'lock', holder }, `FENCED: our spool lock was taken by ${holder}; delivering nothing and refusing mail (4xx) until it is free`);
    this.tracking.record({ event: 'fenced', reason: `spool lock taken by ${holder}`, since: new Date(since).toISOString() });
    this.hooks.loseOwnSpool(`spool lock taken by ${holder}`);
  }

  /** A storage fence ends after a few good renewals in a row (time for the peers to see them). */
  private async maybeUnfence(own: ClaimRecord): Promise<void> {
    if (this.fence?.type !== 'storage' || !this.diskLease.storageBack()) return;
    if (effectiveOwner(own) !== this.me) this.ownSpoolLost(own);
    const since = this.fence.since;
    this.fence = undefined;
    this.logger.warn({ event: 'unfenced', fencedMs: Math.round(this.io.wall() - since), ownSpoolClaimedBy: this.ownSpoolTaken ? own.by : undefined },
      `unfenced: disk heartbeat renewed again${this.ownSpoolTaken ? `; our spool is held by ${own.by}, waiting for its handback` : ''}`);
    this.tracking.record({ event: 'unfenced' });
    if (!this.ownSpoolTaken) this.hooks.deliveriesResumed();
  }

  private async watchOwnSpool(own: ClaimRecord): Promise<void> {
    const action = decideOwnSpool({ me: this.me, record: own, taken: this.ownSpoolTaken, fenced: this.fence !== undefined, status: (id) => this.peerState(id) });
    if (action.type === 'held') {
      this.ownSpoolLost(own);
      const holder = action.holder;
      if (action.then === 'holder-unknown') {
        if (!this.failing.has(`holder:${holder}`)) this.logger.error({ event: 'own-spool-held-by-unknown', holder }, `our spool is claimed by ${holder}, which is not in cluster.nodes: have it handed back (tandem cluster handback ${this.me} on ${holder}), or put ${holder} back in cluster.nodes`);
        this.failing.add(`holder:${holder}`);
      } else if (action.then === 'break-claim') {
        const released = await this.claims.release(this.me, this.me, own.epoch, `claim holder ${holder} is dead`);
        if (released) {
          this.records.set(this.me, released);
          this.counters.claimsBroken++;
          this.logger.warn({ event: 'claim-broken', spool: this.me, holder, epoch: released.epoch }, `claim on our spool by ${holder} broken: ${holder} is dead`);
          this.tracking.record({ event: 'claim-broken', spool: this.me, epoch: released.epoch, reason: `holder ${holder} is dead` });
        }
      }
    } else if (action.type === 'regain') {
      await this.hooks.regainOwnSpool();
      this.ownSpoolTaken = false;
      this.hooks.deliveriesResumed();
      this.logger.info({ event: 'own-spool-regained', epoch: own.epoch }, `our spool is ours again (epoch ${own.epoch}): delivering from it`);
    }
  }

  /** A node's status for the decisions: `unknown` when it is not a peer in cluster.nodes. */
  private peerState(id: string): PeerState {
    return this.isPeer(id) ? this.membership.status(id).type : 'unknown';
  }

  /** A lock fence ends when a claim we can verify gives our spool to another node: the handback path governs from here. */
  private lockFenceSuperseded(own: ClaimRecord): void {
    this.fence = undefined;
    this.logger.warn({ event: 'unfenced', by: own.by, epoch: own.epoch }, `lock fence ended: our spool is claimed by ${own.by} (epoch ${own.epoch}); waiting for its handback`);
    this.tracking.record({ event: 'unfenced' });
  }

  /** Another node holds our spool: shut the gate at once; the node stops its queue manager. */
  private ownSpoolLost(own: ClaimRecord): void {
    if (this.ownSpoolTaken) return;
    this.ownSpoolTaken = true;
    this.logger.error({ event: 'own-spool-claimed', by: own.by, epoch: own.epoch }, `our spool was claimed by ${own.by} (epoch ${own.epoch}): delivering nothing from it until it is handed back`);
    this.hooks.loseOwnSpool(`claimed by ${own.by}`);
  }

  private isPeer(id: string): boolean {
    return id !== this.me && this.c.nodes.some((n) => n.id === id);
  }

  private async watchSpool(spool: string): Promise<void> {
    if (this.busy.has(spool)) return;
    const record = await this.claims.current(spool);
    if (this.busy.has(spool) || this.stopped) return; // an operator action began meanwhile
    this.records.set(spool, record);
    const running = this.secondaries.get(spool);
    const ours = record.kind === 'claim' && record.by === this.me;
    if (ours && this.witness && !this.witness.mayDeliver(spool)) {
      // our right to deliver it is the witness lock, which lives as long as our lease: in doubt, stop
      return this.inBackground(spool, 'stop (witness)', () => this.release(spool, record, 'the witness lease is in doubt or the lock is gone'));
    }
    if (this.membership.isLive(spool)) this.holders.nodeLive(spool);
    if (this.replicated && this.holders.remoteCopy) {
      // another holder of these copies delivers them (its claim is in its own store, announced in its heartbeats)
      const other = this.holders.liveClaimant(spool);
      if (other && !ours) return;
      if (other && this.holders.deliversBeforeUs(spool, other)) {
        return this.inBackground(spool, 'stop (an earlier holder delivers it)', () => this.release(spool, record, `${other}, before us in the takeover order, delivers it too`));
      }
    }
    if (ours && this.membership.isBack(spool)) this.seenBack.add(spool);
    const action = decideSpool({
      me: this.me,
      record,
      ...(running ? { secondaryEpoch: running.epoch } : {}),
      status: (id) => this.peerState(id),
      isBack: (id) => this.membership.isBack(id),
      survivor: () => (this.replicated ? this.holders.survivor(spool) : chooseSurvivor(this.c.nodes, spool, (id) => (id === this.me ? true : this.membership.canTakeOver(id)))),
      seenBack: this.seenBack.has(spool),
      fenced: this.fence !== undefined,
      autoHandback: this.c.auto_handback,
      retryDue: (this.retryAt.get(spool) ?? 0) <= this.mono(),
    });
    switch (action.type) {
      case 'stop-secondary':
        // the claim is gone (an operator, or a node that thought us dead): the secondary stops itself
        this.secondaries.delete(spool);
        void running!.stop();
        return;
      case 'handback':
        return this.inBackground(spool, 'handback', () => this.release(spool, record, `${spool} is back`));
      case 'restart-secondary':
        // its node came back (and took mail in) without a handback, then died again: the
        // secondary scanned the spool before that mail came; start it again to pick it up
        this.seenBack.delete(spool);
        return this.inBackground(spool, 'secondary restart', async () => {
          this.secondaries.delete(spool);
          await running!.stop();
          await this.startSecondary(spool, record.epoch);
        });
      case 'start-secondary':
        return this.inBackground(spool, 'secondary start', () => this.startSecondary(spool, record.epoch));
      case 'contested':
        return this.faults.contestedClaim(record);
      case 'takeover':
        if (await this.nothingToTakeOver(spool, action.dead)) return;
        return this.inBackground(spool, 'takeover', () => this.takeOver(spool, record, action.dead));
      case 'none':
        return;
    }
  }

  /**
   * Run a takeover, secondary start or handback for `spool` in the background (it takes a child
   * process start, or the end of deliveries in flight): the pass goes on with the other spools,
   * and this spool is not acted on again until it ends.
   */
  private inBackground(spool: string, what: string, fn: () => Promise<unknown>): void {
    if (this.busy.has(spool) || this.stopped) return;
    this.busy.add(spool);
    const action: Promise<void> = fn().then(() => undefined, (err) => {
      this.logger.error({ event: 'cluster-action-failed', spool, action: what, err: String(err?.message ?? err) }, `${what} of spool ${spool} failed, retrying: ${err?.message ?? err}`);
    }).finally(() => {
      this.busy.delete(spool);
      this.actions.delete(action);
    });
    this.actions.add(action);
  }

  /**
   * A spool whose deliverer we have never seen beat since we started (a node slower to start
   * than us, or down since before we started) is taken over only if it holds mail: an empty one
   * has nothing to deliver, and taking it would only make its node wait for a handback when it
   * does start (docs/ha.md "Takeover"). Logged once per spool.
   */
  private async nothingToTakeOver(spool: string, dead: string): Promise<boolean> {
    if (this.membership.seen(dead) || !this.io.holdsMail || (await this.io.holdsMail(spool))) {
      this.emptyNeverSeen.delete(spool);
      return false;
    }
    if (!this.emptyNeverSeen.has(spool)) {
      this.emptyNeverSeen.add(spool);
      this.logger.info({ event: 'takeover-not-needed', spool, dead }, `not taking over ${spool}'s spool: ${dead} has not beaten since we started and the spool holds no mail (it is taken over once it holds mail, or if ${dead} runs and dies)`);
    }
    return true;
  }

  private async takeOver(spool: string, record: ClaimRecord, deadDeliverer: string, reason = `${deadDeliverer} is dead`): Promise<ClaimRecord | undefined> {
    // one more look at the dead node's slot, after the claim record was read: a beat since the
    // last pass means it is back (and will bump the epoch, which our claim would then lose)
    const readAt = this.mono();
    const { beat } = await this.disk.read(deadDeliverer);
    if (beat && diskMarkKey(beat) !== this.membership.diskMark(deadDeliverer)) {
      this.membership.noteDisk(deadDeliverer, beat, readAt);
      return undefined;
    }
    if (this.membership.status(spool).type === 'unauthenticated') return undefined;
    if (this.witness && !(await this.witness.acquire(spool))) return undefined;
    const claimed = await this.claims.claim(spool, this.me, record.epoch);
    if (!claimed) return undefined; // another node (or the spool's own node, coming back) was first
    this.records.set(spool, claimed);
    this.counters.takeovers++;
    this.logger.warn({ event: 'takeover', spool, epoch: claimed.epoch, dead: deadDeliverer }, `TAKEOVER: ${reason}; claimed spool ${spool} (epoch ${claimed.epoch}), starting a secondary process over it`);
    this.tracking.record({ event: 'takeover', spool, epoch: claimed.epoch, reason });
    await this.startSecondary(spool, claimed.epoch);
    return claimed;
  }

  private async startSecondary(spool: string, epoch: number): Promise<void> {
    if (this.stopped) return;
    // the spool's node's slot as we see it now: the secondary forces the spool lock only if
    // that node has not beaten since (dead by the rules) or says it delivers nothing from it
    const ownerSlot = (await this.disk.read(spool)).raw ?? null;
    const secondary = this.io.launchSecondary(spool, epoch, ownerSlot, (how) => {
      if (this.secondaries.get(spool) === secondary) this.secondaries.delete(spool);
      if (this.stopped) return; // a group signal reached it first: the node is stopping too
      this.logger.error({ event: 'secondary-exited', spool, how }, `secondary for ${spool} exited unexpectedly (${how}); starting it again in ${SECONDARY_RETRY_MS / 1000} s`);
      this.retryAt.set(spool, this.mono() + SECONDARY_RETRY_MS);
    });
    this.secondaries.set(spool, secondary);
    try {
      await secondary.start();
      this.retryAt.delete(spool);
    } catch (err) {
      this.secondaries.delete(spool);
      this.retryAt.set(spool, this.mono() + SECONDARY_RETRY_MS);
      throw err;
    }
  }

  private async release(spool: string, record: ClaimRecord, reason: string): Promise<ClaimRecord> {
    const secondary = this.secondaries.get(spool);
    if (secondary) {
      await secondary.stop();
      this.secondaries.delete(spool);
    }
    const released = await this.claims.release(spool, this.me, record.epoch, reason);
    if (!released) throw new Error(`spool ${spool}: the claim changed while handing it back`);
    this.records.set(spool, released);
    await this.witness?.release(spool);
    this.counters.handbacks++;
    this.logger.info({ event: 'handback', spool, epoch: released.epoch, reason }, `HANDBACK: spool ${spool} released (epoch ${released.epoch}): ${reason}`);
    this.tracking.record({ event: 'handback', spool, epoch: released.epoch, reason });
    return released;
  }
}
