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
import { ShadowHolder } from './holder.ts';
import { ShadowStore } from './shadow-store.ts';
import { spoolIdentity } from './identity.ts';
import { holderOf, originsOf, shadowRoot } from './placement.ts';

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

/** Unprotected messages are looked at this often (besides at every reconnection). */
const REPROTECT_EVERY_MS = 1000;

export interface ReplicaStatus {
  holder: string;
  connection: ClientState;
  /** Messages accepted with one copy only (policy accept), not yet copied. */
  unprotected: number;
  pendingDiscards: number;
  discardLagMs: { p50?: number; p99?: number };
  copied: number;
  copyFailures: number;
  /** Origins whose copies this node keeps, with the number of copies held (current identity). */
  holding: Record<string, number>;
  refusals: number;
}

export class Replica implements SpoolReplica {
  #spool?: Spool;
  #reprotecting?: Promise<unknown>;
  readonly #reprotectTimer: NodeJS.Timeout;
  readonly refusePolicy: boolean;

  private constructor(
    readonly me: string,
    readonly spoolId: string,
    readonly holderId: string,
    readonly client: ShadowClient,
    readonly store: ShadowStore,
    readonly holder: ShadowHolder,
    private readonly logger: Logger,
    policy: 'refuse' | 'accept',
  ) {
    this.refusePolicy = policy === 'refuse';
    this.#reprotectTimer = setInterval(() => this.#reprotect(), REPROTECT_EVERY_MS);
    this.#reprotectTimer.unref();
    let saidDown = false; // once per outage, not at every reconnection attempt
    client.on('state', (s: ClientState) => {
      if (s === 'up') {
        saidDown = false;
        logger.info({ event: 'shadow-holder-up', holder: holderId }, `shadow holder ${holderId} reachable: copies protected`);
        this.#reprotect();
      } else if (s === 'down' && !saidDown) {
        saidDown = true;
        logger.warn({ event: 'shadow-holder-down', holder: holderId }, `shadow holder ${holderId} unreachable: ${this.refusePolicy ? 'refusing mail (451 4.4.0)' : 'accepting mail with one copy (unprotected)'} until it is back`);
      }
    });
  }

  /** Start the holder's server and the connection to our own holder. */
  static async start(config: TandemConfig, spoolDir: string, logger: Logger): Promise<Replica> {
    const c = config.cluster!;
    const r = c.replication!;
    const me = config.node.id;
    const tls = await replicationTls(config, me);
    const spoolId = await spoolIdentity(spoolDir);
    const store = await ShadowStore.open(shadowRoot(config));
    const self = c.nodes.find((n) => n.id === me)!;
    const listen = self.replication!;
    const holder = await ShadowHolder.start({
      store, tls, origins: originsOf(c.nodes, me), host: listen.host, port: listen.port,
      maxCopyBytes: config.smtp.max_message_size + 16 * 1024 * 1024,
      onRefusal: (reason, detail, peer) => logger.warn({ event: 'replication-refused', reason, peer, detail }, `replication port: refused ${reason} from ${peer ?? '?'}: ${detail}`),
    });
    const holderId = holderOf(c.nodes, me);
    const target = c.nodes.find((n) => n.id === holderId)!.replication!;
    let lastErrorLog = 0;
    const client = new ShadowClient({
      origin: me, spoolId, holder: { nodeId: holderId, ...target }, tls,
      policy: 'accept-unprotected', // the refuse policy is carried out here, where we know the message's source
      maxInFlight: r.max_in_flight, ackTimeoutMs: r.ack_timeout, discardIntervalMs: r.discard_interval,
      onError: (err) => {
        if (Date.now() - lastErrorLog < 10_000) return;
        lastErrorLog = Date.now();
        logger.warn({ event: 'shadow-connection-error', holder: holderId, err: err.message }, `connection to shadow holder ${holderId}: ${err.message}`);
      },
    });
    return new Replica(me, spoolId, holderId, client, store, holder, logger, r.on_holder_unreachable);
  }

  /** The spool this replica copies (set once it is open: the spool takes the replica as an option). */
  attach(spool: Spool): void {
    this.#spool = spool;
  }

  async committed(queueId: string, path: string, bytes: Buffer | undefined, refusable: boolean): Promise<void> {
    const outcome = await this.client.copy(queueId, bytes ?? await readFile(path));
    if (outcome.protected) return;
    if (this.refusePolicy && refusable) {
      this.client.discard([{ queueId, finished: true }]); // in case only the ack was lost; also takes it off the unprotected list
      throw new SmtpReplyError(451, '4.4.0', `Message could not be made redundant (shadow holder ${this.holderId} unreachable); try again later`);
    }
  }

  statuses(queueId: string, records: RecipientStatus[]): void {
    this.client.discard([{ queueId, statuses: records }]);
  }

  removed(queueId: string): void {
    this.client.discard([{ queueId, finished: true }]);
  }

  held(queueId: string, held: boolean): void {
    this.client.discard([{ queueId, hold: held }]);
  }

  /** The queue file's current bytes, or undefined when it is gone (read under the message's lock: a move meanwhile is not taken for "gone"). */
  #read(queueId: string): Promise<Buffer | undefined> {
    return this.#spool ? this.#spool.readRaw(queueId) : Promise.resolve(undefined);
  }

  /**
   * Copy the unprotected messages while the holder is up. Messages that became unprotected while
   * a run was under way (accepted in the moment the connection came up) are taken by the next
   * run, started when one ends and at every REPROTECT_EVERY_MS tick, not only at reconnection.
   */
  #reprotect(): void {
    if (this.#reprotecting || this.client.unprotectedCount === 0 || this.client.state !== 'up') return;
    this.#reprotecting = this.client.reprotect((id) => this.#read(id)).then((counts) => {
      if (counts.protected || counts.failed) this.logger.info({ event: 'reprotected', ...counts }, `re-protection: ${counts.protected} message(s) copied to ${this.holderId}, ${counts.failed} still unprotected`);
    }, (err) => {
      this.logger.warn({ event: 'reprotect-failed', err: String(err) }, `re-protection failed: ${err}; trying again`);
    }).finally(() => {
      this.#reprotecting = undefined;
      if (this.client.unprotectedCount > 0 && this.client.state === 'up') setTimeout(() => this.#reprotect(), 50).unref();
    });
  }

  /**
   * Before delivering from our own spool: apply what the holder knows (see the header). Throws
   * when the holder cannot be reached (the caller decides whether to deliver anyway).
   */
  async reconcile(): Promise<{ updated: number; removed: number; copied: number; pruned: number; identity: 'current' | 'new' }> {
    const spool = this.#spool!;
    const all = await spool.list();
    const answer = await this.client.reconcile(all.map((e) => e.queueId)); // corrupt ones too: their copies are kept
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
        if (bytes && (await this.client.copy(e.queueId, bytes)).protected) result.copied++;
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
    const lags = [...this.client.stats.discardLagMs].sort((a, b) => a - b);
    return {
      holder: this.holderId,
      connection: this.client.state,
      unprotected: this.client.unprotectedCount,
      pendingDiscards: this.client.pendingDiscards,
      discardLagMs: { p50: percentile(lags, 0.5), p99: percentile(lags, 0.99) },
      copied: this.client.stats.copied,
      copyFailures: this.client.stats.failed,
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
    await Promise.race([this.client.flush(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    await this.client.close();
    await this.holder.close();
  }
}
