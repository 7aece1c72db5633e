/**
 * cluster/claims.ts — who may deliver from a spool: claims and releases with a fencing epoch,
 * on the shared storage.
 *
 * Each spool has a folder of records, one file per epoch (`<spool.root>/.cluster/claims/<spool>/
 * 0000000007`). The record with the highest valid epoch says who delivers from the spool:
 * kind "claim" → the claiming node (a survivor running a secondary process over it); kind
 * "release" (or no record, epoch 0) → the spool's own node. A new record takes epoch + 1 and is
 * created exclusively (written to a temp file, fsynced, hard-linked to its name: link fails with
 * EEXIST when another node got that epoch first — the NFS-safe O_EXCL), so of two nodes racing
 * for a spool exactly one wins. Records are sealed with the cluster secret: a file that does not
 * open is never in force, and is counted. One signed with another secret, above the record in
 * force, is reported with that record (`unverifiedAbove`): a node we cannot authenticate (most
 * likely one with another cluster.secret) may hold the spool, so nobody takes it over, and a
 * write that would take that epoch fails with ClaimContestedError instead of moving it aside.
 * Only a file that is not a sealed record at all (torn, garbage) is moved aside when it blocks
 * an epoch.
 * What can go wrong: I/O errors on the shared storage propagate (the caller retries next tick);
 * a lost race returns undefined; ClaimContestedError as above.
 * Reads config keys: spool.root, cluster.secret (through the Sealer).
 */
import { link, mkdir, readdir, readFile, rename, unlink, writeFile, open } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsyncDirectory } from '../util/fsync-dir.ts';
import { isErrno } from '../util/errno.ts';
import { Sealer, UnsealError } from './sealed.ts';
import { clusterPaths } from './paths.ts';

export interface ClaimRecord {
  spool: string;
  epoch: number;
  kind: 'claim' | 'release';
  /** The node that wrote the record. */
  by: string;
  at: string;
  reason?: string;
  /**
   * Not stored: set by current() when a higher epoch holds a record that does not open with
   * our secret(s) — someone we cannot authenticate may be delivering the spool.
   */
  unverifiedAbove?: number;
}

/** A claim or release could not be written: the epoch is taken by a record we cannot verify. */
export class ClaimContestedError extends Error {
  readonly code = 'TANDEM_CLAIM_CONTESTED';
  constructor(readonly spool: string, readonly epoch: number) {
    super(`spool ${spool}: epoch ${epoch} holds a claim record that does not open with our cluster secret(s) — a node with another cluster.secret claimed it, or the file was forged; make the secrets agree (docs/ha.md "Configuration faults"); the record is left in place`);
    this.name = 'ClaimContestedError';
  }
}

/** Records kept per spool (older ones are removed). */
const KEEP_RECORDS = 20;
const EPOCH_DIGITS = 10;

/** Who delivers from the spool under this record. */
export function effectiveOwner(r: ClaimRecord): string {
  return r.kind === 'claim' ? r.by : r.spool;
}

export class ClaimStore {
  private readonly paths: ReturnType<typeof clusterPaths>;
  /** Claim files that did not open with the secret (forged or damaged). */
  rejected = 0;
  /** The files already warned about (each is logged once, not at every pass). */
  private readonly warned = new Set<string>();

  constructor(spoolRoot: string, private readonly sealer: Sealer, private readonly warn: (msg: string, fields: object) => void = () => {}) {
    this.paths = clusterPaths(spoolRoot);
  }

  /** The record in force for `spool` (epoch 0, released, when there is none). */
  async current(spool: string): Promise<ClaimRecord> {
    const dir = this.paths.claims(spool);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => /^\d+$/.test(n)).sort().reverse();
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return { spool, epoch: 0, kind: 'release', by: spool, at: new Date(0).toISOString() };
      throw err;
    }
    let unverifiedAbove: number | undefined;
    for (const name of names) {
      const read = await this.readRecord(spool, path.join(dir, name));
      if (read?.record) return unverifiedAbove === undefined ? read.record : { ...read.record, unverifiedAbove };
      if (read?.unverified === 'bad-signature') unverifiedAbove ??= Number(name);
    }
    const none: ClaimRecord = { spool, epoch: 0, kind: 'release', by: spool, at: new Date(0).toISOString() };
    return unverifiedAbove === undefined ? none : { ...none, unverifiedAbove };
  }

  /** Claim `spool` for node `by`, if the record in force is still epoch `after`. */
  claim(spool: string, by: string, after: number): Promise<ClaimRecord | undefined> {
    // the real clock here and below: ClaimStore is the production io's (a fake io replaces it whole)
    return this.write({ spool, epoch: after + 1, kind: 'claim', by, at: new Date().toISOString() });
  }

  /** Give `spool` back to its own node, if the record in force is still epoch `after`. */
  release(spool: string, by: string, after: number, reason: string): Promise<ClaimRecord | undefined> {
    return this.write({ spool, epoch: after + 1, kind: 'release', by, at: new Date().toISOString(), reason });
  }

  /**
   * The spool's own node, joining, moves the epoch on past the record in force `current` —
   * and past any record above it that we cannot verify: a node whose secret was wrong and has
   * been fixed must not be locked out by its own old records. Safe because the joining node
   * takes its spool lock without force: a live process delivering the spool keeps it out.
   */
  join(current: ClaimRecord, by: string): Promise<ClaimRecord | undefined> {
    const top = Math.max(current.epoch, current.unverifiedAbove ?? 0);
    return this.write({ spool: current.spool, epoch: top + 1, kind: 'release', by, at: new Date().toISOString(), reason: 'node joined' }, true);
  }

  /** undefined: the file is gone (pruned meanwhile). */
  private async readRecord(spool: string, file: string): Promise<{ record: ClaimRecord; unverified?: undefined } | { record?: undefined; unverified: UnsealError['reason'] } | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined; // pruned meanwhile
      throw err;
    }
    try {
      const r = this.sealer.open<ClaimRecord>(text);
      if (r.spool !== spool || String(r.epoch).padStart(EPOCH_DIGITS, '0') !== path.basename(file)) throw new UnsealError('malformed', 'record does not match its file name');
      return { record: { spool: r.spool, epoch: r.epoch, kind: r.kind, by: r.by, at: r.at, ...(r.reason !== undefined ? { reason: r.reason } : {}) } };
    } catch (err) {
      if (!(err instanceof UnsealError)) throw err;
      if (!this.warned.has(file)) {
        this.warned.add(file);
        this.rejected++;
        this.warn(`claim file ${file} ignored: ${err.message}`, { event: 'claim-rejected', file, reason: err.reason });
      }
      return { unverified: err.reason };
    }
  }

  private async write(record: ClaimRecord, overUnverified = false): Promise<ClaimRecord | undefined> {
    const dir = this.paths.claims(record.spool);
    await mkdir(dir, { recursive: true });
    await mkdir(this.paths.tmp, { recursive: true });
    const current = await this.current(record.spool);
    const top = overUnverified ? Math.max(current.epoch, current.unverifiedAbove ?? 0) : current.epoch;
    if (top !== record.epoch - 1) return undefined;
    const target = path.join(dir, String(record.epoch).padStart(EPOCH_DIGITS, '0'));
    const tmp = path.join(this.paths.tmp, `claim.${randomBytes(8).toString('hex')}`);
    await writeFile(tmp, this.sealer.seal(record) + '\n', { flag: 'wx' });
    const fh = await open(tmp, 'r+');
    try { await fh.sync(); } finally { await fh.close(); }
    try {
      await link(tmp, target);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      // another node took this epoch first — unless the file there is not a valid record
      const there = await this.readRecord(record.spool, target);
      if (there?.unverified === 'bad-signature') throw new ClaimContestedError(record.spool, record.epoch);
      if (there?.unverified) {
        await rename(target, `${target}.rejected.${Date.now()}`);
        await unlink(tmp);
        return this.write(record, overUnverified);
      }
      return undefined;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    await fsyncDirectory(dir);
    // our epoch's file was free — but was it because the record we raced has been pruned? (more
    // than KEEP_RECORDS newer records written between our read and our link) Then ours is stale
    // and never in force: take it away and report the race as lost.
    const now = await this.current(record.spool);
    if (now.epoch !== record.epoch || now.kind !== record.kind || now.by !== record.by) {
      await unlink(target).catch(() => undefined);
      await fsyncDirectory(dir);
      return undefined;
    }
    await this.prune(dir);
    return record;
  }

  private async prune(dir: string): Promise<void> {
    const names = (await readdir(dir)).filter((n) => /^\d+$/.test(n)).sort();
    for (const name of names.slice(0, Math.max(0, names.length - KEEP_RECORDS))) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}
