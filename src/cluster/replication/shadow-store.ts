/**
 * replication/shadow-store.ts — the holder's side on disk: shadow copies of other nodes' queue
 * files, kept until their origin reports them done (discard notices).
 *
 * Layout (docs/replication.md):
 *   <root>/<origin>/identity.json              {"current":<spool id>,"retired":[{spoolId,at}]}
 *   <root>/<origin>/<spool id>/{tmp,incoming,active,deferred,hold,corrupt}/<queue id>
 * Each `<origin>/<spool id>` folder is an ordinary spool (spool.ts), so the secondary that
 * delivers a dead node's queue can run over it unchanged.
 *
 * store(): the bytes exactly as the origin sent them (the queue file as committed, or with
 * status records if it is a re-protection), with the spool's commit protocol: tmp/<id> opened
 * O_EXCL, written, fsynced, renamed into incoming/, incoming/ fsynced. It resolves only after
 * that, and only then does the holder acknowledge. The same queue id with the same committed
 * part again (a retry after a lost ack) is a `duplicate`: acknowledged, nothing rewritten; with
 * different content it is refused (`conflict`), the stored copy untouched.
 *
 * Spool identity: the first copy from an origin records its spool id. A copy with another id
 * means the origin's disk was replaced: identity.json is rewritten first (durably), the old
 * folder is kept as `retired` (its copies are the holder's to deliver), and new copies go to a
 * new folder. A copy or notice for a retired id is refused (`retired-identity`).
 *
 * applyDiscards(): per notice, the recipient statuses are appended to the copy (the spool's
 * appendStatus: fdatasync), and a copy with no pending recipient, or a `finished` one, is
 * removed (unlink, fsync folder). Notices for copies not held are counted as unknown.
 *
 * What can go wrong: I/O errors are thrown as they are (the holder answers 503 and the origin
 * treats the copy as not made); bad input is a ShadowRefusal with a reason (protocol.ts).
 */
import * as fsp from 'node:fs/promises';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Spool } from '../../spool/spool.ts';
import { DirSyncer } from '../../spool/dirsync.ts';
import { decodeQueueFile, QUEUE_FILE_MAGIC, RECORD_HEADER_SIZE } from '../../spool/queuefile.ts';
import { isSafeQueueId } from '../../spool/queueid.ts';
import { NODE_ID_PATTERN } from '../../util/names.ts';
import { QUEUE_STATES, type QueueState } from '../../spool/types.ts';
import { isErrno } from '../../util/errno.ts';
import { writeFileDurably } from './identity.ts';
import { isSpoolId, type DiscardNotice, type ReconcileAnswer, type RefusalReason } from './protocol.ts';

/** Input the store will not keep, with the reason counted by the holder. */
export class ShadowRefusal extends Error {
  readonly reason: RefusalReason;
  constructor(reason: RefusalReason, detail: string) {
    super(detail);
    this.name = 'ShadowRefusal';
    this.reason = reason;
  }
}

export type StoreResult = 'stored' | 'duplicate';
export interface DiscardResult { updated: number; removed: number; unknown: number }
export interface ShadowEntry { queueId: string; state: QueueState; pending: number[]; recipients: number }
export interface OriginIdentity { current: string; retired: Array<{ spoolId: string; at: number }> }

/** Bytes up to the end of the Z record: the part the origin committed (decoded already). */
function committedLength(bytes: Buffer): number {
  let offset = QUEUE_FILE_MAGIC.length;
  for (let i = 0; i < 3; i++) offset += RECORD_HEADER_SIZE + bytes.readUInt32BE(offset + 1);
  return offset;
}

export class ShadowStore {
  readonly root: string;
  readonly #spools = new Map<string, Promise<Spool>>();
  readonly #identities = new Map<string, OriginIdentity | undefined>();
  /** Tail of the chain of operations per key (an origin's identity, or one copy). */
  readonly #busy = new Map<string, Promise<unknown>>();
  readonly #dirSyncer = new DirSyncer();

  private constructor(root: string) {
    this.root = root;
  }

  /** Told when an origin's spool identity is replaced (the old copies are now the holder's to deliver). */
  onRetired?: (origin: string, spoolId: string) => void;

  static async open(root: string): Promise<ShadowStore> {
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    return new ShadowStore(root);
  }

  async #exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#busy.get(key) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#busy.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.#busy.get(key) === tail) this.#busy.delete(key);
    }
  }

  #checkOrigin(origin: string): void {
    if (!NODE_ID_PATTERN.test(origin)) throw new ShadowRefusal('bad-request', `${JSON.stringify(origin)} is not a node id`);
  }

  /** The origin's recorded identity (undefined before its first copy). */
  async identity(origin: string): Promise<OriginIdentity | undefined> {
    this.#checkOrigin(origin);
    if (this.#identities.has(origin)) return this.#identities.get(origin);
    let found: OriginIdentity | undefined;
    try {
      found = JSON.parse(await fsp.readFile(join(this.root, origin, 'identity.json'), 'utf8')) as OriginIdentity;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    this.#identities.set(origin, found);
    return found;
  }

  /** The spool folder for an origin's spool identity. */
  folder(origin: string, spoolId: string): string {
    return join(this.root, origin, spoolId);
  }

  #spool(origin: string, spoolId: string): Promise<Spool> {
    const dir = this.folder(origin, spoolId);
    let spool = this.#spools.get(dir);
    if (!spool) {
      spool = Spool.open(dir, { nodeId: origin });
      spool.catch(() => this.#spools.delete(dir));
      this.#spools.set(dir, spool);
    }
    return spool;
  }

  /** Check `spoolId` against the origin's record; a new one replaces (retires) the current. */
  #admit(origin: string, spoolId: string, mayRecord: boolean): Promise<'current' | 'unknown'> {
    return this.#exclusive(`identity:${origin}`, async () => {
      const known = await this.identity(origin);
      if (known?.current === spoolId) return 'current';
      if (known?.retired.some((r) => r.spoolId === spoolId)) {
        throw new ShadowRefusal('retired-identity', `spool ${spoolId} of ${origin} was replaced by ${known.current}`);
      }
      if (!mayRecord) return 'unknown';
      const next: OriginIdentity = {
        current: spoolId,
        retired: known ? [...known.retired, { spoolId: known.current, at: Date.now() }] : [],
      };
      await fsp.mkdir(join(this.root, origin), { recursive: true, mode: 0o700 });
      await writeFileDurably(join(this.root, origin, 'identity.json'), `${JSON.stringify(next)}\n`);
      this.#identities.set(origin, next);
      if (known) this.onRetired?.(origin, known.current);
      return 'current';
    });
  }

  /** Keep a copy durably; resolves only when it is fsynced in incoming/ (header). */
  async store(origin: string, spoolId: string, queueId: string, bytes: Buffer): Promise<StoreResult> {
    this.#checkOrigin(origin);
    if (!isSpoolId(spoolId)) throw new ShadowRefusal('bad-request', 'the spool id is not a UUID');
    if (!isSafeQueueId(queueId)) throw new ShadowRefusal('bad-request', `${JSON.stringify(queueId)} is not a queue id`);
    const decoded = decodeQueueFile(bytes);
    if (!decoded.ok) throw new ShadowRefusal('bad-queue-file', decoded.reason);
    if (decoded.tornTailBytes !== 0) throw new ShadowRefusal('bad-queue-file', `${decoded.tornTailBytes} bytes after the last good record`);
    if (decoded.envelope.queueId !== queueId) throw new ShadowRefusal('bad-queue-file', `the envelope says queue id ${JSON.stringify(decoded.envelope.queueId)}`);
    if (decoded.envelope.nodeId !== origin) throw new ShadowRefusal('origin-mismatch', `the envelope says node ${JSON.stringify(decoded.envelope.nodeId)}, the connection is ${origin}`);
    await this.#admit(origin, spoolId, true);
    const spool = await this.#spool(origin, spoolId);
    const dir = spool.dir;
    return this.#exclusive(`copy:${dir}/${queueId}`, async () => {
      const state = findCopy(dir, queueId);
      if (state) {
        const stored = await fsp.readFile(join(dir, state, queueId));
        const storedDecoded = decodeQueueFile(stored);
        const length = committedLength(bytes);
        if (storedDecoded.ok && committedLength(stored) === length && stored.subarray(0, length).equals(bytes.subarray(0, length))) return 'duplicate';
        throw new ShadowRefusal('conflict', `queue id ${queueId} is already held with other content`);
      }
      const tmp = join(dir, 'tmp', queueId);
      await fsp.unlink(tmp).catch(() => undefined); // a leftover of a crash mid-store: never acknowledged
      const handle = await fsp.open(tmp, 'wx', 0o600);
      try {
        try {
          await handle.writeFile(bytes);
          await handle.sync();
        } finally {
          await handle.close();
        }
        await fsp.rename(tmp, join(dir, 'incoming', queueId));
      } catch (err) {
        await fsp.unlink(tmp).catch(() => undefined);
        throw err;
      }
      await this.#dirSyncer.sync(join(dir, 'incoming'));
      return 'stored';
    });
  }

  /** Apply an origin's discard notices to its current spool identity's copies. */
  async applyDiscards(origin: string, spoolId: string, notices: readonly DiscardNotice[]): Promise<DiscardResult> {
    this.#checkOrigin(origin);
    if (!isSpoolId(spoolId)) throw new ShadowRefusal('bad-request', 'the spool id is not a UUID');
    const result: DiscardResult = { updated: 0, removed: 0, unknown: 0 };
    if ((await this.#admit(origin, spoolId, false)) === 'unknown') {
      result.unknown = notices.length; // nothing held for that identity
      return result;
    }
    const spool = await this.#spool(origin, spoolId);
    const apply = (notice: DiscardNotice): Promise<void> => this.#exclusive(`copy:${spool.dir}/${notice.queueId}`, async () => {
      const found = isSafeQueueId(notice.queueId) ? findCopy(spool.dir, notice.queueId) : undefined;
      if (!found) {
        result.unknown++;
        return;
      }
      let finished = notice.finished === true;
      let state = found;
      if (!finished && notice.hold !== undefined && (state === 'hold') !== notice.hold) {
        const to = notice.hold ? 'hold' : 'incoming';
        await spool.move(notice.queueId, state, to);
        state = to;
      }
      if (!finished && notice.statuses?.length) {
        // A copy these statuses finish is removed without appending them first (one fsync less).
        const info = await spool.readInfo(notice.queueId, state);
        const done = new Set([...info.statuses, ...notice.statuses].map((st) => st.index));
        finished = info.envelope.recipients.every((_, i) => done.has(i));
        // not fsynced: a notice lost in a crash of the holder only repeats a delivery at a takeover
        if (!finished) await spool.appendStatus(notice.queueId, state, notice.statuses, { durable: false });
      }
      if (finished) {
        await spool.remove(notice.queueId, state, { durable: false });
        result.removed++;
      } else {
        result.updated++;
      }
    });
    // Notices for one queue id stay in order (the chain above); up to 16 ids at once.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < notices.length) await apply(notices[next++]);
    };
    await Promise.all(Array.from({ length: Math.min(16, notices.length) }, worker));
    return result;
  }

  /** The copies held for an origin's spool identity (default: the current one). */
  async list(origin: string, spoolId?: string): Promise<ShadowEntry[]> {
    const id = spoolId ?? (await this.identity(origin))?.current;
    if (!id) return [];
    const spool = await this.#spool(origin, id);
    const entries: ShadowEntry[] = [];
    for (const e of await spool.list()) {
      if (e.state === 'corrupt') continue;
      const info = await spool.readInfo(e.queueId, e.state);
      entries.push({ queueId: e.queueId, state: e.state, pending: info.pending, recipients: info.envelope.recipients.length });
    }
    return entries;
  }

  /**
   * Before a secondary delivers an origin's copies (takeover): note which queue ids it may
   * finish, so that the origin, when it returns, can tell "delivered by the secondary" (in a
   * manifest, gone from the folder) from "never copied" (in no manifest). Returns the folder.
   */
  async markTakeover(origin: string, spoolId: string): Promise<string> {
    const spool = await this.#spool(origin, spoolId);
    const file = join(spool.dir, TAKEN_OVER_FILE);
    const ids = new Set(await this.#takenOver(file));
    // names only (no stat per file): this runs between the death and the first redelivery
    for (const state of LIVE_COPY_STATES) for (const name of await fsp.readdir(join(spool.dir, state)).catch(() => [] as string[])) if (isSafeQueueId(name)) ids.add(name);
    await writeFileDurably(file, `${JSON.stringify([...ids])}\n`);
    return spool.dir;
  }

  async #takenOver(file: string): Promise<string[]> {
    try {
      return JSON.parse(await fsp.readFile(file, 'utf8')) as string[];
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }
  }

  /** A returning origin's reconcile (protocol.ts ReconcileAnswer). */
  async reconcile(origin: string, spoolId: string, queueIds: readonly string[]): Promise<ReconcileAnswer> {
    this.#checkOrigin(origin);
    if (!isSpoolId(spoolId)) throw new ShadowRefusal('bad-request', 'the spool id is not a UUID');
    const before = (await this.identity(origin))?.current;
    await this.#admit(origin, spoolId, true);
    const answer: ReconcileAnswer = { identity: before !== undefined && before !== spoolId ? 'new' : 'current', held: {}, finished: [] };
    if (answer.identity === 'new') return answer;
    const spool = await this.#spool(origin, spoolId);
    const takenOver = new Set(await this.#takenOver(join(spool.dir, TAKEN_OVER_FILE)));
    for (const queueId of queueIds) {
      const state = isSafeQueueId(queueId) ? findCopy(spool.dir, queueId) : undefined;
      if (state && state !== 'corrupt') answer.held[queueId] = (await spool.readInfo(queueId, state)).statuses;
      else if (!state && takenOver.has(queueId)) answer.finished.push(queueId);
    }
    // Copies of messages the origin no longer has: their discard notices were lost (the origin
    // restarted with notices queued, or crashed between the copy and its own commit, before any
    // 250). A takeover would deliver them again; drop them. Only copies stored well before this
    // request: a message being committed now may be copied before the origin's list shows it.
    const listed = new Set(queueIds);
    const storedBefore = Date.now() - PRUNE_AFTER_MS;
    answer.pruned = 0;
    for (const e of await spool.list()) {
      if (listed.has(e.queueId) || e.state === 'corrupt') continue;
      const stat = await fsp.stat(join(spool.dir, e.state, e.queueId)).catch(() => undefined);
      if (!stat || stat.mtimeMs >= storedBefore) continue;
      await this.#exclusive(`copy:${spool.dir}/${e.queueId}`, () => spool.remove(e.queueId, e.state)).catch(() => undefined);
      answer.pruned++;
    }
    return answer;
  }

  /** Retired spool identities of an origin whose folders still hold copies. */
  async retiredWithCopies(origin: string): Promise<string[]> {
    const known = await this.identity(origin);
    const out: string[] = [];
    for (const r of known?.retired ?? []) if ((await this.#files(origin, r.spoolId)) > 0) out.push(r.spoolId);
    return out;
  }

  /** Queue files in a copy folder's live states (names only). */
  async #files(origin: string, spoolId: string): Promise<number> {
    let n = 0;
    for (const state of LIVE_COPY_STATES) {
      n += (await fsp.readdir(join(this.folder(origin, spoolId), state)).catch(() => [] as string[])).length;
    }
    return n;
  }

  /** Copies held for an origin's current spool identity (file names only: cheap enough for status pages). */
  async count(origin: string): Promise<number> {
    const id = (await this.identity(origin))?.current;
    return id ? this.#files(origin, id) : 0;
  }

  /** Origins with a folder here. */
  async origins(): Promise<string[]> {
    const names = await fsp.readdir(this.root).catch(() => [] as string[]);
    return names.filter((n) => NODE_ID_PATTERN.test(n));
  }
}

/**
 * The state folder holding a copy, if any. Every copy and every notice asks this, mostly for a
 * file that is not there: an async stat that fails builds an Error with its stack (~50 µs, a
 * quarter of the holder's CPU per message in bench/storage.ts), a sync stat told not to throw
 * takes ~4 µs. The shadow folder is on the holder's own disk (never a network mount).
 */
function findCopy(dir: string, queueId: string): QueueState | undefined {
  for (const state of QUEUE_STATES) if (statSync(join(dir, state, queueId), { throwIfNoEntry: false })) return state;
  return undefined;
}

/** The state folders that hold live copies (corrupt/ aside). */
const LIVE_COPY_STATES = ['incoming', 'active', 'deferred', 'hold'] as const;

/** A copy the origin does not list at its reconcile is dropped only if stored this long before. */
const PRUNE_AFTER_MS = 60_000;

/** In an origin's copy folder: the queue ids a takeover's secondary was given. */
const TAKEN_OVER_FILE = 'taken-over.json';
