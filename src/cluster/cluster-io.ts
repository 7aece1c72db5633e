/**
 * cluster/cluster-io.ts — everything the cluster manager does outside its own memory, as one
 * ClusterIo object: disk heartbeats, network heartbeats, claim records, secondary processes, the
 * witness, the clock and timers. The manager takes it as one dependency, so that its unit tests
 * (core.test.ts) drive it with fakes.
 * Exports the interfaces (ClusterIo, ClusterIoHandlers, SecondaryHandle, ClusterWitness) and
 * realClusterIo(), the production one: shared storage (disk heartbeats and claims under
 * spool.root, secondaries over the dead node's spool) or replicated storage (no disk heartbeat,
 * claims and secondaries over the copies this node keeps).
 * What can go wrong: nothing at construction beyond NetHeartbeat's; the errors of the parts
 * (a storage that fails, a secondary that does not start) reach the manager through its calls.
 * Reads config keys: node.id, spool.root, cluster.nodes, cluster.secret,
 * cluster.accept_secrets, cluster.standby_secondary, cluster.witness, cluster.dead_after.
 */
import { opendir } from 'node:fs/promises';
import path from 'node:path';
import type { TandemConfig } from '../config/schema.ts';
import { isErrno } from '../util/errno.ts';
import { clusterSealer } from './sealed.ts';
import type { AnnouncedState } from './membership.ts';
import { NetHeartbeat, type Heartbeat, type HeartbeatRejectReason, type RejectInfo } from './net-heartbeat.ts';
import { DiskHeartbeat, type DiskBeat, type DiskHeartbeatThreadEvent, type DiskRenewer, type RenewalSteps } from './disk-heartbeat.ts';
import { ClaimStore } from './claims.ts';
import { SecondaryProcess, StandbySecondary, type StandbyView } from './secondary.ts';
import { shadowRoot } from './replication/placement.ts';
import type { ShadowStore } from './replication/shadow-store.ts';
import type { AcquireResult, SpoolHolder, WitnessEvent } from './witness/etcd-witness.ts';

/** A secondary switch process over one spool, as the shell sees it (secondary.ts in production). */
export interface SecondaryHandle {
  readonly spool: string;
  readonly epoch: number;
  readonly ready: boolean;
  readonly pid?: number;
  readonly startedAt: number;
  readonly counts: Record<string, number>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Everything the cluster manager does outside its own memory. */
export interface ClusterIo {
  disk: {
    prepare(): Promise<void>;
    renew(state: AnnouncedState): Promise<void>;
    read(node: string): Promise<{ beat?: DiskBeat; raw?: string }>;
    slots(): Promise<string[]>;
    slotPath(node: string): string;
    readonly rejected: number;
    /** The last completed renewal's steps (shared storage only). */
    readonly lastSteps?: RenewalSteps;
    /** Renew from now on in a thread of its own (production, shared storage); without it (or until its first renewal) beat() renews with renew(). */
    renewer?(opts: { intervalMs: number; maxSilenceMs: number; state: AnnouncedState; after?: number }, onEvent: (e: DiskHeartbeatThreadEvent) => void): DiskRenewer;
  };
  net: {
    start(): Promise<unknown>;
    send(info: Omit<Heartbeat, 'node' | 'seq' | 'sent'>): void;
    close(): void;
    readonly rejected: Record<HeartbeatRejectReason, number>;
  };
  claims: Pick<ClaimStore, 'current' | 'claim' | 'release' | 'join' | 'rejected'>;
  /** Records opened with one of cluster.accept_secrets so far. */
  openedWithAccepted(): number;
  /**
   * Whether a spool (shared storage: its incoming/, active/, deferred/; replicated: the copies
   * we hold) has mail to deliver. Without it every spool counts as holding mail.
   */
  holdsMail?(spool: string): Promise<boolean>;
  launchSecondary(spool: string, epoch: number, spoolNodeSlot: string | null, onUnexpectedExit: (how: string) => void): SecondaryHandle;
  /**
   * Replicated storage: a secondary over `dir`, a folder of copies of `origin`'s retired spool
   * identity (epoch 0, no claim, no spool lock to force). Never takes the standby: that one is
   * kept for takeovers.
   */
  launchRetiredSecondary(origin: string, dir: string, onUnexpectedExit: (how: string) => void): SecondaryHandle;
  /** cluster.standby_secondary: the pre-forked secondary that launchSecondary takes (secondary.ts); started at join, stopped first at a node stop. */
  standby?: { start(): void; stop(): Promise<void>; view(): StandbyView };
  /** cluster.witness: the witness (etcd-witness.ts in production), made at start. */
  witness?: (onEvent: (event: WitnessEvent) => void) => Promise<ClusterWitness>;
  /** Monotonic milliseconds (performance.now() in production). */
  mono(): number;
  /** Wall-clock milliseconds (Date.now()). */
  wall(): number;
  every(ms: number, fn: () => void): { cancel(): void };
  sleep(ms: number): Promise<void>;
}

/** The handlers the network side of ClusterIo calls. */
export interface ClusterIoHandlers {
  onHeartbeat(hb: Heartbeat): void;
  onReject(reason: HeartbeatRejectReason, from: string, info: RejectInfo): void;
  warn(msg: string, fields: object): void;
  info(msg: string, fields: object): void;
}

/**
 * The production ClusterIo. Shared storage: disk heartbeats and claims under spool.root, UDP
 * heartbeats, secondaries over the dead node's spool. Replicated storage (`store`: the copies
 * this node keeps): no disk heartbeat, claims on the copies kept beside them on this node's own
 * disk, secondaries over the dead node's copy folder (its queue ids noted first: store.markTakeover).
 */
export function realClusterIo(config: TandemConfig, boot: number, h: ClusterIoHandlers, store?: ShadowStore): ClusterIo {
  const c = config.cluster!;
  const me = config.node.id;
  const sealer = clusterSealer(c);
  const self = c.nodes.find((n) => n.id === me)!;
  const net = new NetHeartbeat({ id: me, address: self.heartbeat }, c.nodes.filter((n) => n.id !== me).map((p) => ({ id: p.id, address: p.heartbeat })), sealer, h.onHeartbeat, h.onReject);
  const copyFolder = (spool: string) => async () => {
    const spoolId = (await store!.identity(spool))?.current ?? 'none'; // 'none': it never sent a copy; an empty folder
    return { dir: spoolId === 'none' ? store!.folder(spool, 'none') : await store!.markTakeover(spool, spoolId), claimed: true };
  };
  const standby = c.standby_secondary ? new StandbySecondary((level, msg, fields) => h[level](msg, fields)) : undefined;
  return {
    disk: store ? NO_DISK : new DiskHeartbeat(config.spool.root, me, boot, sealer, c),
    net,
    claims: new ClaimStore(store ? shadowRoot(config) : config.spool.root, sealer, h.warn),
    openedWithAccepted: () => sealer.openedWithAccepted,
    holdsMail: async (spool) => (store ? (await store.count(spool)) > 0 : spoolHoldsMail(path.join(config.spool.root, spool))),
    launchSecondary: (spool, epoch, slot, onExit) => new SecondaryProcess(spool, epoch, me, boot, slot, config, onExit, store ? copyFolder(spool) : undefined, standby),
    launchRetiredSecondary: (origin, dir, onExit) => new SecondaryProcess(origin, 0, me, boot, null, config, onExit, async () => ({ dir, claimed: false })),
    ...(standby ? { standby } : {}),
    ...(c.witness ? {
      witness: async (onEvent) => {
        // loaded only where a witness is configured (gRPC and the etcd client cost start-up time)
        const { EtcdWitness } = await import('./witness/etcd-witness.ts');
        const w = c.witness!.etcd;
        return new EtcdWitness({ endpoints: w.endpoints, nodeId: me, leaseTtlMs: c.dead_after, operationTimeoutMs: w.operation_timeout, prefix: w.prefix, onEvent });
      },
    } : {}),
    mono: () => performance.now(),
    wall: () => Date.now(),
    every(ms, fn) {
      const t = setInterval(fn, ms);
      return { cancel: () => clearInterval(t) };
    },
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  };
}

/** Shared storage: a queue file in the spool's incoming/, active/ or deferred/ (a missing folder holds none). */
async function spoolHoldsMail(dir: string): Promise<boolean> {
  for (const state of ['incoming', 'active', 'deferred']) {
    const folder = await opendir(path.join(dir, state)).catch((err: unknown) => { if (isErrno(err, 'ENOENT')) return undefined; throw err; });
    if (!folder) continue;
    try {
      for (let e = await folder.read(); e; e = await folder.read()) if (e.isFile()) return true;
    } finally {
      await folder.close().catch(() => undefined);
    }
  }
  return false;
}

/** What the cluster manager uses of the witness (witness/etcd-witness.ts). */
export interface ClusterWitness {
  start(): Promise<unknown>;
  stop(): Promise<void>;
  acquire(spool: string): Promise<AcquireResult>;
  release(spool: string, epoch: number): Promise<boolean>;
  holder(spool: string): Promise<SpoolHolder | undefined>;
  leaseHeld(): boolean;
  heldSpools(): ReadonlyMap<string, number>;
  view(): WitnessView;
}
export interface WitnessView { state: string; detail?: string; lease: string; held: Record<string, number> }

/** Replicated storage has no disk heartbeat: renewals always succeed (no storage fence), reads find nothing. */
const NO_DISK: ClusterIo['disk'] = {
  prepare: async () => undefined,
  renew: async () => undefined,
  read: async () => ({}),
  slots: async () => [],
  slotPath: () => '(none: cluster.storage is replicated)',
  rejected: 0,
};
