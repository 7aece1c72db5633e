/**
 * cluster/witness-locks.ts — the cluster manager's side of the etcd witness (cluster.witness;
 * docs/witness.md "Rules for the cluster"): the takeover locks this node holds there.
 *   - a takeover needs the spool's lock: only on `acquired` (a refusal, or an error, is logged
 *     once per reason: `takeover-refused-by-witness`);
 *   - a spool we hold may be delivered only while our lease is held and its lock still ours;
 *   - a lock is released at the handback, or later once we no longer deliver its spool (a
 *     secondary stopped because our lease was in doubt, or a release that failed). A node whose
 *     lease is in doubt keeps delivering its own spool: it cannot tell an etcd outage (nobody may
 *     take anything over, and stopping would stop all mail) from being cut off from the etcd
 *     majority and its peers (whose side may take its queue over: duplicates, never a loss);
 *   - the witness's events (state, lease in doubt, lost, confirmed) in the log.
 * Exports WitnessLocks (made at the manager's start when cluster.witness is set) and
 * logWitnessEvent.
 * What can go wrong: a witness we cannot reach grants nothing (no takeover); a lock it could not
 * release stays listed and is released at a later pass.
 * Reads config keys: none (the witness itself is made by cluster-io.ts from cluster.witness).
 */
import type { Logger } from 'pino';
import type { ClusterWitness } from './cluster-io.ts';
import type { WitnessEvent } from './witness/etcd-witness.ts';

export class WitnessLocks {
  /** Locks we took (spool → epoch), released at the handback or when we stop delivering the spool. */
  private readonly locks = new Map<string, number>();
  /** Refusals logged (spool → reason), once per change. */
  private readonly saidNo = new Map<string, string>();

  constructor(readonly client: ClusterWitness, private readonly logger: Logger) {}

  /** The witness's lock on a dead node's spool: only on `acquired` do we take it over. */
  async acquire(spool: string): Promise<boolean> {
    let no: string;
    try {
      const r = await this.client.acquire(spool);
      if (r.type === 'acquired') {
        this.locks.set(spool, r.epoch);
        this.saidNo.delete(spool);
        return true;
      }
      no = r.type === 'held' ? `${r.holder} holds its lock (epoch ${r.epoch})` : `${spool}'s lease is still alive at the witness: it is not dead (a network cut?)`;
    } catch (err) {
      no = `${(err as Error).message}`;
    }
    if (this.saidNo.get(spool) !== no) this.logger.warn({ event: 'takeover-refused-by-witness', spool, reason: no }, `not taking ${spool}'s queue over: ${no}`);
    this.saidNo.set(spool, no);
    return false;
  }

  /** Why the last takeover of `spool` was refused, if it was. */
  refusal(spool: string): string | undefined {
    return this.saidNo.get(spool);
  }

  /** A spool we hold: our right to deliver it is its lock, which lives as long as our lease. */
  mayDeliver(spool: string): boolean {
    return this.client.leaseHeld() && this.client.heldSpools().has(spool);
  }

  /** At the handback: release the spool's lock (if that fails, releaseUnneeded tries again). */
  async release(spool: string): Promise<void> {
    const lock = this.locks.get(spool);
    if (lock !== undefined && (await this.client.release(spool, lock).catch(() => false))) this.locks.delete(spool);
  }

  /** Each pass: release the locks of the spools we no longer deliver (`inUse`: still delivered, or an action on it under way). */
  async releaseUnneeded(inUse: (spool: string) => boolean): Promise<void> {
    for (const [spool, epoch] of this.locks) {
      if (inUse(spool)) continue;
      const done = await this.client.release(spool, epoch).catch(() => false);
      if (done || !this.client.heldSpools().has(spool)) this.locks.delete(spool);
    }
  }
}

/** The witness's events in the log (the manager also starts a pass at once when the lease is in doubt or lost). */
export function logWitnessEvent(logger: Logger, e: WitnessEvent): void {
  if (e.type === 'state') {
    const detail = 'detail' in e.state ? `: ${e.state.detail}` : '';
    const level = e.state.type === 'ok' || e.state.type === 'starting' || e.state.type === 'stopped' ? 'info' : 'warn';
    logger[level]({ event: 'witness-state', state: e.state.type, previous: e.previous }, `witness (etcd) ${e.previous} → ${e.state.type}${detail}${e.state.type === 'no-quorum' || e.state.type === 'unreachable' ? '; nothing is taken over until it is back' : ''}`);
  } else if (e.type === 'lease-uncertain' || e.type === 'lease-lost') {
    logger.warn({ event: `witness-${e.type}`, spools: e.spools }, `witness lease ${e.type === 'lease-lost' ? 'lost' : 'not renewed in time'}${e.spools.length ? `: stopping the secondaries over ${e.spools.join(', ')}` : ''}`);
  } else if (e.type === 'lease-confirmed') {
    logger.info({ event: 'witness-lease-confirmed' }, 'witness lease renewed again');
  }
}
