/**
 * cluster/witness/etcd-witness.ts — the etcd witness: a third party that says yes or no to a
 * takeover when there is no shared disk to prove a node dead (docs/witness.md). The cluster
 * manager uses it when cluster.witness is set.
 *
 * Keys (all under `prefix`, default "/tandem"):
 *   <prefix>/nodes/<id>    {"node","lease","startedAt"}  bound to the node's lease: present while
 *                          the node keeps its lease alive. Gone = the node is dead to the witness.
 *   <prefix>/spools/<id>   {"holder","lease"}  the takeover lock on node <id>'s spool, bound to
 *                          the holder's lease; its create revision is the fencing epoch.
 * Protocol:
 *   start()    grants a lease of ceil(leaseTtlMs / 1000) s (etcd may raise it to its minimum,
 *              1.5 × its election timeout), publishes nodes/<id> with it, and renews it every
 *              third of the TTL, each renewal sent to every member at once (first answer wins). A lease etcd says is gone (expired, revoked) is replaced by a
 *              new one and nodes/<id> published again; the takeover locks it carried are gone.
 *   acquire(s) one etcd transaction: if spools/<s> does not exist AND nodes/<s> does not exist
 *              (the owner's lease is gone), create spools/<s> with our lease. Exactly one caller
 *              wins; its epoch is the revision of that write, higher than any earlier lock's.
 *              A retry of our own successful acquire (answer lost) returns the same epoch.
 *   release(s, epoch)  deletes spools/<s> only if its create revision is still `epoch`.
 *   The holder of a lock may deliver spool <s> only while its lease is held (see LeaseStatus):
 *   when a renewal has not been confirmed for two thirds of the TTL the lease is "uncertain"
 *   (event lease-uncertain): etcd may drop it a third of a TTL later, and another node may then
 *   win the lock. The holder stops delivering the spools it took over at once.
 * The rule for the caller: without the witness's yes (acquire → acquired) no takeover ever
 * happens. With no quorum, or etcd unreachable, every call fails fast with a WitnessError (code
 * WITNESS_NO_QUORUM / WITNESS_UNREACHABLE) within (members + 1) × operationTimeoutMs (usually
 * at once: a member without a leader says so), state() says so, and
 * nothing is taken over; each node keeps delivering its own spool. etcd extends every lease when
 * a new leader is elected, so a quorum loss by itself expires nobody.
 * Fail fast: each call carries a deadline and asks for a member with a leader (gRPC metadata
 * "hasleader", as etcd's Go client WithRequireLeader), so a member without quorum answers "no
 * leader" at once instead of queuing the request; the call is tried on each member in turn.
 * When a call fails, each member is asked for its status (served without a leader) to tell "no
 * quorum" (some member answers, but none with a leader served the call in time) from
 * "unreachable" (none answers).
 * What can go wrong: a wrong endpoint list (state unreachable, and every call says which
 * endpoints); clocks do not matter (leases are timed by etcd, validity by our monotonic clock,
 * measured from when the renewal was sent).
 * Config keys: cluster.witness.etcd.* and cluster.dead_after (the lease TTL), through the
 * cluster manager.
 */
import { performance } from 'node:perf_hooks';
import { TandemError } from '../../util/errors.ts';
import { InterceptingCall, type Interceptor } from '@grpc/grpc-js';
import { handleWhen, noop, retry } from 'cockatiel';
import { castGrpcError, Etcd3, isRecoverableError, type IKeyValue, type ITxnResponse } from 'etcd3';

export interface EtcdWitnessOptions {
  /** etcd client URLs, e.g. ["http://10.0.0.1:2379", …]: every member. */
  endpoints: string[];
  /** This node's id (the name of its spool). */
  nodeId: string;
  /** Lease TTL; the node is dead to the witness this long after its last renewal. Use cluster.dead_after. */
  leaseTtlMs: number;
  /** Bound on one attempt of an etcd call on one member (default 1000 ms); a call tries each member once. */
  operationTimeoutMs?: number;
  /** Key prefix (default "/tandem"): one cluster per prefix. */
  prefix?: string;
  /** Called for every event (state changes, lease changes): logs and metrics hang here. */
  onEvent?: (event: WitnessEvent) => void;
}

export type WitnessErrorCode =
  | 'WITNESS_NO_QUORUM' // members answer, none has a leader (or a leader that did not answer in time)
  | 'WITNESS_UNREACHABLE' // no member answers
  | 'WITNESS_NO_LEASE' // our lease is not known to be held: we may not take anything
  | 'WITNESS_STOPPED' // start() not called, or stop() was
  | 'WITNESS_FAILED'; // etcd answered with an error that is none of the above

/** A witness call that could not be answered; `code` is stable (metrics, logs, replies). */
export class WitnessError extends TandemError {
  constructor(readonly code: WitnessErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WitnessError';
  }
}

/** The witness's connection to etcd as last seen. */
export type WitnessState =
  | { type: 'stopped' }
  | { type: 'starting' }
  | { type: 'ok'; since: number }
  | { type: 'no-quorum'; since: number; detail: string }
  | { type: 'unreachable'; since: number; detail: string };

/** This node's lease. validUntil is on the performance.now() clock. */
export type LeaseStatus =
  | { type: 'none' }
  | { type: 'held'; id: string; ttlMs: number; validUntil: number }
  | { type: 'uncertain'; id: string; ttlMs: number; since: number };

export type AcquireResult =
  | { type: 'acquired'; epoch: number }
  | { type: 'held'; holder: string; epoch: number }
  | { type: 'owner-alive' };

export interface SpoolHolder {
  holder: string;
  epoch: number;
}

export type WitnessEvent =
  | { type: 'state'; state: WitnessState; previous: WitnessState['type'] }
  | { type: 'lease-granted'; leaseId: string; ttlMs: number }
  | { type: 'lease-uncertain'; leaseId: string; spools: string[] }
  | { type: 'lease-confirmed'; leaseId: string }
  | { type: 'lease-lost'; leaseId: string; spools: string[] };

/** gRPC metadata that makes a member without a leader refuse at once ("etcdserver: no leader"). */
const requireLeader: Interceptor = (options, nextCall) => new InterceptingCall(nextCall(options), {
  start(metadata, listener, next) {
    metadata.set('hasleader', 'true');
    next(metadata, listener);
  },
});

/** Pause after a failed renewal before the next try (the members may be in an election). */
const RETRY_AFTER_FAILURE_MS = 100;

export class EtcdWitness {
  private readonly client: Etcd3;
  /** One client per member, for status probes. */
  private readonly memberClients: Etcd3[];
  /** One client per member asking for a leader, for lease renewals sent to every member at once. */
  private readonly renewClients: Etcd3[];
  private readonly prefix: string;
  private readonly opTimeoutMs: number;
  private current: WitnessState = { type: 'stopped' };
  private lease: LeaseStatus = { type: 'none' };
  /** Takeover locks we hold: spool → epoch. */
  private readonly held = new Map<string, number>();
  private renewTimer: NodeJS.Timeout | undefined;
  private uncertainTimer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly opts: EtcdWitnessOptions) {
    if (opts.endpoints.length === 0) throw new Error('etcd witness: no endpoints');
    this.prefix = (opts.prefix ?? '/tandem').replace(/\/+$/, '');
    this.opTimeoutMs = opts.operationTimeoutMs ?? 1000;
    const make = (hosts: string[], interceptors: Interceptor[]) => new Etcd3({
      hosts,
      // A deadline per attempt (a call tries each member in turn): a member that hangs (it still
      // believes in a leader that is gone) costs one timeout, not the whole call.
      defaultCallOptions: (ctx) => ({ interceptors, ...(ctx.isStream ? {} : { deadline: Date.now() + this.opTimeoutMs }) }),
      // No circuit breaker (a member back is used at once); each call tries every member once.
      faultHandling: { host: () => noop, global: retry(handleWhen(isRecoverableError), { maxAttempts: hosts.length - 1 }) },
    });
    this.client = make(opts.endpoints, [requireLeader]);
    // Status probes must be answered without a leader: no requireLeader there.
    this.memberClients = opts.endpoints.map((e) => make([e], []));
    this.renewClients = opts.endpoints.map((e) => make([e], [requireLeader]));
  }

  /** Grants and publishes our lease (first attempt awaited; retried in the background until stop()). */
  async start(): Promise<WitnessState> {
    if (this.running) return this.current;
    this.running = true;
    this.setState({ type: 'starting' });
    await this.renew();
    return this.current;
  }

  /** Stops renewing; with revoke (default) deletes our lease and every key on it at once. */
  async stop(opts: { revoke?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.renewTimer);
    clearTimeout(this.uncertainTimer);
    const lease = this.lease;
    if ((opts.revoke ?? true) && lease.type !== 'none') {
      await this.client.leaseClient.leaseRevoke({ ID: lease.id }).catch(() => undefined);
    }
    this.lease = { type: 'none' };
    this.held.clear();
    this.client.close();
    for (const c of [...this.memberClients, ...this.renewClients]) c.close();
    this.setState({ type: 'stopped' });
  }

  state(): WitnessState {
    return this.current;
  }

  leaseStatus(): LeaseStatus {
    return this.lease;
  }

  /** Takeover locks this node holds, spool → epoch. */
  heldSpools(): ReadonlyMap<string, number> {
    return this.held;
  }

  /** Our lease is held (renewed in time): we may deliver the spools whose locks we hold. */
  leaseHeld(): boolean {
    return this.lease.type === 'held';
  }

  /** For status pages: the connection's state, our lease, the locks we hold. */
  view(): { state: WitnessState['type']; detail?: string; lease: LeaseStatus['type']; held: Record<string, number> } {
    const s = this.current;
    return { state: s.type, ...('detail' in s ? { detail: s.detail } : {}), lease: this.lease.type, held: Object.fromEntries(this.held) };
  }

  /** Whether node `id` holds a lease (its key exists). Throws WitnessError without an answer. */
  async isAlive(id: string): Promise<boolean> {
    const res = await this.call('read node', () => this.client.kv.range({ key: this.nodeKey(id) }));
    return res.kvs.length > 0;
  }

  /** The ids of every node holding a lease. */
  async liveNodes(): Promise<string[]> {
    const start = this.key('nodes/');
    const res = await this.call('list nodes', () => this.client.kv.range({ key: start, range_end: prefixEnd(start), keys_only: true }));
    return res.kvs.map((kv) => kv.key.subarray(start.length).toString()).sort();
  }

  /** Takes the takeover lock on `spool` (the id of a dead node; our own id is always owner-alive); see the header. */
  async acquire(spool: string): Promise<AcquireResult> {
    const leaseId = this.heldLeaseId('acquire');
    const lockKey = this.spoolKey(spool);
    const ownerKey = this.nodeKey(spool);
    const res: ITxnResponse = await this.call(`acquire ${spool}`, () => this.client.kv.txn({
      compare: [
        { key: lockKey, target: 'Create', result: 'Equal', create_revision: 0 },
        { key: ownerKey, target: 'Create', result: 'Equal', create_revision: 0 },
      ],
      success: [{ request_put: { key: lockKey, value: Buffer.from(JSON.stringify({ holder: this.opts.nodeId, lease: leaseId })), lease: leaseId } }],
      failure: [{ request_range: { key: lockKey } }, { request_range: { key: ownerKey } }],
    }));
    if (res.succeeded) {
      const epoch = Number(res.header.revision);
      this.held.set(spool, epoch);
      return { type: 'acquired', epoch };
    }
    const lock = res.responses[0].response_range.kvs[0];
    if (lock) {
      const h = readHolder(lock);
      // Our own earlier acquire whose answer was lost: it is ours, same lease.
      if (h.holder === this.opts.nodeId && lock.lease === leaseId) {
        this.held.set(spool, h.epoch);
        return { type: 'acquired', epoch: h.epoch };
      }
      return { type: 'held', holder: h.holder, epoch: h.epoch };
    }
    return { type: 'owner-alive' };
  }

  /** Deletes our lock on `spool` if it is still the one taken at `epoch`; false if it was not. */
  async release(spool: string, epoch: number): Promise<boolean> {
    const lockKey = this.spoolKey(spool);
    const res = await this.call(`release ${spool}`, () => this.client.kv.txn({
      compare: [{ key: lockKey, target: 'Create', result: 'Equal', create_revision: epoch }],
      success: [{ request_delete_range: { key: lockKey } }],
      failure: [],
    }));
    if (this.held.get(spool) === epoch) this.held.delete(spool);
    return res.succeeded;
  }

  /** Who holds the takeover lock on `spool`, if anyone. */
  async holder(spool: string): Promise<SpoolHolder | undefined> {
    const res = await this.call(`read lock ${spool}`, () => this.client.kv.range({ key: this.spoolKey(spool) }));
    const kv = res.kvs[0];
    return kv ? readHolder(kv) : undefined;
  }

  // --- lease upkeep ---

  /** One renewal (or grant + publish when we have no lease), then schedules the next. */
  private async renew(): Promise<void> {
    if (!this.running) return;
    let next = RETRY_AFTER_FAILURE_MS;
    try {
      const granting = this.lease.type === 'none';
      if (granting) await this.grantAndPublish();
      const lease = this.lease;
      if (granting && lease.type === 'held') {
        next = this.renewIntervalMs();
      } else if (lease.type !== 'none') {
        // A renewal (or, when granting and publishing took so long that the lease is already
        // uncertain, a renewal right away).
        const sentAt = performance.now();
        const ttlS = await this.call('renew lease', () => this.keepAliveOnce(lease.id));
        if (ttlS <= 0) {
          this.leaseGone(lease.id);
          next = 0;
        } else {
          this.leaseRenewed(lease.id, ttlS * 1000, sentAt);
          next = this.renewIntervalMs();
        }
      }
    } catch (err) {
      if (!(err instanceof WitnessError)) throw err;
    }
    if (this.running) this.renewTimer = setTimeout(() => void this.renew(), next);
  }

  private renewIntervalMs(): number {
    return this.lease.type === 'none' ? RETRY_AFTER_FAILURE_MS : this.lease.ttlMs / 3;
  }

  private async grantAndPublish(): Promise<void> {
    const sentAt = performance.now();
    const grant = await this.call('grant lease', () => this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(this.opts.leaseTtlMs / 1000)) }));
    const ttlMs = Number(grant.TTL) * 1000;
    this.lease = { type: 'held', id: grant.ID, ttlMs, validUntil: sentAt + ttlMs };
    this.armUncertainTimer();
    try {
      await this.call('publish node', () => this.client.kv.put({
        key: this.nodeKey(this.opts.nodeId),
        value: Buffer.from(JSON.stringify({ node: this.opts.nodeId, lease: grant.ID, startedAt: this.startedAt })),
        lease: grant.ID,
      }));
    } catch (err) {
      // Not published: drop the lease (best effort) and start over on the next round.
      this.lease = { type: 'none' };
      clearTimeout(this.uncertainTimer);
      void this.client.leaseClient.leaseRevoke({ ID: grant.ID }).catch(() => undefined);
      throw err;
    }
    this.emit({ type: 'lease-granted', leaseId: grant.ID, ttlMs });
  }

  /**
   * Sends one keepalive to every member at once; resolves with the first TTL one with a leader
   * answers (0 = gone). One member at a time would not do: during a cut between sites a node
   * may see one member hang until the deadline and another without a leader, so renewals tried
   * in turn missed the lease's lifetime (etcd then dropped it and the other site took the queue
   * over while its node was alive). When every member fails, the error of the most telling one
   * is thrown ("lease not found" first).
   */
  private async keepAliveOnce(id: string): Promise<number> {
    try {
      return await Promise.any(this.renewClients.map((c) => this.keepAliveOn(c, id)));
    } catch (err) {
      const errors = err instanceof AggregateError ? (err.errors as Error[]) : [err as Error];
      throw errors.find((e) => /requested lease not found/.test(String(e?.message))) ?? errors[0];
    }
  }

  private async keepAliveOn(client: Etcd3, id: string): Promise<number> {
    const stream = await client.leaseClient.leaseKeepAlive({ deadline: Date.now() + this.opTimeoutMs });
    try {
      return await new Promise<number>((resolve, reject) => {
        stream.on('data', (res: { TTL: string }) => resolve(Number(res.TTL)));
        stream.on('error', reject);
        stream.on('end', () => reject(new Error('keepalive stream ended without an answer')));
        stream.write({ ID: id });
      });
    } finally {
      stream.end();
    }
  }

  private leaseRenewed(id: string, ttlMs: number, sentAt: number): void {
    const was = this.lease;
    if (was.type === 'none' || was.id !== id) return;
    this.lease = { type: 'held', id, ttlMs, validUntil: sentAt + ttlMs };
    this.armUncertainTimer();
    if (was.type === 'uncertain') this.emit({ type: 'lease-confirmed', leaseId: id });
  }

  /** Uncertain once a third of the TTL is all that may be left of it. */
  private armUncertainTimer(): void {
    clearTimeout(this.uncertainTimer);
    const lease = this.lease;
    if (lease.type !== 'held') return;
    const at = lease.validUntil - lease.ttlMs / 3;
    this.uncertainTimer = setTimeout(() => {
      if (this.lease.type !== 'held' || this.lease.id !== lease.id) return;
      this.lease = { type: 'uncertain', id: lease.id, ttlMs: lease.ttlMs, since: Date.now() };
      this.emit({ type: 'lease-uncertain', leaseId: lease.id, spools: [...this.held.keys()] });
    }, Math.max(0, at - performance.now()));
  }

  /** etcd says the lease is gone: so are our node key and every lock on it. */
  private leaseGone(id: string): void {
    clearTimeout(this.uncertainTimer);
    const spools = [...this.held.keys()];
    this.held.clear();
    this.lease = { type: 'none' };
    this.emit({ type: 'lease-lost', leaseId: id, spools });
  }

  private heldLeaseId(what: string): string {
    if (!this.running) throw new WitnessError('WITNESS_STOPPED', `etcd witness: cannot ${what}: the witness is not running`);
    const lease = this.lease;
    if (lease.type !== 'held') {
      throw new WitnessError('WITNESS_NO_LEASE', `etcd witness: cannot ${what}: this node's lease is ${lease.type === 'none' ? 'not granted' : 'uncertain (not renewed in time)'}; state ${this.current.type}`);
    }
    return lease.id;
  }

  // --- calls, errors, state ---

  /** Runs one etcd call; on failure classifies it (probe), updates state() and throws a WitnessError. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (!this.running) throw new WitnessError('WITNESS_STOPPED', `etcd witness: cannot ${what}: the witness is not running`);
    try {
      const v = await fn();
      if (this.current.type !== 'ok') this.setState({ type: 'ok', since: Date.now() });
      return v;
    } catch (err) {
      if (err instanceof WitnessError) throw err;
      if (!this.running) throw new WitnessError('WITNESS_STOPPED', `etcd witness: ${what}: stopped meanwhile`, { cause: err });
      if (/requested lease not found/.test((err as Error).message) && this.lease.type !== 'none') {
        this.leaseGone(this.lease.id);
        throw new WitnessError('WITNESS_NO_LEASE', `etcd witness: cannot ${what}: etcd says this node's lease is gone (a new one is being granted)`, { cause: err });
      }
      const detail = `${what}: ${describe(err)}`;
      if (await this.probe() === 'unreachable') {
        this.setState({ type: 'unreachable', since: this.sinceFor('unreachable'), detail });
        throw new WitnessError('WITNESS_UNREACHABLE', `etcd witness unreachable — no member of ${this.opts.endpoints.join(', ')} answers (${detail}); no takeover until it is back`, { cause: err });
      }
      if (isRecoverableError(castGrpcError(err as Error))) {
        // Members answer, but the call found no leader to serve it in time.
        this.setState({ type: 'no-quorum', since: this.sinceFor('no-quorum'), detail });
        throw new WitnessError('WITNESS_NO_QUORUM', `etcd witness has no quorum — members answer but none with a leader served the call (${detail}); no takeover until the quorum is back`, { cause: err });
      }
      throw new WitnessError('WITNESS_FAILED', `etcd witness: ${detail}`, { cause: err });
    }
  }

  /** Asks every member for its status (which needs no leader): does any answer? */
  private async probe(): Promise<'reachable' | 'unreachable'> {
    const answers = await Promise.all(this.memberClients.map((c) =>
      c.maintenance.status().then(() => true, () => false)));
    return answers.includes(true) ? 'reachable' : 'unreachable';
  }

  /** Keeps `since` while the state stays the same kind. */
  private sinceFor(type: 'no-quorum' | 'unreachable'): number {
    return this.current.type === type ? this.current.since : Date.now();
  }

  private setState(state: WitnessState): void {
    const previous = this.current.type;
    this.current = state;
    if (previous !== state.type) this.emit({ type: 'state', state, previous });
  }

  private emit(event: WitnessEvent): void {
    this.opts.onEvent?.(event);
  }

  private key(rel: string): Buffer {
    return Buffer.from(`${this.prefix}/${rel}`);
  }

  private nodeKey(id: string): Buffer {
    return this.key(`nodes/${id}`);
  }

  private spoolKey(id: string): Buffer {
    return this.key(`spools/${id}`);
  }
}

/** The end of the key range holding every key that starts with `start`. */
function prefixEnd(start: Buffer): Buffer {
  const end = Buffer.from(start);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function readHolder(kv: IKeyValue): SpoolHolder {
  let holder = '?';
  try {
    const v = JSON.parse(kv.value.toString()) as { holder?: unknown };
    if (typeof v.holder === 'string') holder = v.holder;
  } catch {
    holder = '?';
  }
  return { holder, epoch: Number(kv.create_revision) };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
