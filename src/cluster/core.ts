/**
 * cluster/core.ts — the cluster's decisions, as pure functions of one node's view: who holds
 * each spool, what to do about it at this pass, whether our own spool may be delivered from and
 * what we announce. No I/O, no clock, no timers: the I/O shell (cluster-manager.ts) reads the
 * disk, the network and the claims, builds these views, and carries the actions out.
 *
 * The rules (docs/ha.md has the story):
 *   - a spool whose claim is no longer ours while our secondary runs: stop the secondary;
 *   - a spool we hold: hand it back when its node is back (cluster.auto_handback); restart the
 *     secondary when its node came back without a handback and died again (mail it took in
 *     meanwhile was never scanned); start the secondary when none runs (not while fenced, not
 *     before the retry time after a failure);
 *   - a spool delivered by a dead peer (its own node, or a node holding its claim): take it over
 *     if we are the designated survivor (survivor.ts) — never while fenced, never over a claim
 *     record we cannot verify (contested), never when the spool's own node is live (it breaks a
 *     dead holder's claim itself), never from a node that is not dead by the rules (an
 *     unauthenticated peer is never dead);
 *   - our own spool: held by another node → deliver nothing (and break the claim when its
 *     holder is dead and we are not fenced); ours again after a claim → regain it.
 */
import type { ClaimRecord } from './claims.ts';
import type { AnnouncedState, PeerStatus } from './membership.ts';

/** Who delivers a spool, from the claim record in force (and our own secondaries). */
export type SpoolOwnership =
  | { type: 'own-node'; epoch: number }
  | { type: 'held-by-us'; epoch: number }
  | { type: 'held-by-other'; by: string; epoch: number };

export function ownershipOf(record: ClaimRecord, me: string): SpoolOwnership {
  if (record.kind !== 'claim') return { type: 'own-node', epoch: record.epoch };
  return record.by === me ? { type: 'held-by-us', epoch: record.epoch } : { type: 'held-by-other', by: record.by, epoch: record.epoch };
}

/** The node that delivers a spool under this record. */
export function delivererOf(record: ClaimRecord): string {
  return record.kind === 'claim' ? record.by : record.spool;
}

/** A peer's status as the view gives it; `unknown`: not in our cluster.nodes. */
export type PeerState = PeerStatus['type'] | 'unknown';

/** One peer spool as this node sees it at one pass. */
export interface PeerSpoolView {
  me: string;
  record: ClaimRecord;
  /** The epoch of our secondary running over it, if one runs. */
  secondaryEpoch?: number;
  status(node: string): PeerState;
  /** Both heartbeats fresh, not fenced, not starting or stopping: it may have its spool back. */
  isBack(node: string): boolean;
  /** The designated survivor for this spool (survivor.ts over the nodes that can take over). */
  survivor(): string | undefined;
  /** Its node was seen back while we held it. */
  seenBack: boolean;
  fenced: boolean;
  autoHandback: boolean;
  /** No failed secondary start is waiting for its retry time. */
  retryDue: boolean;
}

export type SpoolAction =
  | { type: 'none' }
  | { type: 'stop-secondary' }
  | { type: 'handback' }
  | { type: 'restart-secondary' }
  | { type: 'start-secondary' }
  | { type: 'takeover'; dead: string }
  | { type: 'contested' };

export function decideSpool(v: PeerSpoolView): SpoolAction {
  const { record, me } = v;
  const spool = record.spool;
  const owner = ownershipOf(record, me);
  if (v.secondaryEpoch !== undefined && (owner.type !== 'held-by-us' || owner.epoch !== v.secondaryEpoch)) return { type: 'stop-secondary' };
  if (owner.type === 'held-by-us') {
    if (v.isBack(spool)) return v.autoHandback ? { type: 'handback' } : { type: 'none' };
    if (v.secondaryEpoch !== undefined && v.seenBack && v.status(spool) === 'dead') return { type: 'restart-secondary' };
    if (v.secondaryEpoch === undefined && !v.fenced && v.retryDue) return { type: 'start-secondary' };
    return { type: 'none' };
  }
  const deliverer = delivererOf(record);
  const state = v.status(deliverer);
  if (state === 'unknown') return { type: 'none' }; // a node removed from cluster.nodes: the operator hands its spools over
  if (v.fenced || state !== 'dead') return { type: 'none' };
  if (record.unverifiedAbove !== undefined) return { type: 'contested' }; // someone we cannot authenticate may hold it
  // a claim whose holder died, on the spool of a node that is alive: that node breaks it itself
  const spoolNode = v.status(spool);
  if (spoolNode !== 'dead' && spoolNode !== 'fenced') return { type: 'none' };
  if (v.survivor() !== me) return { type: 'none' };
  return { type: 'takeover', dead: deliverer };
}

/** Our own spool as this node sees it at one pass. */
export interface OwnSpoolView {
  me: string;
  record: ClaimRecord;
  /** We already deliver nothing from it because another node holds it. */
  taken: boolean;
  fenced: boolean;
  status(node: string): PeerState;
}

export type OwnSpoolAction =
  /** Held by another node: deliver nothing from it (the first time, stop the queue manager). */
  | { type: 'held'; holder: string; then: 'wait' | 'break-claim' | 'holder-unknown' }
  /** The claim is gone: take the spool back and deliver. */
  | { type: 'regain' }
  | { type: 'none' };

export function decideOwnSpool(v: OwnSpoolView): OwnSpoolAction {
  const holder = delivererOf(v.record);
  if (holder !== v.me) {
    const state = v.status(holder);
    if (state === 'unknown') return { type: 'held', holder, then: 'holder-unknown' };
    return { type: 'held', holder, then: state === 'dead' && !v.fenced ? 'break-claim' : 'wait' };
  }
  return v.taken && !v.fenced ? { type: 'regain' } : { type: 'none' };
}

/** The delivery gate for our own spool: not fenced (a renewal overdue counts at once), not held by another node. */
export function mayDeliverOwnSpool(s: { fenced: boolean; renewAgeMs: number; fenceAfterMs: number; taken: boolean }): boolean {
  return !s.fenced && s.renewAgeMs < s.fenceAfterMs && !s.taken;
}

/** What we announce in our heartbeats: a node whose spool is held elsewhere is returning, draining or not. */
export function announcedState(s: { fenced: boolean; nodeState: AnnouncedState; taken: boolean }): AnnouncedState {
  if (s.fenced) return 'fenced';
  if ((s.nodeState === 'ready' || s.nodeState === 'draining') && s.taken) return 'returning';
  return s.nodeState;
}
