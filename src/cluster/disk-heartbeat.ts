/**
 * cluster/disk-heartbeat.ts — the disk heartbeat: each node's slot on the shared storage
 * (`<spool.root>/.cluster/heartbeat/<node>`), a sealed {node, boot, counter, state} record that
 * the node rewrites every cluster.heartbeat_interval and its peers read.
 *
 * A renewal writes a temp file, fdatasyncs it and renames it over the slot, opening everything
 * by name each time: a storage that has gone away (unmounted, a stale NFS handle, a cut SAN
 * path) fails the renewal or hangs it, and either way the node notices that its last good
 * renewal is getting old (the cluster manager fences it after cluster.fence_after). A peer's
 * slot that cannot be read is no beat; one that does not open with the secret is no beat
 * either, but its raw text is returned: if it keeps changing, a live node we cannot
 * authenticate writes it (membership.ts never calls such a node dead).
 * Reads config keys: spool.root, cluster.secret (through the Sealer).
 */
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Sealer } from './sealed.ts';
import { UnsealError } from './sealed.ts';
import { clusterPaths } from './paths.ts';
import { isErrno } from '../util/errno.ts';
import type { AnnouncedState } from './membership.ts';

export interface DiskBeat {
  node: string;
  boot: number;
  counter: number;
  state: AnnouncedState;
}

/** A renewal's five operations, each timed from when the previous one completed (ms). */
export interface RenewalSteps { open: number; write: number; sync: number; close: number; rename: number }

export class DiskHeartbeat {
  private readonly paths: ReturnType<typeof clusterPaths>;
  private counter = 0;
  /** Peer slots that did not open with the secret. */
  rejected = 0;
  /** The last completed renewal's steps, in milliseconds (where a slow renewal's time went). */
  lastSteps: RenewalSteps = { open: 0, write: 0, sync: 0, close: 0, rename: 0 };

  constructor(spoolRoot: string, private readonly self: string, private readonly boot: number, private readonly sealer: Sealer) {
    this.paths = clusterPaths(spoolRoot);
  }

  /**
   * Write the next beat durably; rejects (or hangs) when the storage is not there. Each call
   * has its own temp file, so a renewal can be tried again while an earlier one hangs.
   */
  async renew(state: AnnouncedState): Promise<void> {
    const slot = this.paths.heartbeat(this.self);
    const counter = ++this.counter;
    const tmp = path.join(this.paths.tmp, `heartbeat.${this.self}.${counter}`);
    const beat: DiskBeat = { node: this.self, boot: this.boot, counter, state };
    const steps: RenewalSteps = { open: 0, write: 0, sync: 0, close: 0, rename: 0 };
    let t = performance.now();
    const lap = (step: keyof RenewalSteps) => { const now = performance.now(); steps[step] = now - t; t = now; };
    const fh = await open(tmp, 'w');
    lap('open');
    try {
      await fh.writeFile(this.sealer.seal(beat) + '\n');
      lap('write');
      await fh.datasync();
      lap('sync');
    } finally {
      await fh.close();
      lap('close');
    }
    await rename(tmp, slot);
    lap('rename');
    this.lastSteps = steps;
  }

  /**
   * Create the folders (at start-up, while the storage is known to be there), and remove temp
   * files of our earlier renewals that never completed (a crash, or a renewal given up as hung).
   */
  async prepare(): Promise<void> {
    await mkdir(this.paths.heartbeats, { recursive: true });
    await mkdir(this.paths.tmp, { recursive: true });
    const mine = `heartbeat.${this.self}.`;
    for (const name of await readdir(this.paths.tmp)) {
      if (name.startsWith(mine)) await unlink(path.join(this.paths.tmp, name)).catch(() => undefined);
    }
  }

  /**
   * A slot's current beat: `beat` undefined when the slot does not exist (the node never
   * started) or does not open with our secret(s); `raw` is the slot's text whenever it exists,
   * so that a slot that keeps changing without opening — a live node we cannot authenticate,
   * e.g. one with another cluster.secret — can be told from a silent one. Rejects when the
   * slot cannot be read (I/O error): then nothing is known about the node, which is not the
   * same as silence.
   */
  async read(node: string): Promise<{ beat?: DiskBeat; raw?: string; unverified?: UnsealError['reason'] }> {
    let text: string;
    try {
      text = await readFile(this.paths.heartbeat(node), 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return {};
      throw err;
    }
    try {
      const beat = this.sealer.open<DiskBeat>(text);
      return beat.node === node && typeof beat.counter === 'number' && typeof beat.boot === 'number' ? { beat, raw: text } : { raw: text, unverified: 'malformed' };
    } catch (err) {
      if (!(err instanceof UnsealError)) throw err;
      this.rejected++;
      return { raw: text, unverified: err.reason };
    }
  }

  slotPath(node: string): string {
    return this.paths.heartbeat(node);
  }

  /** Node ids with a slot on the shared storage (cluster.nodes of every node should list them all). */
  async slots(): Promise<string[]> {
    return (await readdir(this.paths.heartbeats)).filter((n) => !n.startsWith('.') && !n.includes('.'));
  }
}
