/*
 * spool-read.ts - CPU and wall time per queue file of the spool's two reads on a takeover's
 * path: readInfo (the start-up scan: envelope and status records, no body) and readForDelivery
 * (a delivery attempt: the whole small file, checked).
 *
 *   node --import tsx bench/spool-read.ts [--messages 2000] [--size 4096] [--statuses 3] [--rounds 3]
 *
 * Commits --messages messages of --size bytes to a spool in a fresh temp folder, appends
 * --statuses deferral records to each (as a message deferred that many times carries), then
 * reads every file with readInfo, then with readForDelivery, --rounds times (8 reads in
 * flight, as the queue manager's scan does). Prints per round and the medians: µs of this
 * process's CPU (user + system) and of wall time per file, and one JSON line
 * {"bench":"spool-read",...}. The files are in the page cache after the first round: this
 * measures the system calls and the decoding, not the disk.
 * Temp folder removed at the end.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Spool } from "../src/spool/index.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "2000" },
    size: { type: "string", default: "4096" },
    statuses: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
  },
  strict: true,
});
const N = Number(values.messages);
const SIZE = Number(values.size);
const STATUSES = Number(values.statuses);
const ROUNDS = Number(values.rounds);
for (const [k, v] of Object.entries({ messages: N, size: SIZE, rounds: ROUNDS })) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} wants a positive integer`);
if (!Number.isInteger(STATUSES) || STATUSES < 0) throw new Error("--statuses wants an integer >= 0");

const dir = mkdtempSync(join(tmpdir(), "tandem-spool-read-"));
try {
  const spool = await Spool.open(dir, { nodeId: "bench" });
  const body = Buffer.alloc(SIZE, "x");
  body.write("Subject: spool-read\r\n\r\n");
  const ids: string[] = [];
  for (let i = 0; i < N; i++) {
    const queueId = spool.newQueueId();
    await spool.commit({ queueId, nodeId: "bench", sender: "s@bench.test", recipients: [{ address: "r@bench.test", original: "r@bench.test" }], arrivedAt: Date.now(), messageId: `<${queueId}@bench.test>`, client: { address: "127.0.0.1", helo: "bench" } }, body);
    for (let j = 0; j < STATUSES; j++) await spool.appendStatus(queueId, "incoming", [{ type: "deferral", at: Date.now(), attempts: j + 1, nextAttemptAt: Date.now() + 1000, lastReply: "451 4.4.1 later" }], { durable: false });
    ids.push(queueId);
  }
  const time = async (fn: (id: string) => Promise<unknown>): Promise<{ cpuUs: number; wallUs: number }> => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => { while (next < ids.length) await fn(ids[next++]); }));
    const cpu = process.cpuUsage(cpu0);
    return { cpuUs: (cpu.user + cpu.system) / N, wallUs: ((performance.now() - t0) * 1000) / N };
  };
  const rows: Array<{ info: { cpuUs: number; wallUs: number }; delivery: { cpuUs: number; wallUs: number } }> = [];
  for (let r = 0; r < ROUNDS; r++) {
    const info = await time((id) => spool.readInfo(id, "incoming"));
    const delivery = await time((id) => spool.readForDelivery(id, "incoming"));
    rows.push({ info, delivery });
    process.stdout.write(`round ${r + 1}: readInfo ${info.cpuUs.toFixed(0)} µs CPU (${info.wallUs.toFixed(0)} wall), readForDelivery ${delivery.cpuUs.toFixed(0)} µs CPU (${delivery.wallUs.toFixed(0)} wall) per file\n`);
  }
  const result = {
    bench: "spool-read", params: { messages: N, size: SIZE, statuses: STATUSES, rounds: ROUNDS },
    readInfo: { cpuUs: median(rows.map((x) => x.info.cpuUs)), wallUs: median(rows.map((x) => x.info.wallUs)) },
    readForDelivery: { cpuUs: median(rows.map((x) => x.delivery.cpuUs)), wallUs: median(rows.map((x) => x.delivery.wallUs)) },
  };
  process.stdout.write(`median: readInfo ${result.readInfo.cpuUs.toFixed(0)} µs CPU, readForDelivery ${result.readForDelivery.cpuUs.toFixed(0)} µs CPU per file\n${JSON.stringify(result)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
