/**
 * cluster/secondary-main.ts — the secondary switch process: a child of a surviving node that
 * delivers a dead node's queue. Queue manager and channels over that spool; no SMTP listener.
 *
 * Started by SecondaryProcess (secondary.ts) with an IPC channel. Once its modules are loaded it
 * reports {type:"standby"} and waits, holding nothing (as the node's pre-forked standby it may
 * wait long; a stop request, SIGTERM or the parent going away then ends it at once). The first
 * message is {type:"start", config, spool, epoch, owner, ownerBoot, spoolNodeSlot}. It then:
 *   1. checks that the spool's node delivers nothing from it: its disk heartbeat slot is as the
 *      parent read it before the start (the node has not beaten since: dead by the rules), or
 *      holds a beat that opens with our secret and says "fenced" or "returning" (else exits 3:
 *      a live node we cannot show to be idle keeps its lock); then takes the spool's lock
 *      (forced: the claim with its epoch is what entitles it), and checks that the claim in
 *      force is still that epoch (else exits 3 without delivering),
 *   2. runs a QueueManager over the spool (tmp/ left alone: the spool's node may be writing
 *      there) with a delivery gate that is open only while
 *      - the claim record in force is still ours (same epoch, kind claim, by the owner),
 *      - the owner's disk heartbeat has moved within cluster.fence_after, counted from when the
 *        read that saw the move began (so a hung parent also stops its secondaries before the
 *        peers' dead_after runs out), and
 *      - the owner does not say it is fenced, and it is the same boot of the owner,
 *      and stops at once when the spool lock is no longer its own (another process took it);
 *   3. reports {type:"ready"} and then queue counts every second,
 *   4. on {type:"stop"}, SIGTERM, or when the parent goes away (IPC disconnect, or another boot
 *      of the owner in its heartbeat slot): stops starting deliveries, waits for those in
 *      flight to be recorded, releases the lock, exits 0. A claim that is no longer ours (taken
 *      by another node, or handed back by an operator) stops it the same way at once.
 *   Stop requests are honoured from the first moment, also while it is still starting.
 * Logs JSON lines (pino) on stdout, which the parent shares; tracking-log lines carry
 * "secondary": the spool. Exit codes: 0 stopped; 1 could not start (the parent retries);
 * 3 the claim was no longer ours at start.
 * Reads config keys: spool.root, cluster.*, tracking.path, and what the queue manager, router
 * and channels read.
 */
import path from 'node:path';
import { pino } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import { Spool, acquireSpoolLock } from '../spool/index.ts';
import { createRouter, channelOptions } from '../node/wiring.ts';
import { ChannelSet } from '../channels/index.ts';
import { QueueManager } from '../qmgr/index.ts';
import { TrackingLog } from '../track/tracking-log.ts';
import { clusterSealer } from './sealed.ts';
import { ClaimStore, type ClaimRecord } from './claims.ts';
import { DiskHeartbeat } from './disk-heartbeat.ts';
import { shadowRoot } from './replication/placement.ts';
import { CoHolderNotices } from './replication/replica.ts';

export interface SecondaryStart {
  type: 'start';
  config: TandemConfig;
  spool: string;
  epoch: number;
  owner: string;
  /** The owner's boot (its heartbeat's boot): another boot in its slot means the parent is gone. */
  ownerBoot: number;
  /** The spool's node's heartbeat slot text as the parent read it before the start (null: none). */
  spoolNodeSlot: string | null;
  /**
   * Replicated storage: the folder of the copies to deliver (the parent's shadow folder for
   * that node); there is no disk heartbeat, the claim is the parent's own record, and the
   * parent's liveness is the IPC channel. `claimed: false`: copies of a retired spool identity,
   * the parent's alone to deliver (no claim).
   */
  replicated?: { dir: string; claimed: boolean };
  /** It was the node's pre-forked standby until this message (logged; it changes nothing else). */
  standby?: boolean;
}

/** States in which a node delivers nothing from its own spool (announced in its heartbeat). */
const IDLE_STATES = new Set(['fenced', 'returning']);

export type SecondaryReport =
  /** Modules loaded, waiting for the start message (a standby: StandbySecondary in secondary.ts). */
  | { type: 'standby' }
  | { type: 'ready' }
  | { type: 'counts'; counts: Record<string, number> }
  | { type: 'stopped'; reason: string };

function send(msg: SecondaryReport): void {
  if (process.connected) process.send?.(msg, () => undefined);
}

/**
 * Stop requests that arrive before the queue manager runs are kept until it does; before the
 * start message (a standby, or a fresh fork not yet told what to do) there is nothing to finish
 * or release: exit at once.
 */
let started = false;
let stopRequest: string | undefined;
let onStopRequest: ((reason: string) => void) | undefined;
const requestStop = (reason: string) => {
  if (!started) process.exit(0);
  stopRequest ??= reason;
  onStopRequest?.(reason);
};
process.on('message', (msg: { type?: string }) => { if (msg?.type === 'stop') requestStop('asked to stop (handback or node stop)'); });
process.on('disconnect', () => requestStop('the parent node went away'));
process.on('SIGTERM', () => requestStop('SIGTERM'));

async function run(start: SecondaryStart): Promise<void> {
  const { config, spool: spoolId, epoch, owner, ownerBoot, spoolNodeSlot, replicated } = start;
  const cluster = config.cluster!;
  const log = pino({ level: config.log.level, base: { node: owner, secondary: spoolId }, timestamp: pino.stdTimeFunctions.isoTime });
  const dir = replicated?.dir ?? path.join(config.spool.root, spoolId);
  const sealer = clusterSealer(cluster);
  const claims = new ClaimStore(replicated ? shadowRoot(config) : config.spool.root, sealer, (msg, fields) => log.warn(fields, msg));
  const disk = new DiskHeartbeat(config.spool.root, owner, 0, sealer);
  const mono = () => performance.now(); // the real clock: a process of its own, with no ClusterIo
  const isOurs = (r: ClaimRecord) => (replicated && !replicated.claimed) || (r.epoch === epoch && r.kind === 'claim' && r.by === owner);

  let claimOurs = false;
  let ownerFenced = false;
  let parentMark = '';
  let parentChangedAt = mono(); // the parent forked us just now: alive then
  // replicated: no disk heartbeat to watch; a parent that dies takes the IPC channel with it
  const mayDeliver = () => claimOurs && (replicated !== undefined || (!ownerFenced && mono() - parentChangedAt < cluster.fence_after));

  // the spool's node must be idle before its lock is forced: never two deliverers of one spool
  // (replicated: the copies are ours alone; the origin's own spool is on its own disk)
  const spoolNode = replicated ? undefined : await disk.read(spoolId);
  const idle = !spoolNode || (spoolNode.raw ?? null) === spoolNodeSlot || (spoolNode.beat !== undefined && IDLE_STATES.has(spoolNode.beat.state));
  if (!idle && spoolNode) {
    const why = spoolNode.beat ? `it says "${spoolNode.beat.state}"` : 'its slot does not open with our cluster secret';
    log.error({ event: 'secondary-stopped', reason: 'spool node alive' }, `secondary for ${spoolId} not started: node ${spoolId} has beaten since the claim (${why}), so it may be delivering; its spool lock is left alone`);
    process.exit(3);
  }
  // remote_copy: the origin's other holder learns what we deliver (its copies are not delivered twice)
  const notices = replicated?.claimed ? await CoHolderNotices.start(config, owner, spoolId, path.basename(dir), log) : undefined;
  const spool = await Spool.open(dir, { nodeId: spoolId, warn: (msg, fields) => log.warn(fields, msg), ...(notices ? { replica: notices } : {}) });
  const lock = await acquireSpoolLock(dir, { force: true });
  const first = await claims.current(spoolId);
  if (!isOurs(first) || stopRequest) {
    await lock.release();
    log.warn({ event: 'secondary-stopped', reason: stopRequest ?? `claim not ours (epoch ${first.epoch}, ${first.kind} by ${first.by})` }, `secondary for ${spoolId} not started`);
    process.exit(stopRequest ? 0 : 3);
  }
  claimOurs = true;
  const tracking = new TrackingLog(config.tracking.path, owner, (err) => log.error({ event: 'tracking-write-failed', err: String(err) }, `cannot write the tracking log: ${err.message}`), { secondary: spoolId }, config.tracking.sync_delay);
  const router = await createRouter(config, (msg, fields) => log.warn(fields ?? {}, msg));
  const channels = new ChannelSet(channelOptions(config));
  const qmgr = new QueueManager({ config, spool, router, tracking, logger: log, channelFor: (route) => channels.channelFor(route), mayDeliver });

  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => (stopping ??= (async () => {
    log.info({ event: 'secondary-stopping', reason }, `secondary for ${spoolId} stopping: ${reason}`);
    clearInterval(watch);
    clearInterval(report);
    await qmgr.stop();
    await notices?.close();
    await channels.close();
    tracking.close();
    await lock.release();
    send({ type: 'stopped', reason });
    log.info({ event: 'secondary-stopped', reason }, `secondary for ${spoolId} stopped; deliveries in flight are recorded`);
    process.exit(0);
  })());

  let watching = false;
  const watch = setInterval(() => {
    if (watching) return; // a slow storage: one look at a time
    watching = true;
    void (async () => {
      const lockNow = await lock.held().catch(() => undefined);
      if (lockNow && !lockNow.held) {
        claimOurs = false;
        const by = lockNow.holder ? `pid ${lockNow.holder.pid} on ${lockNow.holder.hostname}` : 'nobody (the lock file was removed)';
        void stop(`the spool lock was taken by ${by}`);
        return;
      }
      const readAt = mono();
      const { beat } = replicated ? { beat: undefined } : await disk.read(owner).catch(() => ({ beat: undefined }));
      const record = await claims.current(spoolId).catch(() => undefined);
      if (record && !isOurs(record)) {
        claimOurs = false;
        void stop(`the claim is no longer ours (epoch ${record.epoch}, ${record.kind} by ${record.by})`);
        return;
      }
      if (beat) {
        if (beat.boot !== ownerBoot) {
          claimOurs = false;
          void stop(`the owner ${owner} restarted (another boot in its heartbeat slot)`);
          return;
        }
        ownerFenced = beat.state === 'fenced';
        const mark = `${beat.boot}:${beat.counter}`;
        if (mark !== parentMark) {
          parentMark = mark;
          parentChangedAt = Math.max(parentChangedAt, readAt);
        }
      }
    })().catch((err) => log.error({ err: String(err) }, 'secondary watch failed')).finally(() => { watching = false; });
  }, cluster.heartbeat_interval);
  const report = setInterval(() => send({ type: 'counts', counts: qmgr.counts() }), 1000);
  onStopRequest = (reason) => void stop(reason);
  if (stopRequest) return void stop(stopRequest);

  const { scanned } = await qmgr.start({ cleanTmp: false, fillIndex: false });
  send({ type: 'ready' });
  log.info({ event: 'secondary-ready', spool: dir, epoch, pid: process.pid, standby: start.standby === true }, `secondary for ${spoolId} delivering its queue (claim epoch ${epoch}${start.standby ? '; it was the pre-forked standby' : ''})`);
  scanned.then(
    (r) => log.info({ event: 'spool-recovered', spool: dir, ...r }, `spool ${dir}: ${r.queued} queued message(s) picked up`),
    (err) => log.error({ event: 'spool-scan-failed', err: String(err) }, `scan of ${dir} failed: ${err}`),
  );
}

process.once('message', (msg: SecondaryStart) => {
  if (msg?.type !== 'start') return;
  started = true;
  run(msg).catch((err) => {
    process.stderr.write(`secondary for ${msg?.spool}: cannot start: ${err?.stack ?? err}\n`);
    process.exit(1);
  });
});

// every module is loaded: ready to be started (a standby waits here, holding nothing)
send({ type: 'standby' });
