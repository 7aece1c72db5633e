/**
 * cluster/disk-heartbeat-worker.ts — the disk heartbeat's renewals, on a worker thread of their
 * own (started by DiskHeartbeatThread in disk-heartbeat.ts; docs/ha.md "Self-fencing").
 *
 * Every heartbeat interval, on this thread's own timer, the worker writes the next beat with
 * synchronous calls (open, write, fdatasync, close, rename: the same steps as
 * DiskHeartbeat.renew). Synchronous, because libuv's thread pool — which async fs calls in any
 * thread use — is shared with the spool's many fsyncs, and a renewal queued behind them was what
 * fenced busy nodes. Each completed renewal's start time goes into shared memory (Atomics), where
 * the main thread's fence gate reads it at once. The worker renews only while the main thread
 * checks in: when the main thread has been silent for `maxSilenceMs` (a wedged event loop), it
 * stops, so that a node whose main thread hangs can still be taken over; and it does not renew
 * while the main thread says so (an operator fence). A call that hangs (a storage that never
 * answers) holds this thread only: the main thread sees the renewal get old, fences, and starts
 * another worker (the hung one ends when its call returns).
 * Shared memory (BigInt64Array, hrtime nanoseconds): see SLOT in disk-heartbeat.ts.
 * Reports to the main thread: {type:'failed',err} (first failure of an outage), {type:'renewed'}
 * (the first success after failures), {type:'timed',ms,steps} (a renewal slower than two
 * intervals, or than any before), {type:'silent',ms} (renewals paused for a silent main thread).
 */
import { closeSync, fdatasyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { clusterSealer } from './sealed.ts';
import { SLOT, STATES, type DiskHeartbeatWorkerData, type RenewalSteps } from './disk-heartbeat.ts';

const d = workerData as DiskHeartbeatWorkerData;
const shared = new BigInt64Array(d.shared);
const sealer = clusterSealer({ secret: d.secret, accept_secrets: d.acceptSecrets });
const silenceNs = BigInt(Math.round(d.maxSilenceMs * 1e6));
let counter = d.counter;
let failing = false;
let silent = false;
/** The slowest renewal so far (reported when beaten, as are renewals slower than two intervals). */
let slowest = 0;

function renew(): void {
  const now = process.hrtime.bigint(); // the real clock: a thread of its own, timed against the main thread's hrtime
  if (Atomics.load(shared, SLOT.paused) !== 0n) return;
  const quietNs = now - Atomics.load(shared, SLOT.checkIn);
  if (quietNs > silenceNs) {
    if (!silent) parentPort!.postMessage({ type: 'silent', ms: Number(quietNs / 1_000_000n) });
    silent = true;
    return;
  }
  silent = false;
  const state = STATES[Number(Atomics.load(shared, SLOT.state))];
  const n = ++counter;
  const tmp = path.join(d.tmpDir, `heartbeat.${d.self}.${n}`);
  const steps: RenewalSteps = { open: 0, write: 0, sync: 0, close: 0, rename: 0 };
  let t = now;
  const lap = (step: keyof RenewalSteps) => {
    const at = process.hrtime.bigint();
    steps[step] = Number(at - t) / 1e6;
    t = at;
  };
  Atomics.store(shared, SLOT.busySince, now);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    lap('open');
    writeSync(fd, sealer.seal({ node: d.self, boot: d.boot, counter: n, state }) + '\n');
    lap('write');
    fdatasyncSync(fd);
    lap('sync');
    closeSync(fd);
    fd = undefined;
    lap('close');
    renameSync(tmp, d.slot);
    lap('rename');
  } catch (err) {
    if (fd !== undefined) try { closeSync(fd); } catch { /* the storage is gone */ }
    try { unlinkSync(tmp); } catch { /* nothing there, or the storage is gone */ }
    if (!failing) parentPort!.postMessage({ type: 'failed', err: String((err as Error)?.message ?? err) });
    failing = true;
    return;
  } finally {
    Atomics.store(shared, SLOT.busySince, 0n);
    Atomics.store(shared, SLOT.counter, BigInt(counter));
  }
  // the lease counts from when this renewal began: the peers cannot have seen it earlier
  if (now > Atomics.load(shared, SLOT.renewedAt)) Atomics.store(shared, SLOT.renewedAt, now);
  Atomics.add(shared, SLOT.renewals, 1n);
  if (failing) parentPort!.postMessage({ type: 'renewed' });
  failing = false;
  const ms = Number(process.hrtime.bigint() - now) / 1e6;
  if (ms > 2 * d.intervalMs || ms > slowest) parentPort!.postMessage({ type: 'timed', ms, steps });
  slowest = Math.max(slowest, ms);
}

setInterval(renew, d.intervalMs);
renew();
