/**
 * cluster/copy-holders.ts — replicated storage (cluster.storage: replicated; docs/ha.md "Storage
 * modes", docs/sites.md): who delivers each node's queue, as this node reads it from its peers'
 * heartbeats and the takeover order (replication/placement.ts). There is no shared disk: a
 * peer's claim lives in its own store and is known only from what it announces.
 *   - our own spool is held while a live peer announces a claim on it (or, with a witness, holds
 *     its lock); at join we first wait, at most dead_after, to hear every peer;
 *   - a dead node's copies are delivered by the first of their holders in its takeover order
 *     that can; across sites only with a witness (without one the operator decides: the refusal
 *     is logged once per outage, `cross-site-takeover-off`);
 *   - with cluster.replication.remote_copy a later holder that sees an earlier one deliver the
 *     same copies stops.
 * Exports CopyHolders (one per ClusterManager; on shared storage its `origins` is empty).
 * What can go wrong: a witness that cannot be asked says nothing (the heartbeats decide).
 * Reads config keys: cluster.storage, cluster.nodes (ids, sites, order),
 * cluster.replication.remote_copy, cluster.dead_after, cluster.heartbeat_interval, node.id.
 */
import type { Logger } from 'pino';
import type { ClusterConfig } from '../config/schema.ts';
import type { ClaimRecord } from './claims.ts';
import type { Membership } from './membership.ts';
import { originsOf, takeoverRank } from './replication/placement.ts';
import type { ClusterWitness } from './cluster-io.ts';

/** What the copy holders' rules need of the cluster manager. */
export interface CopyHoldersDeps {
  c: ClusterConfig;
  me: string;
  membership: Membership;
  mono(): number;
  /** Wall-clock milliseconds (the `at` of the records made from what the peers say). */
  wall(): number;
  sleep(ms: number): Promise<void>;
  logger: Logger;
  /** cluster.witness: the witness, once the manager has started it. */
  witness(): ClusterWitness | undefined;
}

export class CopyHolders {
  /** The nodes whose copies we keep (the only spools we may take over). */
  readonly origins: Set<string>;
  /** cluster.replication.remote_copy (each origin's copies at two holders). */
  readonly remoteCopy: boolean;
  /** Cross-site takeovers not made for want of a witness (logged once per outage). */
  private readonly crossSiteSaidNo = new Set<string>();

  constructor(private readonly d: CopyHoldersDeps) {
    this.remoteCopy = d.c.replication?.remote_copy ?? false;
    this.origins = new Set(d.c.storage === 'replicated' ? originsOf(d.c.nodes, d.me, this.remoteCopy) : []);
  }

  /**
   * At join: whether a peer delivers our copies now is known only from its
   * heartbeats (its claims). Wait for a heartbeat from every peer, at most dead_after: a peer
   * silent that long is dead, and a dead peer delivers nothing.
   */
  async awaitPeers(): Promise<void> {
    const until = this.d.mono() + this.d.c.dead_after;
    const heard = () => this.d.membership.view().every((p) => p.announced !== undefined);
    while (!heard() && this.d.mono() < until) await this.d.sleep(this.d.c.heartbeat_interval / 5);
  }

  /**
   * Our spool's record from our peers' heartbeats, and with a witness from
   * its lock on our spool too (a peer that holds it delivers our copies, or did: we wait for its
   * release). A witness we cannot ask says nothing: the heartbeats decide.
   */
  async ownRecord(): Promise<ClaimRecord> {
    const announced = this.fromPeers();
    const witness = this.d.witness();
    if (announced.kind === 'claim' || !witness) return announced;
    const lock = await witness.holder(this.d.me).catch(() => undefined);
    if (!lock || lock.holder === this.d.me) return announced;
    return { spool: this.d.me, epoch: lock.epoch, kind: 'claim', by: lock.holder, at: new Date(this.d.wall()).toISOString(), reason: 'holds the witness lock on our spool' };
  }

  /**
   * Our spool's record as our peers announce it. A live peer whose
   * secondary delivers our copies holds it (a claim); otherwise it is ours. A dead peer's
   * claim counts for nothing: its secondary died with it.
   */
  private fromPeers(): ClaimRecord {
    for (const p of this.d.membership.view()) {
      if (p.status.type === 'dead') continue;
      const claim = p.announced?.claims.find((c) => c.spool === this.d.me);
      if (claim) return { spool: this.d.me, epoch: claim.epoch, kind: 'claim', by: p.id, at: new Date(this.d.wall()).toISOString(), reason: 'announced in its heartbeats' };
    }
    return { spool: this.d.me, epoch: 0, kind: 'release', by: this.d.me, at: new Date(this.d.wall()).toISOString(), reason: 'no peer delivers our copies' };
  }

  /**
   * The holder of `spool`'s copies that should deliver them now — the first
   * in its takeover order (placement.ts) that can; we only when every holder before us is dead,
   * and across sites only with a witness (its lock then decides; without one an operator does:
   * `tandem cluster takeover`).
   */
  survivor(spool: string, log = true): string | undefined {
    const { before } = takeoverRank(this.d.c.nodes, spool, this.d.me, this.remoteCopy);
    const earlier = before.find((id) => this.d.membership.canTakeOver(id));
    if (earlier) return earlier;
    const site = (id: string) => this.d.c.nodes.find((n) => n.id === id)?.site;
    if (site(spool) !== site(this.d.me) && !this.d.witness()) {
      if (log && !this.crossSiteSaidNo.has(spool)) {
        this.crossSiteSaidNo.add(spool);
        this.d.logger.warn({ event: 'cross-site-takeover-off', spool, holders: [...before, this.d.me] }, `${spool} and every holder of its copies in site ${site(spool)} are dead; ${this.d.me} (site ${site(this.d.me)}) keeps a copy but takes nothing over from another site without a witness: run \`tandem cluster takeover ${spool}\` once that site is known lost (docs/sites.md)`);
      }
      return undefined;
    }
    return this.d.me;
  }

  /** A live peer whose heartbeats announce a claim on `spool` (its secondary delivers it). */
  liveClaimant(spool: string): string | undefined {
    return this.d.membership.view().find((p) => p.status.type !== 'dead' && p.announced?.claims.some((c) => c.spool === spool))?.id;
  }

  /** `node` comes before us in `spool`'s takeover order. */
  deliversBeforeUs(spool: string, node: string): boolean {
    return this.rankOf(spool, node) < this.rankOf(spool, this.d.me);
  }

  private rankOf(spool: string, node: string): number {
    const { rank } = takeoverRank(this.d.c.nodes, spool, node, this.remoteCopy);
    return rank < 0 ? Infinity : rank;
  }

  /** `spool`'s node is live: a cross-site refusal is logged again at its next outage. */
  nodeLive(spool: string): void {
    this.crossSiteSaidNo.delete(spool);
  }
}
