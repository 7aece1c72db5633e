/**
 * cluster/membership.ts — one node's view of its peers, from their network heartbeats and their
 * disk heartbeats, on this node's own monotonic clock.
 *
 * Rules (docs/ha.md "Failure detection"):
 *   dead     — the disk heartbeat has not changed for dead_after (and its slot was read a moment
 *              ago: a slot this node cannot read proves nothing), and the network heartbeat has
 *              been silent as long too, or says the peer fenced itself. A network partition
 *              alone (disk heartbeat still moving) never makes a peer dead.
 *   unauthenticated — its disk slot keeps changing but does not open with our secret(s): a live
 *              node we cannot authenticate (most likely its cluster.secret differs from ours).
 *              Never dead while so — its spool is not taken over, and it cannot be chosen to
 *              take ours — until a beat that opens with our secret comes (the operator fixed the
 *              secrets). It ranks above dead: a slot that stops changing later proves nothing,
 *              since we never could tell whose writes they were.
 *   fenced   — the peer says so over the network (its disk heartbeat may still be moving briefly).
 *   suspect  — one of the two has been silent for more than three heartbeat intervals.
 *   draining — the peer says so (it accepts no new mail, still delivers).
 *   alive    — otherwise.
 * A peer this node has never seen beat (no network heartbeat, no change of its disk slot since
 * this view began) is dead only after NEVER_SEEN_FACTOR × dead_after: a node that starts next to
 * a dead peer takes its spool over after that, while peers that are merely slower to start are
 * not taken over (and handed back) for nothing.
 * Network only (cluster.storage: replicated, no shared disk): a peer is dead when its network
 * heartbeat has been silent for dead_after (or it says it fenced itself); nothing else can
 * tell a dead peer from a cut network, so a cut looks like a death to both sides (docs/ha.md).
 * Pure logic with an injected clock: no timers, no I/O.
 */

/** What a node says about itself in its heartbeats. */
export type AnnouncedState = 'starting' | 'ready' | 'draining' | 'fenced' | 'returning' | 'stopping';

export type PeerStatus =
  | { type: 'alive' }
  | { type: 'draining' }
  | { type: 'suspect'; since: number }
  | { type: 'fenced' }
  | { type: 'unauthenticated'; since: number }
  | { type: 'dead'; since: number };

export interface NetworkInfo {
  boot: number;
  state: AnnouncedState;
  queue: number;
  claims: Array<{ spool: string; epoch: number }>;
}

export interface PeerView {
  id: string;
  status: PeerStatus;
  /** Milliseconds since the last network heartbeat (or since this view began). */
  netAgeMs: number;
  /** Milliseconds since the disk heartbeat last changed (or since this view began). */
  diskAgeMs: number;
  /** The peer's last network heartbeat, if any has come. */
  announced?: NetworkInfo;
}

/** A peer never seen beating is dead after this many dead_after (see the header). */
export const NEVER_SEEN_FACTOR = 4;

interface Observation {
  /** It has beaten (network heartbeat, or a disk slot change) since this view began. */
  seen?: boolean;
  netLast: number;
  diskLast: number;
  /** When the peer's disk slot was last read successfully (changed or not). */
  diskReadAt: number;
  net?: NetworkInfo;
  diskMark?: string;
  /** The slot's last text that did not open, and since when its changes are seen (sticky). */
  unverifiedText?: string;
  unauthenticatedSince?: number;
  deadSince?: number;
  suspectSince?: number;
}

export class Membership {
  private readonly peers = new Map<string, Observation>();

  constructor(
    peerIds: string[],
    private readonly timing: { heartbeatInterval: number; deadAfter: number },
    private readonly now: () => number,
    private readonly networkOnly = false,
  ) {
    const t = now();
    for (const id of peerIds) this.peers.set(id, { netLast: t, diskLast: t, diskReadAt: t });
  }

  /** A valid (signed, fresh) network heartbeat from `id`. */
  noteNetwork(id: string, info: NetworkInfo): void {
    const o = this.peers.get(id);
    if (!o) return;
    o.netLast = this.now();
    o.net = info;
    o.seen = true;
    if (this.networkOnly) o.diskLast = o.diskReadAt = o.netLast; // no disk: the network beat is all there is
  }

  /**
   * `id`'s disk heartbeat slot was read at `readAt` (this clock; default now) and held `mark`
   * (undefined: no valid beat in it). Only a change counts as a beat, dated from when the read
   * began: a read that completes after a stall must not make an old beat look fresh.
   */
  noteDisk(id: string, mark: { boot: number; counter: number } | undefined, readAt = this.now(), unverifiedText?: string): void {
    const o = this.peers.get(id);
    if (!o) return;
    o.diskReadAt = Math.max(o.diskReadAt, readAt);
    if (!mark) {
      // a slot that does not open: evidence of life only when it changes between two reads
      if (unverifiedText !== undefined) {
        if (o.unverifiedText !== undefined && unverifiedText !== o.unverifiedText) o.unauthenticatedSince ??= readAt;
        o.unverifiedText = unverifiedText;
      }
      return;
    }
    o.unverifiedText = undefined;
    o.unauthenticatedSince = undefined; // it opens with our secret now
    const key = diskMarkKey(mark);
    if (key !== o.diskMark) {
      if (o.diskMark !== undefined) o.seen = true;
      o.diskMark = key;
      o.diskLast = Math.max(o.diskLast, readAt);
    }
  }

  /** Whether `id` has beaten (network heartbeat, or a change of its disk slot) since this view began. */
  seen(id: string): boolean {
    return this.peers.get(id)?.seen === true;
  }

  /** The last disk beat seen from `id` ("boot:counter"), to check it again right before a takeover. */
  diskMark(id: string): string | undefined {
    return this.peers.get(id)?.diskMark;
  }

  status(id: string): PeerStatus {
    const o = this.peers.get(id);
    if (!o) throw new Error(`unknown peer ${id}`);
    const now = this.now();
    const { heartbeatInterval } = this.timing;
    const deadAfter = o.seen ? this.timing.deadAfter : NEVER_SEEN_FACTOR * this.timing.deadAfter;
    const netAge = now - o.netLast;
    const diskAge = now - o.diskLast;
    const saysFenced = netAge < deadAfter && o.net?.state === 'fenced';
    const diskKnown = this.networkOnly || now - o.diskReadAt <= 4 * heartbeatInterval;
    if (o.unauthenticatedSince !== undefined) {
      o.deadSince = undefined;
      return { type: 'unauthenticated', since: o.unauthenticatedSince };
    }
    if (diskAge >= deadAfter && diskKnown && (netAge >= deadAfter || saysFenced)) {
      o.deadSince ??= now;
      return { type: 'dead', since: o.deadSince };
    }
    o.deadSince = undefined;
    if (saysFenced) return { type: 'fenced' };
    if (netAge > 3 * heartbeatInterval || diskAge > 3 * heartbeatInterval) {
      o.suspectSince ??= now;
      return { type: 'suspect', since: o.suspectSince };
    }
    o.suspectSince = undefined;
    if (o.net?.state === 'draining') return { type: 'draining' };
    return { type: 'alive' };
  }

  /** Alive enough to take work: not dead, not fenced (an unauthenticated peer counts as live: it may be delivering). */
  isLive(id: string): boolean {
    const s = this.status(id).type;
    return s !== 'dead' && s !== 'fenced';
  }

  /** Live, authenticated and not on its way out: may be chosen to take a spool over. */
  canTakeOver(id: string): boolean {
    return this.isLive(id) && this.status(id).type !== 'unauthenticated' && this.peers.get(id)?.net?.state !== 'stopping';
  }

  /** Both heartbeats fresh and the peer not fenced: it may have its spool back. */
  isBack(id: string): boolean {
    const s = this.status(id).type;
    const state = this.peers.get(id)?.net?.state;
    return (s === 'alive' || s === 'draining') && state !== 'stopping' && state !== 'starting';
  }

  view(): PeerView[] {
    const now = this.now();
    return [...this.peers].map(([id, o]) => ({
      id,
      status: this.status(id),
      netAgeMs: Math.round(now - o.netLast),
      diskAgeMs: Math.round(now - o.diskLast),
      ...(o.net ? { announced: o.net } : {}),
    }));
  }
}

export function diskMarkKey(mark: { boot: number; counter: number }): string {
  return `${mark.boot}:${mark.counter}`;
}
