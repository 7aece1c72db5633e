/**
 * cluster/cluster-faults.ts — the configuration faults between nodes as one node sees them: noted
 * when the evidence appears (logged once, level error: `CLUSTER CONFIGURATION FAULT (kind,
 * subject): …`), shown in GET /cluster, /health and the metrics while the evidence keeps coming,
 * cleared (and logged so) once it has not been seen for FAULT_HOLD_MS.
 * Evidence gathered here: dropped network heartbeats (a secret that differs, clocks apart, a
 * node not in our cluster.nodes; each reason also logged at most every 10 s) and the slots of
 * such strangers on the shared storage. The cluster manager notes what its pass finds (an
 * unauthenticated peer, a contested claim, our spool lock taken).
 * Faults are reported, never acted on (docs/ha.md "Configuration faults").
 * Exports ClusterFaults (one per ClusterManager), FaultKind and ClusterFault.
 * What can go wrong: a shared storage that cannot be listed or read shows no stranger (no fault).
 * Reads config keys: cluster.nodes, cluster.dead_after, node.id.
 */
import type { Logger } from 'pino';
import type { ClusterConfig } from '../config/schema.ts';
import type { ClaimRecord } from './claims.ts';
import type { HeartbeatRejectReason, RejectInfo } from './net-heartbeat.ts';
import type { ClusterIo } from './cluster-io.ts';

/**
 * A configuration fault between nodes, shown in status, /health, metrics and the log: the
 * cluster stays safe (nothing is taken over on such evidence), but the operator must act.
 *   secret-mismatch  a peer is alive but what it signs does not open with our secret(s)
 *   clock-skew       a peer's heartbeats are dropped as stale: the wall clocks differ
 *   unknown-node     a node not in our cluster.nodes beats (network or shared disk)
 *   contested-claim  a spool's claim folder holds a record above the one in force that we cannot verify
 *   lock-taken       another process took our spool lock while we delivered from it
 *   duplicate-id     (at start-up only: the node refuses to start) another live process uses our node id
 */
export type FaultKind = 'secret-mismatch' | 'clock-skew' | 'unknown-node' | 'contested-claim' | 'lock-taken';
export interface ClusterFault {
  kind: FaultKind;
  /** The peer, node or spool the fault is about. */
  subject: string;
  message: string;
  since: string;
}

/** A fault not seen again for this long is cleared (evidence that comes and goes is shown this long). */
const FAULT_HOLD_MS = 10_000;

/** What the fault report needs of the cluster manager. */
export interface ClusterFaultsDeps {
  me: string;
  nodes: ClusterConfig['nodes'];
  deadAfter: number;
  mono(): number;
  /** Wall-clock milliseconds (a fault's `since`). */
  wall(): number;
  logger: Logger;
  disk: Pick<ClusterIo['disk'], 'slots' | 'read'>;
  net: Pick<ClusterIo['net'], 'rejected'>;
}

export class ClusterFaults {
  /** Faults by kind:subject, with when they were last seen (monotonic). */
  private readonly faults = new Map<string, ClusterFault & { seenAt: number }>();
  /** When each reason for dropping a heartbeat was last logged (monotonic). */
  private readonly rejectLogged = new Map<HeartbeatRejectReason, number>();
  /** Disk slots of nodes not in cluster.nodes: their last text and when it last changed. */
  private readonly strangers = new Map<string, { text: string; changedAt?: number }>();

  constructor(private readonly d: ClusterFaultsDeps) {}

  /** The configuration faults in force (each seen within FAULT_HOLD_MS); the others are cleared and logged so. */
  current(): ClusterFault[] {
    this.prune();
    return [...this.faults.values()].map(({ seenAt: _, ...f }) => f);
  }

  /**
   * Clear (and log so) the faults not seen for FAULT_HOLD_MS. The cluster manager calls it on
   * every pass, so `cluster-fault-cleared` comes when the fault clears, whether or not anybody
   * reads the status.
   */
  prune(): void {
    const now = this.d.mono();
    for (const [key, f] of this.faults) {
      if (now - f.seenAt <= FAULT_HOLD_MS) continue;
      this.faults.delete(key);
      this.d.logger.info({ event: 'cluster-fault-cleared', kind: f.kind, subject: f.subject }, `cluster fault cleared: ${f.kind} (${f.subject})`);
    }
  }

  /** Note a configuration fault: logged (error) when it appears, shown until not seen for FAULT_HOLD_MS. */
  note(kind: FaultKind, subject: string, message: string): void {
    const key = `${kind}:${subject}`;
    const known = this.faults.get(key);
    if (known) {
      known.seenAt = this.d.mono();
      known.message = message;
      return;
    }
    this.faults.set(key, { kind, subject, message, since: new Date(this.d.wall()).toISOString(), seenAt: this.d.mono() });
    this.d.logger.error({ event: 'cluster-fault', kind, subject }, `CLUSTER CONFIGURATION FAULT (${kind}, ${subject}): ${message}`);
  }

  /** Log a dropped heartbeat: the first of each reason, then at most one line per 10 s; note what it says about the configuration. */
  heartbeatRejected(reason: HeartbeatRejectReason, from: string, info: RejectInfo): void {
    if (reason === 'bad-signature' && info.peer) {
      this.note('secret-mismatch', info.peer, `heartbeats from ${info.peer}'s address (${from}) do not open with our cluster secret: cluster.secret most likely differs between ${info.peer} and ${this.d.me} (or a rotation is half done: see cluster.accept_secrets)`);
    } else if (reason === 'stale' && info.peer && info.skewMs !== undefined) {
      this.note('clock-skew', info.peer, `heartbeats from ${info.peer} are dropped as stale: its clock is ${(Math.abs(info.skewMs) / 1000).toFixed(1)} s ${info.skewMs > 0 ? 'behind' : 'ahead of'} ours; the nodes' clocks must agree within 10 s (NTP). Until then ${info.peer} is judged on its disk heartbeat alone`);
    } else if (reason === 'unknown-node' && info.claimed) {
      this.note('unknown-node', info.claimed, `heartbeats come from node "${info.claimed}" (${from}), which is not in our cluster.nodes: the cluster.nodes lists differ between the nodes; nodes missing from a list neither take over nor are taken over by this node`);
    }
    const now = this.d.mono();
    const last = this.rejectLogged.get(reason);
    if (last !== undefined && now - last < 10_000) return;
    this.rejectLogged.set(reason, now);
    this.d.logger.warn({ event: 'heartbeat-rejected', reason, from, total: this.d.net.rejected[reason], ...info }, `heartbeat from ${from} dropped: ${reason} (${this.d.net.rejected[reason]} so far; logged at most every 10 s)`);
  }

  /** Slots on the shared storage of nodes not in our cluster.nodes: a changing one is a fault. */
  async observeStrangers(): Promise<void> {
    const known = new Set(this.d.nodes.map((n) => n.id));
    const slots = await this.d.disk.slots().catch(() => [] as string[]);
    for (const id of slots) {
      if (known.has(id)) continue;
      const read = await this.d.disk.read(id).catch(() => undefined);
      if (read?.raw === undefined) continue;
      const seen = this.strangers.get(id);
      if (seen && seen.text !== read.raw) seen.changedAt = this.d.mono();
      if (!seen) this.strangers.set(id, { text: read.raw });
      else seen.text = read.raw;
      const changedAt = this.strangers.get(id)!.changedAt;
      if (changedAt !== undefined && this.d.mono() - changedAt < this.d.deadAfter) {
        this.note('unknown-node', id, `node "${id}" renews a disk heartbeat on the shared storage but is not in our cluster.nodes: the cluster.nodes lists differ between the nodes (or a node was given a wrong id); it is neither taken over nor can it be chosen to take over by ${this.d.me}`);
      }
    }
  }

  /** A spool's claim folder holds a record above the one in force that we cannot verify: we do not take that spool over. */
  contestedClaim(record: ClaimRecord): void {
    this.note('contested-claim', record.spool, `the claim folder of spool ${record.spool} holds a record at epoch ${record.unverifiedAbove} that does not open with our cluster secret(s), above the record in force (epoch ${record.epoch}, ${record.kind} by ${record.by}): a node with another cluster.secret may hold the spool, so ${this.d.me} does not take it over`);
  }
}
