/**
 * replication/replica.ts — one node's part in replicated storage (cluster.storage: replicated),
 * built from the replication modules: the copy of its own spool at its shadow holder (a
 * ShadowClient, as the spool's SpoolReplica) and the copies it holds for other nodes (a
 * ShadowStore served by a ShadowHolder on its cluster.nodes[].replication address).
 *
 * Who holds whose copies: placement.ts.
 *
 * As the spool's replica: every committed message is copied before the commit resolves (so
 * before the 250); without a copy, cluster.replication.on_holder_unreachable decides: `refuse`
 * throws 451 4.4.0 for a message received over SMTP (the spool takes the commit back), `accept`
 * keeps it as unprotected (counted; copied when the holder is back). Status records and
 * removals go to the holder as discard notices (batched).
 *
 * reconcile(spool): before this node delivers from its own spool (at start, and when a peer
 * hands it back after a takeover), ask the holder what it knows: recipients a secondary
 * delivered meanwhile are recorded in the local queue files, messages it finished are removed,
 * and messages the holder does not have are copied to it (re-protection after a restart, or a
 * new holder disk). A new spool identity (this node's disk was replaced) leaves the old copies
 * to the holder, which delivers them itself (`onRetired`).
 */
import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { TandemConfig } from '../../config/schema.ts';
import { SmtpReplyError } from '../../util/errors.ts';
import type { Spool, SpoolReplica } from '../../spool/spool.ts';
import type { RecipientStatus } from '../../spool/types.ts';
import { ShadowClient, type ClientState } from './client.ts';
import type { DiscardNotice } from './protocol.ts';
import { ShadowHolder } from './holder.ts';
import { ShadowStore } from './shadow-store.ts';
import { spoolIdentity } from './identity.ts';
import { holdersOf, originsOf, shadowRoot } from './placement.ts';

function percentile(sorted: number[], p: number): number | undefined {
  if (!sorted.length) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/**
 * cluster.replication.tls for node `me`, read and checked: the files exist, key and certificate
 * go together, the certificate names the node (CN) and was issued by the cluster CA. Throws a
 * message that says which file and what is wrong (start-up and `tandem config check`).
 */
export async function replicationTls(config: TandemConfig, me: string): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const t = config.cluster!.replication!.tls;
  // one shared config for every node: "{node}" in a file name stands for this node's id
  const own = (file: string) => file.replaceAll('{node}', me);
  const read = async (what: string, file: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new Error(`cluster.replication.tls.${what}: cannot read ${file}: ${(err as Error).message}`);
    }
  };
  const tls = { ca: await read('ca', t.ca), cert: await read('cert', own(t.cert)), key: await read('key', own(t.key)) };
  try {
    createSecureContext(tls);
  } catch (err) {
    throw new Error(`cluster.replication.tls: ${own(t.cert)} and ${own(t.key)} do not go together (or are not PEM): ${(err as Error).message}`);
  }
  const cert = new X509Certificate(tls.cert);
  if (!/(^|\n)CN=([^\n]*)/.test(cert.subject) || /(^|\n)CN=([^\n]*)/.exec(cert.subject)![2] !== me) {
    throw new Error(`cluster.replication.tls.cert: ${own(t.cert)} is for "${cert.subject.replace(/\n/g, ', ')}", not node ${me}: its CN must be the node id (peers check it)`);
  }
  if (!cert.checkIssued(new X509Certificate(tls.ca))) throw new Error(`cluster.replication.tls.cert: ${own(t.cert)} was not issued by the cluster CA ${t.ca}`);
  return tls;
}

/**
 * A connection to `holder` for `origin`'s copies (this node's own, or — from a secondary — the
 * copies of the origin whose queue it delivers, to tell the other holders what it delivered).
 */
export function shadowClient(config: TandemConfig, o: { origin: string; spoolId: string; holder: string; tls: { ca: Buffer; cert: Buffer; key: Buffer }; logger: Logger }): ShadowClient {
  const r = config.cluster!.replication!;
  const target = config.cluster!.nodes.find((n) => n.id === o.holder)!.replication!;
  let lastErrorLog = 0;
  return new ShadowClient({
    origin: o.origin, spoolId: o.spoolId, holder: { nodeId: o.holder, ...target }, tls: o.tls,
    policy: 'accept-unprotected', // the refuse policy is carried out by Replica, where the message's source is known
    maxInFlight: r.max_in_flight, ackTimeoutMs: r.ack_timeout, discardIntervalMs: r.discard_interval,
    onError: (err) => {
      if (Date.now() - lastErrorLog < 10_000) return;
      lastErrorLog = Date.now();
      o.logger.warn({ event: 'shadow-connection-error', holder: o.holder, err: err.message }, `connection to shadow holder ${o.holder}: ${err.message}`);
    },
  });
}

/** Unprotected messages are looked at this often (besides at every reconnection). */
const REPROTECT_EVERY_MS = 1000;

export type ReconcileResult = { updated: number; removed: number; copied: number; pruned: number; identity: 'current' | 'new' };

export interface HolderStatus {
  id: string;
  connection: ClientState;
  /** Messages accepted without their copy at this holder (policy accept), not yet copied. */
  unprotected: number;
  pendingDiscards: number;
}

export interface ReplicaStatus {
  /** The first (local) holder; `holders` has each one. */
  holder: string;
  /** `up` only while every holder is up; else the first holder's state that is not. */
  connection: ClientState;
  /** Messages missing a copy at some holder (at the holder missing most), not yet copied. */
  unprotected: number;
  pendingDiscards: number;
  discardLagMs: { p50?: number; p99?: number };
  copied: number;
  copyFailures: number;
  holders: HolderStatus[];
  /** Origins whose copies this node keeps, with the number of copies held (current identity). */
  holding: Record<string, number>;
  refusals: number;
}

/**
 * What a spool's replica tells the holders of its copies as the spool changes: each recipient's
 * outcome, a message removed, a message held or released — the same discard notice to each.
 */
abstract class HolderNotices implements SpoolReplica {
  protected abstract readonly clients: readonly ShadowClient[];

  abstract committed(queueId: string, path: string, bytes: Buffer | undefined, refusable: boolean): Promise<void>;

  protected notify(notice: DiscardNotice): void {
    for (const c of this.clients) c.discard([notice]);
  }

  statuses(queueId: string, records: RecipientStatus[]): void {
    this.notify({ queueId, statuses: records });
  }

  removed(queueId: string): void {
    this.notify({ queueId, finished: true });
  }

  held(queueId: string, held: boolean): void {
    this.notify({ queueId, hold: held });
  }
}

/** One holder of our copies: the connection to it and its re-protection run. */
interface Link {
  id: string;
  client: ShadowClient;
  reprotecting?: Promise<unknown>;
}

export class Replica extends HolderNotices {
  #spool?: Spool;
  readonly #reprotectTimer: NodeJS.Timeout;
  readonly #links: Link[];
  protected readonly clients: ShadowClient[];
  readonly refusePolicy: boolean;

  private constructor(
    readonly me: string,
    readonly spoolId: string,
    clients: Array<{ id: string; client: ShadowClient }>,
    readonly store: ShadowStore,
    readonly holder: ShadowHolder,
    private readonly logger: Logger,
    policy: 'refuse' | 'accept',
  ) {
    super();
    this.refusePolicy = policy === 'refuse';
    this.#links = clients.map((c) => ({ ...c }));
    this.clients = clients.map((c) => c.client);
    this.#reprotectTimer = setInterval(() => this.#links.forEach((l) => this.#reprotect(l)), REPROTECT_EVERY_MS);
    this.#reprotectTimer.unref();
    for (const link of this.#links) {
      let saidDown = false; // once per outage, not at every reconnection attempt
      link.client.on('state', (s: ClientState) => {
        if (s === 'up') {
          saidDown = false;
          logger.info({ event: 'shadow-holder-up', holder: link.id }, `shadow holder ${link.id} reachable: copies protected`);
          this.#reprotect(link);
        } else if (s === 'down' && !saidDown) {
          saidDown = true;
          logger.warn({ event: 'shadow-holder-down', holder: link.id }, `shadow holder ${link.id} unreachable: ${this.refusePolicy ? 'refusing mail (451 4.4.0)' : `accepting mail without its copy there (unprotected)`} until it is back`);
        }
      });
    }
  }

  /** The holders of our copies, in takeover order (placement.ts). */
  get holderIds(): string[] {
    return this.#links.map((l) => l.id);
  }

  /** Start the holder's server and the connections to our own holders. */
  static async start(config: TandemConfig, spoolDir: string, logger: Logger): Promise<Replica> {
    const c = config.cluster!;
    const r = c.replication!;
    const me = config.node.id;
    const tls = await replicationTls(config, me);
    const spoolId = await spoolIdentity(spoolDir);
    const store = await ShadowStore.open(shadowRoot(config));
    const self = c.nodes.find((n) => n.id === me)!;
    const listen = self.replication!;
    const origins = originsOf(c.nodes, me, r.remote_copy);
    const holder = await ShadowHolder.start({
      store, tls, origins, host: listen.host, port: listen.port,
      // a co-holder's secondary tells us what it delivered of the origin's copies
      coHolders: (origin) => holdersOf(c.nodes, origin, r.remote_copy).filter((h) => h !== me),
      maxCopyBytes: config.smtp.max_message_size + 16 * 1024 * 1024,
      onRefusal: (reason, detail, peer) => logger.warn({ event: 'replication-refused', reason, peer, detail }, `replication port: refused ${reason} from ${peer ?? '?'}: ${detail}`),
    });
    const clients = holdersOf(c.nodes, me, r.remote_copy).map((id) => ({
      id,
      client: shadowClient(config, { origin: me, spoolId, holder: id, tls, logger }),
    }));
    return new Replica(me, spoolId, clients, store, holder, logger, r.on_holder_unreachable);
  }

  /** The spool this replica copies (set once it is open: the spool takes the replica as an option). */
  attach(spool: Spool): void {
    this.#spool = spool;
  }

  async committed(queueId: string, path: string, bytes: Buffer | undefined, refusable: boolean): Promise<void> {
    const body = bytes ?? await readFile(path);
    const outcomes = await Promise.all(this.#links.map(async (l) => ({ id: l.id, ...(await l.client.copy(queueId, body)) })));
    const missing = outcomes.filter((o) => !o.protected).map((o) => o.id);
    if (!missing.length) return;
    if (this.refusePolicy && refusable) {
      // every holder: in case only an ack was lost; also takes it off the unprotected lists
      this.notify({ queueId, finished: true });
      throw new SmtpReplyError(451, '4.4.0', `Message could not be made redundant (shadow holder ${missing.join(', ')} unreachable); try again later`);
    }
  }

  /** The queue file's current bytes, or undefined when it is gone (read under the message's lock: a move meanwhile is not taken for "gone"). */
  #read(queueId: string): Promise<Buffer | undefined> {
    return this.#spool ? this.#spool.readRaw(queueId) : Promise.resolve(undefined);
  }

  /**
   * Copy the messages unprotected at this holder while it is up. Messages that became
   * unprotected while a run was under way (accepted in the moment the connection came up) are
   * taken by the next run, started when one ends and at every REPROTECT_EVERY_MS tick.
   */
  #reprotect(link: Link): void {
    const { client } = link;
    if (link.reprotecting || client.unprotectedCount === 0 || client.state !== 'up') return;
    link.reprotecting = client.reprotect((id) => this.#read(id)).then((counts) => {
      if (counts.protected || counts.failed) this.logger.info({ event: 'reprotected', holder: link.id, ...counts }, `re-protection: ${counts.protected} message(s) copied to ${link.id}, ${counts.failed} still unprotected`);
    }, (err) => {
      this.logger.warn({ event: 'reprotect-failed', holder: link.id, err: String(err) }, `re-protection at ${link.id} failed: ${err}; trying again`);
    }).finally(() => {
      link.reprotecting = undefined;
      if (client.unprotectedCount > 0 && client.state === 'up') setTimeout(() => this.#reprotect(link), 50).unref();
    });
  }

  /**
   * Before delivering from our own spool: apply what each holder knows (see the header), one
   * holder after the other in takeover order, so that what the first one's secondary delivered
   * is in the spool before the next one is asked (which then drops those copies as stale). A
   * holder that cannot be reached is reported in its entry; the others are still asked.
   */
  async reconcile(): Promise<Array<{ holder: string; result?: ReconcileResult; error?: string }>> {
    const out: Array<{ holder: string; result?: ReconcileResult; error?: string }> = [];
    for (const l of this.#links) {
      try {
        out.push({ holder: l.id, result: await this.#reconcileWith(l.client) });
      } catch (err) {
        out.push({ holder: l.id, error: String((err as Error)?.message ?? err) });
      }
    }
    return out;
  }

  async #reconcileWith(client: ShadowClient): Promise<ReconcileResult> {
    const spool = this.#spool!;
    const all = await spool.list();
    const answer = await client.reconcile(all.map((e) => e.queueId)); // corrupt ones too: their copies are kept
    const finished = new Set(answer.finished);
    const result = { updated: 0, removed: 0, copied: 0, pruned: answer.pruned ?? 0, identity: answer.identity };
    for (const e of all.filter((x) => x.state !== 'corrupt')) {
      const state = await spool.find(e.queueId);
      if (!state || state === 'corrupt') continue;
      if (finished.has(e.queueId)) {
        await spool.remove(e.queueId, state);
        result.removed++;
        continue;
      }
      const held = answer.held[e.queueId];
      if (!held) {
        // never copied (accepted unprotected before a restart), or a new holder disk: copy it now
        const bytes = await this.#read(e.queueId);
        if (bytes && (await client.copy(e.queueId, bytes)).protected) result.copied++;
        continue;
      }
      const info = await spool.readInfo(e.queueId, state);
      const done = new Set(info.statuses.map((s) => s.index));
      const missing = held.filter((s) => !done.has(s.index));
      if (!missing.length) continue;
      if (info.envelope.recipients.every((_, i) => done.has(i) || missing.some((s) => s.index === i))) {
        await spool.remove(e.queueId, state);
        result.removed++;
      } else {
        await spool.appendStatus(e.queueId, state, missing);
        result.updated++;
      }
    }
    return result;
  }

  status(holding: Record<string, number> = {}): ReplicaStatus {
    const clients = this.#links.map((l) => l.client);
    const lags = clients.flatMap((c) => [...c.stats.discardLagMs]).sort((a, b) => a - b);
    const holders = this.#links.map((l) => ({ id: l.id, connection: l.client.state, unprotected: l.client.unprotectedCount, pendingDiscards: l.client.pendingDiscards }));
    return {
      holder: holders[0].id,
      connection: holders.find((h) => h.connection !== 'up')?.connection ?? 'up',
      unprotected: Math.max(...holders.map((h) => h.unprotected)),
      pendingDiscards: Math.max(...holders.map((h) => h.pendingDiscards)),
      discardLagMs: { p50: percentile(lags, 0.5), p99: percentile(lags, 0.99) },
      copied: clients.reduce((n, c) => n + c.stats.copied, 0),
      copyFailures: clients.reduce((n, c) => n + c.stats.failed, 0),
      holders,
      holding,
      refusals: Object.values(this.holder.refusals).reduce((a, b) => a + b, 0),
    };
  }

  /** Copies held per origin (current identities). */
  async holding(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const origin of await this.store.origins()) out[origin] = await this.store.count(origin);
    return out;
  }

  /** Send the discard notices still queued, then close both sides. */
  async close(): Promise<void> {
    clearInterval(this.#reprotectTimer);
    await Promise.race([Promise.all(this.#links.map((l) => l.client.flush())), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    await Promise.all(this.#links.map((l) => l.client.close()));
    await this.holder.close();
  }
}

/**
 * A secondary's replica over an origin's copies (remote_copy: they are at two holders): what it
 * delivers is told to the origin's other holders as discard notices in the origin's name, so that
 * a later takeover there (this site lost too) does not deliver it again. Nothing is copied: a
 * secondary receives no mail.
 */
export class CoHolderNotices extends HolderNotices {
  private constructor(protected readonly clients: ShadowClient[]) {
    super();
  }

  /** For the secondary of `owner` over `origin`'s copies of spool identity `spoolId`; undefined without other holders. */
  static async start(config: TandemConfig, owner: string, origin: string, spoolId: string, logger: Logger): Promise<CoHolderNotices | undefined> {
    const r = config.cluster!.replication!;
    const others = holdersOf(config.cluster!.nodes, origin, r.remote_copy).filter((h) => h !== owner);
    if (!others.length) return undefined;
    const tls = await replicationTls(config, owner);
    return new CoHolderNotices(others.map((holder) => shadowClient(config, { origin, spoolId, holder, tls, logger })));
  }

  async committed(): Promise<void> {}

  /** Send what is queued (at most 2 s: a holder that is down gets it from the origin's reconcile later), then close. */
  async close(): Promise<void> {
    await Promise.race([Promise.all(this.clients.map((c) => c.flush())), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    await Promise.all(this.clients.map((c) => c.close()));
  }
}
