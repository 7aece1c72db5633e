/**
 * cluster/membership.ts — one node's view of its peers, from their network heartbeats and their
 * disk heartbeats, on this node's own monotonic clock.
 *
 * Exports: Membership, PeerStatus, AnnouncedState, PeerView.
 * Rules (docs/ha.md "Failure detection"):
 *   dead     — the disk heartbeat has not changed for dead_after, and the network heartbeat has
 *              been silent as long too, or says the peer fenced itself. A network partition
 *              alone (disk heartbeat still moving) never makes a peer dead.
 *   fenced   — the peer says so over the network (its disk heartbeat may still be moving briefly).
 *   suspect  — one of the two has been silent for more than three heartbeat intervals.
 *   draining — the peer says so (it accepts no new mail, still delivers).
 *   alive    — otherwise.
 * Every peer starts with a grace period of dead_after from the moment this view is created,
 * so a node that starts next to a dead peer declares it dead after dead_after, not at once.
 * Pure logic with an injected clock: no timers, no I/O.
 */

/** What a node says about itself in its heartbeats. */
export type AnnouncedState = 'starting' | 'ready' | 'draining' | 'fenced' | 'returning' | 'stopping';

export type PeerStatus =
  | { type: 'alive' }
  | { type: 'draining' }
  | { type: 'suspect'; since: number }
  | { type: 'fenced' }
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

interface Observation {
  netLast: number;
  diskLast: number;
  net?: NetworkInfo;
  diskMark?: string;
  deadSince?: number;
  suspectSince?: number;
}

export class Membership {
  private readonly peers = new Map<string, Observation>();

  constructor(
    peerIds: string[],
    private readonly timing: { heartbeatInterval: number; deadAfter: number },
    private readonly now: () => number,
  ) {
    const t = now();
    for (const id of peerIds) this.peers.set(id, { netLast: t, diskLast: t });
  }

  /** A valid (signed, fresh) network heartbeat from `id`. */
  noteNetwork(id: string, info: NetworkInfo): void {
    const o = this.peers.get(id);
    if (!o) return;
    o.netLast = this.now();
    o.net = info;
  }

  /** What `id`'s disk heartbeat slot holds now; only a change counts as a beat. */
  noteDisk(id: string, mark: { boot: number; counter: number }): void {
    const o = this.peers.get(id);
    if (!o) return;
    const key = `${mark.boot}:${mark.counter}`;
    if (key !== o.diskMark) {
      o.diskMark = key;
      o.diskLast = this.now();
    }
  }

  status(id: string): PeerStatus {
    const o = this.peers.get(id);
    if (!o) throw new Error(`unknown peer ${id}`);
    const now = this.now();
    const { deadAfter, heartbeatInterval } = this.timing;
    const netAge = now - o.netLast;
    const diskAge = now - o.diskLast;
    const saysFenced = netAge < deadAfter && o.net?.state === 'fenced';
    if (diskAge >= deadAfter && (netAge >= deadAfter || saysFenced)) {
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

  /** Alive enough to take work: not dead, not fenced. */
  isLive(id: string): boolean {
    const s = this.status(id).type;
    return s !== 'dead' && s !== 'fenced';
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
