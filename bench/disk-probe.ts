/*
 * disk-probe.ts - what the disk alone costs a commit, measured beside a benchmark's load.
 *
 * startDiskProbe(dir, everyMs) starts a worker thread that, every `everyMs`, does what a spool
 * commit does to the disk with none of the SMTP around it: create a 4 KiB file in dir/tmp,
 * write, fsync, rename into dir/incoming, fsync incoming/ (through a kept-open descriptor, as
 * spool/dirsync.ts does), then unlink it. Synchronous calls on the thread's own loop, so the
 * benchmark's busy main thread does not add to the figures. stop() ends it and resolves the
 * commits' times (ms, sorted) and the longest single fsync (ms).
 *
 * Why: a relay's time-to-250 can be no shorter than this commit, and on a shared VM its tail
 * (the fsyncs) swings by several times within an hour; printed in the same run, it says how much
 * of a relay's tail is the disk's. What can go wrong: the folder cannot be made or written (the
 * worker's error rejects stop()).
 */
import { mkdirSync } from "node:fs";
import { Worker } from "node:worker_threads";

export interface DiskProbe { stop(): Promise<{ commitsMs: number[]; fsyncMaxMs: number }> }

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { dir, everyMs } = workerData;
const body = Buffer.alloc(4096, 120);
const folder = fs.openSync(dir + '/incoming', 'r');
const commitsMs = [];
let fsyncMaxMs = 0, n = 0, stopping = false;
const timed = (f) => { const t = performance.now(); f(); const d = performance.now() - t; if (d > fsyncMaxMs) fsyncMaxMs = d; };
parentPort.on('message', () => { stopping = true; });
function one() {
  if (stopping) { fs.closeSync(folder); parentPort.postMessage({ commitsMs, fsyncMaxMs }); return; }
  const name = 'p' + n++, tmp = dir + '/tmp/' + name, fin = dir + '/incoming/' + name;
  const t0 = performance.now();
  const fd = fs.openSync(tmp, 'wx', 0o600);
  fs.writeSync(fd, body);
  timed(() => fs.fsyncSync(fd));
  fs.closeSync(fd);
  fs.renameSync(tmp, fin);
  timed(() => fs.fsyncSync(folder));
  commitsMs.push(performance.now() - t0);
  fs.unlinkSync(fin);
  setTimeout(one, everyMs);
}
one();
`;

export function startDiskProbe(dir: string, everyMs = 50): DiskProbe {
  mkdirSync(`${dir}/tmp`, { recursive: true });
  mkdirSync(`${dir}/incoming`, { recursive: true });
  const worker = new Worker(WORKER, { eval: true, workerData: { dir, everyMs } });
  const result = new Promise<{ commitsMs: number[]; fsyncMaxMs: number }>((resolve, reject) => {
    worker.once("message", (r: { commitsMs: number[]; fsyncMaxMs: number }) => resolve({ commitsMs: r.commitsMs.sort((a, b) => a - b), fsyncMaxMs: r.fsyncMaxMs }));
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`disk probe exited (${code}) before it reported`)));
  });
  return {
    async stop() {
      worker.postMessage("stop");
      try {
        return await result;
      } finally {
        await worker.terminate();
      }
    },
  };
}
